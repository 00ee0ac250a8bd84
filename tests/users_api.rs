//! `GET /v1/users/{user_id}/similar` and `GET /v1/posts/{post_id}/audience` in-process (and
//! over a real socket): similar users and audiences equal an exact computation over the
//! snapshot's user vectors (cosine in f64, the asking user left out, ties by smaller row);
//! users the index meets after the snapshot (onboarded newcomers, users known only by
//! events) become findable; a snapshot user's embedding moved by events decides their
//! neighbours; a small creator's new post is offered and its impressions counted, a big
//! author's is not; every error has its stable code.
//!
//! Expectations come from the snapshot's raw vectors and the documented rules (a newcomer at
//! the centroid of the followers of the tags they picked, a save turning an embedding by 0.2
//! toward the post), never from the code under test.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};

use feedrank::api::{self, AppState};
use feedrank::candidates::IndexKind;
use feedrank::feed::{FeedOptions, Model};
use feedrank::live::{Live, LiveOptions};
use feedrank::snapshot::{PostKind, Snapshot};

mod common;
use common::{Server, cosine, get, post_json, put_json, raw_http};

const DIM: usize = 32;

/// Similarities of the service (f32) and of the reference (f64) agree to this.
const EPS: f64 = 1e-5;

fn world() -> &'static Snapshot {
    static WORLD: OnceLock<Snapshot> = OnceLock::new();
    WORLD.get_or_init(|| common::demo_world(3_000, 200, 61, DIM))
}

/// One exact model for the tests that change nothing.
fn shared_model() -> Arc<Model> {
    static MODEL: OnceLock<Arc<Model>> = OnceLock::new();
    MODEL
        .get_or_init(|| Arc::new(common::exact_model(world())))
        .clone()
}

/// A service without live state on the shared model.
fn app() -> axum::Router {
    let state = AppState::new(Duration::from_secs(5));
    state.serve_model(shared_model());
    api::router(state)
}

/// A service with live events, onboarding and publishing on a fresh exact model with
/// `options` changed by `tune`, with a fresh log.
fn live_state_with(tune: impl FnOnce(&mut FeedOptions)) -> (Arc<AppState>, tempfile::TempDir) {
    let mut options = FeedOptions {
        index: IndexKind::Exact,
        ..Default::default()
    };
    tune(&mut options);
    let model = Arc::new(Model::build(world().clone(), options).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let state = AppState::new(Duration::from_secs(5));
    let profiles = state.profiles().clone();
    let (live, _) = Live::open(model, dir.path(), LiveOptions::default(), profiles).unwrap();
    state.serve_live(Arc::new(live));
    (state, dir)
}

fn live_app_with(tune: impl FnOnce(&mut FeedOptions)) -> (axum::Router, tempfile::TempDir) {
    let (state, dir) = live_state_with(tune);
    (api::router(state), dir)
}

fn live_app() -> (axum::Router, tempfile::TempDir) {
    live_app_with(|_| {})
}

fn event(user: &str, post: &str, kind: &str) -> Value {
    json!({"user_id": user, "post_id": post, "type": kind, "ts": 1_700_000_000})
}

/// `POST /v1/events` with `events`, all of which must be accepted.
async fn send_events(app: &axum::Router, events: Vec<Value>) {
    let n = events.len();
    let (status, outcome) = post_json(app, "/v1/events", json!({ "events": events })).await;
    assert_eq!(status, StatusCode::OK, "{outcome}");
    assert_eq!(outcome["accepted"], n, "{outcome}");
}

/// An organic post by `author`, a minute after the snapshot's newest post.
fn new_post(id: &str, author: &str, embedding: &[f32]) -> Value {
    json!({
        "id": id, "author": author, "lang": "en", "hashtags": ["audience"],
        "kind": "organic", "created_at": world().newest_post_time().unwrap() + 60,
        "embedding": embedding,
    })
}

async fn publish(app: &axum::Router, posts: Vec<Value>) {
    let (status, body) = post_json(app, "/v1/posts", json!({ "posts": posts })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

fn user_vector(row: usize) -> Vec<f32> {
    world().user_vectors.row(row).to_vec()
}

fn post_row(post_id: &str) -> usize {
    world().posts.iter().position(|p| p.id == post_id).unwrap()
}

fn post_vector(row: usize) -> Vec<f32> {
    world().post_vectors.row(row).to_vec()
}

/// Every snapshot user by cosine to `query`, best first (ties: smaller row), leaving out the
/// user at row `exclude`.
fn exact_ranking(query: &[f64], exclude: Option<usize>) -> Vec<(String, f64)> {
    let query: Vec<f32> = query.iter().map(|&x| x as f32).collect();
    let mut ranked: Vec<(usize, f64)> = (0..world().users.len())
        .filter(|&row| Some(row) != exclude)
        .map(|row| (row, cosine(&query, &user_vector(row))))
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked
        .into_iter()
        .map(|(row, s)| (world().users[row].id.clone(), s))
        .collect()
}

fn as_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

/// The `users` of a response: `(user_id, similarity)`, in order.
fn listed(body: &Value) -> Vec<(String, f64)> {
    body["users"]
        .as_array()
        .unwrap_or_else(|| panic!("no users: {body}"))
        .iter()
        .map(|u| {
            (
                u["user_id"].as_str().unwrap().to_string(),
                u["similarity"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// `got` is the first `limit` of the exact `ranking`: at each position the same similarity
/// (to float noise) and the same user, but that two users whose similarities are within
/// float noise of each other may trade places (or trade the last place with the first left
/// out).
fn assert_exact(got: &[(String, f64)], ranking: &[(String, f64)], limit: usize) {
    assert_eq!(got.len(), limit.min(ranking.len()), "{got:?}");
    let mut seen = std::collections::HashSet::new();
    for (i, (id, similarity)) in got.iter().enumerate() {
        assert!(seen.insert(id), "{id} twice in {got:?}");
        let expected = ranking[i].1;
        assert!(
            (similarity - expected).abs() < EPS,
            "position {i}: {id} at {similarity}, expected {} at {expected}",
            ranking[i].0
        );
        if id != &ranking[i].0 {
            let theirs = ranking
                .iter()
                .find(|(r, _)| r == id)
                .unwrap_or_else(|| panic!("{id} is not a user"))
                .1;
            assert!(
                (theirs - expected).abs() < EPS,
                "position {i}: {id} ({theirs}) instead of {} ({expected})",
                ranking[i].0
            );
        }
    }
}

fn code(error: &Value) -> Option<&str> {
    error["code"].as_str()
}

/// Authors by the views of all their snapshot posts.
fn author_views() -> HashMap<&'static str, u64> {
    let mut views: HashMap<&str, u64> = HashMap::new();
    for post in &world().posts {
        *views.entry(post.author.as_str()).or_default() += post.stats.views;
    }
    views
}

#[tokio::test]
async fn similar_users_of_snapshot_users_are_their_exact_nearest_neighbours() {
    let app = app();
    for row in [0, 3, 57, 199] {
        let user = &world().users[row].id;
        let ranking = exact_ranking(&as_f64(&user_vector(row)), Some(row));
        for (query, limit) in [("", 20), ("?limit=1", 1), ("?limit=100", 100)] {
            let (status, body) = get(&app, &format!("/v1/users/{user}/similar{query}")).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(body["model_version"], world().model_version());
            assert_eq!(body["user_id"], user.as_str());
            let got = listed(&body);
            assert!(got.iter().all(|(id, _)| id != user), "never the user asked");
            assert_exact(&got, &ranking, limit);
        }
    }
}

#[tokio::test]
async fn unknown_ids_and_bad_limits_are_refused_with_stable_codes() {
    let app = app();
    let user = &world().users[3].id;
    let post = &world().posts[3].id;
    let cases = [
        (
            "/v1/users/nobody-knows-me/similar".to_string(),
            StatusCode::NOT_FOUND,
            "unknown_user",
        ),
        (
            "/v1/posts/no-such-post/audience".to_string(),
            StatusCode::NOT_FOUND,
            "unknown_post",
        ),
        (
            format!("/v1/users/{}/similar", "u".repeat(65)),
            StatusCode::BAD_REQUEST,
            "invalid_user_id",
        ),
    ];
    let mut cases = cases.to_vec();
    for limit in ["0", "101", "abc", "-1", "2.5", ""] {
        for route in [
            format!("/v1/users/{user}/similar"),
            format!("/v1/posts/{post}/audience"),
        ] {
            cases.push((
                format!("{route}?limit={limit}"),
                StatusCode::BAD_REQUEST,
                "invalid_limit",
            ));
        }
    }
    for route in [
        format!("/v1/users/{user}/similar"),
        format!("/v1/posts/{post}/audience"),
    ] {
        cases.push((
            format!("{route}?limit=1&limit=2"),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ));
    }
    for (uri, status, expected) in cases {
        let (got, error) = get(&app, &uri).await;
        assert_eq!(
            (got, code(&error)),
            (status, Some(expected)),
            "{uri}: {error}"
        );
        assert!(error["message"].is_string(), "{uri}: {error}");
    }

    // Query keys the route does not take are treated as the feed route treats its own.
    let (feed, _) = get(&app, &format!("/v1/users/{user}/feed?limit=5&colour=red")).await;
    for uri in [
        format!("/v1/users/{user}/similar?limit=5&colour=red"),
        format!("/v1/posts/{post}/audience?limit=5&colour=red"),
    ] {
        let (status, body) = get(&app, &uri).await;
        assert_eq!(status, feed, "{uri}: {body}");
    }

    // Before a model serves.
    let idle = api::router(AppState::new(Duration::from_secs(5)));
    for uri in [
        format!("/v1/users/{user}/similar"),
        format!("/v1/posts/{post}/audience"),
    ] {
        let (status, error) = get(&idle, &uri).await;
        assert_eq!(
            (status, code(&error)),
            (StatusCode::SERVICE_UNAVAILABLE, Some("not_ready")),
            "{uri}: {error}"
        );
    }
}

/// Where a newcomer who picked `tags` is placed: the centroid of the snapshot users who
/// follow them, each user's unit vector weighed by how many of the tags they follow.
fn followers_centroid(tags: &[String]) -> Vec<f64> {
    let mut sum = vec![0.0f64; DIM];
    for (row, user) in world().users.iter().enumerate() {
        let weight = tags.iter().filter(|t| user.follows.contains(t)).count() as f64;
        if weight == 0.0 {
            continue;
        }
        let v = as_f64(&user_vector(row));
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        for (s, x) in sum.iter_mut().zip(&v) {
            *s += weight * x / norm;
        }
    }
    sum
}

#[tokio::test]
async fn a_newcomer_is_findable_once_onboarded_with_hashtags_snapshot_users_follow() {
    let (app, _dir) = live_app();
    let uri = "/v1/users/newcomer-7/similar?limit=15";
    let (status, error) = get(&app, uri).await;
    assert_eq!(
        (status, code(&error)),
        (StatusCode::NOT_FOUND, Some("unknown_user")),
        "{error}"
    );

    // Two tags that snapshot users follow (the first users' first follows).
    let mut tags: Vec<String> = Vec::new();
    for tag in world().users.iter().filter_map(|u| u.follows.first()) {
        if tags.len() < 2 && !tags.contains(tag) {
            tags.push(tag.clone());
        }
    }
    assert_eq!(tags.len(), 2, "the demo world's users follow hashtags");
    let (status, view) = put_json(
        &app,
        "/v1/users/newcomer-7",
        json!({"langs": ["en"], "follows": tags}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{view}");

    let (status, body) = get(&app, uri).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], "newcomer-7");
    let ranking = exact_ranking(&followers_centroid(&tags), None);
    assert_exact(&listed(&body), &ranking, 15);

    // The newcomer is now among the users a snapshot user can find.
    let follower = world()
        .users
        .iter()
        .position(|u| u.follows.contains(&tags[0]))
        .unwrap();
    let centroid: Vec<f32> = followers_centroid(&tags)
        .iter()
        .map(|&x| x as f32)
        .collect();
    let mut ranking = exact_ranking(&as_f64(&user_vector(follower)), Some(follower));
    ranking.push((
        "newcomer-7".to_string(),
        cosine(&user_vector(follower), &centroid),
    ));
    ranking.sort_by(|a, b| b.1.total_cmp(&a.1));
    let at = ranking
        .iter()
        .position(|(id, _)| id == "newcomer-7")
        .unwrap();
    assert!(at < 50, "a follower of their tag is near them (place {at})");
    let (status, body) = get(
        &app,
        &format!("/v1/users/{}/similar?limit=100", world().users[follower].id),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_exact(&listed(&body), &ranking, 100);
}

#[tokio::test]
async fn a_user_known_only_by_events_gets_similar_users_once_a_save_gives_them_an_embedding() {
    let (app, _dir) = live_app();
    let post = &world().posts[11];
    let uri = "/v1/users/events-only/similar?limit=25";

    // An impression tells nothing of their interests: still unknown.
    send_events(&app, vec![event("events-only", &post.id, "impression")]).await;
    let (status, error) = get(&app, uri).await;
    assert_eq!(
        (status, code(&error)),
        (StatusCode::NOT_FOUND, Some("unknown_user")),
        "{error}"
    );

    // A save starts their embedding at the post's direction.
    send_events(&app, vec![event("events-only", &post.id, "save")]).await;
    let (status, body) = get(&app, uri).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ranking = exact_ranking(&as_f64(&post_vector(post_row(&post.id))), None);
    assert_exact(&listed(&body), &ranking, 25);
}

#[tokio::test]
async fn a_snapshot_users_embedding_moved_by_events_decides_their_similar_users() {
    let (app, _dir) = live_app();
    let row = 42;
    let user = world().users[row].id.clone();
    let start = as_f64(&user_vector(row));
    // The organic post farthest from the user: saves on it turn them the most.
    let far = (0..world().posts.len())
        .filter(|&p| world().posts[p].kind == PostKind::Organic)
        .min_by(|&a, &b| {
            let s = |p| cosine(&user_vector(row), &post_vector(p));
            s(a).total_cmp(&s(b))
        })
        .unwrap();
    let saves = 8;
    send_events(
        &app,
        (0..saves)
            .map(|_| event(&user, &world().posts[far].id, "save"))
            .collect(),
    )
    .await;

    // Each save: v ← unit(v) + 0.2 · unit(post) (the length does not matter to cosine).
    let unit = |v: &[f64]| {
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        v.iter().map(|x| x / norm).collect::<Vec<f64>>()
    };
    let p = unit(&as_f64(&post_vector(far)));
    let mut moved = start.clone();
    for _ in 0..saves {
        moved = unit(&moved)
            .iter()
            .zip(&p)
            .map(|(v, p)| v + 0.2 * p)
            .collect();
    }

    let (status, body) = get(&app, &format!("/v1/users/{user}/similar?limit=20")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let got = listed(&body);
    assert_exact(&got, &exact_ranking(&moved, Some(row)), 20);
    let before: Vec<String> = exact_ranking(&start, Some(row))
        .into_iter()
        .take(20)
        .map(|(id, _)| id)
        .collect();
    let now: Vec<String> = got.into_iter().map(|(id, _)| id).collect();
    assert_ne!(
        now, before,
        "the moved embedding, not the snapshot's, decided"
    );
}

#[tokio::test]
async fn a_small_creators_new_post_is_offered_to_its_nearest_users_and_counts_impressions() {
    // An audience larger than the world's 200 users.
    let (app, _dir) = live_app_with(|o| o.audience.audience_size = 500);
    let author = "brand-new-creator";
    assert!(!author_views().contains_key(author));
    // Between two users' interests, so that it is nobody's own vector.
    let embedding: Vec<f32> = user_vector(5)
        .iter()
        .zip(user_vector(6))
        .map(|(a, b)| 0.7 * a + 0.3 * b)
        .collect();
    publish(&app, vec![new_post("p_small", author, &embedding)]).await;

    let uri = "/v1/posts/p_small/audience?limit=30";
    let (status, body) = get(&app, uri).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["model_version"], world().model_version());
    assert_eq!(body["post_id"], "p_small");
    assert_eq!(body["small_creator"], true);
    // Fewer users than an audience: every user is in it, no radius.
    assert_eq!(
        body["offer"],
        json!({"active": true, "impressions": 0, "radius": null})
    );
    let ranking = exact_ranking(&as_f64(&embedding), None);
    assert_exact(&listed(&body), &ranking, 30);
    let (_, default_limit) = get(&app, "/v1/posts/p_small/audience").await;
    assert_eq!(listed(&default_limit).len(), 20);

    // Impression events count; a like does not.
    let viewers: Vec<&str> = (20..23).map(|r| world().users[r].id.as_str()).collect();
    let mut events: Vec<Value> = viewers
        .iter()
        .map(|u| event(u, "p_small", "impression"))
        .collect();
    events.push(event(viewers[0], "p_small", "like"));
    send_events(&app, events).await;
    let (status, body) = get(&app, uri).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["offer"],
        json!({"active": true, "impressions": 3, "radius": null})
    );
    assert_exact(&listed(&body), &ranking, 30);

    // An ad of a new author is not offered.
    let mut ad = new_post("p_small_ad", author, &embedding);
    ad["kind"] = json!("ad");
    publish(&app, vec![ad]).await;
    let (status, body) = get(&app, "/v1/posts/p_small_ad/audience").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (&body["small_creator"], &body["offer"]),
        (&json!(true), &json!(null))
    );
}

#[tokio::test]
async fn an_offer_has_its_audiences_edge_as_radius_and_ends_after_its_impressions() {
    let (app, _dir) = live_app_with(|o| {
        o.audience.audience_size = 50;
        o.audience.max_impressions = 3;
    });
    let embedding = user_vector(9);
    publish(
        &app,
        vec![new_post("p_edge", "another-new-creator", &embedding)],
    )
    .await;
    let ranking = exact_ranking(&as_f64(&embedding), None);

    let (status, body) = get(&app, "/v1/posts/p_edge/audience?limit=50").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_exact(&listed(&body), &ranking, 50);
    let offer = &body["offer"];
    assert_eq!(
        (&offer["active"], &offer["impressions"]),
        (&json!(true), &json!(0))
    );
    let radius = offer["radius"].as_f64().unwrap();
    assert!(
        (radius - ranking[49].1).abs() < EPS,
        "{radius} vs {}",
        ranking[49].1
    );

    let viewers: Vec<Value> = (30..33)
        .map(|r| event(&world().users[r].id, "p_edge", "impression"))
        .collect();
    send_events(&app, viewers).await;
    let (_, body) = get(&app, "/v1/posts/p_edge/audience").await;
    assert_eq!(
        (&body["offer"]["active"], &body["offer"]["impressions"]),
        (&json!(false), &json!(3)),
        "{body}"
    );
}

#[tokio::test]
async fn posts_of_big_snapshot_authors_and_snapshot_posts_are_not_on_offer() {
    let (app, _dir) = live_app();
    let views = author_views();
    let small = FeedOptions::default().audience.small_creator_max_views;
    let big = world()
        .posts
        .iter()
        .position(|p| p.kind == PostKind::Organic && views[p.author.as_str()] >= small * 4)
        .expect("an author with many views");
    let post = &world().posts[big];

    // Their snapshot post.
    let (status, body) = get(&app, &format!("/v1/posts/{}/audience?limit=10", post.id)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["small_creator"], false);
    assert_eq!(body["offer"], Value::Null);
    assert_exact(
        &listed(&body),
        &exact_ranking(&as_f64(&post_vector(big)), None),
        10,
    );

    // Their new post: published, but not offered.
    let embedding = user_vector(12);
    publish(&app, vec![new_post("p_big", &post.author, &embedding)]).await;
    let (status, body) = get(&app, "/v1/posts/p_big/audience?limit=10").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["small_creator"], false);
    assert_eq!(body["offer"], Value::Null);
    assert_exact(
        &listed(&body),
        &exact_ranking(&as_f64(&embedding), None),
        10,
    );

    // A small author's snapshot post: small, but only posts published since are offered.
    let quiet = world()
        .posts
        .iter()
        .find(|p| views[p.author.as_str()] < small)
        .expect("an author with few views");
    let (status, body) = get(&app, &format!("/v1/posts/{}/audience", quiet.id)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (&body["small_creator"], &body["offer"]),
        (&json!(true), &json!(null))
    );
}

#[tokio::test]
async fn both_routes_over_a_real_socket() {
    let (state, _dir) = live_state_with(|_| {});
    let server = Server::start(state).await;
    let addr = server.addr;

    let user = &world().users[3].id;
    let (status, body) = raw_http(
        addr,
        "GET",
        &format!("/v1/users/{user}/similar?limit=5"),
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_exact(
        &listed(&body),
        &exact_ranking(&as_f64(&user_vector(3)), Some(3)),
        5,
    );

    let embedding = user_vector(4);
    let posts = json!({"posts": [new_post("p_socket", "socket-creator", &embedding)]});
    let (status, body) = raw_http(addr, "POST", "/v1/posts", &posts.to_string()).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = raw_http(addr, "GET", "/v1/posts/p_socket/audience?limit=7", "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["small_creator"], &body["offer"]["active"]),
        (&json!(true), &json!(true))
    );
    assert_exact(&listed(&body), &exact_ranking(&as_f64(&embedding), None), 7);

    let (status, body) = raw_http(addr, "GET", "/v1/posts/p_nowhere/audience", "").await;
    assert_eq!((status, code(&body)), (404, Some("unknown_post")), "{body}");
    let (status, body) = raw_http(addr, "GET", "/v1/users/nobody/similar?limit=abc", "").await;
    assert_eq!(
        (status, code(&body)),
        (400, Some("invalid_limit")),
        "{body}"
    );
    server.stop().await;
}
