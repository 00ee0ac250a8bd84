use std::collections::{BTreeMap, HashMap};

use ndarray::Array2;
use proptest::prelude::*;

use super::*;
use crate::snapshot::{FORMAT_VERSION, Hashtag, Manifest, Metric, Post, Stats, User};

const DIM: usize = 4;
const NOW: i64 = 1_000_000;
const HOUR: i64 = 3600;

/// Unit vector along axis `i`, tilted by `tilt` toward the next axis.
fn axis(i: usize, tilt: f32) -> [f32; DIM] {
    let mut v = [0.0; DIM];
    v[i % DIM] = 1.0;
    v[(i + 1) % DIM] += tilt;
    v
}

fn post(id: usize, lang: &str, tags: &[&str], kind: PostKind, age_hours: i64) -> Post {
    Post {
        id: format!("p{id}"),
        author: format!("a{id}"),
        lang: lang.into(),
        hashtags: tags.iter().map(|t| t.to_string()).collect(),
        kind,
        created_at: NOW - age_hours * HOUR,
        stats: Stats::default(),
    }
}

fn organic(id: usize, lang: &str, tags: &[&str], age_hours: i64) -> Post {
    post(id, lang, tags, PostKind::Organic, age_hours)
}

fn user(id: &str, langs: &[&str], follows: &[&str]) -> User {
    User {
        id: id.into(),
        langs: langs.iter().map(|l| l.to_string()).collect(),
        created_at: NOW - 1000 * HOUR,
        follows: follows.iter().map(|t| t.to_string()).collect(),
    }
}

fn matrix(rows: &[[f32; DIM]]) -> Array2<f32> {
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    Array2::from_shape_vec((rows.len(), DIM), flat).unwrap()
}

/// A snapshot whose post vectors all point along axis 0 (tests that need tag vectors give
/// them through `hashtags`).
fn snapshot(posts: Vec<Post>, users: Vec<User>, hashtags: &[(&str, [f32; DIM])]) -> Snapshot {
    let post_rows = vec![axis(0, 0.0); posts.len()];
    let user_rows = vec![axis(0, 0.0); users.len()];
    let tag_rows: Vec<[f32; DIM]> = hashtags.iter().map(|h| h.1).collect();
    Snapshot {
        manifest: Manifest {
            format_version: FORMAT_VERSION,
            model_version: "test".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            dim: DIM,
            metric: Metric::Cosine,
            files: BTreeMap::new(),
            scoring: serde_json::Map::new(),
        },
        post_vectors: matrix(&post_rows),
        posts,
        user_vectors: matrix(&user_rows),
        users,
        hashtags: hashtags
            .iter()
            .map(|(tag, _)| Hashtag {
                tag: tag.to_string(),
                display: BTreeMap::new(),
            })
            .collect(),
        hashtag_vectors: matrix(&tag_rows),
    }
}

fn build(snapshot: &Snapshot, options: HashtagOptions) -> Hashtags {
    Hashtags::build(snapshot, &ScoringConfig::default(), NOW, options)
}

/// No variety pass and no bridge slots: scores in plain order.
fn no_variety() -> HashtagOptions {
    HashtagOptions {
        diversity_weight: 0.0,
        near_duplicate: 1.0,
        bridge_slots: 0,
        ..HashtagOptions::default()
    }
}

fn tags<'h>(picks: &[HashtagPick<'h>]) -> Vec<&'h str> {
    picks.iter().map(|p| p.tag).collect()
}

fn query(lang: Option<&str>, limit: usize) -> HashtagQuery<'_> {
    HashtagQuery {
        lang,
        limit,
        ..HashtagQuery::default()
    }
}

#[test]
fn recent_activity_outranks_a_larger_past_in_the_viewers_language() {
    let mut posts = Vec::new();
    // `old`: 20 English posts a month ago. `rising`: 6 English posts today.
    // `chinese`: 30 Chinese posts today.
    for i in 0..20 {
        posts.push(organic(i, "en", &["old"], 24 * 30));
    }
    for i in 20..26 {
        posts.push(organic(i, "en", &["rising"], 2));
    }
    for i in 26..56 {
        posts.push(organic(i, "zh", &["chinese"], 1));
    }
    let hashtags = build(&snapshot(posts, vec![], &[]), no_variety());
    assert_eq!(
        tags(&hashtags.recommend(&query(Some("en"), 3))),
        ["rising", "old", "chinese"],
        "in English: recent English activity first, all-time English second"
    );
    let zh = hashtags.recommend(&query(Some("zh"), 3));
    assert_eq!(zh[0].tag, "chinese");
    assert_eq!(zh[0].reason, Reason::Trending);
    // Without a language, all communities count: the 30 recent Chinese posts lead.
    assert_eq!(hashtags.recommend(&query(None, 1))[0].tag, "chinese");
    // A language no post or user has counts as none.
    assert_eq!(hashtags.recommend(&query(Some("fr"), 1))[0].tag, "chinese");
}

#[test]
fn followers_count_as_activity_in_their_languages() {
    let mut posts: Vec<Post> = (0..4).map(|i| organic(i, "en", &["quiet"], 500)).collect();
    posts.extend((4..8).map(|i| organic(i, "en", &["followed"], 500)));
    let users: Vec<User> = (0..10)
        .map(|i| user(&format!("u{i}"), &["en"], &["followed"]))
        .collect();
    let hashtags = build(&snapshot(posts, users, &[]), no_variety());
    assert_eq!(
        tags(&hashtags.recommend(&query(Some("en"), 2))),
        ["followed", "quiet"]
    );
}

#[test]
fn tags_carried_by_ads_reported_posts_or_too_few_posts_are_not_recommended() {
    let reported = Stats {
        views: 100,
        reports: 10,
        ..Stats::default()
    };
    let mut posts = Vec::new();
    let mut id = 0;
    let mut add = |posts: &mut Vec<Post>, tag: &str, kind: PostKind, n: usize, stats: Stats| {
        for _ in 0..n {
            let mut p = post(id, "en", &[tag], kind, 1);
            p.stats = stats;
            posts.push(p);
            id += 1;
        }
    };
    add(&mut posts, "fine", PostKind::Organic, 4, Stats::default());
    // 3 organic and 4 ads: paid share 4/7 > 0.5.
    add(&mut posts, "adsy", PostKind::Organic, 3, Stats::default());
    add(&mut posts, "adsy", PostKind::Ad, 4, Stats::default());
    // 3 organic and 3 sponsored: paid share exactly 0.5 is allowed.
    add(&mut posts, "half", PostKind::Organic, 3, Stats::default());
    add(&mut posts, "half", PostKind::Sponsored, 3, Stats::default());
    // 6 organic, 2 of them past the report threshold: 2/6 > 0.2 (and only 4 count).
    add(
        &mut posts,
        "reported",
        PostKind::Organic,
        4,
        Stats::default(),
    );
    add(&mut posts, "reported", PostKind::Organic, 2, reported);
    // 2 organic posts: fewer than min_posts.
    add(&mut posts, "rare", PostKind::Organic, 2, Stats::default());
    let hashtags = build(&snapshot(posts, vec![], &[]), no_variety());

    let mut got = tags(&hashtags.recommend(&query(Some("en"), 10)));
    got.sort();
    assert_eq!(got, ["fine", "half"]);
    assert_eq!(hashtags.eligible(), 2);
    assert_eq!(hashtags.len(), 5);
    assert_eq!(hashtags.organic_posts("reported"), 4);
    assert_eq!(hashtags.organic_posts("half"), 3);

    let exclude = vec!["fine".to_string()];
    let picks = hashtags.recommend(&HashtagQuery {
        lang: Some("en"),
        exclude: &exclude,
        limit: 10,
        ..HashtagQuery::default()
    });
    assert_eq!(
        tags(&picks),
        ["half"],
        "a followed tag is never recommended"
    );
}

#[test]
fn bridge_is_evenness_across_communities_or_bilingual_share() {
    let a = |posts| Activity {
        posts,
        ..Activity::default()
    };
    assert_eq!(bridge(&[a(10), a(0)], &a(0)), 0.0, "one community");
    assert_eq!(bridge(&[a(5), a(5)], &a(0)), 1.0, "even split");
    assert_eq!(bridge(&[a(0), a(0)], &a(4)), 1.0, "all bilingual");
    assert_eq!(bridge(&[a(0), a(0)], &a(0)), 0.0, "no activity");
    // 3:1 → Gini–Simpson 1 − (9/16 + 1/16) = 0.375, over 0.5.
    assert!((bridge(&[a(3), a(1)], &a(0)) - 0.75).abs() < 1e-6);
    // 9 English, 1 bilingual: bilingual share 0.1 wins over evenness 0.
    assert!((bridge(&[a(9), a(0)], &a(1)) - 0.1).abs() < 1e-6);
    // Three even communities saturate at 1.
    assert_eq!(bridge(&[a(2), a(2), a(2)], &a(0)), 1.0);
}

#[test]
fn a_tag_used_across_languages_is_recommended_as_a_bridge() {
    let mut posts = Vec::new();
    for i in 0..10 {
        posts.push(organic(i, "en", &["local"], 1));
    }
    // One English, one Chinese and four bilingual posts.
    posts.push(organic(10, "en", &["exchange"], 1));
    posts.push(organic(11, "zh", &["exchange"], 1));
    for i in 12..16 {
        posts.push(organic(i, "mixed", &["exchange"], 1));
    }
    let hashtags = build(&snapshot(posts, vec![], &[]), no_variety());
    let picks = hashtags.recommend(&query(Some("en"), 2));
    let exchange = picks.iter().find(|p| p.tag == "exchange").unwrap();
    assert_eq!(exchange.reason, Reason::Bridge);
    let local = picks.iter().find(|p| p.tag == "local").unwrap();
    assert_ne!(local.reason, Reason::Bridge);
}

#[test]
fn bridge_slots_bring_in_tags_shared_across_languages() {
    let mut posts = Vec::new();
    // Three big English tags and two smaller ones shared with Chinese speakers: `even` half
    // and half (bridge 1), `uneven` 5:1 (Gini–Simpson 10/36 over 0.5 = 0.56). The bridge term
    // is weighed zero, so that only the slots bring them in.
    for (t, tag) in ["big1", "big2", "big3"].iter().enumerate() {
        for i in 0..20 {
            posts.push(organic(t * 100 + i, "en", &[tag], 1));
        }
    }
    for i in 0..6 {
        posts.push(organic(
            300 + i,
            if i % 2 == 0 { "en" } else { "zh" },
            &["even"],
            1,
        ));
    }
    for i in 0..6 {
        posts.push(organic(
            400 + i,
            if i < 5 { "en" } else { "zh" },
            &["uneven"],
            1,
        ));
    }
    let s = snapshot(posts, vec![], &[]);
    let no_bridge_weight = HashtagOptions {
        bridge_weight: 0.0,
        ..no_variety()
    };
    let plain = build(&s, no_bridge_weight);
    assert_eq!(
        tags(&plain.recommend(&query(Some("en"), 3))),
        ["big1", "big2", "big3"]
    );

    let one_slot = HashtagOptions {
        bridge_slots: 1,
        ..no_bridge_weight
    };
    let hashtags = build(&s, one_slot);
    let picks = hashtags.recommend(&query(Some("en"), 3));
    assert_eq!(tags(&picks), ["big1", "big2", "even"], "shown best first");
    assert_eq!(picks[2].reason, Reason::Bridge);
    assert!(picks[1].score >= picks[2].score);

    // Only tags bridging at least `min_bridge` qualify: at 0.95 `uneven` does not, and a slot
    // left without a bridge tag becomes an ordinary place.
    let strict = HashtagOptions {
        bridge_slots: 2,
        min_bridge: 0.95,
        ..no_bridge_weight
    };
    let hashtags = build(&s, strict);
    let picks = hashtags.recommend(&query(Some("en"), 3));
    assert_eq!(tags(&picks), ["big1", "big2", "even"]);
    let strictest = HashtagOptions {
        min_bridge: 1.0,
        bridge_slots: 3,
        ..no_bridge_weight
    };
    let hashtags = build(&s, strictest);
    let picks = hashtags.recommend(&query(Some("en"), 4));
    assert_eq!(tags(&picks), ["big1", "big2", "big3", "even"]);
    assert_eq!(picks[3].reason, Reason::Bridge);
}

#[test]
fn value_of_posts_lifts_a_tag_and_names_the_reason() {
    let valued = Stats {
        views: 100,
        saves: 30,
        comments: 10,
        ..Stats::default()
    };
    let mut posts = Vec::new();
    for i in 0..8 {
        posts.push(organic(i, "en", &["plain"], 1));
    }
    for i in 8..16 {
        let mut p = organic(i, "en", &["useful"], 1);
        p.stats = valued;
        posts.push(p);
    }
    let options = HashtagOptions {
        trending_weight: 0.1,
        ..no_variety()
    };
    let hashtags = build(&snapshot(posts, vec![], &[]), options);
    let picks = hashtags.recommend(&query(Some("en"), 2));
    assert_eq!(picks[0].tag, "useful");
    assert_eq!(picks[0].reason, Reason::HighValue);
    assert!(picks[0].score > picks[1].score);
}

/// Four tags, by activity `cats`, `kittens`, then `travel` and `food`: `cats` and `kittens`
/// share a direction, the others do not.
fn near_copies() -> Snapshot {
    let mut posts = Vec::new();
    let names = ["cats", "kittens", "travel", "food"];
    for (t, tag) in names.iter().enumerate() {
        let n = [6, 5, 4, 4][t];
        for i in 0..n {
            posts.push(organic(t * 10 + i, "en", &[tag], 1));
        }
    }
    let vectors = [
        ("cats", axis(0, 0.0)),
        ("kittens", axis(0, 0.1)),
        ("travel", axis(1, 0.0)),
        ("food", axis(2, 0.0)),
    ];
    snapshot(posts, vec![], &vectors)
}

#[test]
fn a_near_copy_of_a_chosen_tag_comes_only_when_nothing_else_is_left() {
    let snapshot = near_copies();
    let plain = build(&snapshot, no_variety());
    assert_eq!(
        tags(&plain.recommend(&query(Some("en"), 2))),
        ["cats", "kittens"]
    );
    let varied = build(&snapshot, HashtagOptions::default());
    let picks = varied.recommend(&query(Some("en"), 4));
    assert_eq!(picks[0].tag, "cats");
    assert_eq!(picks[3].tag, "kittens", "{picks:?}");
    // The variety pass takes off what it says: cats keeps its score, kittens is reduced.
    let plain_all = plain.recommend(&query(Some("en"), 4));
    let plain_kittens = plain_all.iter().find(|p| p.tag == "kittens").unwrap();
    assert!(picks[3].score < plain_kittens.score);
    assert_eq!(picks[0].score, plain_all[0].score);
}

#[test]
fn affinity_to_the_viewers_interests_leads_for_a_known_viewer() {
    let snapshot = near_copies();
    let hashtags = build(&snapshot, HashtagOptions::default());
    let interest = axis(2, 0.0);
    let interests: [&[f32]; 1] = [&interest];
    let picks = hashtags.recommend(&HashtagQuery {
        lang: Some("en"),
        interests: &interests,
        limit: 2,
        ..HashtagQuery::default()
    });
    assert_eq!(picks[0].tag, "food");
    assert_eq!(picks[0].reason, Reason::ForYou);
    assert_ne!(picks[1].reason, Reason::ForYou);
}

/// Three tags of equal activity along three axes, for the neighbour term.
fn three_topics() -> Snapshot {
    let mut posts = Vec::new();
    for (t, tag) in ["cats", "travel", "food"].iter().enumerate() {
        for i in 0..4 {
            posts.push(organic(t * 10 + i, "en", &[tag], 1));
        }
    }
    let vectors = [
        ("cats", axis(0, 0.0)),
        ("travel", axis(1, 0.0)),
        ("food", axis(2, 0.0)),
    ];
    snapshot(posts, vec![], &vectors)
}

fn follows(tags: &[&str]) -> Vec<String> {
    tags.iter().map(|t| t.to_string()).collect()
}

#[test]
fn neighbours_lift_the_tags_close_users_follow() {
    let hashtags = build(&three_topics(), no_variety());
    let interest = axis(0, 0.0);
    let interests: [&[f32]; 1] = [&interest];
    let picked = follows(&["cats"]);
    let alone = HashtagQuery {
        lang: Some("en"),
        interests: &interests,
        exclude: &picked,
        limit: 2,
        ..HashtagQuery::default()
    };
    // By the picked tag's vector alone, `food` and `travel` tie (both orthogonal to `cats`):
    // by name.
    assert_eq!(tags(&hashtags.recommend(&alone)), ["food", "travel"]);

    let (travellers, foodie, unknown) = (
        follows(&["travel", "cats"]),
        follows(&["food"]),
        follows(&["nosuchtag"]),
    );
    let neighbours = [
        HashtagNeighbour {
            similarity: 0.9,
            follows: &travellers,
        },
        HashtagNeighbour {
            similarity: 0.8,
            follows: &travellers,
        },
        HashtagNeighbour {
            similarity: 0.3,
            follows: &foodie,
        },
        HashtagNeighbour {
            similarity: 0.5,
            follows: &unknown,
        },
    ];
    let picks = hashtags.recommend(&HashtagQuery {
        neighbours: &neighbours,
        ..alone
    });
    assert_eq!(tags(&picks), ["travel", "food"]);
    assert_eq!(picks[0].reason, Reason::ForYou);
    // travel: (0.9 + 0.8) / 2.5 of the neighbour weight above food's 0.3 / 2.5.
    let weight = HashtagOptions::default().neighbour_weight;
    let gap = picks[0].score - picks[1].score;
    assert!((gap - weight * 1.4 / 2.5).abs() < 1e-5, "{picks:?}");
}

#[test]
fn neighbour_shares_floor_similarity_and_count_a_tag_once_per_neighbour() {
    let hashtags = build(&three_topics(), HashtagOptions::default());
    let id = |tag: &str| hashtags.ids[tag];
    let twice = follows(&["food", "food", "cats"]);
    let travel = follows(&["travel"]);
    let neighbours = [
        HashtagNeighbour {
            similarity: 0.5,
            follows: &twice,
        },
        HashtagNeighbour {
            similarity: -0.7,
            follows: &travel,
        },
        HashtagNeighbour {
            similarity: 0.5,
            follows: &[],
        },
    ];
    let shares = hashtags.neighbour_shares(&neighbours).unwrap();
    assert_eq!(shares[&id("food")], 0.5);
    assert_eq!(shares[&id("cats")], 0.5);
    assert!(!shares.contains_key(&id("travel")), "{shares:?}");
    // No neighbour with a positive similarity, or none following a known tag: no term.
    let far = [HashtagNeighbour {
        similarity: -0.2,
        follows: &travel,
    }];
    assert!(hashtags.neighbour_shares(&far).is_none());
    let nothing = [HashtagNeighbour {
        similarity: 0.9,
        follows: &[],
    }];
    assert!(hashtags.neighbour_shares(&nothing).is_none());
    assert!(hashtags.neighbour_shares(&[]).is_none());
}

#[test]
fn neighbours_following_nothing_leave_the_page_as_it_was() {
    let hashtags = build(&near_copies(), HashtagOptions::default());
    let interest = axis(2, 0.0);
    let interests: [&[f32]; 1] = [&interest];
    let alone = HashtagQuery {
        lang: Some("en"),
        interests: &interests,
        limit: 4,
        ..HashtagQuery::default()
    };
    let nobody = [HashtagNeighbour {
        similarity: 0.9,
        follows: &[],
    }];
    assert_eq!(
        hashtags.recommend(&alone),
        hashtags.recommend(&HashtagQuery {
            neighbours: &nobody,
            ..alone
        })
    );
}

#[test]
fn interests_group_picks_beyond_the_limit_with_their_nearest() {
    let vectors = [
        ("a", axis(0, 0.0)),
        ("b", axis(1, 0.0)),
        ("c", axis(2, 0.0)),
        ("d", axis(3, 0.0)),
        ("e", axis(0, 0.5)),
    ];
    let hashtags = build(
        &snapshot(vec![], vec![], &vectors),
        HashtagOptions::default(),
    );
    let picked: Vec<String> = ["a", "unknown", "b", "c", "d", "e"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let interests = hashtags.interests(&picked);
    assert_eq!(interests.len(), MAX_INTERESTS);
    // `e` (mostly axis 0) joined `a`: the first interest leans toward axis 1.
    assert!(
        interests[0][0] > 0.9 && interests[0][1] > 0.1,
        "{:?}",
        interests[0]
    );
    for (i, v) in interests.iter().enumerate().skip(1) {
        assert_eq!(v, &axis(i, 0.0).to_vec());
    }
    for v in &interests {
        assert!((dot(v, v) - 1.0).abs() < 1e-5);
    }
    assert!(hashtags.interests(&["unknown".to_string()]).is_empty());
}

#[test]
fn display_falls_back_to_english_then_to_the_tag() {
    let mut s = snapshot(
        vec![],
        vec![],
        &[("cats", axis(0, 0.0)), ("dogs", axis(1, 0.0))],
    );
    s.hashtags[0].display = [
        ("en".to_string(), "#Cats".to_string()),
        ("zh".to_string(), "#猫".to_string()),
    ]
    .into();
    let hashtags = build(&s, HashtagOptions::default());
    assert_eq!(hashtags.display("cats", Some("zh")), "#猫");
    assert_eq!(hashtags.display("cats", Some("fr")), "#Cats");
    assert_eq!(hashtags.display("cats", None), "#Cats");
    assert_eq!(hashtags.display("dogs", Some("zh")), "#dogs");
    assert_eq!(hashtags.display("nothing", Some("en")), "#nothing");
}

#[test]
fn a_tag_without_a_stored_vector_takes_its_posts_centroid() {
    let posts = (0..3).map(|i| organic(i, "en", &["cats"], 1)).collect();
    let hashtags = build(&snapshot(posts, vec![], &[]), HashtagOptions::default());
    let v = hashtags.vector("cats").unwrap();
    assert!((v[0] - 1.0).abs() < 1e-6);
    assert_eq!(hashtags.vector("dogs"), None);
}

#[test]
fn options_out_of_range_are_named() {
    let bad = [
        HashtagOptions {
            velocity_share: 1.5,
            ..HashtagOptions::default()
        },
        HashtagOptions {
            bridge_weight: -1.0,
            ..HashtagOptions::default()
        },
        HashtagOptions {
            near_duplicate: 0.0,
            ..HashtagOptions::default()
        },
        HashtagOptions {
            neighbour_weight: f32::NAN,
            ..HashtagOptions::default()
        },
        HashtagOptions {
            velocity_window_hours: 0,
            ..HashtagOptions::default()
        },
    ];
    let names = [
        "velocity_share",
        "bridge_weight",
        "near_duplicate",
        "neighbour_weight",
        "velocity_window_hours",
    ];
    for (options, name) in bad.iter().zip(names) {
        let err = options.validate().unwrap_err();
        assert!(err.starts_with(&format!("hashtags.{name}:")), "{err}");
    }
    assert_eq!(HashtagOptions::default().validate(), Ok(()));
}

// --- Against a naive reference -------------------------------------------------------------

/// A random post: tag ids (0..6), language (0 en, 1 zh, 2 mixed), kind (0 organic, 1 ad,
/// 2 sponsored), age in hours, reported or not.
type RawPost = (Vec<usize>, usize, usize, i64, bool);

const TAGS: [&str; 6] = ["t0", "t1", "t2", "t3", "t4", "t5"];
const LANGS: [&str; 3] = ["en", "zh", "mixed"];

fn world(raw: &[RawPost]) -> Snapshot {
    snapshot(raw_posts(raw), vec![], &[])
}

fn raw_posts(raw: &[RawPost]) -> Vec<Post> {
    let kinds = [PostKind::Organic, PostKind::Ad, PostKind::Sponsored];
    raw.iter()
        .enumerate()
        .map(|(i, (tags, lang, kind, age, reported))| {
            let mut names: Vec<&str> = tags.iter().map(|&t| TAGS[t]).collect();
            names.dedup();
            let mut p = post(i, LANGS[*lang], &names, kinds[*kind], *age);
            if *reported {
                p.stats = Stats {
                    views: 10,
                    reports: 9,
                    ..Stats::default()
                };
            }
            p
        })
        .collect()
}

/// A random neighbour: similarity and the tag ids (0..7, 6 being a tag no post has) it follows.
type RawNeighbour = (f32, Vec<usize>);

fn tag_name(t: usize) -> &'static str {
    TAGS.get(t).copied().unwrap_or("unknown")
}

/// The trending term and eligibility of each tag, computed from the raw posts the long way,
/// then the top `limit` by weighed score (no variety), as the module docs define them.
fn naive(raw: &[RawPost], options: &HashtagOptions, lang: usize, limit: usize) -> Vec<String> {
    naive_with_neighbours(raw, &[], options, lang, limit)
}

/// [`naive`] with the neighbour term: per tag, the sum of the (floored) similarities of the
/// neighbours following it, over the sum of all of them.
fn naive_with_neighbours(
    raw: &[RawPost],
    neighbours: &[RawNeighbour],
    options: &HashtagOptions,
    lang: usize,
    limit: usize,
) -> Vec<String> {
    let total: f32 = neighbours.iter().map(|n| n.0.max(0.0)).sum();
    let share = |t: usize| -> f32 {
        if total <= 0.0 {
            return 0.0;
        }
        let mut sum = 0.0f32;
        for (similarity, follows) in neighbours {
            if *similarity > 0.0 && follows.contains(&t) {
                sum += similarity;
            }
        }
        (sum / total).min(1.0)
    };
    let window = i64::from(options.velocity_window_hours);
    let mut eligible = Vec::new();
    let mut activity: HashMap<usize, (f32, f32)> = HashMap::new();
    for t in 0..TAGS.len() {
        let with: Vec<&RawPost> = raw.iter().filter(|p| p.0.contains(&t)).collect();
        let organic = with.iter().filter(|p| p.2 == 0 && !p.4).count() as f32;
        let paid = with.iter().filter(|p| p.2 != 0).count() as f32;
        let reported = with.iter().filter(|p| p.4).count() as f32;
        let all = with.len() as f32;
        if organic >= options.min_posts.max(1) as f32
            && paid <= options.max_paid_share * all
            && reported <= options.max_reported_share * all
        {
            eligible.push(t);
        }
        let counted = |p: &&&RawPost| p.2 != 1 && !p.4;
        // A language no post has: every community counts in full.
        let known = raw.iter().any(|p| p.1 == lang);
        let weight = |p: &RawPost| match p.1 {
            _ if !known => 1.0,
            l if l == lang => 1.0,
            2 => 0.5,
            _ => 0.0,
        };
        let total: f32 = with.iter().filter(counted).map(|p| weight(p)).sum();
        let recent: f32 = with
            .iter()
            .filter(counted)
            .filter(|p| p.3 <= window)
            .map(|p| weight(p))
            .sum();
        activity.insert(t, (recent.ln_1p(), total.ln_1p()));
    }
    let max_recent = eligible.iter().map(|t| activity[t].0).fold(0.0, f32::max);
    let max_total = eligible.iter().map(|t| activity[t].1).fold(0.0, f32::max);
    let ratio = |x: f32, m: f32| if m > 0.0 { x / m } else { 0.0 };
    let mut scored: Vec<(f32, &str)> = eligible
        .iter()
        .map(|t| {
            let (recent, total) = activity[t];
            let trending = options.velocity_share * ratio(recent, max_recent)
                + (1.0 - options.velocity_share) * ratio(total, max_total);
            let social = options.neighbour_weight * share(*t);
            (social + options.trending_weight * trending, TAGS[*t])
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    scored
        .into_iter()
        .take(limit)
        .map(|(_, t)| t.to_string())
        .collect()
}

fn raw_neighbour() -> impl Strategy<Value = RawNeighbour> {
    (-0.5f32..1.0, prop::collection::vec(0..TAGS.len() + 1, 0..4))
}

fn raw_post() -> impl Strategy<Value = RawPost> {
    (
        prop::collection::vec(0..TAGS.len(), 1..3),
        0..3usize,
        prop::sample::select(vec![0usize, 0, 0, 1, 2]),
        0..200i64,
        prop::bool::weighted(0.15),
    )
}

proptest! {
    /// With value and bridge weighed zero and no variety pass, the recommendation is exactly
    /// the naive top-k by trending among eligible tags.
    #[test]
    fn trending_and_eligibility_match_a_naive_reference(
        raw in prop::collection::vec(raw_post(), 0..60),
        lang in 0..2usize,
        limit in 1..7usize,
        velocity_share in 0.0f32..=1.0,
    ) {
        let options = HashtagOptions {
            value_weight: 0.0,
            bridge_weight: 0.0,
            velocity_share,
            velocity_window_hours: 48,
            ..no_variety()
        };
        let hashtags = build(&world(&raw), options);
        let got: Vec<String> = hashtags
            .recommend(&query(Some(LANGS[lang]), limit))
            .iter()
            .map(|p| p.tag.to_string())
            .collect();
        prop_assert_eq!(got, naive(&raw, &options, lang, limit));
    }

    /// With the neighbour term too: the naive top-k by trending plus the similarity-weighted
    /// share of neighbours following each tag.
    #[test]
    fn neighbour_shares_match_a_naive_reference(
        raw in prop::collection::vec(raw_post(), 0..60),
        neighbours in prop::collection::vec(raw_neighbour(), 0..8),
        limit in 1..7usize,
        neighbour_weight in 0.0f32..3.0,
    ) {
        let options = HashtagOptions {
            value_weight: 0.0,
            bridge_weight: 0.0,
            neighbour_weight,
            velocity_window_hours: 48,
            ..no_variety()
        };
        let hashtags = build(&world(&raw), options);
        let lists: Vec<Vec<String>> = neighbours
            .iter()
            .map(|n| n.1.iter().map(|&t| tag_name(t).to_string()).collect())
            .collect();
        let given: Vec<HashtagNeighbour<'_>> = neighbours
            .iter()
            .zip(&lists)
            .map(|(n, follows)| HashtagNeighbour { similarity: n.0, follows })
            .collect();
        let got: Vec<String> = hashtags
            .recommend(&HashtagQuery {
                lang: Some("en"),
                neighbours: &given,
                limit,
                ..HashtagQuery::default()
            })
            .iter()
            .map(|p| p.tag.to_string())
            .collect();
        // A tag listed twice by one neighbour counts once.
        let distinct: Vec<RawNeighbour> = neighbours
            .iter()
            .map(|(s, f)| {
                let mut f = f.clone();
                f.sort_unstable();
                f.dedup();
                (*s, f)
            })
            .collect();
        prop_assert_eq!(got, naive_with_neighbours(&raw, &distinct, &options, 0, limit));
    }

    /// Posts published after the snapshot count as if the snapshot had held them: the same
    /// recommendation as the naive reference over all posts.
    #[test]
    fn published_posts_count_as_snapshot_posts_do(
        base in prop::collection::vec(raw_post(), 0..40),
        published in prop::collection::vec(raw_post(), 0..40),
        lang in 0..2usize,
        limit in 1..7usize,
    ) {
        let options = HashtagOptions {
            value_weight: 0.0,
            bridge_weight: 0.0,
            velocity_window_hours: 48,
            ..no_variety()
        };
        // The newest post and both languages are in the snapshot, so "now" and the language
        // communities are the same with or without the published posts; every tag is in its
        // table (tags new to a model are not recommended before a snapshot has them).
        let mut raw: Vec<RawPost> = vec![(vec![0], 0, 0, 0, false), (vec![1], 1, 0, 0, false)];
        raw.extend(base);
        let table: Vec<(&str, [f32; DIM])> = TAGS.iter().map(|&t| (t, axis(0, 0.0))).collect();
        let hashtags = build(&snapshot(raw_posts(&raw), vec![], &table), options);
        let scoring = ScoringConfig::default();
        let all: Vec<RawPost> = raw.iter().chain(&published).cloned().collect();
        for post in &raw_posts(&all)[raw.len()..] {
            let reported = scoring::reported_past_threshold(&post.stats, &scoring);
            let count = PostCount {
                organic: post.kind == PostKind::Organic && !reported,
                reported,
                value: scoring::value_score(&post.stats, &scoring),
            };
            hashtags.record_published(&post.hashtags, &post.lang, post.kind, post.created_at, count);
        }
        let got: Vec<String> = hashtags
            .recommend(&query(Some(LANGS[lang]), limit))
            .iter()
            .map(|p| p.tag.to_string())
            .collect();
        prop_assert_eq!(got, naive(&all, &options, lang, limit));
    }

    /// Whatever the options, a page holds distinct eligible tags, never an excluded one, and
    /// as many as asked for when there are enough.
    #[test]
    fn a_page_is_distinct_eligible_and_full(
        raw in prop::collection::vec(raw_post(), 0..60),
        limit in 1..7usize,
        diversity_weight in 0.0f32..2.0,
        near_duplicate in 0.05f32..=1.0,
        excluded in 0..TAGS.len(),
    ) {
        let options = HashtagOptions { diversity_weight, near_duplicate, ..HashtagOptions::default() };
        let snapshot = world(&raw);
        let hashtags = build(&snapshot, options);
        let exclude = vec![TAGS[excluded].to_string()];
        let picks = hashtags.recommend(&HashtagQuery {
            lang: Some("en"),
            exclude: &exclude,
            limit,
            ..HashtagQuery::default()
        });
        let eligible: Vec<&str> = naive(&raw, &options, 0, TAGS.len())
            .iter()
            .filter_map(|t| TAGS.iter().copied().find(|x| x == t))
            .filter(|t| *t != TAGS[excluded])
            .collect();
        let mut got = tags(&picks);
        prop_assert_eq!(got.len(), limit.min(eligible.len()));
        for t in &got {
            prop_assert!(eligible.contains(t), "{} is not eligible", t);
        }
        got.sort();
        got.dedup();
        prop_assert_eq!(got.len(), picks.len());
    }
}

#[test]
fn live_changes_move_a_tags_value_and_eligibility() {
    let mut posts = Vec::new();
    for i in 0..8 {
        posts.push(organic(i, "en", &["plain"], 1));
    }
    for i in 8..16 {
        posts.push(organic(i, "en", &["other"], 1));
    }
    let options = HashtagOptions {
        trending_weight: 0.1,
        ..no_variety()
    };
    let hashtags = build(&snapshot(posts, vec![], &[]), options);
    assert_eq!(hashtags.eligible(), 2);
    let counted = |value: f32| PostCount {
        organic: true,
        reported: false,
        value,
    };
    // Four of `plain`'s posts become valuable: it leads on value.
    let tags = vec!["plain".to_string()];
    for _ in 0..4 {
        hashtags.record_post_change(&tags, counted(0.0), counted(0.9));
    }
    let picks = hashtags.recommend(&query(Some("en"), 2));
    assert_eq!(
        (picks[0].tag, picks[0].reason),
        ("plain", Reason::HighValue)
    );
    // Reports take two of `other`'s posts past the threshold: 2 of 8 is above the 20% a tag
    // may carry, and it leaves the recommendations.
    let tags = vec!["other".to_string()];
    let reported = PostCount {
        organic: false,
        reported: true,
        value: 0.0,
    };
    hashtags.record_post_change(&tags, counted(0.0), reported);
    assert_eq!(hashtags.eligible(), 2, "1 of 8 is allowed");
    hashtags.record_post_change(&tags, counted(0.0), reported);
    assert_eq!(hashtags.eligible(), 1);
    assert_eq!(tags_of_page(&hashtags), ["plain"]);
    // A change that changes nothing is ignored.
    hashtags.record_post_change(&tags, reported, reported);
    assert_eq!(hashtags.eligible(), 1);
}

#[test]
fn onboarding_follows_count_as_recent_followers_and_leave_with_a_change() {
    let mut posts = Vec::new();
    for i in 0..6 {
        posts.push(organic(i, "en", &["quiet"], 500));
        posts.push(organic(i + 6, "en", &["busy"], 500));
    }
    posts.push(organic(12, "en", &["busy"], 500));
    let options = HashtagOptions {
        value_weight: 0.0,
        bridge_weight: 0.0,
        velocity_share: 1.0,
        ..no_variety()
    };
    let hashtags = build(&snapshot(posts, vec![], &[]), options);
    let by_activity = |h: &Hashtags| -> Vec<String> {
        h.recommend(&query(Some("en"), 2))
            .iter()
            .map(|p| p.tag.to_string())
            .collect()
    };
    // Nothing recent: ties broken by name.
    assert_eq!(by_activity(&hashtags), ["busy", "quiet"]);
    let quiet = vec!["quiet".to_string()];
    let en = vec!["en".to_string()];
    hashtags.record_follows(&quiet, &en, 1, true);
    assert_eq!(by_activity(&hashtags), ["quiet", "busy"]);
    // A follower in a language no post or user has counts nowhere.
    let busy = vec!["busy".to_string()];
    hashtags.record_follows(&busy, &["fr".to_string()], 1, true);
    hashtags.record_follows(&busy, &["fr".to_string()], 1, true);
    assert_eq!(by_activity(&hashtags), ["quiet", "busy"]);
    // The follower changes their picks.
    hashtags.record_follows(&quiet, &en, -1, true);
    hashtags.record_follows(&busy, &en, 1, true);
    hashtags.record_follows(&busy, &en, 1, true);
    assert_eq!(by_activity(&hashtags), ["busy", "quiet"]);
}

fn tags_of_page(hashtags: &Hashtags) -> Vec<&str> {
    tags(&hashtags.recommend(&query(Some("en"), 10)))
}
