//! `GET /metrics` in-process: after a known set of requests (feeds, a bad request, an
//! unknown route, an events batch, publishing), the scraped counters are exact, the
//! exposition parses line by line, every histogram is cumulative and ends with `+Inf` equal
//! to its count, and each stage of the feed pipeline has one observation per feed served;
//! the user index's gauges follow onboarding, events and refused placements. No assertion on
//! time.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use feedrank::api::{self, AppState};
use feedrank::candidates::IndexKind;
use feedrank::feed::{FeedOptions, Model};
use feedrank::live::{Live, LiveOptions};
use feedrank::snapshot::{PostKind, Snapshot};

mod common;
use common::{get, post_json, send};

const DIM: usize = 32;

fn world() -> &'static Snapshot {
    static WORLD: OnceLock<Snapshot> = OnceLock::new();
    WORLD.get_or_init(|| common::demo_world(3_000, 200, 53, DIM))
}

/// A service with live events and publishing on a fresh exact model and a fresh log.
fn app() -> (axum::Router, Arc<AppState>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let model = Arc::new(common::exact_model(world()));
    let state = AppState::new(Duration::from_secs(5));
    let profiles = state.profiles().clone();
    let (live, _) = Live::open(model, dir.path(), LiveOptions::default(), profiles).unwrap();
    state.serve_live(Arc::new(live));
    (api::router(state.clone()), state, dir)
}

/// `GET /metrics`: the body, after checking the status and the content type.
async fn scrape(app: &axum::Router) -> String {
    let request = Request::get("/metrics").body(Body::empty()).unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/plain; version=0.0.4"
    );
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// One sample: `name{label="value",...} value`.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses a sample line of the text format (label values unescaped), or says why not.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .ok_or("no value")?;
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = rest.find('=').ok_or("label without =")?;
            let label = &rest[..eq];
            if label.is_empty()
                || !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                || label.starts_with(|c: char| c.is_ascii_digit())
            {
                return Err(format!("bad label name {label:?}"));
            }
            rest = rest[eq + 1..]
                .strip_prefix('"')
                .ok_or("label value not quoted")?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                match chars.next().ok_or("unterminated label value")? {
                    (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        other => return Err(format!("bad escape \\{other}")),
                    },
                    (i, '"') => break i,
                    (_, '\n') => return Err("raw newline in a label value".into()),
                    (_, c) => value.push(c),
                }
            };
            if labels.insert(label.to_string(), value).is_some() {
                return Err(format!("label {label} twice"));
            }
            rest = &rest[end + 1..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
    }
    let value = rest.strip_prefix(' ').ok_or("no space before the value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().map_err(|_| format!("bad value {v:?}"))?,
    };
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Every sample of the exposition; panics on a line that is neither a comment nor a sample,
/// or a sample before its family's `# TYPE`.
fn parse(text: &str) -> (Vec<Sample>, BTreeMap<String, String>) {
    let mut types = BTreeMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(
                types.insert(name.to_string(), kind.to_string()).is_none(),
                "{name} typed twice"
            );
        } else if line.starts_with("# HELP ") {
            continue;
        } else {
            assert!(!line.starts_with('#'), "unknown comment {line:?}");
            let sample = parse_sample(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    let base = sample.name.strip_suffix(s)?;
                    (types.get(base).map(String::as_str) == Some("histogram")).then_some(base)
                })
                .unwrap_or(&sample.name);
            assert!(types.contains_key(family), "{line:?} before its TYPE");
            assert!(sample.name.starts_with("feedrank_"), "{line:?}");
            samples.push(sample);
        }
    }
    (samples, types)
}

/// The value of the one sample `name` with exactly `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == name && s.labels == labels)
        .collect();
    assert_eq!(found.len(), 1, "{name}{labels:?}: {found:?}");
    found[0].value
}

/// Checks every histogram: per series, buckets with increasing bounds and non-decreasing
/// counts, the last `+Inf` and equal to `_count`. Returns the `_count` of each series.
fn check_histograms(
    samples: &[Sample],
    types: &BTreeMap<String, String>,
) -> BTreeMap<(String, BTreeMap<String, String>), f64> {
    let mut counts = BTreeMap::new();
    for (name, _) in types.iter().filter(|(_, kind)| *kind == "histogram") {
        let bucket_name = format!("{name}_bucket");
        let mut series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
        for s in samples.iter().filter(|s| s.name == bucket_name) {
            let mut labels = s.labels.clone();
            let le = labels.remove("le").expect("a bucket has le");
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            series.entry(labels).or_default().push((bound, s.value));
        }
        for (labels, buckets) in series {
            let pairs: Vec<_> = labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            assert!(
                buckets
                    .windows(2)
                    .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
                "{name}{labels:?}: {buckets:?}"
            );
            let (last_bound, last_count) = *buckets.last().unwrap();
            assert_eq!(last_bound, f64::INFINITY, "{name}{labels:?}");
            let count = value(samples, &format!("{name}_count"), &pairs);
            assert_eq!(last_count, count, "{name}{labels:?}: +Inf is the count");
            let sum = value(samples, &format!("{name}_sum"), &pairs);
            assert!(sum >= 0.0 && sum.is_finite(), "{name}{labels:?}: sum {sum}");
            counts.insert((name.clone(), labels), count);
        }
    }
    counts
}

fn kinds(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["kind"].as_str().unwrap().to_string())
        .collect()
}

fn event(user: &str, post: &str, kind: &str) -> Value {
    json!({"user_id": user, "post_id": post, "type": kind, "ts": 1_700_000_000})
}

#[tokio::test]
async fn scraped_counts_match_the_requests_made() {
    let (app, state, _dir) = app();
    let world = world();
    let users: Vec<&str> = [3, 7, 11]
        .iter()
        .map(|&i| world.users[i].id.as_str())
        .collect();
    let newest = world.newest_post_time().unwrap();

    // Publishing: one organic post and one ad.
    let embedding = world.user_vectors.row(7).to_vec();
    let post = |id: &str, kind: &str| {
        json!({
            "id": id, "author": "a_new_creator", "lang": world.users[7].langs[0],
            "hashtags": ["metrics"], "kind": kind, "created_at": newest + 60,
            "embedding": embedding,
        })
    };
    let (status, body) = post_json(
        &app,
        "/v1/posts",
        json!({"posts": [post("m_organic", "organic"), post("m_ad", "ad")]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // An events batch: two accepted, one rejected (a post nobody knows).
    let known_post = &world.posts[0].id;
    let (status, outcome) = post_json(
        &app,
        "/v1/events",
        json!({"events": [
            event(users[0], known_post, "save"),
            event(users[1], known_post, "like"),
            event(users[2], "no_such_post", "like"),
        ]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{outcome}");
    assert_eq!(outcome["accepted"], 2);

    // Four feeds served: three known users and one the model does not know.
    let mut served: Vec<String> = Vec::new();
    for user in users.iter().copied().chain(["someone_new"]) {
        let (status, page) = get(&app, &format!("/v1/users/{user}/feed?limit=20")).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        served.extend(kinds(&page));
    }
    // A bad request (the feed layer refuses the limit, before any stage runs), an unknown
    // route, and a health check.
    let (status, _) = get(&app, &format!("/v1/users/{}/feed?limit=0", users[0])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = get(&app, "/v1/no/such/route").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = get(&app, "/healthz").await;
    assert_eq!(status, StatusCode::OK);

    let text = scrape(&app).await;
    let (samples, types) = parse(&text);
    let counts = check_histograms(&samples, &types);

    // Requests: exactly these series (this scrape is counted once it is answered).
    let total = "feedrank_http_requests_total";
    let feed = "/v1/users/{user_id}/feed";
    let requests: BTreeMap<(String, String, String), f64> = samples
        .iter()
        .filter(|s| s.name == total)
        .map(|s| {
            let l = |k: &str| s.labels[k].clone();
            ((l("route"), l("method"), l("status")), s.value)
        })
        .collect();
    let expected: BTreeMap<(String, String, String), f64> = [
        ((feed, "GET", "200"), 4.0),
        ((feed, "GET", "400"), 1.0),
        (("unmatched", "GET", "404"), 1.0),
        (("/v1/events", "POST", "200"), 1.0),
        (("/v1/posts", "POST", "201"), 1.0),
        (("/healthz", "GET", "200"), 1.0),
    ]
    .into_iter()
    .map(|((r, m, s), n)| ((r.to_string(), m.to_string(), s.to_string()), n))
    .collect();
    assert_eq!(requests, expected, "{text}");
    let duration = "feedrank_http_request_duration_seconds";
    let route_count = |route: &str| {
        let labels = BTreeMap::from([("route".to_string(), route.to_string())]);
        counts[&(duration.to_string(), labels)]
    };
    assert_eq!(route_count(feed), 5.0);
    assert_eq!(route_count("unmatched"), 1.0);
    assert_eq!(route_count("/v1/events"), 1.0);

    // One observation per feed served in every stage; the refused request has none.
    for stage in ["sources", "hydrate", "ads", "arrange", "page"] {
        for (arm, n) in [("main", 4.0), ("candidate", 0.0)] {
            let labels = BTreeMap::from([
                ("stage".to_string(), stage.to_string()),
                ("arm".to_string(), arm.to_string()),
            ]);
            assert_eq!(
                counts[&("feedrank_feed_stage_seconds".to_string(), labels)],
                n,
                "{stage} {arm}"
            );
        }
    }
    // Pages: items by kind and ads per page, as the responses had them.
    let served_of = |kind: &str| served.iter().filter(|k| *k == kind).count() as f64;
    for kind in ["organic", "sponsored", "ad"] {
        assert_eq!(
            value(
                &samples,
                "feedrank_feed_items_total",
                &[("kind", kind), ("arm", "main")]
            ),
            served_of(kind),
            "{kind}"
        );
    }
    assert!(served_of("ad") > 0.0, "known users' pages carry ads");
    assert_eq!(
        value(
            &samples,
            "feedrank_feed_ads_per_page_count",
            &[("arm", "main")]
        ),
        4.0
    );
    assert_eq!(
        value(
            &samples,
            "feedrank_feed_ads_per_page_sum",
            &[("arm", "main")]
        ),
        served_of("ad")
    );

    // Events, publishing, reloads.
    let events = |outcome| value(&samples, "feedrank_events_total", &[("outcome", outcome)]);
    assert_eq!((events("accepted"), events("rejected")), (2.0, 1.0));
    assert_eq!(value(&samples, "feedrank_posts_published_total", &[]), 2.0);
    for result in ["ok", "failed"] {
        assert_eq!(
            value(&samples, "feedrank_reloads_total", &[("result", result)]),
            0.0
        );
    }

    // Gauges of the serving state.
    let model = state.model().unwrap();
    assert_eq!(
        value(
            &samples,
            "feedrank_model_info",
            &[("model_version", model.model_version()), ("arm", "main")]
        ),
        1.0
    );
    let ads = world
        .posts
        .iter()
        .filter(|p| p.kind == PostKind::Ad)
        .count() as f64;
    let organic = world.posts.len() as f64 - ads;
    for (index, segment, rows) in [
        ("organic", "base", organic),
        ("organic", "sealed", 0.0),
        ("organic", "delta", 1.0),
        ("ads", "base", ads),
        ("ads", "sealed", 0.0),
        ("ads", "delta", 1.0),
    ] {
        assert_eq!(
            value(
                &samples,
                "feedrank_index_rows",
                &[("index", index), ("segment", segment)]
            ),
            rows,
            "{index} {segment}"
        );
    }
    assert_eq!(value(&samples, "feedrank_published_posts", &[]), 2.0);
    // The user index: the snapshot's users in its base, the save's move (if it turned far
    // enough) appended; the organic post of a new author is on offer, the ad is not.
    let users = model.user_index().stats();
    for (segment, rows) in [
        ("base", world.users.len() as f64),
        ("sealed", 0.0),
        ("delta", users.placements as f64),
    ] {
        assert_eq!(
            value(
                &samples,
                "feedrank_index_rows",
                &[("index", "users"), ("segment", segment)]
            ),
            rows,
            "users {segment}"
        );
    }
    assert_eq!(value(&samples, "feedrank_new_users", &[]), 0.0);
    assert_eq!(
        value(&samples, "feedrank_user_placements", &[]),
        users.placements as f64
    );
    assert_eq!(
        value(&samples, "feedrank_user_placements_refused", &[]),
        0.0
    );
    assert_eq!(value(&samples, "feedrank_offered_posts", &[]), 1.0);
    assert_eq!(value(&samples, "feedrank_live_users", &[]), 2.0);
    let wal = state.live().unwrap().wal_stats();
    assert_eq!(value(&samples, "feedrank_wal_bytes", &[]), wal.bytes as f64);
    assert_eq!(
        value(&samples, "feedrank_wal_records", &[]),
        wal.records as f64
    );
    assert!(wal.records >= 2, "the posts and the events were logged");
    assert_eq!(value(&samples, "feedrank_profiles", &[]), 0.0);

    // The next scrape counts the first.
    let (samples, _) = parse(&scrape(&app).await);
    assert_eq!(
        value(
            &samples,
            total,
            &[("route", "/metrics"), ("method", "GET"), ("status", "200")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            total,
            &[("route", feed), ("method", "GET"), ("status", "200")]
        ),
        4.0
    );
}

#[tokio::test]
async fn metrics_answer_before_a_model_serves() {
    let state = AppState::new(Duration::from_secs(5));
    let app = api::router(state);
    let (status, _) = get(&app, "/v1/users/u1/feed").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (samples, types) = parse(&scrape(&app).await);
    check_histograms(&samples, &types);
    for gauge in [
        "feedrank_model_info",
        "feedrank_index_rows",
        "feedrank_live_users",
        "feedrank_new_users",
        "feedrank_user_placements",
        "feedrank_user_placements_refused",
        "feedrank_offered_posts",
    ] {
        assert_eq!(types[gauge], "gauge");
        assert!(samples.iter().all(|s| s.name != gauge), "{gauge}");
    }
    assert_eq!(
        value(
            &samples,
            "feedrank_http_requests_total",
            &[
                ("route", "/v1/users/{user_id}/feed"),
                ("method", "GET"),
                ("status", "503")
            ]
        ),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "feedrank_feed_stage_seconds_count",
            &[("stage", "sources"), ("arm", "main")]
        ),
        0.0
    );
}

/// The user index's gauges follow onboarding and events: a newcomer and a user known only by
/// a save are placed until `max_placements` (2 here) is reached, then placements are refused.
#[tokio::test]
async fn user_index_gauges_follow_newcomers_moves_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = FeedOptions {
        index: IndexKind::Exact,
        ..Default::default()
    };
    options.users.max_placements = 2;
    let model = Arc::new(Model::build(world().clone(), options).unwrap());
    let state = AppState::new(Duration::from_secs(5));
    let profiles = state.profiles().clone();
    let (live, _) = Live::open(model, dir.path(), LiveOptions::default(), profiles).unwrap();
    state.serve_live(Arc::new(live));
    let app = api::router(state);

    let gauges = |samples: &[Sample]| {
        let users = |segment| {
            value(
                samples,
                "feedrank_index_rows",
                &[("index", "users"), ("segment", segment)],
            )
        };
        (
            (users("base"), users("sealed"), users("delta")),
            value(samples, "feedrank_new_users", &[]),
            value(samples, "feedrank_user_placements", &[]),
            value(samples, "feedrank_user_placements_refused", &[]),
        )
    };
    let snapshot_users = world().users.len() as f64;
    let (samples, _) = parse(&scrape(&app).await);
    assert_eq!(
        gauges(&samples),
        ((snapshot_users, 0.0, 0.0), 0.0, 0.0, 0.0)
    );

    // A newcomer picking hashtags snapshot users follow is placed among them.
    let follows = world()
        .users
        .iter()
        .find(|u| !u.follows.is_empty())
        .unwrap()
        .follows
        .clone();
    let request = Request::put("/v1/users/metrics-newcomer")
        .header("content-type", "application/json")
        .body(Body::from(
            json!({"langs": ["en"], "follows": follows}).to_string(),
        ))
        .unwrap();
    let (status, body) = send(&app, request).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (samples, _) = parse(&scrape(&app).await);
    assert_eq!(
        gauges(&samples),
        ((snapshot_users, 0.0, 1.0), 1.0, 1.0, 0.0)
    );

    // One save by `user`, accepted; then the scraped samples.
    let save_by = async |user: &str| {
        let post = &world().posts[5].id;
        let (status, outcome) = post_json(
            &app,
            "/v1/events",
            json!({"events": [event(user, post, "save")]}),
        )
        .await;
        assert_eq!(
            (status, outcome["accepted"].as_u64()),
            (StatusCode::OK, Some(1))
        );
        parse(&scrape(&app).await).0
    };
    // A save gives a user known only by events an embedding: placed, the second and last row.
    let samples = save_by("metrics-saver-1").await;
    assert_eq!(
        gauges(&samples),
        ((snapshot_users, 0.0, 2.0), 2.0, 2.0, 0.0)
    );

    // The next one is met but refused a row.
    let samples = save_by("metrics-saver-2").await;
    assert_eq!(
        gauges(&samples),
        ((snapshot_users, 0.0, 2.0), 3.0, 2.0, 1.0)
    );
    assert_eq!(value(&samples, "feedrank_offered_posts", &[]), 0.0);
}

#[test]
fn the_line_parser_refuses_what_the_format_does_not_allow() {
    assert!(parse_sample("feedrank_x 1").is_ok());
    assert_eq!(
        parse_sample(r#"feedrank_x{a="q\"b\\c\nd",b=""} 2.5"#)
            .unwrap()
            .labels["a"],
        "q\"b\\c\nd"
    );
    for bad in [
        "feedrank_x",
        "feedrank_x{a=1} 1",
        r#"feedrank_x{a="1} 1"#,
        r#"feedrank_x{a="1"}1"#,
        "feedrank_x one",
        r#"feedrank_x{a="\q"} 1"#,
        r#"feedrank_x{a="1",a="2"} 1"#,
    ] {
        assert!(parse_sample(bad).is_err(), "{bad}");
    }
}
