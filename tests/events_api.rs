//! `POST /v1/events` in-process: per-item validation, body errors, and the effect of each kind
//! of event on the very next feed, through the HTTP API as a client sees it.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};

use feedrank::api::{self, AppState};
use feedrank::live::{Live, LiveOptions};
use feedrank::snapshot::Snapshot;

mod common;
use common::{get, post_ids, send};

fn world() -> &'static Snapshot {
    static WORLD: OnceLock<Snapshot> = OnceLock::new();
    WORLD.get_or_init(|| common::demo_world(3_000, 200, 29, 32))
}

/// A service with live events on a fresh model (events change a model) and a fresh log.
fn app() -> (axum::Router, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let model = Arc::new(common::exact_model(world()));
    let state = AppState::new(Duration::from_secs(5));
    let profiles = state.profiles().clone();
    let (live, _) = Live::open(model, dir.path(), LiveOptions::default(), profiles).unwrap();
    state.serve_live(Arc::new(live));
    (api::router(state), dir)
}

async fn post_events(app: &axum::Router, body: impl Into<Body>) -> (StatusCode, Value) {
    let request = Request::post("/v1/events")
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap();
    send(app, request).await
}

fn event(user: &str, post: &str, kind: &str) -> Value {
    json!({"user_id": user, "post_id": post, "type": kind, "ts": 1_700_000_000})
}

async fn first_page(app: &axum::Router, user: &str) -> Vec<String> {
    let (status, page) = get(app, &format!("/v1/users/{user}/feed?limit=20")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    post_ids(&page)
}

fn known_user() -> String {
    world().users[7].id.clone()
}

#[tokio::test]
async fn a_hide_removes_the_post_from_the_next_feed() {
    let (app, _dir) = app();
    let user = known_user();
    let before = first_page(&app, &user).await;
    let body = json!({"events": [event(&user, &before[0], "hide")]}).to_string();
    let (status, outcome) = post_events(&app, body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        outcome,
        json!({"model_version": world().model_version(), "accepted": 1, "rejected": []})
    );
    let after = first_page(&app, &user).await;
    assert!(!after.contains(&before[0]), "{after:?}");
    // Not on any later page either.
    let (_, page) = get(&app, &format!("/v1/users/{user}/feed?limit=100")).await;
    assert!(!post_ids(&page).contains(&before[0]));
    let (_, view) = get(&app, &format!("/v1/users/{user}")).await;
    assert_eq!(view["live"]["hidden"], 1);
    assert_eq!(view["live"]["events"], 1);
}

#[tokio::test]
async fn reports_past_the_threshold_remove_the_post_for_everyone() {
    let (app, _dir) = app();
    let user = known_user();
    let before = first_page(&app, &user).await;
    let target = &before[2];
    let reports: Vec<Value> = (0..5)
        .map(|i| event(&format!("r{i}"), target, "report"))
        .collect();
    let (status, outcome) = post_events(&app, json!({"events": reports}).to_string()).await;
    assert_eq!(
        (status, outcome["accepted"].as_u64()),
        (StatusCode::OK, Some(5))
    );
    // Five reports pass the default threshold only for a post with at most 500 views.
    let row = world().posts.iter().position(|p| &p.id == target).unwrap();
    let views = world().posts[row].stats.views;
    if views <= 500 {
        for viewer in [user.as_str(), world().users[11].id.as_str(), "newcomer"] {
            assert!(!first_page(&app, viewer).await.contains(target), "{viewer}");
        }
    } else {
        let more: Vec<Value> = (5..=views / 100)
            .map(|i| event(&format!("r{i}"), target, "report"))
            .collect();
        post_events(&app, json!({"events": more}).to_string()).await;
        assert!(!first_page(&app, &user).await.contains(target));
    }
}

#[tokio::test]
async fn saves_bring_the_post_and_its_neighbours_up() {
    let (app, _dir) = app();
    let user = known_user();
    let (_, page) = get(
        &app,
        &format!("/v1/users/{user}/feed?limit=40&explain=true"),
    )
    .await;
    let items = page["items"].as_array().unwrap();
    let target = items[30]["post_id"].as_str().unwrap().to_string();
    let score = items[30]["score"].as_f64().unwrap();
    let saves: Vec<Value> = (0..3).map(|_| event(&user, &target, "save")).collect();
    post_events(&app, json!({"events": saves}).to_string()).await;
    let (_, page) = get(
        &app,
        &format!("/v1/users/{user}/feed?limit=40&explain=true"),
    )
    .await;
    let items = page["items"].as_array().unwrap();
    let (position, item) = items
        .iter()
        .enumerate()
        .find(|(_, i)| i["post_id"] == target.as_str())
        .expect("still in the first 40");
    assert!(item["score"].as_f64().unwrap() > score);
    assert!(position < 30, "moved up from 30 to {position}");
    let (_, view) = get(&app, &format!("/v1/users/{user}")).await;
    assert_eq!(view["live"]["vector_moved"], true);
}

#[tokio::test]
async fn impressions_leave_the_next_fresh_feed() {
    let (app, _dir) = app();
    let user = known_user();
    let before = first_page(&app, &user).await;
    let seen: Vec<Value> = before[..10]
        .iter()
        .map(|p| event(&user, p, "impression"))
        .collect();
    post_events(&app, json!({"events": seen}).to_string()).await;
    let after = first_page(&app, &user).await;
    assert!(after.iter().all(|p| !before[..10].contains(p)), "{after:?}");
    assert_eq!(after.len(), 20);
}

#[tokio::test]
async fn bad_items_are_reported_by_index_and_the_valid_ones_applied() {
    let (app, _dir) = app();
    let post = world().posts[0].id.clone();
    let body = json!({"events": [
        event("a", &post, "save"),
        event("a", "nope", "save"),
        {"user_id": "a", "post_id": post, "type": "poke", "ts": 1},
        {"user_id": "a", "post_id": post, "type": "like"},
    ]});
    let (status, outcome) = post_events(&app, body.to_string()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(outcome["accepted"], 1);
    let rejected = outcome["rejected"].as_array().unwrap();
    let codes: Vec<(u64, &str)> = rejected
        .iter()
        .map(|r| (r["index"].as_u64().unwrap(), r["code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        codes,
        [
            (1, "unknown_post"),
            (2, "invalid_event"),
            (3, "invalid_event")
        ]
    );
    assert!(
        rejected[1]["message"]
            .as_str()
            .unwrap()
            .starts_with("type:")
    );
    let (_, view) = get(&app, "/v1/users/a").await;
    assert_eq!(view["live"]["events"], 1);
}

#[tokio::test]
async fn bodies_that_are_not_a_batch_are_refused_whole() {
    let (app, _dir) = app();
    let post = world().posts[0].id.clone();
    let cases: [(String, StatusCode, &str); 5] = [
        ("{not json".into(), StatusCode::BAD_REQUEST, "invalid_body"),
        ("[]".into(), StatusCode::BAD_REQUEST, "invalid_body"),
        (
            r#"{"events": [], "extra": 1}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json!({"events": vec![event("a", &post, "view"); 1_001]}).to_string(),
            StatusCode::BAD_REQUEST,
            "too_many_events",
        ),
        (
            "x".repeat(600 * 1024),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ];
    for (body, status, code) in cases {
        let (got, error) = post_events(&app, body).await;
        assert_eq!(
            (got, error["code"].as_str()),
            (status, Some(code)),
            "{error}"
        );
    }
    let (_, view) = get(&app, "/v1/users/a").await;
    assert_eq!(view["code"], "unknown_user", "nothing was applied");
}

#[tokio::test]
async fn a_service_without_a_data_directory_refuses_events() {
    let state = AppState::new(Duration::from_secs(5));
    state.serve_model(Arc::new(common::exact_model(world())));
    let app = api::router(state);
    let body = json!({"events": [event("a", &world().posts[0].id, "view")]}).to_string();
    let (status, error) = post_events(&app, body).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("live_disabled"))
    );
}

/// Read-your-writes under concurrency: writers hide posts while readers page through feeds;
/// once a hide is answered, no feed of that user shows the post again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hide_holds_from_its_answer_on_under_concurrent_requests() {
    let (app, _dir) = app();
    let user = known_user();
    let targets: Vec<String> = {
        let (_, page) = get(&app, &format!("/v1/users/{user}/feed?limit=100")).await;
        post_ids(&page).into_iter().step_by(4).take(12).collect()
    };
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (app, user) = (app.clone(), user.clone());
            tokio::spawn(async move {
                for _ in 0..40 {
                    let (status, _) = get(&app, &format!("/v1/users/{user}/feed?limit=50")).await;
                    assert_eq!(status, StatusCode::OK);
                }
            })
        })
        .collect();
    let writers: Vec<_> = targets
        .chunks(3)
        .map(|chunk| {
            let (app, user, chunk) = (app.clone(), user.clone(), chunk.to_vec());
            tokio::spawn(async move {
                for target in chunk {
                    let body = json!({"events": [event(&user, &target, "hide")]}).to_string();
                    let (status, outcome) = post_events(&app, body).await;
                    assert_eq!(
                        (status, outcome["accepted"].as_u64()),
                        (StatusCode::OK, Some(1))
                    );
                    for _ in 0..3 {
                        let (_, page) =
                            get(&app, &format!("/v1/users/{user}/feed?limit=100")).await;
                        assert!(!post_ids(&page).contains(&target), "{target} came back");
                    }
                }
            })
        })
        .collect();
    for task in writers.into_iter().chain(readers) {
        task.await.unwrap();
    }
    let (_, page) = get(&app, &format!("/v1/users/{user}/feed?limit=100")).await;
    let shown = post_ids(&page);
    assert!(targets.iter().all(|t| !shown.contains(t)));
    let (_, view) = get(&app, &format!("/v1/users/{user}")).await;
    assert_eq!(view["live"]["hidden"], targets.len());
}

#[tokio::test]
async fn a_like_makes_a_strangers_hashtags_personal() {
    let (app, _dir) = app();
    let (_, before) = get(&app, "/v1/users/stranger/hashtags").await;
    assert_eq!(before["personal"], false);
    let body = json!({"events": [event("stranger", &world().posts[0].id, "like")]}).to_string();
    let (status, _) = post_events(&app, body).await;
    assert_eq!(status, StatusCode::OK);
    let (status, after) = get(&app, "/v1/users/stranger/hashtags").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(after["personal"], true, "{after}");
}
