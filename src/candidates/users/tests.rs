//! The user index against exact search, placements, and the lookalike merge against a naive
//! reference.

use std::collections::{BTreeMap, HashMap};

use ndarray::Array2;
use proptest::prelude::*;

use super::*;
use crate::index::synthetic;
use crate::snapshot::{FORMAT_VERSION, Manifest, User};

fn snapshot_with_users(vectors: Array2<f32>, follows: &[&[&str]]) -> Snapshot {
    let n = vectors.nrows();
    let dim = vectors.ncols();
    let users = (0..n)
        .map(|i| User {
            id: format!("u{i}"),
            langs: vec!["en".into()],
            created_at: 0,
            follows: follows
                .get(i)
                .map(|f| f.iter().map(|t| t.to_string()).collect())
                .unwrap_or_default(),
        })
        .collect();
    // Unit rows, as the loader leaves them under cosine.
    let mut vectors = vectors;
    for mut row in vectors.rows_mut() {
        let norm = row.dot(&row).sqrt();
        if norm > 0.0 {
            row.mapv_inplace(|x| x / norm);
        }
    }
    Snapshot {
        manifest: Manifest {
            format_version: FORMAT_VERSION,
            model_version: "test".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            dim,
            metric: Metric::Cosine,
            files: BTreeMap::new(),
            scoring: serde_json::Map::new(),
        },
        posts: Vec::new(),
        post_vectors: Array2::zeros((0, dim)),
        users,
        user_vectors: vectors,
        hashtags: Vec::new(),
        hashtag_vectors: Array2::zeros((0, dim)),
    }
}

fn index_of(snapshot: &Snapshot, kind: IndexKind) -> UserIndex {
    index_with(snapshot, kind, UserOptions::default())
}

fn index_with(snapshot: &Snapshot, kind: IndexKind, options: UserOptions) -> UserIndex {
    UserIndex::load(snapshot, kind, HnswParams::default(), options, None).expect("index")
}

/// The exact answer over each user's current vector.
fn exact(current: &HashMap<u32, Vec<f32>>, query: &[f32], k: usize, skip: Option<u32>) -> Vec<u32> {
    let qn = dot(query, query).sqrt();
    let mut all: Vec<(f32, u32)> = current
        .iter()
        .filter(|(slot, _)| Some(**slot) != skip)
        .map(|(&slot, v)| (dot(query, v) / (qn * dot(v, v).sqrt()), slot))
        .collect();
    all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    all.into_iter().take(k).map(|(_, s)| s).collect()
}

#[test]
fn nearest_users_match_exact_search_before_and_after_users_move() {
    let vectors = synthetic::clustered(6_000, 16, 40, 0.5, 7);
    let snapshot = snapshot_with_users(vectors.clone(), &[]);
    let index = index_of(&snapshot, IndexKind::Hnsw);
    assert!(index.graph().is_some(), "more users than the exact pool");
    let mut current: HashMap<u32, Vec<f32>> = (0..vectors.nrows() as u32)
        .map(|r| (r, snapshot.user_vectors.row(r as usize).to_vec()))
        .collect();
    let queries = synthetic::queries(100, 16, 40, 0.5, 7);
    let recall = |index: &UserIndex, current: &HashMap<u32, Vec<f32>>| {
        let mut hits = 0;
        for q in queries.rows() {
            let q = q.to_vec();
            let want = exact(current, &q, 10, Some(3));
            let got: Vec<u32> = index
                .nearest(&q, 10, Some(3))
                .iter()
                .map(|n| n.slot)
                .collect();
            assert!(!got.contains(&3), "the excluded user is never returned");
            hits += got.iter().filter(|s| want.contains(s)).count();
        }
        hits as f64 / 1_000.0
    };
    assert!(recall(&index, &current) >= 0.95);

    // Move 500 users onto other users' places, and add 200 newcomers.
    let mut moved: Vec<(String, Vec<f32>)> = Vec::new();
    for i in 0..500u32 {
        let target = snapshot
            .user_vectors
            .row(((i * 7 + 11) % 6_000) as usize)
            .to_vec();
        current.insert(i, target.clone());
        moved.push((format!("u{i}"), target));
    }
    for i in 0..200u32 {
        let v = queries.row((i % 100) as usize).to_vec();
        moved.push((format!("new{i}"), v));
    }
    let items: Vec<Placement<'_>> = moved
        .iter()
        .map(|(id, v)| {
            let start = index
                .snapshot_row(id)
                .map(|r| snapshot.user_vectors.row(r as usize).to_slice().unwrap());
            Placement {
                user_id: id.as_str(),
                vector: v.as_slice(),
                start,
            }
        })
        .collect();
    let placed = index.place(&items);
    assert_eq!(placed, 700);
    for (id, v) in &moved[500..] {
        current.insert(index.slot(id).expect("placed newcomer"), v.clone());
    }
    assert_eq!(index.stats().placements, 700);
    assert_eq!(index.stats().new_users, 200);
    assert!(recall(&index, &current) >= 0.95);
    // A moved user is found at their new place, never at their old one.
    let old = snapshot.user_vectors.row(0).to_vec();
    let hits = index.nearest(&old, 1, None);
    assert_ne!(hits[0].slot, 0, "user 0 moved away from its snapshot row");
}

#[test]
fn many_moves_rebuild_the_index_in_the_background_and_lose_no_placement() {
    let vectors = synthetic::clustered(6_000, 16, 40, 0.5, 11);
    let snapshot = snapshot_with_users(vectors, &[]);
    let index = index_of(&snapshot, IndexKind::Hnsw);
    let mut current: HashMap<u32, Vec<f32>> = (0..6_000u32)
        .map(|r| (r, snapshot.user_vectors.row(r as usize).to_vec()))
        .collect();
    // Fresh places, none a copy of another user's.
    let places = synthetic::queries(4_000, 16, 40, 0.5, 12);
    let mut place = |from: usize, to: usize| {
        let ids: Vec<String> = (from..to).map(|i| format!("u{i}")).collect();
        let items: Vec<Placement<'_>> = (from..to)
            .map(|i| Placement {
                user_id: &ids[i - from],
                vector: places.row(i).to_slice().unwrap(),
                start: snapshot.user_vectors.row(i).to_slice(),
            })
            .collect();
        let placed = index.place(&items);
        for i in from..to {
            current.insert(i as u32, places.row(i).to_vec());
        }
        placed
    };
    // 2,000 moves: appended rows pass a tenth of 8,000, and a rebuild starts.
    assert_eq!(place(0, 2_000), 2_000);
    assert!(index.stats().rebuilding || index.stats().rebuilds == 1);
    // Moves while it runs are appended to the new index too.
    assert_eq!(place(2_000, 2_600), 600);
    index.wait_idle();
    let stats = index.stats();
    assert_eq!(stats.rebuilds, 1, "{stats:?}");
    assert!(!stats.rebuilding);
    assert_eq!(stats.placements, 2_600);
    // Every moved user is found at their new place, as themselves.
    for i in (0..2_600).step_by(37) {
        let hits = index.nearest(places.row(i).to_slice().unwrap(), 1, None);
        assert_eq!(hits[0].slot, i as u32, "user {i}");
    }
    // And the index still agrees with exact search over the current vectors.
    let queries = synthetic::queries(100, 16, 40, 0.5, 13);
    let mut hits = 0;
    for q in queries.rows() {
        let q = q.to_vec();
        let want = exact(&current, &q, 10, None);
        let got = index.nearest(&q, 10, None);
        hits += got.iter().filter(|n| want.contains(&n.slot)).count();
    }
    assert!(
        hits as f64 / 1_000.0 >= 0.95,
        "recall {}",
        hits as f64 / 1_000.0
    );
    // The rows left after the rebuild: one per user, plus the moves made during it at most.
    let rows = index.segments().total();
    assert!((6_000..=6_600).contains(&rows), "{rows}");
}

#[test]
fn a_small_move_is_not_placed_again_and_a_large_one_is() {
    let vectors = synthetic::clustered(50, 8, 5, 0.5, 1);
    let snapshot = snapshot_with_users(vectors, &[]);
    let index = index_of(&snapshot, IndexKind::Exact);
    let start = snapshot.user_vectors.row(0).to_vec();
    // 1 degree away: within `replace_degrees` (5).
    let mut near = start.clone();
    near[0] += 0.017;
    let at = |user_id, vector, start| {
        [Placement {
            user_id,
            vector,
            start,
        }]
    };
    assert_eq!(index.place(&at("u0", &near, Some(&start))), 0);
    // Far away: placed.
    let far: Vec<f32> = start.iter().map(|x| -x).collect();
    assert_eq!(index.place(&at("u0", &far, Some(&start))), 1);
    assert_eq!(index.nearest(&far, 1, None)[0].slot, 0);
    // Zero and wrong-sized vectors are skipped.
    assert_eq!(index.place(&at("u1", &[0.0; 8], None)), 0);
    assert_eq!(index.place(&at("u1", &[1.0], None)), 0);
}

#[test]
fn placements_past_the_limit_are_refused_and_counted() {
    let vectors = synthetic::clustered(20, 8, 4, 0.5, 2);
    let snapshot = snapshot_with_users(vectors, &[]);
    let options = UserOptions {
        max_placements: 3,
        ..UserOptions::default()
    };
    let index = index_with(&snapshot, IndexKind::Exact, options);
    let v: Vec<Vec<f32>> = (0..5)
        .map(|i| {
            let mut v = vec![0.0f32; 8];
            v[i] = 1.0;
            v
        })
        .collect();
    let ids: Vec<String> = (0..5).map(|i| format!("new{i}")).collect();
    let items: Vec<Placement<'_>> = ids
        .iter()
        .zip(&v)
        .map(|(id, v)| Placement {
            user_id: id.as_str(),
            vector: v.as_slice(),
            start: None,
        })
        .collect();
    assert_eq!(index.place(&items), 3);
    let stats = index.stats();
    assert_eq!((stats.placements, stats.placements_refused), (3, 2));
    assert!(!index.is_placed(index.slot("new4").expect("has a slot")));
}

#[test]
fn engagements_are_kept_per_user_most_recent_last_and_bounded() {
    let snapshot = snapshot_with_users(synthetic::clustered(10, 8, 2, 0.5, 3), &[]);
    let options = UserOptions {
        recent_per_user: 3,
        ..UserOptions::default()
    };
    let index = index_with(&snapshot, IndexKind::Exact, options);
    assert!(!index.has_engagements());
    for row in 0..5 {
        index.record_engagement("u1", Engaged { row, weight: 1.0 });
    }
    index.record_engagement(
        "stranger",
        Engaged {
            row: 9,
            weight: 0.4,
        },
    );
    assert!(index.has_engagements());
    let rows: Vec<u32> = index.recent(1).iter().map(|e| e.row).collect();
    assert_eq!(rows, vec![2, 3, 4]);
    let stranger = index
        .slot("stranger")
        .expect("a slot for a user with events");
    assert!(!index.is_placed(stranger));
    assert_eq!(index.id(stranger).as_deref(), Some("stranger"));
}

#[test]
fn a_newcomer_is_placed_at_the_followers_of_their_picks() {
    let mut vectors = Array2::zeros((4, 3));
    vectors[[0, 0]] = 1.0;
    vectors[[1, 0]] = 1.0;
    vectors[[2, 1]] = 1.0;
    vectors[[3, 2]] = 1.0;
    let follows: [&[&str]; 4] = [&["cats"], &["cats", "dogs"], &["dogs"], &["tea"]];
    let snapshot = snapshot_with_users(vectors, &follows);
    let index = index_of(&snapshot, IndexKind::Exact);
    let v = index
        .newcomer_vector(&["cats".into()], &snapshot.user_vectors, None)
        .expect("cats has followers");
    assert!((v[0] - 1.0).abs() < 1e-6);
    let v = index
        .newcomer_vector(
            &["dogs".into(), "cats".into()],
            &snapshot.user_vectors,
            None,
        )
        .expect("followers");
    // Users 0 and 1 follow cats (e0 each), 1 and 2 dogs (e0, e1): 3·e0 + 1·e1 over |…|.
    assert!((v[0] - 3.0 / 10f32.sqrt()).abs() < 1e-5, "{v:?}");
    assert!((v[1] - 1.0 / 10f32.sqrt()).abs() < 1e-5, "{v:?}");
    assert!(
        index
            .newcomer_vector(&["unknown".into()], &snapshot.user_vectors, None)
            .is_none()
    );
    // Leaving user 3 out leaves "tea" without followers.
    assert!(
        index
            .newcomer_vector(&["tea".into()], &snapshot.user_vectors, Some(3))
            .is_none()
    );
}

/// The lookalike merge, naively: every (neighbour, engagement) pair adds to its post.
fn naive_lookalike(
    neighbours: &[(f32, Vec<Engaged>)],
    limit: usize,
    excluded: &[u32],
) -> Vec<(u32, f32)> {
    let mut rows: Vec<u32> = neighbours
        .iter()
        .flat_map(|(_, e)| e.iter().map(|e| e.row))
        .collect();
    rows.sort_unstable();
    rows.dedup();
    let mut scored: Vec<(u32, f32)> = rows
        .into_iter()
        .filter(|r| !excluded.contains(r))
        .map(|row| {
            let score = neighbours
                .iter()
                .map(|(s, e)| {
                    e.iter()
                        .filter(|e| e.row == row)
                        .map(|e| s.max(0.0) * e.weight)
                        .sum::<f32>()
                })
                .sum::<f32>();
            (row, score)
        })
        .filter(|&(_, s)| s > 0.0)
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.truncate(limit);
    scored
}

proptest! {
    #[test]
    fn lookalike_posts_match_a_naive_sum(
        neighbours in proptest::collection::vec(
            (-0.5f32..1.0, proptest::collection::vec((0u32..30, prop_oneof![Just(0.4f32), Just(0.8f32), Just(1.0f32)]), 0..8)),
            0..12,
        ),
        limit in 0usize..20,
        excluded in proptest::collection::vec(0u32..30, 0..5),
    ) {
        let neighbours: Vec<(f32, Vec<Engaged>)> = neighbours
            .into_iter()
            .map(|(s, e)| (s, e.into_iter().map(|(row, weight)| Engaged { row, weight }).collect()))
            .collect();
        let got = lookalike_posts(
            neighbours.iter().map(|(s, e)| (*s, e.as_slice())),
            limit,
            |row| excluded.contains(&row),
        );
        let want = naive_lookalike(&neighbours, limit, &excluded);
        prop_assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            prop_assert_eq!(g.0, w.0);
            prop_assert!((g.1 - w.1).abs() < 1e-4);
        }
    }
}
