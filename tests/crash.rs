//! Durability under crashes: a `feedrank serve` child process takes a stream of event batches
//! and onboardings and is killed with SIGKILL at pseudo-random points; after each restart on
//! the same data directory, every acknowledged event is present, counted exactly, every
//! acknowledged profile is back, and feeds are served.

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

struct Server {
    child: Child,
    addr: SocketAddr,
}

/// Starts the service and waits until it serves; the address comes from its JSON log.
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
    let addr: SocketAddr = loop {
        let line = lines.next().expect("log ended before listening").unwrap();
        let Ok(record) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if let Some(addr) = record["fields"]["addr"].as_str() {
            break addr.parse().unwrap();
        }
    };
    // Keep draining the log so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let started = Instant::now();
    while http(addr, "GET", "/readyz", "").map(|r| r.0) != Some(200) {
        assert!(started.elapsed() < Duration::from_secs(120), "not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    Server { child, addr }
}

/// What the writer learned before the server died.
#[derive(Default)]
struct Written {
    /// Users whose onboarding (`PUT /v1/users/{id}`) was acknowledged.
    profiles: Vec<String>,
    acknowledged: u64,
    /// Events of a batch sent but not acknowledged (it may or may not have been logged).
    in_flight: u64,
}

fn write_until_dead(addr: SocketAddr, posts: &[String], round: u64, stop: &AtomicBool) -> Written {
    let mut written = Written::default();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let size = 1 + (n % 7);
        let events: Vec<Value> = (0..size)
            .map(|i| {
                let post = &posts[((round * 131 + n * 7 + i) as usize) % posts.len()];
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
    let config = dir.path().join("feedrank.toml");
    std::fs::write(&config, "[feed]\nindex = \"exact\"\n").unwrap();
    let data = dir.path().join("data");

    let mut acknowledged = 0u64;
    let mut profiles: Vec<String> = Vec::new();
    let mut server = start(&snapshot, &data, &config);
    for round in 0..KILL_POINTS {
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (addr, posts, stop) = (server.addr, posts.clone(), stop.clone());
            std::thread::spawn(move || write_until_dead(addr, &posts, round, &stop))
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
        for user in &profiles {
            let (status, view) =
                http(server.addr, "GET", &format!("/v1/users/{user}"), "").unwrap();
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
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}
