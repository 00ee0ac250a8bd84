//! Newcomers through the HTTP API, in-process (`tower::ServiceExt::oneshot`) and over a real
//! socket, on a demo world whose hidden topics say what each post and hashtag is about:
//! hashtag recommendations for users the model knows nothing of, onboarding with
//! `PUT /v1/users/{id}`, and the first feed after it.
//!
//! Expectations come from the snapshot's raw data and the demo's ground truth (topics, raw
//! vectors), never from the code under test.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};

use feedrank::api::{self, AppState};

mod common;
use common::{Server, cosine, get, post_ids, raw_http, send};
use feedrank::candidates::{IndexKind, UserOptions};
use feedrank::demo::{self, DemoConfig, GroundTruth};
use feedrank::feed::{FeedOptions, Model};
use feedrank::policy::PolicyConfig;
use feedrank::snapshot::{
    FORMAT_VERSION, Hashtag, Manifest, Metric, Post, PostKind, Snapshot, Stats, User,
};

fn world() -> &'static (Snapshot, GroundTruth) {
    static WORLD: OnceLock<(Snapshot, GroundTruth)> = OnceLock::new();
    WORLD.get_or_init(|| {
        demo::generate_with_truth(&DemoConfig {
            posts: 4_000,
            users: 300,
            seed: 11,
            dim: 32,
        })
        .unwrap()
    })
}

fn snapshot() -> &'static Snapshot {
    &world().0
}

fn model() -> Arc<Model> {
    static MODEL: OnceLock<Arc<Model>> = OnceLock::new();
    MODEL
        .get_or_init(|| Arc::new(common::exact_model(snapshot())))
        .clone()
}

fn app_with(state: Arc<AppState>) -> axum::Router {
    state.serve_model(model());
    api::router(state)
}

fn app() -> axum::Router {
    app_with(AppState::new(Duration::from_secs(5)))
}

async fn put(app: &axum::Router, uri: &str, body: impl Into<Body>) -> (StatusCode, Value) {
    let request = Request::put(uri)
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap();
    send(app, request).await
}

fn row_of(post_id: &str) -> usize {
    static ROWS: OnceLock<HashMap<String, usize>> = OnceLock::new();
    ROWS.get_or_init(|| {
        snapshot()
            .posts
            .iter()
            .enumerate()
            .map(|(i, p)| (p.id.clone(), i))
            .collect()
    })[post_id]
}

fn hashtag_row(tag: &str) -> usize {
    snapshot()
        .hashtags
        .iter()
        .position(|h| h.tag == tag)
        .unwrap_or_else(|| panic!("{tag} is not in hashtags.jsonl"))
}

fn hashtag_vector(tag: &str) -> Vec<f32> {
    snapshot().hashtag_vectors.row(hashtag_row(tag)).to_vec()
}

/// The topic of a hashtag, or for the cross-topic newcomer tags the tag itself.
fn topic_of(tag: &str) -> String {
    match world().1.hashtag_topic[hashtag_row(tag)] {
        Some(t) => world().1.topics[t].key.to_string(),
        None => format!("newcomer:{tag}"),
    }
}

fn tags_of(page: &Value) -> Vec<String> {
    page["hashtags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["tag"].as_str().unwrap().to_string())
        .collect()
}

/// Organic and paid (ads, sponsored) posts carrying `tag`, counted from the raw posts.
fn post_counts(tag: &str) -> (usize, usize) {
    let with: Vec<_> = snapshot()
        .posts
        .iter()
        .filter(|p| p.hashtags.iter().any(|h| h == tag))
        .collect();
    let organic = with.iter().filter(|p| p.kind == PostKind::Organic).count();
    (organic, with.len() - organic)
}

#[tokio::test]
async fn a_new_english_speaking_user_gets_ten_varied_hashtags_with_bridges() {
    let app = app();
    let (status, page) = get(&app, "/v1/users/newcomer-1/hashtags?lang=en").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["lang"], "en");
    assert_eq!(page["personal"], false);
    assert_eq!(page["model_version"], "demo-11");
    let tags = tags_of(&page);
    assert_eq!(tags.len(), 10, "{page}");
    assert_eq!(tags.iter().collect::<HashSet<_>>().len(), 10, "distinct");

    let items = page["hashtags"].as_array().unwrap();
    let reasons: Vec<&str> = items
        .iter()
        .map(|h| h["reason"].as_str().unwrap())
        .collect();
    for r in &reasons {
        assert!(
            ["trending", "bridge", "high_value"].contains(r),
            "{r}: a newcomer has no personal reason"
        );
    }
    assert!(reasons.contains(&"bridge"), "{reasons:?}");
    let scores: Vec<f64> = items.iter().map(|h| h["score"].as_f64().unwrap()).collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "best first: {scores:?}"
    );

    // Several topics; no two near-identical tags (raw vectors, the default threshold 0.9).
    let topics: HashSet<String> = tags.iter().map(|t| topic_of(t)).collect();
    assert!(topics.len() >= 5, "{tags:?} span {topics:?}");
    for (i, a) in tags.iter().enumerate() {
        for b in &tags[i + 1..] {
            let c = cosine(&hashtag_vector(a), &hashtag_vector(b));
            assert!(c < 0.9, "{a} and {b}: cosine {c:.3}");
        }
    }
    for (tag, item) in tags.iter().zip(items) {
        // Enough organic posts, not carried by ads.
        let (organic, paid) = post_counts(tag);
        assert!(
            organic >= 3 && 2 * paid <= organic + paid,
            "{tag}: {organic} / {paid}"
        );
        let display = &snapshot().hashtags[hashtag_row(tag)].display;
        assert_eq!(
            item["display"].as_str(),
            display.get("en").map(String::as_str)
        );
    }
}

#[tokio::test]
async fn a_chinese_speaking_user_gets_chinese_display_forms() {
    let app = app();
    let (status, page) = get(&app, "/v1/users/newcomer-2/hashtags?lang=zh&limit=8").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["lang"], "zh");
    let items = page["hashtags"].as_array().unwrap();
    assert_eq!(items.len(), 8);
    for item in items {
        let tag = item["tag"].as_str().unwrap();
        let display = &snapshot().hashtags[hashtag_row(tag)].display;
        let zh = display
            .get("zh")
            .expect("the demo has a Chinese form of every tag");
        assert_eq!(item["display"].as_str(), Some(zh.as_str()), "{tag}");
    }
    let chinese = items
        .iter()
        .filter(|h| !h["display"].as_str().unwrap().is_ascii())
        .count();
    assert!(chinese >= 6, "{page}");

    // Language from the request, else from the profile.
    let (status, _) = put(&app, "/v1/users/newcomer-2", r#"{"langs": ["zh"]}"#).await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, page) = get(&app, "/v1/users/newcomer-2/hashtags").await;
    assert_eq!(page["lang"], "zh");
}

/// Share of `items` whose post carries one of `picked` or is about (ground truth) the topic of
/// one of them.
fn share_about(items: &[String], picked: &[&str]) -> f64 {
    let topics: HashSet<usize> = picked
        .iter()
        .filter_map(|t| world().1.hashtag_topic[hashtag_row(t)])
        .collect();
    let about = items
        .iter()
        .filter(|id| {
            let row = row_of(id);
            let post = &snapshot().posts[row];
            post.hashtags.iter().any(|h| picked.contains(&h.as_str()))
                || topics.contains(&world().1.post_topic[row])
        })
        .count();
    about as f64 / items.len() as f64
}

#[tokio::test]
async fn after_onboarding_the_next_feed_is_about_the_picked_hashtags_and_keeps_the_policy() {
    let app = app();
    let picked = ["cats", "food"];
    let user = "/v1/users/newcomer-3";

    let (status, before) = get(&app, &format!("{user}/feed?limit=20")).await;
    assert_eq!(status, StatusCode::OK);
    let before_share = share_about(&post_ids(&before), &picked);

    let body = json!({"langs": ["EN"], "follows": ["#Cats", "food"]}).to_string();
    let (status, view) = put(&app, user, body).await;
    assert_eq!(status, StatusCode::CREATED, "{view}");
    assert_eq!(
        view,
        json!({"user_id": "newcomer-3", "langs": ["en"], "follows": ["cats", "food"],
               "onboarded": true, "in_model": false, "unknown_hashtags": []})
    );

    let (status, after) = get(&app, &format!("{user}/feed?limit=20")).await;
    assert_eq!(status, StatusCode::OK);
    let items = post_ids(&after);
    assert_eq!(items.len(), 20);
    let after_share = share_about(&items, &picked);
    assert!(
        after_share > 0.5 && after_share > before_share,
        "page 1 about {picked:?}: {after_share:.2} after, {before_share:.2} before"
    );
    eprintln!(
        "page 1 about {picked:?}: {after_share:.2} after onboarding, {before_share:.2} before"
    );
    // Both picks are represented, not only the stronger one.
    for tag in picked {
        assert!(share_about(&items, &[tag]) >= 0.15, "{tag}: {after}");
    }

    // The policy holds: distinct posts, authors capped per page, ads late, spaced and
    // relevant to what the user picked.
    let policy = PolicyConfig::default();
    assert_eq!(items.iter().collect::<HashSet<_>>().len(), 20);
    let mut per_author: HashMap<&str, usize> = HashMap::new();
    let mut organic_since_ad: Option<usize> = None;
    let mut organic = 0;
    let mut interest = vec![0.0f32; snapshot().dim()];
    for tag in picked {
        let v = hashtag_vector(tag);
        let norm = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
        for (m, x) in interest.iter_mut().zip(&v) {
            *m += (f64::from(*x) / norm) as f32;
        }
    }
    for id in &items {
        let post = &snapshot().posts[row_of(id)];
        *per_author.entry(&post.author).or_default() += 1;
        if post.kind == PostKind::Ad {
            assert!(organic >= policy.first_ad_position, "{id}: ad too early");
            if let Some(since) = organic_since_ad {
                assert!(since >= policy.organic_per_ad, "{id}: ads too close");
            }
            let relevance = cosine(&interest, &snapshot().post_vectors.row(row_of(id)).to_vec());
            assert!(
                relevance >= f64::from(policy.ad_min_relevance) - 1e-5,
                "{id}: ad relevance {relevance:.3}"
            );
            organic_since_ad = Some(0);
        } else {
            organic += 1;
            if let Some(since) = organic_since_ad.as_mut() {
                *since += 1;
            }
        }
    }
    for (author, n) in per_author {
        assert!(n <= policy.max_per_author_per_page, "{author}: {n} posts");
    }

    // The user's hashtag recommendations are now personal and leave out what they follow.
    let (status, page) = get(&app, &format!("{user}/hashtags")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["personal"], true);
    let tags = tags_of(&page);
    assert!(
        !tags.iter().any(|t| picked.contains(&t.as_str())),
        "{tags:?}"
    );
    let reasons: Vec<&str> = page["hashtags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["reason"].as_str().unwrap())
        .collect();
    assert!(reasons.contains(&"for_you"), "{reasons:?}");
}

#[tokio::test]
async fn onboarding_creates_then_updates_and_reads_back() {
    let app = app();
    let (status, body) = get(&app, "/v1/users/newcomer-4").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("unknown_user"))
    );

    let (status, view) = put(&app, "/v1/users/newcomer-4", r#"{"langs": ["en"]}"#).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(view["follows"], json!([]));
    let (status, view) = put(
        &app,
        "/v1/users/newcomer-4",
        r#"{"langs": ["en", "zh"], "follows": ["cats", "nosuchtag"]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "an update");
    assert_eq!(view["unknown_hashtags"], json!(["nosuchtag"]));
    let (status, read) = get(&app, "/v1/users/newcomer-4").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read["langs"], json!(["en", "zh"]));
    assert_eq!(read["follows"], json!(["cats", "nosuchtag"]));

    // A user of the snapshot reads back as such.
    let known = &snapshot().users[0];
    let (status, read) = get(&app, &format!("/v1/users/{}", known.id)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read["in_model"], true);
    assert_eq!(read["onboarded"], false);
    assert_eq!(read["langs"], json!(known.langs));
}

#[tokio::test]
async fn bad_profiles_are_refused_naming_the_field() {
    let app = app();
    let long_tag = "x".repeat(129);
    let many: Vec<String> = (0..51).map(|i| format!("tag{i}")).collect();
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!({"langs": []}), "invalid_langs", "langs"),
        (json!({"langs": ["english!"]}), "invalid_langs", "langs[0]"),
        (
            json!({"langs": ["en", "mixed"]}),
            "invalid_langs",
            "langs[1]",
        ),
        (
            json!({"langs": ["en"], "follows": [""]}),
            "invalid_follows",
            "follows[0]",
        ),
        (
            json!({"langs": ["en"], "follows": ["ok", "two words"]}),
            "invalid_follows",
            "follows[1]",
        ),
        (
            json!({"langs": ["en"], "follows": [long_tag]}),
            "invalid_follows",
            "follows[0]",
        ),
        (
            json!({"langs": ["en"], "follows": many}),
            "invalid_follows",
            "follows",
        ),
        (
            json!({"langs": ["en"], "folows": ["cats"]}),
            "invalid_body",
            "folows",
        ),
        (json!({"langs": "en"}), "invalid_body", "langs"),
        (json!({"follows": ["cats"]}), "invalid_body", "langs"),
    ];
    for (body, code, field) in cases {
        let (status, error) = put(&app, "/v1/users/newcomer-5", body.to_string()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {error}");
        assert_eq!(error["code"], code, "{body}: {error}");
        let message = error["message"].as_str().unwrap();
        assert!(
            message.contains(field),
            "{body}: `{message}` names no {field}"
        );
    }
    let (status, error) = put(&app, "/v1/users/newcomer-5", "{not json").await;
    assert_eq!(
        (status, error["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_body"))
    );
    let huge = format!(
        r#"{{"langs": ["en"], "follows": ["{}"]}}"#,
        "a".repeat(20_000)
    );
    let (status, error) = put(&app, "/v1/users/newcomer-5", huge).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"))
    );
    // Nothing was stored by any of them.
    let (status, _) = get(&app, "/v1/users/newcomer-5").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_full_profile_store_refuses_new_users_but_keeps_updating_known_ones() {
    let app = app_with(AppState::with_profile_capacity(Duration::from_secs(5), 1));
    let body = r#"{"langs": ["en"], "follows": ["cats"]}"#;
    let (status, _) = put(&app, "/v1/users/first", body).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, error) = put(&app, "/v1/users/second", body).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("profiles_full"))
    );
    let (status, _) = put(&app, "/v1/users/first", r#"{"langs": ["zh"]}"#).await;
    assert_eq!(status, StatusCode::OK);
    let (_, read) = get(&app, "/v1/users/first").await;
    assert_eq!(read["langs"], json!(["zh"]));
}

#[tokio::test]
async fn bad_hashtag_requests_are_refused() {
    let app = app();
    let cases = [
        ("limit=0", "invalid_limit"),
        ("limit=51", "invalid_limit"),
        ("limit=ten", "invalid_limit"),
        ("lang=mixed", "invalid_lang"),
        ("lang=e!", "invalid_lang"),
    ];
    for (query, code) in cases {
        let (status, error) = get(&app, &format!("/v1/users/u/hashtags?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {error}");
        assert_eq!(error["code"], code, "{query}: {error}");
    }
}

#[tokio::test]
async fn onboarding_over_a_real_socket() {
    let state = AppState::new(Duration::from_secs(5));
    state.serve_model(model());
    let server = Server::start(state).await;
    let addr = server.addr;

    let (status, page) = raw_http(addr, "GET", "/v1/users/socket-user/hashtags?limit=5", "").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["hashtags"].as_array().unwrap().len(), 5);
    let (status, view) = raw_http(
        addr,
        "PUT",
        "/v1/users/socket-user",
        r#"{"langs": ["en"], "follows": ["food"]}"#,
    )
    .await;
    assert_eq!(status, 201, "{view}");
    let (status, page) = raw_http(addr, "GET", "/v1/users/socket-user/feed?limit=10", "").await;
    assert_eq!(status, 200);
    assert!(share_about(&post_ids(&page), &["food"]) > 0.5, "{page}");
    let (status, error) = raw_http(addr, "PUT", "/v1/users/socket-user", r#"{"langs": []}"#).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (400, Some("invalid_langs"))
    );

    server.stop().await;
}

/// A small constructed world for the neighbour term (6-d, every row a unit vector):
///
/// - tags: `cats` (axis 0); `dogs`, mostly axis 0, the tag the pick's own vector ranks;
///   `knitting` (axis 1), `travel` (axis 2) and `food` (axis 3), orthogonal to `cats`;
/// - posts, all English and recent: `travel` and `food` 30 each, `cats` 10, `dogs` 6 and
///   `knitting` 3 (eligible, and the least active);
/// - users: five who follow `cats` and `knitting`, their vectors between axes 0 and 1, and
///   five who follow `travel`, along axis 2.
///
/// A newcomer who picks `cats` is placed among the five `cats` followers, who all follow
/// `knitting`: a tag nothing about `cats` itself points to.
fn knitting_world() -> Snapshot {
    const DIM: usize = 6;
    let unit = |v: [f32; DIM]| {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.map(|x| x / norm)
    };
    let axis = |i: usize| {
        let mut v = [0.0; DIM];
        v[i] = 1.0;
        v
    };
    let tags: [(&str, [f32; DIM], usize); 5] = [
        ("cats", axis(0), 10),
        ("dogs", unit([0.9, 0.0, 0.0, 0.0, 0.0, 0.44]), 6),
        ("knitting", axis(1), 3),
        ("travel", axis(2), 30),
        ("food", axis(3), 30),
    ];
    let now = 1_700_000_000;
    let mut posts = Vec::new();
    let mut post_rows = Vec::new();
    for (tag, vector, n) in &tags {
        for i in 0..*n {
            posts.push(Post {
                id: format!("{tag}-{i}"),
                author: format!("author-{tag}-{i}"),
                lang: "en".into(),
                hashtags: vec![tag.to_string()],
                kind: PostKind::Organic,
                created_at: now - 3600,
                stats: Stats::default(),
            });
            post_rows.extend_from_slice(vector);
        }
    }
    let mut users = Vec::new();
    let mut user_rows = Vec::new();
    for i in 0..10 {
        let (follows, vector) = if i < 5 {
            (
                vec!["cats", "knitting"],
                unit([1.0, 1.0, 0.0, 0.0, 0.0, 0.0]),
            )
        } else {
            (vec!["travel"], axis(2))
        };
        users.push(User {
            id: format!("u{i}"),
            langs: vec!["en".into()],
            created_at: now - 1000 * 3600,
            follows: follows.into_iter().map(String::from).collect(),
        });
        user_rows.extend_from_slice(&vector);
    }
    let matrix =
        |rows: Vec<f32>| ndarray::Array2::from_shape_vec((rows.len() / DIM, DIM), rows).unwrap();
    Snapshot {
        manifest: Manifest {
            format_version: FORMAT_VERSION,
            model_version: "knitting".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            dim: DIM,
            metric: Metric::Cosine,
            files: Default::default(),
            scoring: Default::default(),
        },
        post_vectors: matrix(post_rows),
        posts,
        user_vectors: matrix(user_rows),
        users,
        hashtags: tags
            .iter()
            .map(|(tag, _, _)| Hashtag {
                tag: tag.to_string(),
                display: Default::default(),
            })
            .collect(),
        hashtag_vectors: matrix(tags.iter().flat_map(|t| t.1).collect()),
    }
}

/// The hashtags recommended to a newcomer who picked `cats`, onboarded through the API of a
/// model of `knitting_world` with `newcomer_neighbours` as given: tags and reasons.
async fn knitting_page(newcomer_neighbours: bool) -> Vec<(String, String)> {
    let options = FeedOptions {
        index: IndexKind::Exact,
        users: UserOptions {
            newcomer_neighbours,
            ..UserOptions::default()
        },
        ..FeedOptions::default()
    };
    let model = Model::build(knitting_world(), options).unwrap();
    let state = AppState::new(Duration::from_secs(5));
    state.serve_model(Arc::new(model));
    let app = api::router(state);
    let (status, view) = put(
        &app,
        "/v1/users/knitter",
        r#"{"langs": ["en"], "follows": ["cats"]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{view}");
    let (status, page) = get(&app, "/v1/users/knitter/hashtags?limit=3").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["personal"], true);
    page["hashtags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let field = |name: &str| h[name].as_str().unwrap().to_string();
            (field("tag"), field("reason"))
        })
        .collect()
}

#[tokio::test]
async fn a_newcomer_is_offered_what_the_users_they_are_placed_among_follow() {
    // Nothing about the pick points to `knitting`: its vector is orthogonal to `cats`, and it
    // is the least active tag.
    let world = knitting_world();
    let vector = |tag: &str| {
        let row = world.hashtags.iter().position(|h| h.tag == tag).unwrap();
        world.hashtag_vectors.row(row).to_vec()
    };
    assert_eq!(cosine(&vector("cats"), &vector("knitting")), 0.0);

    // Without neighbours, the pick's own vector and activity choose the page: no `knitting`.
    let alone = knitting_page(false).await;
    let tags: Vec<&str> = alone.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(tags, ["dogs", "travel", "food"], "{alone:?}");

    // With them (the default), the newcomer is placed among the `cats` followers, all of whom
    // follow `knitting`: it is offered, for the user.
    assert!(UserOptions::default().newcomer_neighbours);
    let placed = knitting_page(true).await;
    let knitting = placed.iter().find(|(t, _)| t == "knitting");
    assert_eq!(
        knitting.map(|(_, reason)| reason.as_str()),
        Some("for_you"),
        "{placed:?}"
    );
    assert!(!placed.iter().any(|(t, _)| t == "cats"), "{placed:?}");
    assert_eq!(placed[0].0, "dogs", "{placed:?}");
}
