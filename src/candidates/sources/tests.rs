use std::collections::{BTreeSet, HashSet};

use proptest::prelude::*;

use super::*;

fn tags(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn windows() -> SourceWindows {
    SourceWindows {
        now: 1_000_000,
        trending_window_secs: 1_000,
        fresh_window_secs: 100,
        fresh_max_views: 50,
        per_hashtag: 3,
        list_len: 10,
    }
}

fn lists(by_hashtag: &[(&str, &[u32])], trending: &[u32], fresh: &[u32]) -> SourceLists {
    SourceLists {
        by_hashtag: by_hashtag
            .iter()
            .map(|(t, rows)| (t.to_string(), rows.to_vec()))
            .collect(),
        trending: trending.to_vec(),
        fresh: fresh.to_vec(),
    }
}

fn personal(rows: &[u32]) -> Vec<Candidate> {
    rows.iter()
        .enumerate()
        .map(|(i, &row)| Candidate {
            row,
            similarity: 1.0 - i as f32 * 0.01,
        })
        .collect()
}

fn quotas(personal: usize, hashtag: usize, trending: usize, fresh: usize) -> SourceQuotas {
    SourceQuotas {
        audience: 0,
        lookalike: 0,
        personal,
        hashtag,
        trending,
        fresh,
    }
}

#[test]
fn lists_rank_each_source_by_its_own_key_and_window() {
    let cats = tags(&["cats"]);
    let both = tags(&["cats", "travel"]);
    let post = |row, hashtags, age: i64, views, value, prior| PostFacts {
        row,
        hashtags,
        created_at: 1_000_000 - age,
        views,
        value,
        prior,
    };
    let posts = [
        post(0, &cats[..], 10, 10, 0.1, 0.1),
        post(1, &both[..], 500, 1_000, 0.9, 0.5),
        post(2, &cats[..], 5_000, 1_000, 0.95, 0.9), // too old to trend
        post(3, &[][..], 50, 5, 0.2, 0.2),
        post(4, &cats[..], 20, 100, 0.3, 0.3),
        post(5, &cats[..], 30, 100, 0.3, 0.4),
    ];
    let lists = SourceLists::build(&posts, &windows());
    // Hashtag lists by prior, capped at 3 per hashtag.
    assert_eq!(lists.hashtag("cats"), &[2, 1, 5]);
    assert_eq!(lists.hashtag("travel"), &[1]);
    assert!(lists.hashtag("dogs").is_empty());
    // Trending: within 1,000 s, by value, ties by row.
    assert_eq!(lists.trending(), &[1, 4, 5, 3, 0]);
    // Fresh: within 100 s and under 50 views, newest first.
    assert_eq!(lists.fresh(), &[0, 3]);
}

#[test]
fn a_post_found_twice_is_kept_once_under_the_first_source() {
    let lists = lists(&[("cats", &[1, 7, 8])], &[7, 9], &[9, 10]);
    let got = gather(
        &personal(&[1, 2]),
        &tags(&["cats"]),
        &lists,
        &quotas(10, 10, 10, 10),
        |_| false,
    );
    let seen: Vec<(u32, Source)> = got.iter().map(|s| (s.row, s.source)).collect();
    assert_eq!(
        seen,
        vec![
            (1, Source::Personal),
            (2, Source::Personal),
            (7, Source::Hashtag),
            (8, Source::Hashtag),
            (9, Source::Trending),
            (10, Source::Fresh),
        ]
    );
    assert_eq!(got[0].similarity, Some(1.0));
    assert_eq!(got[2].similarity, None);
}

#[test]
fn followed_hashtags_take_turns() {
    let busy: Vec<u32> = (100..200).collect();
    let lists = lists(&[("busy", &busy), ("quiet", &[1, 2])], &[], &[]);
    let got = gather(
        &[],
        &tags(&["busy", "quiet"]),
        &lists,
        &quotas(0, 4, 0, 0),
        |_| false,
    );
    let rows: Vec<u32> = got.iter().map(|s| s.row).collect();
    assert_eq!(rows, vec![100, 1, 101, 2]);
}

#[test]
fn excluded_posts_cost_no_quota() {
    let lists = lists(&[], &[1, 2, 3, 4], &[]);
    let got = gather(&[], &[], &lists, &quotas(0, 0, 2, 0), |row| row % 2 == 1);
    let rows: Vec<u32> = got.iter().map(|s| s.row).collect();
    assert_eq!(rows, vec![2, 4]);
}

#[test]
fn a_user_without_a_vector_still_gets_candidates() {
    let lists = lists(&[("cats", &[5])], &[6], &[7]);
    let got = gather(&[], &tags(&["cats"]), &lists, &quotas(200, 5, 5, 5), |_| {
        false
    });
    assert_eq!(got.len(), 3);
}

/// The merge without its bookkeeping: for each source in order, walk its (for hashtags,
/// interleaved) list and keep what is new and admitted, up to the quota.
fn naive_gather(
    personal: &[u32],
    hashtag_lists: &[Vec<u32>],
    trending: &[u32],
    fresh: &[u32],
    quotas: &SourceQuotas,
    excluded: &HashSet<u32>,
) -> Vec<(u32, Source)> {
    let mut out: Vec<(u32, Source)> = Vec::new();
    let fits = |out: &Vec<(u32, Source)>, row: u32| {
        !excluded.contains(&row) && out.iter().all(|&(r, _)| r != row)
    };
    for &row in personal {
        if out.len() < quotas.personal && fits(&out, row) {
            out.push((row, Source::Personal));
        }
    }
    // Round r takes, from each hashtag in turn, its first admissible post not yet taken.
    let mut cursor = vec![0usize; hashtag_lists.len()];
    let mut taken = 0;
    loop {
        let mut moved = false;
        for (t, list) in hashtag_lists.iter().enumerate() {
            if taken == quotas.hashtag {
                break;
            }
            while cursor[t] < list.len() {
                let row = list[cursor[t]];
                cursor[t] += 1;
                moved = true;
                if fits(&out, row) {
                    out.push((row, Source::Hashtag));
                    taken += 1;
                    break;
                }
            }
        }
        if !moved || taken == quotas.hashtag {
            break;
        }
    }
    for (list, source, quota) in [
        (trending, Source::Trending, quotas.trending),
        (fresh, Source::Fresh, quotas.fresh),
    ] {
        let mut taken = 0;
        for &row in list {
            if taken < quota && fits(&out, row) {
                out.push((row, source));
                taken += 1;
            }
        }
    }
    out
}

fn rows(max_len: usize) -> impl Strategy<Value = Vec<u32>> {
    // Distinct rows within a list, from a small universe so that sources overlap.
    proptest::collection::btree_set(0u32..60, 0..max_len)
        .prop_map(|set: BTreeSet<u32>| set.into_iter().collect::<Vec<u32>>())
        .prop_shuffle()
}

proptest! {
    #[test]
    fn gather_agrees_with_the_naive_merge(
        personal_rows in rows(30),
        hashtag_lists in proptest::collection::vec(rows(15), 0..4),
        trending in rows(20),
        fresh in rows(20),
        q in (0usize..25, 0usize..12, 0usize..8, 0usize..8),
        excluded in proptest::collection::hash_set(0u32..60, 0..15),
    ) {
        let quotas = quotas(q.0, q.1, q.2, q.3);
        let names: Vec<String> = (0..hashtag_lists.len()).map(|i| format!("t{i}")).collect();
        let lists = SourceLists {
            by_hashtag: names.iter().cloned().zip(hashtag_lists.iter().cloned()).collect(),
            trending: trending.clone(),
            fresh: fresh.clone(),
        };
        let got = gather(
            &personal(&personal_rows),
            &names,
            &lists,
            &quotas,
            |row| excluded.contains(&row),
        );
        let got_pairs: Vec<(u32, Source)> = got.iter().map(|s| (s.row, s.source)).collect();
        let want = naive_gather(&personal_rows, &hashtag_lists, &trending, &fresh, &quotas, &excluded);
        prop_assert_eq!(&got_pairs, &want);
        // Invariants, independently of the reference.
        let distinct: HashSet<u32> = got.iter().map(|s| s.row).collect();
        prop_assert_eq!(distinct.len(), got.len());
        prop_assert!(got.iter().all(|s| !excluded.contains(&s.row)));
        for (source, quota) in [
            (Source::Personal, quotas.personal),
            (Source::Hashtag, quotas.hashtag),
            (Source::Trending, quotas.trending),
            (Source::Fresh, quotas.fresh),
        ] {
            prop_assert!(got.iter().filter(|s| s.source == source).count() <= quota);
        }
        prop_assert!(got.iter().all(|s| (s.source == Source::Personal) == s.similarity.is_some()));
    }
}
