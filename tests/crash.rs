//! Durability under crashes: a `feedrank serve` child process takes a stream of event batches,
//! onboardings and published posts, and is killed with SIGKILL at pseudo-random points; after
//! each restart on the same data directory, every acknowledged event is present, counted
//! exactly, every acknowledged profile is back, every acknowledged post is published again
//! (beyond them at most the one batch in flight, whole: the replay counts them exactly), and
//! feeds are served.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use feedrank::demo::{self, DemoConfig};

const KILL_POINTS: u64 = 20;
const WRITER: &str = "crash-writer";

/// A plain HTTP/1.1 exchange; `None` if the connection fails midway (the server died).
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> Option<(u16, Value)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, serde_json::from_str(body).ok()?))
}

/// One kept-alive HTTP/1.1 connection, for the checks after a restart (the server is up then):
/// thousands of `GET`s without a connection each.
struct Checker {
    stream: BufReader<TcpStream>,
}

impl Checker {
    fn connect(addr: SocketAddr) -> Checker {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Checker {
            stream: BufReader::new(stream),
        }
    }

    /// `GET path`: the status and the JSON body.
    fn get(&mut self, path: &str) -> (u16, Value) {
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
        self.stream.get_mut().write_all(request.as_bytes()).unwrap();
        let mut line = String::new();
        self.stream.read_line(&mut line).unwrap();
        let status = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        let mut length = None;
        loop {
            line.clear();
            self.stream.read_line(&mut line).unwrap();
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = Some(value.trim().parse().unwrap());
            }
        }
        let mut body = vec![0; length.expect("a content-length")];
        self.stream.read_exact(&mut body).unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }
}

struct Server {
    child: Child,
    addr: SocketAddr,
    /// Published posts the replay of the log restored (its JSON log says).
    replayed_posts: u64,
}

/// Starts the service and waits until it serves; the address and the posts the replay
/// restored come from its JSON log.
fn start(snapshot: &Path, data: &Path, config: &Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_feedrank"))
        .args(["serve", "--addr", "127.0.0.1:0", "--log-format", "json"])
        .arg("--snapshot")
        .arg(snapshot)
        .arg("--data-dir")
        .arg(data)
        .arg("--config")
        .arg(config)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start feedrank serve");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut addr: Option<SocketAddr> = None;
    // The service listens first, then loads the snapshot and replays the log.
    let replayed_posts = loop {
        let line = lines.next().expect("log ended before the replay").unwrap();
        let Ok(record) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let fields = &record["fields"];
        if let Some(listening) = fields["addr"].as_str() {
            addr = Some(listening.parse().unwrap());
        }
        if fields["message"] == "write-ahead log replayed" {
            break fields["posts"].as_u64().expect("posts replayed");
        }
    };
    let addr = addr.expect("listening is logged before the replay");
    // Keep draining the log so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let started = Instant::now();
    while http(addr, "GET", "/readyz", "").map(|r| r.0) != Some(200) {
        assert!(started.elapsed() < Duration::from_secs(120), "not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    Server {
        child,
        addr,
        replayed_posts,
    }
}

/// What the writer learned before the server died.
#[derive(Default)]
struct Written {
    /// Users whose onboarding (`PUT /v1/users/{id}`) was acknowledged.
    profiles: Vec<String>,
    acknowledged: u64,
    /// Events of a batch sent but not acknowledged (it may or may not have been logged).
    in_flight: u64,
    /// Ids of the posts whose publishing (`POST /v1/posts`) was acknowledged.
    published: Vec<String>,
    /// Ids of a publishing batch sent but not acknowledged (logged whole or not at all).
    publishing: Vec<String>,
}

/// What the writer's posts are made of: the snapshot's dimension and newest post.
#[derive(Clone, Copy)]
struct PostShape {
    dim: usize,
    newest: i64,
}

/// A valid post for `POST /v1/posts`, newer than the snapshot, its embedding made from `seed`.
fn new_post(id: &str, seed: u64, shape: PostShape) -> Value {
    let embedding: Vec<f32> = (0..shape.dim)
        .map(|j| ((seed * 31 + j as u64) as f32 * 0.618).sin() + 0.1)
        .collect();
    json!({
        "id": id, "author": "crash_author", "lang": "en", "hashtags": ["cats"],
        "kind": "organic", "created_at": shape.newest + 1 + (seed % 600) as i64,
        "embedding": embedding,
    })
}

fn write_until_dead(
    addr: SocketAddr,
    posts: &[String],
    shape: PostShape,
    round: u64,
    stop: &AtomicBool,
) -> Written {
    let mut written = Written::default();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let size = 1 + (n % 7);
        let events: Vec<Value> = (0..size)
            .map(|i| {
                // The first names the latest post published, if any: its view is replayed
                // only if the post is, before it.
                let post = match written.published.last() {
                    Some(published) if i == 0 => published,
                    _ => &posts[((round * 131 + n * 7 + i) as usize) % posts.len()],
                };
                json!({"user_id": WRITER, "post_id": post, "type": "view", "ts": 1_700_000_000})
            })
            .collect();
        written.in_flight = size;
        let body = json!({ "events": events }).to_string();
        match http(addr, "POST", "/v1/events", &body) {
            Some((200, outcome)) => {
                assert_eq!(outcome["accepted"], size, "{outcome}");
                written.acknowledged += size;
                written.in_flight = 0;
            }
            Some((status, body)) => panic!("events answered {status}: {body}"),
            None => break,
        }
        // Every fifth batch, an onboarding too: profiles go through the same log.
        if n.is_multiple_of(5) {
            let user = format!("crash-newbie-{round}-{n}");
            let body = r#"{"langs": ["en"], "follows": ["cats"]}"#;
            match http(addr, "PUT", &format!("/v1/users/{user}"), body) {
                Some((201, _)) => written.profiles.push(user),
                Some((status, body)) => panic!("PUT answered {status}: {body}"),
                None => break,
            }
        }
        // Every third batch, 1 to 3 posts are published: they go through the same log.
        if n % 3 == 1 {
            let ids: Vec<String> = (0..1 + (n / 3) % 3)
                .map(|i| format!("crash-post-{round}-{n}-{i}"))
                .collect();
            let batch: Vec<Value> = ids
                .iter()
                .enumerate()
                .map(|(i, id)| new_post(id, round * 10_000 + n * 3 + i as u64, shape))
                .collect();
            written.publishing = ids;
            let body = json!({ "posts": batch }).to_string();
            match http(addr, "POST", "/v1/posts", &body) {
                Some((201, answer)) => {
                    assert_eq!(answer["published"], json!(written.publishing), "{answer}");
                    written.published.append(&mut written.publishing);
                }
                Some((status, body)) => panic!("posts answered {status}: {body}"),
                None => break,
            }
        }
        n += 1;
    }
    written
}

fn logged_events(addr: SocketAddr) -> u64 {
    match http(addr, "GET", &format!("/v1/users/{WRITER}"), "") {
        Some((200, user)) => user["live"]["events"].as_u64().unwrap(),
        Some((404, _)) => 0,
        other => panic!("GET user: {other:?}"),
    }
}

#[test]
fn every_acknowledged_event_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("snapshot");
    let world = demo::generate(&DemoConfig {
        posts: 1_500,
        users: 100,
        seed: 17,
        dim: 16,
    })
    .unwrap();
    world.write_to(&snapshot).unwrap();
    let posts: Arc<Vec<String>> = Arc::new(world.posts.iter().map(|p| p.id.clone()).collect());
    let shape = PostShape {
        dim: world.dim(),
        newest: world.newest_post_time().unwrap(),
    };
    let config = dir.path().join("feedrank.toml");
    std::fs::write(&config, "[feed]\nindex = \"exact\"\n").unwrap();
    let data = dir.path().join("data");

    let mut acknowledged = 0u64;
    let mut profiles: Vec<String> = Vec::new();
    // Ids of the posts known published: acknowledged, or found after a restart.
    let mut published: Vec<String> = Vec::new();
    let mut server = start(&snapshot, &data, &config);
    assert_eq!(server.replayed_posts, 0);
    for round in 0..KILL_POINTS {
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (addr, posts, stop) = (server.addr, posts.clone(), stop.clone());
            std::thread::spawn(move || write_until_dead(addr, &posts, shape, round, &stop))
        };
        // A pseudo-random point 5 to 200 ms into the stream.
        let delay = 5 + (round * 7_919 + 13) % 196;
        std::thread::sleep(Duration::from_millis(delay));
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        let written = writer.join().unwrap();
        acknowledged += written.acknowledged;

        server = start(&snapshot, &data, &config);
        let logged = logged_events(server.addr);
        // Every acknowledged event is there; beyond them, at most the batch that was in
        // flight (logged and synced, but killed before it was answered).
        assert!(
            logged == acknowledged || logged == acknowledged + written.in_flight,
            "round {round}: {logged} logged, {acknowledged} acknowledged, {} in flight",
            written.in_flight
        );
        acknowledged = logged;
        profiles.extend(written.profiles);
        // Every acknowledged post is back; the batch in flight is back whole or not at all;
        // and the replay restored exactly these, nothing else.
        published.extend(written.published);
        let mut checker = Checker::connect(server.addr);
        for id in &published {
            let (status, post) = checker.get(&format!("/v1/posts/{id}"));
            assert_eq!(
                (status, &post["published"]),
                (200, &json!(true)),
                "round {round}: {id}"
            );
        }
        let in_flight: Vec<bool> = written
            .publishing
            .iter()
            .map(|id| match checker.get(&format!("/v1/posts/{id}")) {
                (200, _) => true,
                (404, _) => false,
                other => panic!("round {round}: GET {id}: {other:?}"),
            })
            .collect();
        assert!(
            in_flight.iter().all(|&p| p == in_flight[0]),
            "round {round}: part of the batch in flight is back: {:?} {in_flight:?}",
            written.publishing
        );
        if in_flight.first() == Some(&true) {
            published.extend(written.publishing);
        }
        assert_eq!(
            server.replayed_posts,
            published.len() as u64,
            "round {round}: posts replayed"
        );
        for user in &profiles {
            let (status, view) = checker.get(&format!("/v1/users/{user}"));
            assert_eq!(
                (status, &view["follows"]),
                (200, &json!(["cats"])),
                "round {round}: {user}"
            );
        }
        let (status, page) =
            http(server.addr, "GET", &format!("/v1/users/{WRITER}/feed"), "").unwrap();
        assert_eq!(status, 200, "{page}");
        assert!(!page["items"].as_array().unwrap().is_empty());
    }
    assert!(acknowledged > 0, "the writer never got a batch through");
    assert!(!profiles.is_empty(), "no onboarding got through");
    assert!(!published.is_empty(), "no post got through");
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}
