//! Hot reload over a real socket: the admin routes swap snapshots while clients read feeds and
//! write events, and no request fails or mixes two models.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use feedrank::api::AppState;
use feedrank::candidates::IndexKind;
use feedrank::demo::{self, DemoConfig};
use feedrank::feed::{FeedOptions, Model};
use feedrank::lifecycle::Lifecycle;
use feedrank::live::{Live, LiveOptions};
use feedrank::snapshot::Snapshot;

mod common;
use common::{Server, raw_http, raw_http_with};

const TOKEN: &str = "s3cret-admin-token";

/// Broken copies of snapshot `a`: the directory, the file broken, and a word the reasons
/// must contain.
const BROKEN: [(&str, &str, &str); 5] = [
    ("truncated-npy", "posts.npy", "posts.npy"),
    ("missing-file", "users.npy", "users.npy"),
    ("manifest-not-json", "manifest.json", "manifest.json"),
    ("wrong-dim", "manifest.json", "dim"),
    ("bad-record", "posts.jsonl", "posts.jsonl"),
];

/// A small world with its own version and post ids (`prefix` before each), so a page shows
/// which snapshot it came from.
fn world(seed: u64, prefix: &str) -> Snapshot {
    let mut snapshot = demo::generate(&DemoConfig {
        posts: 800,
        users: 60,
        seed,
        dim: 16,
    })
    .unwrap();
    for post in &mut snapshot.posts {
        post.id = format!("{prefix}{}", post.id);
    }
    snapshot
}

fn options() -> FeedOptions {
    FeedOptions {
        index: IndexKind::Exact,
        ..FeedOptions::default()
    }
}

struct Setup {
    _root: tempfile::TempDir,
    state: Arc<AppState>,
    /// Post ids per model version.
    ids: Vec<(String, HashSet<String>)>,
    models: std::path::PathBuf,
}

/// Snapshots `a` and `b` (and a corrupt one) in a models directory; `a` serving with live
/// state.
fn setup(token: Option<&str>) -> Setup {
    setup_with(token, Duration::from_secs(5))
}

fn setup_with(token: Option<&str>, request_timeout: Duration) -> Setup {
    let root = tempfile::tempdir().unwrap();
    let models = root.path().join("models");
    let mut ids = Vec::new();
    for (name, seed, prefix) in [("a", 11, "a_"), ("b", 12, "b_")] {
        let snapshot = world(seed, prefix);
        snapshot.write_to(&models.join(name)).unwrap();
        let set = snapshot.posts.iter().map(|p| p.id.clone()).collect();
        ids.push((snapshot.model_version().to_string(), set));
    }
    // Copies of `a`, each broken in one way.
    for (name, file, _) in BROKEN {
        let broken = models.join(name);
        std::fs::create_dir_all(&broken).unwrap();
        for entry in std::fs::read_dir(models.join("a")).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), broken.join(entry.file_name())).unwrap();
        }
        let path = broken.join(file);
        let bytes = std::fs::read(&path).unwrap();
        match name {
            "truncated-npy" => std::fs::write(&path, &bytes[..bytes.len() - 7]).unwrap(),
            "missing-file" => std::fs::remove_file(&path).unwrap(),
            "manifest-not-json" => std::fs::write(&path, b"{not json").unwrap(),
            "wrong-dim" => {
                let text = String::from_utf8(bytes).unwrap();
                assert!(text.contains("\"dim\": 16"), "{text}");
                std::fs::write(&path, text.replace("\"dim\": 16", "\"dim\": 17")).unwrap();
            }
            "bad-record" => {
                let text = String::from_utf8(bytes).unwrap();
                let rest = text.split_once('\n').unwrap().1;
                std::fs::write(&path, format!("{{\"id\": 5}}\n{rest}")).unwrap();
            }
            other => unreachable!("{other}"),
        }
    }

    let lifecycle = Arc::new(Lifecycle::new(&models, options()).unwrap());
    let state = AppState::with_admin(request_timeout, 1_000, lifecycle.clone(), token);
    let model = Arc::new(Model::load(&models.join("a"), options()).unwrap());
    lifecycle.record(&models.join("a"), &model, Duration::ZERO);
    let (live, _) = Live::open(
        model,
        &root.path().join("data"),
        LiveOptions {
            sync: false,
            ..LiveOptions::default()
        },
        state.profiles().clone(),
    )
    .unwrap();
    state.serve_live(Arc::new(live));
    Setup {
        _root: root,
        state,
        ids,
        models,
    }
}

/// [`setup`] with the service on a socket.
async fn started(token: Option<&str>) -> (Setup, Server) {
    let setup = setup(token);
    let server = Server::start(setup.state.clone()).await;
    (setup, server)
}

/// `POST /admin/snapshots/reload` of `path`, with the token.
async fn reload(addr: std::net::SocketAddr, path: &str) -> (u16, Value) {
    let body = json!({ "path": path }).to_string();
    admin(addr, "POST", "/admin/snapshots/reload", &body).await
}

async fn admin(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    let auth = format!("Bearer {TOKEN}");
    raw_http_with(addr, method, path, &[("Authorization", &auth)], body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_reloads_under_load_fail_no_request_and_mix_no_models() {
    let (setup, server) = started(Some(TOKEN)).await;
    let addr = server.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let ids = Arc::new(setup.ids.clone());
    let mut clients = Vec::new();
    for c in 0..4 {
        let (stop, served, ids) = (stop.clone(), served.clone(), ids.clone());
        clients.push(tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let user = format!("u_{:04}", 1 + (c * 13 + i) % 60);
                let (status, page) =
                    raw_http(addr, "GET", &format!("/v1/users/{user}/feed?limit=20"), "").await;
                assert_eq!(status, 200, "{page}");
                let version = page["model_version"].as_str().unwrap();
                let known = &ids
                    .iter()
                    .find(|(v, _)| v == version)
                    .expect("a known version")
                    .1;
                let items = page["items"].as_array().unwrap();
                assert!(!items.is_empty());
                for item in items {
                    let id = item["post_id"].as_str().unwrap();
                    assert!(known.contains(id), "{id} is not a post of {version}");
                }
                // Writes through the reloads too: a hide of what was just served.
                let event = json!({"events": [{"user_id": user, "post_id": items[0]["post_id"],
                    "type": "hide", "ts": 1_900_000_000}]});
                let (status, outcome) =
                    raw_http(addr, "POST", "/v1/events", &event.to_string()).await;
                assert_eq!(status, 200, "{outcome}");
                served.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for n in 0..100 {
        let path = if n % 2 == 0 { "b" } else { "a" };
        let (status, body) = reload(addr, path).await;
        assert_eq!(status, 200, "reload {n}: {body}");
        assert_eq!(body["serving"]["path"], path);
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    assert!(
        served.load(Ordering::Relaxed) > 100,
        "clients ran during the reloads"
    );
    // The last reload was to `a`; `b` served before it.
    let (status, body) = admin(addr, "GET", "/admin/snapshots", "").await;
    assert_eq!(status, 200);
    assert_eq!(body["serving"]["model_version"], setup.ids[0].0.as_str());
    assert_eq!(body["previous"]["model_version"], setup.ids[1].0.as_str());
    server.stop().await;
}

#[tokio::test]
async fn a_bad_reload_keeps_the_old_model_and_says_why() {
    let (setup, server) = started(Some(TOKEN)).await;
    let addr = server.addr;
    let serving = |state: &AppState| state.model().unwrap().model_version().to_string();
    let before = serving(&setup.state);

    for (name, _, reason) in BROKEN {
        let (status, body) = reload(addr, name).await;
        assert_eq!(status, 422, "{name}: {body}");
        assert_eq!(body["code"], "invalid_snapshot");
        let errors = body["errors"].as_array().unwrap();
        assert!(!errors.is_empty(), "{name}");
        assert!(body.to_string().contains(reason), "{name}: {body}");
        assert_eq!(serving(&setup.state), before, "{name}");
        let (status, _) = raw_http(addr, "GET", "/v1/users/u_0001/feed", "").await;
        assert_eq!(status, 200);
    }

    for bad in ["../outside", "/etc", "missing", ""] {
        let (status, body) = reload(addr, bad).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("invalid_path")),
            "{bad}: {body}"
        );
    }
    let (status, body) = admin(addr, "POST", "/admin/snapshots/reload", r#"{"pth": "a"}"#).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_body")));
    // Nothing to roll back to yet: only `a` has served.
    let (status, body) = admin(addr, "POST", "/admin/snapshots/rollback", "").await;
    assert_eq!((status, body["code"].as_str()), (409, Some("no_previous")));
    assert_eq!(serving(&setup.state), before);

    // Reload, then roll back: the live state goes along (a hide stays hidden).
    let (status, page) = raw_http(addr, "GET", "/v1/users/u_0003/feed?limit=5", "").await;
    assert_eq!(status, 200);
    let hidden = page["items"][0]["post_id"].as_str().unwrap().to_string();
    let event = json!({"events": [{"user_id": "u_0003", "post_id": hidden, "type": "hide", "ts": 1_900_000_000}]});
    raw_http(addr, "POST", "/v1/events", &event.to_string()).await;
    let (status, _) = reload(addr, "b").await;
    assert_eq!(status, 200);
    assert_ne!(serving(&setup.state), before);
    let (status, body) = admin(addr, "POST", "/admin/snapshots/rollback", "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["serving"]["path"], "a");
    assert_eq!(serving(&setup.state), before);
    let (_, page) = raw_http(addr, "GET", "/v1/users/u_0003/feed?limit=100", "").await;
    assert!(
        !common::post_ids(&page).contains(&hidden),
        "the hide was carried through two reloads"
    );
    server.stop().await;
}

#[tokio::test]
async fn admin_routes_need_the_token_and_are_off_without_one() {
    let (setup, server) = started(Some(TOKEN)).await;
    let addr = server.addr;
    for headers in [
        vec![],
        vec![("Authorization", "Bearer wrong")],
        vec![("Authorization", TOKEN)],
    ] {
        let (status, body) = raw_http_with(
            addr,
            "POST",
            "/admin/snapshots/reload",
            &headers,
            r#"{"path": "b"}"#,
        )
        .await;
        assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
        let (status, _) = raw_http_with(addr, "GET", "/admin/snapshots", &headers, "").await;
        assert_eq!(status, 401);
    }
    assert_eq!(
        setup.state.model().unwrap().model_version(),
        setup.ids[0].0,
        "nothing reloaded"
    );
    server.stop().await;

    let setup = setup_disabled();
    let server = Server::start(setup.state.clone()).await;
    let auth = format!("Bearer {TOKEN}");
    let (status, body) = raw_http_with(
        server.addr,
        "GET",
        "/admin/snapshots",
        &[("Authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("admin_disabled"))
    );
    assert!(setup.models.exists());
    server.stop().await;
}

#[tokio::test]
async fn a_reload_longer_than_the_request_timeout_still_answers() {
    let setup = setup_with(Some(TOKEN), Duration::from_millis(1));
    let server = Server::start(setup.state.clone()).await;
    let (status, body) = admin(
        server.addr,
        "POST",
        "/admin/snapshots/reload",
        r#"{"path": "b"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["serving"]["load_ms"].as_u64().unwrap() >= 1, "{body}");
    server.stop().await;
}

fn setup_disabled() -> Setup {
    setup(None)
}

#[test]
fn the_models_directory_must_exist() {
    assert!(Lifecycle::new(Path::new("/no/such/models"), options()).is_err());
}

#[tokio::test]
async fn a_candidate_arm_serves_a_stable_share_of_users_and_can_be_promoted() {
    let (setup, server) = started(Some(TOKEN)).await;
    let addr = server.addr;
    let (a, b) = (&setup.ids[0], &setup.ids[1]);

    for bad in [
        r#"{"path": "b", "share": 0}"#,
        r#"{"path": "b", "share": 1.5}"#,
        r#"{"path": "b"}"#,
    ] {
        let (status, body) = admin(addr, "POST", "/admin/arms/candidate", bad).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("invalid_body")),
            "{bad}"
        );
    }
    let (status, body) = admin(
        addr,
        "POST",
        "/admin/arms/candidate",
        r#"{"path": "b", "share": 0.3}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["candidate"]["model_version"], b.0.as_str());
    assert_eq!(body["candidate"]["share"], 0.3);
    assert_eq!(body["serving"]["model_version"], a.0.as_str());

    // Each user's arm is decided by the hash of their id, the same on every request.
    let mut on_candidate = 0;
    for u in 1..=60 {
        let user = format!("u_{u:04}");
        let want = feedrank::api::user_bucket(&user) < 0.3;
        for _ in 0..2 {
            let (status, page) =
                raw_http(addr, "GET", &format!("/v1/users/{user}/feed?limit=10"), "").await;
            assert_eq!(status, 200);
            let (arm, ids) = if want { ("candidate", b) } else { ("main", a) };
            assert_eq!(page["arm"], arm, "{user}");
            assert_eq!(page["model_version"], ids.0.as_str());
            assert!(common::post_ids(&page).iter().all(|id| ids.1.contains(id)));
            let (_, tags) = raw_http(addr, "GET", &format!("/v1/users/{user}/hashtags"), "").await;
            assert_eq!(tags["arm"], arm);
        }
        on_candidate += usize::from(want);
    }
    assert!(
        (5..=35).contains(&on_candidate),
        "{on_candidate} of 60 on a 30% arm"
    );

    // Promotion: the candidate serves everyone, with the live state handed over.
    let (status, body) = admin(addr, "POST", "/admin/arms/candidate/promote", "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["serving"]["model_version"], b.0.as_str());
    assert_eq!(body["previous"]["model_version"], a.0.as_str());
    assert!(body["candidate"].is_null());
    let (_, page) = raw_http(addr, "GET", "/v1/users/u_0001/feed", "").await;
    assert_eq!(
        (page["arm"].as_str(), page["model_version"].as_str()),
        (Some("main"), Some(b.0.as_str()))
    );
    let event = json!({"events": [{"user_id": "u_0001", "post_id": common::post_ids(&page)[0], "type": "save", "ts": 1_900_000_000}]});
    let (status, outcome) = raw_http(addr, "POST", "/v1/events", &event.to_string()).await;
    assert_eq!(
        (status, outcome["accepted"].as_u64()),
        (200, Some(1)),
        "{outcome}"
    );

    // A trial can be ended; ending none is a 404.
    admin(
        addr,
        "POST",
        "/admin/arms/candidate",
        r#"{"path": "a", "share": 0.5}"#,
    )
    .await;
    let (status, body) = admin(addr, "DELETE", "/admin/arms/candidate", "").await;
    assert_eq!(status, 200);
    assert!(body["candidate"].is_null());
    let (status, body) = admin(addr, "DELETE", "/admin/arms/candidate", "").await;
    assert_eq!((status, body["code"].as_str()), (404, Some("no_candidate")));
    server.stop().await;
}

#[tokio::test]
async fn metrics_count_reloads_and_split_feeds_by_arm() {
    let (setup, server) = started(Some(TOKEN)).await;
    let addr = server.addr;
    reload(addr, "b").await;
    reload(addr, "bad-record").await;
    reload(addr, "../x").await;
    admin(
        addr,
        "POST",
        "/admin/arms/candidate",
        r#"{"path": "a", "share": 0.5}"#,
    )
    .await;
    let mut arms = [0u64; 2];
    for u in 1..=20 {
        let (_, page) = raw_http(addr, "GET", &format!("/v1/users/u_{u:04}/feed"), "").await;
        arms[usize::from(page["arm"] == "candidate")] += 1;
    }
    assert!(arms[0] > 0 && arms[1] > 0, "{arms:?}");
    let text = setup.state.metrics().render(&Default::default());
    let line = |needle: &str| {
        text.lines()
            .find(|l| l.starts_with(needle))
            .unwrap_or_else(|| panic!("{needle} in\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .to_string()
    };
    // A refused path attempted nothing; the broken snapshot is a failed reload.
    assert_eq!(line("feedrank_reloads_total{result=\"ok\"}"), "1");
    assert_eq!(line("feedrank_reloads_total{result=\"failed\"}"), "1");
    for (arm, n) in [("main", arms[0]), ("candidate", arms[1])] {
        let count = format!("feedrank_feed_stage_seconds_count{{stage=\"arrange\",arm=\"{arm}\"}}");
        assert_eq!(line(&count), n.to_string(), "{arm}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_replaced_model_and_its_live_state_are_freed() {
    let (setup, server) = started(Some(TOKEN)).await;
    let addr = server.addr;
    let mut replaced = Vec::new();
    for path in ["b", "a", "b", "a", "b"] {
        let model = Arc::downgrade(&setup.state.model().unwrap());
        let live = Arc::downgrade(&setup.state.live().unwrap());
        let (status, _) = reload(addr, path).await;
        assert_eq!(status, 200);
        let (status, _) = raw_http(addr, "GET", "/v1/users/u_0002/feed", "").await;
        assert_eq!(status, 200);
        replaced.push((model, live));
    }
    // Nothing holds a replaced model once no request runs on it: reloads do not accumulate.
    for (i, (model, live)) in replaced.iter().enumerate() {
        assert!(model.upgrade().is_none(), "model {i} still held");
        assert!(live.upgrade().is_none(), "live state {i} still held");
    }
    server.stop().await;
}
