//! The HTTP API, in-process (`tower::ServiceExt::oneshot`) and over a real socket, on a small
//! demo world. Rankings are checked against a naive re-implementation of the blend, with the
//! policy's rules turned off through request weights (the rules are checked against a naive
//! selector in `policy`, and end to end in `feed_policy.rs`).

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use feedrank::api::{self, AppState};

mod common;
use common::{Server, get, post_ids as ids, raw_http};
use feedrank::candidates::Source;
use feedrank::feed::{FeedOptions, Model};
use feedrank::scoring;
use feedrank::snapshot::{PostKind, Snapshot};

fn small_world() -> &'static Snapshot {
    static WORLD: OnceLock<Snapshot> = OnceLock::new();
    WORLD.get_or_init(|| common::demo_world(4_000, 300, 7, 32))
}

/// Exact retrieval, so rankings can be compared with a naive reference exactly.
fn exact_model() -> Arc<Model> {
    static MODEL: OnceLock<Arc<Model>> = OnceLock::new();
    MODEL
        .get_or_init(|| Arc::new(common::exact_model(small_world())))
        .clone()
}

fn app() -> axum::Router {
    let state = AppState::new(Duration::from_secs(5));
    state.serve_model(exact_model());
    api::router(state)
}

fn known_user() -> String {
    small_world().users[3].id.clone()
}

#[tokio::test]
async fn known_user_gets_twenty_distinct_posts_and_a_cursor() {
    let app = app();
    let (status, page) = get(&app, &format!("/v1/users/{}/feed", known_user())).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(
        page["model_version"],
        small_world().manifest.model_version.as_str()
    );
    let ids = ids(&page);
    assert_eq!(ids.len(), 20);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 20);
    assert!(page["next_cursor"].is_string());
    for item in page["items"].as_array().unwrap() {
        assert!(item["score"].is_f64(), "{item}");
        assert!(
            ["organic", "sponsored", "ad"].contains(&item["kind"].as_str().unwrap()),
            "{item}"
        );
        assert!(
            item.get("explain").is_none(),
            "explanations only on request"
        );
    }
    assert!(page.get("ads_considered").is_none());
}

#[tokio::test]
async fn explain_adds_readable_reasons_to_every_item_and_the_pages_ads() {
    let app = app();
    let (status, page) = get(
        &app,
        &format!("/v1/users/{}/feed?explain=true", known_user()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    for item in page["items"].as_array().unwrap() {
        let explain = &item["explain"];
        for field in [
            "source",
            "value",
            "freshness",
            "blend",
            "placed_score",
            "decisions",
        ] {
            assert!(explain.get(field).is_some(), "{field} missing: {item}");
        }
        assert!(explain["similarity"].is_f64(), "a personal feed: {item}");
        assert!(explain["penalties"]["clickbait"].as_f64().unwrap() >= 0.0);
        assert!(explain["penalties"]["repeats"].as_f64().unwrap() >= 0.0);
        let blend = explain["blend"].as_f64().unwrap();
        assert!((item["score"].as_f64().unwrap() - blend).abs() < 1e-6);
    }
    let ads = page["ads_considered"].as_array().unwrap();
    for ad in ads {
        assert!(
            ["shown", "no_slot", "below_relevance"].contains(&ad["verdict"].as_str().unwrap()),
            "{ad}"
        );
        assert!(
            ad["post_id"].is_string() && ad["relevance"].is_f64(),
            "{ad}"
        );
    }
    for (query, code) in [
        ("explain=yes", "invalid_query"),
        ("explain=1", "invalid_query"),
    ] {
        let (status, body) = get(&app, &format!("/v1/users/{}/feed?{query}", known_user())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["code"], code);
        assert!(
            body["message"].as_str().unwrap().contains("explain"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn unknown_user_gets_a_non_personal_feed_in_several_languages() {
    let app = app();
    let (status, page) = get(&app, "/v1/users/someone_new/feed?limit=20").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let ids = ids(&page);
    assert_eq!(ids.len(), 20);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 20);
    let world = small_world();
    let langs: HashSet<&str> = ids
        .iter()
        .map(|id| {
            world
                .posts
                .iter()
                .find(|p| &p.id == id)
                .unwrap()
                .lang
                .as_str()
        })
        .collect();
    assert!(
        langs.len() >= 3,
        "a newcomer sees every language community: {langs:?}"
    );
}

#[tokio::test]
async fn pages_never_repeat_and_end_with_a_null_cursor() {
    let app = app();
    for user in [known_user(), "visitor".to_string()] {
        let mut seen = HashSet::new();
        let mut uri = format!("/v1/users/{user}/feed?limit=100");
        let mut pages = 0;
        loop {
            let (status, page) = get(&app, &uri).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            for id in ids(&page) {
                assert!(
                    seen.insert(id.clone()),
                    "{user}: {id} repeated on page {pages}"
                );
            }
            pages += 1;
            match page["next_cursor"].as_str() {
                Some(c) => uri = format!("/v1/users/{user}/feed?limit=100&cursor={c}"),
                None => break,
            }
            assert!(pages < 50, "pagination must end");
        }
        assert_eq!(seen.len(), FeedOptions::default().max_depth, "{user}");
    }
}

#[tokio::test]
async fn ads_come_only_from_the_ad_pool_labelled_and_never_as_organic_items() {
    let app = app();
    let world = small_world();
    let ads: HashSet<&str> = world
        .posts
        .iter()
        .filter(|p| p.kind == PostKind::Ad)
        .map(|p| p.id.as_str())
        .collect();
    assert!(!ads.is_empty());
    let mut ads_served = 0;
    for user in world.users.iter().take(30).map(|u| u.id.clone()) {
        let (_, page) = get(&app, &format!("/v1/users/{user}/feed?limit=100")).await;
        for item in page["items"].as_array().unwrap() {
            let id = item["post_id"].as_str().unwrap();
            let is_ad = item["kind"] == "ad";
            assert_eq!(ads.contains(id), is_ad, "{user}: {item}");
            ads_served += usize::from(is_ad);
        }
    }
    assert!(ads_served > 0, "relevant ads exist in the demo world");
    // Without an embedding there is no relevance, so no ad.
    let (_, page) = get(&app, "/v1/users/anon/feed?limit=100").await;
    assert!(
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["kind"] != "ad")
    );
}

/// Request weights that turn every rule of the selector off: no cap binds, no penalty, no
/// near-duplicate, no ad is relevant enough. The page is then the candidates by score alone.
const RULES_OFF: &str = "max_per_author_per_page:1000,max_sponsored_per_page:1000,\
    author_repeat_decay:1,hashtag_repeat_decay:1,near_duplicate_similarity:2,\
    foreign_language_share:1,ad_min_relevance:2";

/// The documented blend, from a post's raw data: cosine similarity, value, freshness and the
/// clickbait penalty, each written out here rather than taken from `scoring`.
fn naive_blend(
    config: &scoring::ScoringConfig,
    similarity: f32,
    post: &feedrank::snapshot::Post,
    now: i64,
) -> f32 {
    let s = &post.stats;
    let engaged = config.save_weight * s.saves as f32
        + config.share_weight * s.shares as f32
        + config.comment_weight * s.comments as f32
        + config.like_weight * s.likes as f32
        - config.hide_weight * s.hides as f32
        - config.report_weight * s.reports as f32;
    let rate =
        (engaged + config.prior_rate * config.prior_views) / (s.views as f32 + config.prior_views);
    let value = (rate / config.value_scale).tanh();
    let age_hours = (now - post.created_at).max(0) as f32 / 3600.0;
    let fresh = 0.5f32.powf(age_hours / config.freshness_half_life_hours);
    let clickbait = if s.views == 0 {
        0.0
    } else {
        let keep = (s.saves + s.comments) as f32 / s.views as f32;
        (1.0 - keep / config.clickbait_keep_rate).max(0.0) * s.views as f32
            / (s.views as f32 + config.clickbait_views)
    };
    config.similarity_weight * similarity
        + config.value_weight * value
        + config.freshness_weight * fresh
        - config.clickbait_weight * clickbait
}

/// Naive reference: the personal source is the exact top-`candidates` by similarity among
/// organic posts under the report threshold; every candidate, whatever its source, is scored
/// with the documented formula from its raw data; with the selector's rules off, the page is
/// the best 20. (How the other sources are merged is checked against a naive merge in
/// `candidates::sources`.)
#[tokio::test]
async fn first_page_matches_a_naive_reference_ranking() {
    let app = app();
    let model = exact_model();
    let world = small_world();
    let config = model.scoring();
    let now = world.posts.iter().map(|p| p.created_at).max().unwrap();
    for user_row in [0usize, 11, 42] {
        let user = &world.users[user_row];
        let u = world.user_vectors.row(user_row);
        let sim = |row: usize| world.post_vectors.row(row).dot(&u);
        let mut sims: Vec<(f32, usize)> = world
            .posts
            .iter()
            .enumerate()
            .filter(|(_, p)| {
                p.kind != PostKind::Ad && !scoring::reported_past_threshold(&p.stats, config)
            })
            .map(|(row, _)| (sim(row), row))
            .collect();
        sims.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let personal: HashSet<usize> = sims
            .iter()
            .take(model.options().candidates)
            .map(|&(_, row)| row)
            .collect();

        let candidates = model.candidates(&user.id, None).unwrap();
        let from_search: HashSet<usize> = candidates
            .iter()
            .filter(|c| c.source == Source::Personal)
            .map(|c| c.row as usize)
            .collect();
        assert_eq!(from_search, personal, "user {}", user.id);
        for c in &candidates {
            let post = &world.posts[c.row as usize];
            if c.source == Source::Hashtag {
                assert!(
                    post.hashtags.iter().any(|t| user.follows.contains(t)),
                    "{} came from a hashtag {} does not follow",
                    post.id,
                    user.id
                );
            }
        }

        let mut scored: Vec<(f32, usize)> = candidates
            .iter()
            .map(|c| {
                let row = c.row as usize;
                (naive_blend(config, sim(row), &world.posts[row], now), row)
            })
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let expected: Vec<String> = scored
            .iter()
            .take(20)
            .map(|&(_, row)| world.posts[row].id.clone())
            .collect();
        let uri = format!("/v1/users/{}/feed?weights={RULES_OFF}", user.id);
        let (status, page) = get(&app, &uri).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(ids(&page), expected, "user {}", user.id);
        // The reported scores are the naive blend too.
        for (item, &(score, _)) in page["items"].as_array().unwrap().iter().zip(&scored) {
            assert!(
                (item["score"].as_f64().unwrap() as f32 - score).abs() < 1e-4,
                "{item}"
            );
        }
    }
}

#[tokio::test]
async fn personal_feeds_are_closer_to_the_user_than_the_non_personal_feed() {
    let app = app();
    let world = small_world();
    let row_of = |id: &str| world.posts.iter().position(|p| p.id == id).unwrap();
    let mut personal_wins = 0;
    for user_row in 0..20 {
        let u = world.user_vectors.row(user_row);
        let mean_sim = |page: &Value| {
            let ids = ids(page);
            ids.iter()
                .map(|id| world.post_vectors.row(row_of(id)).dot(&u))
                .sum::<f32>()
                / ids.len() as f32
        };
        let (_, personal) = get(
            &app,
            &format!("/v1/users/{}/feed", world.users[user_row].id),
        )
        .await;
        let (_, generic) = get(&app, "/v1/users/nobody/feed").await;
        if mean_sim(&personal) > mean_sim(&generic) + 0.1 {
            personal_wins += 1;
        }
    }
    assert_eq!(personal_wins, 20);
}

#[tokio::test]
async fn bad_parameters_are_400_with_stable_codes() {
    let app = app();
    let user = known_user();
    for (query, code) in [
        ("limit=0", "invalid_limit"),
        ("limit=101", "invalid_limit"),
        ("limit=abc", "invalid_limit"),
        ("limit=-1", "invalid_limit"),
        ("limit=2.5", "invalid_limit"),
        ("cursor=nonsense", "invalid_cursor"),
        ("cursor=0000001400000000", "invalid_cursor"),
        ("weights=popularity:1", "invalid_weights"),
        ("weights=value_weight:high", "invalid_weights"),
        ("weights=value_weight", "invalid_weights"),
        ("weights=save_weight:-1", "invalid_weights"),
        ("weights=page_size:0", "invalid_weights"),
        ("weights=organic_per_ad:2.5", "invalid_weights"),
    ] {
        let (status, body) = get(&app, &format!("/v1/users/{user}/feed?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["code"], code, "{query}: {body}");
        assert!(body["message"].as_str().unwrap().len() > 10, "{body}");
    }
    let (status, body) = get(&app, "/v1/users/%FF%FE/feed").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_path"))
    );
    let (status, body) = get(&app, &format!("/v1/users/{user}/feed?limit=%FF")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let long = "u".repeat(65);
    let (status, body) = get(&app, &format!("/v1/users/{long}/feed")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_user_id"))
    );
}

/// A request's weights re-weigh its candidates: with value and freshness at 0, the page is
/// the candidates by similarity alone; an error names the key.
#[tokio::test]
async fn request_weights_reorder_the_candidates_and_errors_name_the_key() {
    let app = app();
    let model = exact_model();
    let world = small_world();
    for user_row in [3usize, 17] {
        let user = &world.users[user_row];
        let u = world.user_vectors.row(user_row);
        let mut by_similarity: Vec<(f32, u32)> = model
            .candidates(&user.id, None)
            .unwrap()
            .iter()
            .map(|c| (world.post_vectors.row(c.row as usize).dot(&u), c.row))
            .collect();
        by_similarity.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let expected: Vec<String> = by_similarity
            .iter()
            .take(20)
            .map(|&(_, row)| world.posts[row as usize].id.clone())
            .collect();
        let uri = format!(
            "/v1/users/{}/feed?weights=value_weight:0,freshness_weight:0,clickbait_weight:0,{RULES_OFF}",
            user.id
        );
        let (status, page) = get(&app, &uri).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(ids(&page), expected, "user {}", user.id);
        let (_, default_page) = get(
            &app,
            &format!("/v1/users/{}/feed?weights={RULES_OFF}", user.id),
        )
        .await;
        assert_ne!(ids(&default_page), expected, "the weights changed nothing");
    }
    let (_, body) = get(
        &app,
        &format!(
            "/v1/users/{}/feed?weights=value_weight:1,popularity:2",
            known_user()
        ),
    )
    .await;
    assert!(
        body["message"].as_str().unwrap().contains("popularity"),
        "{body}"
    );
}

#[tokio::test]
async fn a_cursor_belongs_to_its_user() {
    let app = app();
    let (_, page) = get(&app, &format!("/v1/users/{}/feed", known_user())).await;
    let cursor = page["next_cursor"].as_str().unwrap();
    let (status, body) = get(
        &app,
        &format!("/v1/users/someone_else/feed?cursor={cursor}"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], "invalid_cursor");
}

#[tokio::test]
async fn readiness_follows_the_model() {
    let state = AppState::new(Duration::from_secs(5));
    let app = api::router(Arc::clone(&state));
    assert_eq!(get(&app, "/healthz").await.0, StatusCode::OK);
    let (status, body) = get(&app, "/readyz").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("not_ready"))
    );
    let response = app
        .clone()
        .oneshot(
            Request::get("/v1/users/u/feed")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");

    state.serve_model(exact_model());
    let (status, body) = get(&app, "/readyz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["model_version"],
        small_world().manifest.model_version.as_str()
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let app = app();
    let (status, body) = get(&app, "/v1/nothing").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let response = app
        .clone()
        .oneshot(
            Request::post("/v1/users/u/feed")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let body: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["code"], "method_not_allowed");
}

#[tokio::test]
async fn serves_over_a_real_socket_and_shuts_down_gracefully() {
    let state = AppState::new(Duration::from_secs(5));
    let options = FeedOptions {
        candidates: 100,
        ..FeedOptions::default()
    };
    // The HNSW path end to end, as `feedrank serve` runs it.
    state.serve_model(Arc::new(
        Model::build(small_world().clone(), options).unwrap(),
    ));
    let server = Server::start(state).await;
    let addr = server.addr;

    let (status, _) = raw_http(addr, "GET", "/readyz", "").await;
    assert_eq!(status, 200);
    let (status, page) =
        raw_http(addr, "GET", &format!("/v1/users/{}/feed", known_user()), "").await;
    assert_eq!(status, 200);
    assert_eq!(ids(&page).iter().collect::<HashSet<_>>().len(), 20);
    let (status, body) = raw_http(addr, "GET", "/v1/users/x/feed?limit=500", "").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_limit"))
    );

    server.stop().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed"
    );
}

/// The service's default (HNSW) retrieval ranks like exact retrieval: first pages agree.
#[tokio::test]
async fn hnsw_feeds_agree_with_exact_feeds() {
    let world = small_world();
    let hnsw = Model::build(world.clone(), FeedOptions::default()).unwrap();
    let exact = exact_model();
    let (mut shared, mut total) = (0usize, 0usize);
    for user in world.users.iter().take(50) {
        let request = feedrank::feed::FeedRequest {
            user_id: &user.id,
            limit: 20,
            cursor: None,
        };
        let a: HashSet<&str> = hnsw
            .feed(&request)
            .unwrap()
            .items
            .iter()
            .map(|i| i.post_id)
            .collect();
        let b = exact.feed(&request).unwrap();
        shared += b.items.iter().filter(|i| a.contains(i.post_id)).count();
        total += b.items.len();
    }
    let overlap = shared as f64 / total as f64;
    eprintln!("first-page overlap, HNSW vs exact retrieval: {overlap:.4}");
    assert!(overlap >= 0.95, "overlap {overlap:.4}");
}
