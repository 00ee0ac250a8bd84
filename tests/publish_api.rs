//! `POST /v1/posts` and `GET /v1/posts/{post_id}` in-process (and once over a real socket):
//! a published post is on the very next feed page, under exact and HNSW retrieval; a known id
//! is refused and changes nothing; every problem of a refused batch is named; events may name
//! a published post; a published ad only ever fills an ad slot.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};

use feedrank::api::{self, AppState, POSTS_BODY_LIMIT};
use feedrank::feed::{FeedOptions, Model};
use feedrank::live::{Live, LiveOptions, MAX_POSTS_PER_BATCH};
use feedrank::snapshot::Snapshot;

mod common;
use common::{Server, get, post_ids, raw_http, send};

const DIM: usize = 32;

fn world() -> &'static Snapshot {
    static WORLD: OnceLock<Snapshot> = OnceLock::new();
    WORLD.get_or_init(|| common::demo_world(3_000, 200, 41, DIM))
}

/// A fresh model with exact retrieval (publishing changes a model, so tests do not share one).
fn exact_model() -> Arc<Model> {
    Arc::new(common::exact_model(world()))
}

/// A fresh model with the default index: an HNSW graph over the snapshot's posts, published
/// posts in the live index's delta.
fn hnsw_model() -> Arc<Model> {
    Arc::new(Model::build(world().clone(), FeedOptions::default()).unwrap())
}

/// A service with live state (events and publishing) on `model`, with a fresh log.
fn live_state(model: Arc<Model>, options: LiveOptions) -> (Arc<AppState>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let state = AppState::new(Duration::from_secs(5));
    let profiles = state.profiles().clone();
    let (live, _) = Live::open(model, dir.path(), options, profiles).unwrap();
    state.serve_live(Arc::new(live));
    (state, dir)
}

fn app_on(model: Arc<Model>) -> (axum::Router, tempfile::TempDir) {
    let (state, dir) = live_state(model, LiveOptions::default());
    (api::router(state), dir)
}

fn app() -> (axum::Router, tempfile::TempDir) {
    app_on(exact_model())
}

async fn publish(app: &axum::Router, body: impl Into<Body>) -> (StatusCode, Value) {
    let request = Request::post("/v1/posts")
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap();
    send(app, request).await
}

/// `POST /v1/posts` with `posts`.
async fn publish_posts(app: &axum::Router, posts: Vec<Value>) -> (StatusCode, Value) {
    publish(app, json!({ "posts": posts }).to_string()).await
}

async fn post_events(app: &axum::Router, events: Vec<Value>) -> (StatusCode, Value) {
    let request = Request::post("/v1/events")
        .header("content-type", "application/json")
        .body(Body::from(json!({ "events": events }).to_string()))
        .unwrap();
    send(app, request).await
}

fn event(user: &str, post: &str, kind: &str) -> Value {
    json!({"user_id": user, "post_id": post, "type": kind, "ts": 1_700_000_000})
}

/// The snapshot user at `row`: their id, first language and embedding.
fn snapshot_user(row: usize) -> (String, String, Vec<f32>) {
    let user = &world().users[row];
    (
        user.id.clone(),
        user.langs[0].clone(),
        world().user_vectors.row(row).to_vec(),
    )
}

fn known_user() -> (String, String, Vec<f32>) {
    snapshot_user(7)
}

/// A valid organic post created a minute after the snapshot's newest post.
fn new_post(id: &str, lang: &str, embedding: &[f32]) -> Value {
    json!({
        "id": id, "author": "a_new_creator", "lang": lang, "hashtags": ["tiktokrefugee"],
        "kind": "organic", "created_at": world().newest_post_time().unwrap() + 60,
        "embedding": embedding,
    })
}

/// A post as close to the known user as can be: their own embedding, in their language.
fn post_for_known_user(id: &str) -> Value {
    let (_, lang, vector) = known_user();
    new_post(id, &lang, &vector)
}

async fn first_page(app: &axum::Router, user: &str) -> Vec<String> {
    let (status, page) = get(app, &format!("/v1/users/{user}/feed?limit=20")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    post_ids(&page)
}

/// `(index, field)` of each problem a refusal lists.
fn located(error: &Value) -> Vec<(u64, String)> {
    error["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors listed: {error}"))
        .iter()
        .map(|e| {
            (
                e["index"].as_u64().unwrap(),
                e["field"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn code(error: &Value) -> Option<&str> {
    error["code"].as_str()
}

async fn assert_unknown(app: &axum::Router, id: &str) {
    let (status, error) = get(app, &format!("/v1/posts/{id}")).await;
    assert_eq!(
        (status, code(&error)),
        (StatusCode::NOT_FOUND, Some("unknown_post")),
        "{id}: {error}"
    );
}

/// Publishes a post on the known user's own embedding and checks it is on their very next
/// first page (and was not on the one before).
async fn a_close_post_is_on_the_next_page(model: Arc<Model>) {
    let (app, _dir) = app_on(model);
    let (user, _, _) = known_user();
    let before = first_page(&app, &user).await;
    assert!(!before.contains(&"p_close".to_string()));
    let (status, answer) = publish_posts(&app, vec![post_for_known_user("p_close")]).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(
        answer,
        json!({"model_version": world().model_version(), "published": ["p_close"]})
    );
    let after = first_page(&app, &user).await;
    assert!(after.contains(&"p_close".to_string()), "{after:?}");
}

#[tokio::test]
async fn a_published_post_is_on_the_very_next_page_with_exact_retrieval() {
    a_close_post_is_on_the_next_page(exact_model()).await;
}

#[tokio::test]
async fn a_published_post_is_on_the_very_next_page_with_an_hnsw_index() {
    a_close_post_is_on_the_next_page(hnsw_model()).await;
}

#[tokio::test]
async fn a_known_id_is_refused_with_409_and_nothing_changes() {
    let (app, _dir) = app();
    let (user, lang, vector) = known_user();
    let (status, _) = publish_posts(&app, vec![post_for_known_user("p_dup")]).await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, first) = get(&app, "/v1/posts/p_dup").await;
    let page = first_page(&app, &user).await;
    assert!(page.contains(&"p_dup".to_string()), "{page:?}");

    // The same id again, as another post: refused, the first version stays.
    let away: Vec<f32> = vector.iter().map(|v| -v).collect();
    let mut second = new_post("p_dup", &lang, &away);
    second["author"] = json!("someone_else");
    second["hashtags"] = json!(["cats"]);
    let (status, error) = publish_posts(&app, vec![second.clone()]).await;
    assert_eq!(
        (status, code(&error)),
        (StatusCode::CONFLICT, Some("post_exists")),
        "{error}"
    );
    assert_eq!(located(&error), [(0, "id".to_string())]);

    // In a batch with a new post: all or none, so the new one is not published either.
    let snapshot_id = world().posts[5].id.clone();
    let (status, error) = publish_posts(
        &app,
        vec![
            new_post("p_fresh", &lang, &vector),
            second,
            new_post(&snapshot_id, &lang, &vector),
        ],
    )
    .await;
    assert_eq!(
        (status, code(&error)),
        (StatusCode::CONFLICT, Some("post_exists")),
        "{error}"
    );
    assert_eq!(
        located(&error),
        [(1, "id".to_string()), (2, "id".to_string())]
    );
    assert_unknown(&app, "p_fresh").await;

    // A snapshot post's id alone.
    let (status, error) = publish_posts(&app, vec![new_post(&snapshot_id, &lang, &vector)]).await;
    assert_eq!(
        (status, code(&error)),
        (StatusCode::CONFLICT, Some("post_exists")),
        "{error}"
    );
    assert_eq!(located(&error), [(0, "id".to_string())]);
    let (_, snapshot_post) = get(&app, &format!("/v1/posts/{snapshot_id}")).await;
    assert_eq!(snapshot_post["published"], false);
    assert_eq!(
        snapshot_post["author"],
        world().posts[5].author.as_str(),
        "the snapshot's post is untouched"
    );

    let (status, now) = get(&app, "/v1/posts/p_dup").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(now, first);
    assert_eq!(now["author"], "a_new_creator");
    assert_eq!(now["hashtags"], json!(["tiktokrefugee"]));
    assert_eq!(first_page(&app, &user).await, page, "the feed is unchanged");
}

#[tokio::test]
async fn invalid_posts_are_refused_whole_with_every_field_named() {
    let (app, _dir) = app();
    let mut wrong_dim = post_for_known_user("p_dim");
    wrong_dim["embedding"] = json!(vec![0.5; DIM - 1]);
    let mut advert = post_for_known_user("p_advert");
    advert["kind"] = json!("advert");
    let mut hashtag = post_for_known_user("p_hashtag");
    hashtag["hashtags"] = json!(["cats", "#Cats"]);
    let mut undated = post_for_known_user("p_undated");
    undated.as_object_mut().unwrap().remove("created_at");
    let valid = post_for_known_user("p_valid");
    let (status, error) =
        publish_posts(&app, vec![wrong_dim, advert, hashtag, undated, valid]).await;
    assert_eq!(
        (status, code(&error)),
        (StatusCode::BAD_REQUEST, Some("invalid_post")),
        "{error}"
    );
    assert_eq!(
        located(&error),
        [
            (0, "embedding".to_string()),
            (1, "kind".to_string()),
            (2, "hashtags[1]".to_string()),
            (3, "created_at".to_string()),
        ]
    );
    let messages: Vec<&str> = error["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert!(
        messages[0].contains(&format!("dimension is {DIM}")),
        "{}",
        messages[0]
    );
    assert!(messages[2].contains("write `cats`"), "{}", messages[2]);
    for id in ["p_dim", "p_advert", "p_hashtag", "p_undated", "p_valid"] {
        assert_unknown(&app, id).await;
    }

    // A repeated id within the batch is named at its second appearance.
    let (status, error) = publish_posts(
        &app,
        vec![
            post_for_known_user("p_twice"),
            post_for_known_user("p_other"),
            post_for_known_user("p_twice"),
        ],
    )
    .await;
    assert_eq!(
        (status, code(&error)),
        (StatusCode::BAD_REQUEST, Some("invalid_post")),
        "{error}"
    );
    assert_eq!(located(&error), [(2, "id".to_string())]);
    assert_unknown(&app, "p_twice").await;
    assert_unknown(&app, "p_other").await;
}

#[tokio::test]
async fn bodies_that_are_not_a_batch_are_refused_whole() {
    let (app, _dir) = app();
    let batch = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| post_for_known_user(&format!("p_batch_{i}")))
            .collect()
    };
    let cases: [(String, StatusCode, &str); 6] = [
        ("{not json".into(), StatusCode::BAD_REQUEST, "invalid_body"),
        ("[]".into(), StatusCode::BAD_REQUEST, "invalid_body"),
        (
            r#"{"posts": {"id": "p_1"}}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json!({"posts": batch(1), "extra": 1}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json!({ "posts": batch(MAX_POSTS_PER_BATCH + 1) }).to_string(),
            StatusCode::BAD_REQUEST,
            "too_many_posts",
        ),
        (
            "x".repeat(POSTS_BODY_LIMIT + 1),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ];
    for (body, status, expected) in cases {
        let (got, error) = publish(&app, body).await;
        assert_eq!((got, code(&error)), (status, Some(expected)), "{error}");
    }
    assert_unknown(&app, "p_batch_0").await;
    assert_unknown(&app, "p_1").await;

    // The limit holds what it promises: a full batch of 1,024-dimensional embeddings written
    // in full precision is read (and refused for its dimension here), not cut off.
    let long: Vec<f64> = (0..1_024)
        .map(|i| -0.123_456_789_012_345_67 - f64::from(i) * 1e-9)
        .collect();
    let posts: Vec<Value> = (0..MAX_POSTS_PER_BATCH)
        .map(|i| {
            let mut post = post_for_known_user(&format!("p_wide_{i}"));
            post["embedding"] = json!(long);
            post
        })
        .collect();
    let body = json!({ "posts": posts }).to_string();
    assert!(body.len() > POSTS_BODY_LIMIT / 2 && body.len() <= POSTS_BODY_LIMIT);
    let (status, error) = publish(&app, body).await;
    assert_eq!(
        (status, code(&error)),
        (StatusCode::BAD_REQUEST, Some("invalid_post")),
        "{}",
        error["message"]
    );
    let fields = located(&error);
    assert_eq!(fields.len(), MAX_POSTS_PER_BATCH);
    assert!(fields.iter().all(|(_, f)| f == "embedding"), "{fields:?}");
}

#[tokio::test]
async fn published_posts_past_max_published_are_refused() {
    let options = LiveOptions {
        max_published: 2,
        ..LiveOptions::default()
    };
    let (state, _dir) = live_state(exact_model(), options);
    let app = api::router(state);
    let (status, _) = publish_posts(&app, vec![post_for_known_user("p_1")]).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, error) = publish_posts(
        &app,
        vec![post_for_known_user("p_2"), post_for_known_user("p_3")],
    )
    .await;
    assert_eq!(
        (status, code(&error)),
        (StatusCode::SERVICE_UNAVAILABLE, Some("published_full")),
        "{error}"
    );
    assert_unknown(&app, "p_2").await;
    let (status, _) = publish_posts(&app, vec![post_for_known_user("p_2")]).await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn a_service_without_live_state_refuses_publishing_but_shows_posts() {
    let state = AppState::new(Duration::from_secs(5));
    state.serve_model(exact_model());
    let app = api::router(state);
    let (status, error) = publish_posts(&app, vec![post_for_known_user("p_1")]).await;
    assert_eq!(
        (status, code(&error)),
        (StatusCode::SERVICE_UNAVAILABLE, Some("live_disabled"))
    );
    let id = &world().posts[0].id;
    let (status, post) = get(&app, &format!("/v1/posts/{id}")).await;
    assert_eq!(
        (status, &post["published"]),
        (StatusCode::OK, &json!(false))
    );
    assert_unknown(&app, "p_1").await;
}

#[tokio::test]
async fn a_post_is_shown_with_its_fields_and_whether_it_was_published() {
    let (app, _dir) = app();
    let mut post = post_for_known_user("p_shown");
    post["lang"] = json!("EN");
    post["hashtags"] = json!(["cats", "tiktokrefugee"]);
    post["kind"] = json!("sponsored");
    post["stats"] = json!({"views": 10, "likes": 2});
    let created_at = post["created_at"].clone();
    let (status, _) = publish_posts(&app, vec![post]).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, shown) = get(&app, "/v1/posts/p_shown").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        shown,
        json!({
            "model_version": world().model_version(),
            "id": "p_shown",
            "author": "a_new_creator",
            "lang": "en",
            "hashtags": ["cats", "tiktokrefugee"],
            "kind": "sponsored",
            "created_at": created_at,
            "stats": {"views": 10, "likes": 2, "saves": 0, "comments": 0, "shares": 0,
                      "hides": 0, "reports": 0},
            "published": true,
            "suppressed": false,
        })
    );

    let snapshot_post = &world().posts[42];
    let (status, shown) = get(&app, &format!("/v1/posts/{}", snapshot_post.id)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["published"], false);
    assert_eq!(shown["suppressed"], false);
    assert_eq!(shown["model_version"], world().model_version());
    for field in [
        "id",
        "author",
        "lang",
        "hashtags",
        "kind",
        "created_at",
        "stats",
    ] {
        assert_eq!(
            shown[field],
            serde_json::to_value(snapshot_post).unwrap()[field],
            "{field}"
        );
    }
    assert!(shown.get("embedding").is_none());

    assert_unknown(&app, "p_never").await;
}

#[tokio::test]
async fn events_name_a_published_post_and_move_its_stats() {
    let (app, _dir) = app();
    let (user, _, _) = known_user();
    let mut post = post_for_known_user("p_engaged");
    post["stats"] = json!({"views": 10, "likes": 2});
    let (status, _) = publish_posts(&app, vec![post]).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(first_page(&app, &user).await.contains(&"p_engaged".into()));
    // Others engage (a view of the user's own would leave their next fresh page).
    let events = vec![
        event("someone", "p_engaged", "view"),
        event("someone", "p_engaged", "like"),
        event("someone", "p_engaged", "save"),
        event("another", "p_engaged", "view"),
        event("another", "p_engaged", "share"),
    ];
    let (status, outcome) = post_events(&app, events).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        outcome,
        json!({"model_version": world().model_version(), "accepted": 5, "rejected": []})
    );
    let (_, shown) = get(&app, "/v1/posts/p_engaged").await;
    assert_eq!(
        shown["stats"],
        json!({"views": 12, "likes": 3, "saves": 1, "comments": 0, "shares": 1,
               "hides": 0, "reports": 0})
    );
    assert_eq!(shown["suppressed"], false);
    assert!(first_page(&app, &user).await.contains(&"p_engaged".into()));

    // Reports past the threshold (five for a post with at most 500 views) take it out for
    // everyone.
    let reports: Vec<Value> = (0..5)
        .map(|i| event(&format!("r{i}"), "p_engaged", "report"))
        .collect();
    let (_, outcome) = post_events(&app, reports).await;
    assert_eq!(outcome["accepted"], 5);
    let (_, shown) = get(&app, "/v1/posts/p_engaged").await;
    assert_eq!(shown["stats"]["reports"], 5);
    assert_eq!(shown["suppressed"], true);
    assert!(!first_page(&app, &user).await.contains(&"p_engaged".into()));
}

/// Every item of `user`'s feed showing `post`, over the first pages (up to `pages` of 100).
async fn appearances(app: &axum::Router, user: &str, post: &str, pages: usize) -> Vec<Value> {
    let mut found = Vec::new();
    let mut uri = format!("/v1/users/{user}/feed?limit=100");
    for _ in 0..pages {
        let (status, page) = get(app, &uri).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        found.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|i| i["post_id"] == post)
                .cloned(),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => uri = format!("/v1/users/{user}/feed?limit=100&cursor={cursor}"),
            None => break,
        }
    }
    found
}

#[tokio::test]
async fn a_published_ad_never_takes_an_organic_position() {
    let (app, _dir) = app();
    let (user, lang, vector) = known_user();
    let mut ad = new_post("p_ad", &lang, &vector);
    ad["kind"] = json!("ad");
    // An organic post on the same embedding, published with it: the two must not be confused.
    let (status, answer) =
        publish_posts(&app, vec![ad, new_post("p_organic", &lang, &vector)]).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(answer["published"], json!(["p_ad", "p_organic"]));
    let (_, shown) = get(&app, "/v1/posts/p_ad").await;
    assert_eq!(
        (&shown["kind"], &shown["published"]),
        (&json!("ad"), &json!(true))
    );

    // The user it was made for is shown it, as an ad.
    let shown = appearances(&app, &user, "p_ad", 3).await;
    assert!(!shown.is_empty(), "the ad was never shown to {user}");
    // Others, a stranger and a user known only by a like: wherever it appears, as an ad.
    let mut viewers: Vec<String> = (0..30).map(|row| snapshot_user(row).0).collect();
    viewers.push("stranger".into());
    let (status, _) = post_events(&app, vec![event("liker", "p_organic", "like")]).await;
    assert_eq!(status, StatusCode::OK);
    viewers.push("liker".into());
    let mut total = shown.clone();
    for viewer in &viewers {
        total.extend(appearances(&app, viewer, "p_ad", 2).await);
    }
    for item in &total {
        assert_eq!(item["kind"], "ad", "{item}");
    }
}

#[tokio::test]
async fn publishing_over_a_socket() {
    let (state, _dir) = live_state(exact_model(), LiveOptions::default());
    let server = Server::start(state).await;
    let (user, _, _) = known_user();
    let body = json!({"posts": [post_for_known_user("p_socket")]}).to_string();
    let (status, answer) = raw_http(server.addr, "POST", "/v1/posts", &body).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["published"], json!(["p_socket"]));
    let (status, shown) = raw_http(server.addr, "GET", "/v1/posts/p_socket", "").await;
    assert_eq!((status, &shown["published"]), (200, &json!(true)));
    let (status, page) = raw_http(
        server.addr,
        "GET",
        &format!("/v1/users/{user}/feed?limit=20"),
        "",
    )
    .await;
    assert_eq!(status, 200);
    assert!(post_ids(&page).contains(&"p_socket".to_string()));
    let (status, error) = raw_http(server.addr, "POST", "/v1/posts", &body).await;
    assert_eq!((status, code(&error)), (409, Some("post_exists")));
    let (status, error) = raw_http(server.addr, "POST", "/v1/posts", "{not json").await;
    assert_eq!((status, code(&error)), (400, Some("invalid_body")));
    server.stop().await;
}

/// Concurrent publishers of one id: exactly one is published, the others refused as existing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_concurrent_publishers_of_one_id_exactly_one_wins() {
    let (app, _dir) = app();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                let mut post = post_for_known_user("p_contested");
                post["author"] = json!(format!("author_{i}"));
                let (status, answer) = publish_posts(&app, vec![post]).await;
                (i, status, answer)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        let (i, status, answer) = task.await.unwrap();
        match status {
            StatusCode::CREATED => winners.push(i),
            StatusCode::CONFLICT => assert_eq!(code(&answer), Some("post_exists")),
            other => panic!("{other}: {answer}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let (_, shown) = get(&app, "/v1/posts/p_contested").await;
    assert_eq!(shown["author"], format!("author_{}", winners[0]));
}
