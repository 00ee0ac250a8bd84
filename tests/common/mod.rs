//! Helpers shared by the integration tests. Each test crate uses some of them.
#![allow(dead_code)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// One request to the app in-process: the status and the JSON body.
pub async fn send(app: &axum::Router, request: Request<Body>) -> (StatusCode, Value) {
    let uri = request.uri().to_string();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{uri}: body is not JSON ({e}): {bytes:?}"));
    (status, json)
}

/// `GET uri` in-process.
pub async fn get(app: &axum::Router, uri: &str) -> (StatusCode, Value) {
    send(app, Request::get(uri).body(Body::empty()).unwrap()).await
}

/// `POST uri` in-process with a JSON body.
pub async fn post_json(app: &axum::Router, uri: &str, body: Value) -> (StatusCode, Value) {
    send(app, json_request(Request::post(uri), &body)).await
}

/// `PUT uri` in-process with a JSON body.
pub async fn put_json(app: &axum::Router, uri: &str, body: Value) -> (StatusCode, Value) {
    send(app, json_request(Request::put(uri), &body)).await
}

fn json_request(builder: axum::http::request::Builder, body: &Value) -> Request<Body> {
    builder
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// A demo world of the given size (tests cache theirs in a `OnceLock`).
pub fn demo_world(
    posts: usize,
    users: usize,
    seed: u64,
    dim: usize,
) -> feedrank::snapshot::Snapshot {
    feedrank::demo::generate(&feedrank::demo::DemoConfig {
        posts,
        users,
        seed,
        dim,
    })
    .expect("demo world")
}

/// The post ids of a feed page, in order.
pub fn post_ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["post_id"].as_str().unwrap().to_string())
        .collect()
}

/// A model of `snapshot` with exact retrieval, so that rankings can be compared with naive
/// references exactly.
pub fn exact_model(snapshot: &feedrank::snapshot::Snapshot) -> feedrank::feed::Model {
    let options = feedrank::feed::FeedOptions {
        index: feedrank::candidates::IndexKind::Exact,
        ..Default::default()
    };
    feedrank::feed::Model::build(snapshot.clone(), options).unwrap()
}

/// Cosine of two raw vectors, in f64.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

/// The service on a real socket of 127.0.0.1, as `feedrank serve` runs it.
pub struct Server {
    pub addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    pub async fn start(state: std::sync::Arc<feedrank::api::AppState>) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(feedrank::api::serve(listener, state, async {
            let _ = stopped.await;
        }));
        Server { addr, stop, task }
    }

    /// Asks for a graceful shutdown and waits (at most 10 s) for a clean exit.
    pub async fn stop(self) {
        self.stop.send(()).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), self.task)
            .await
            .expect("shut down within 10 s")
            .unwrap()
            .unwrap();
    }
}

/// A plain HTTP/1.1 exchange over TCP, no client library between us and the server: the
/// status and the JSON body. `body` is sent as JSON when not empty.
pub async fn raw_http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, Value) {
    raw_http_with(addr, method, path, &[], body).await
}

/// [`raw_http`] with extra request headers.
pub async fn raw_http_with(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap())
}
