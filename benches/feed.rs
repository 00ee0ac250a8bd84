//! Whole feed requests in-process at 100,000 posts (HNSW retrieval, scoring, ordering, page
//! assembly and JSON encoding), for known users and for users the snapshot does not know.
//!
//! Besides criterion's estimates, prints p50/p90/p99 over individually timed requests, since
//! a feed's latency budget is about its tail.
//!
//! `cargo bench --bench feed` (FEEDRANK_BENCH_POSTS overrides the corpus size).

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use feedrank::demo::{self, DemoConfig};
use feedrank::feed::{FeedOptions, FeedRequest, Model};

fn posts() -> usize {
    std::env::var("FEEDRANK_BENCH_POSTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

fn percentiles(mut micros: Vec<f64>) -> String {
    micros.sort_by(f64::total_cmp);
    let at = |q: f64| micros[((micros.len() - 1) as f64 * q).round() as usize];
    format!(
        "p50 {:.0} µs, p90 {:.0} µs, p99 {:.0} µs (n = {})",
        at(0.5),
        at(0.9),
        at(0.99),
        micros.len()
    )
}

fn bench_feed(c: &mut Criterion) {
    let posts = posts();
    let config = DemoConfig {
        posts,
        users: 5_000,
        ..DemoConfig::default()
    };
    let snapshot = demo::generate(&config).expect("demo world");
    let users: Vec<String> = snapshot.users.iter().map(|u| u.id.clone()).collect();
    let started = Instant::now();
    let model = Model::build(snapshot, FeedOptions::default()).expect("model");
    eprintln!(
        "{posts} posts: model built (HNSW) in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let serve = |user: &str| {
        let request = FeedRequest {
            user_id: user,
            limit: 20,
            cursor: None,
        };
        let page = model.feed(&request).expect("feed");
        serde_json::to_vec(&page).expect("json")
    };

    for (label, pick) in [("known user", true), ("unknown user", false)] {
        let mut micros = Vec::with_capacity(2_000);
        for i in 0..2_000 {
            let user = if pick {
                users[i % users.len()].clone()
            } else {
                format!("new_{i}")
            };
            let t = Instant::now();
            black_box(serve(&user));
            micros.push(t.elapsed().as_secs_f64() * 1e6);
        }
        eprintln!(
            "{posts} posts, whole feed request, {label}: {}",
            percentiles(micros)
        );
    }

    let mut group = c.benchmark_group(format!("feed_request_{posts}"));
    group.sample_size(50);
    let mut i = 0;
    group.bench_function("known_user", |b| {
        b.iter(|| {
            i += 1;
            black_box(serve(&users[i % users.len()]))
        })
    });
    group.bench_function("unknown_user", |b| {
        b.iter(|| black_box(serve("someone_new")))
    });
    group.finish();
}

criterion_group!(benches, bench_feed);
criterion_main!(benches);
