//! The user index at 100,000 users: recall of its nearest users against an exact scan of the
//! same vectors, the latency of one search, its memory, and the same after users moved and
//! newcomers were placed (the appended rows searched beside the graph, the superseded ones
//! filtered out).
//!
//! The users are a demo world's (`demo::generate`, 10,000 posts): clustered by topic and
//! language as the platform's are, not isotropic noise.
//!
//! `cargo bench --bench users` (FEEDRANK_BENCH_USERS overrides the number of users).

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use feedrank::candidates::{IndexKind, Placement, UserIndex, UserOptions};
use feedrank::demo::{self, DemoConfig};
use feedrank::index::HnswParams;
use ndarray::Array2;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Neighbours the lookalike source asks for.
const K: usize = 20;
const QUERIES: usize = 1_000;

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn users() -> usize {
    std::env::var("FEEDRANK_BENCH_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

fn percentiles(mut micros: Vec<f64>) -> String {
    micros.sort_by(f64::total_cmp);
    let at = |q: f64| micros[((micros.len() - 1) as f64 * q).round() as usize];
    format!(
        "p50 {:.0} µs, p99 {:.0} µs (n = {})",
        at(0.5),
        at(0.99),
        micros.len()
    )
}

/// The `k` slots nearest to `query` by exact scan over `current` (unit rows), leaving out
/// `skip`; ties by the smaller slot.
fn exact(current: &Array2<f32>, query: &[f32], k: usize, skip: usize) -> Vec<u32> {
    let mut all: Vec<(f32, u32)> = current
        .rows()
        .into_iter()
        .enumerate()
        .filter(|&(slot, _)| slot != skip)
        .map(|(slot, row)| (dot(query, row.as_slice().expect("contiguous")), slot as u32))
        .collect();
    all.select_nth_unstable_by(k, |a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    all.truncate(k);
    all.into_iter().map(|(_, s)| s).collect()
}

/// Recall@K of the index against the exact scan, and search latencies, for the first
/// `QUERIES` users (each searching for their own neighbours).
fn measure(index: &UserIndex, current: &Array2<f32>, label: &str) {
    let n = current.nrows();
    let step = (n / QUERIES).max(1);
    let mut found = 0usize;
    let mut micros = Vec::with_capacity(QUERIES);
    for q in (0..n).step_by(step).take(QUERIES) {
        let query = current.row(q).to_vec();
        let t = Instant::now();
        let got = index.nearest(&query, K, Some(q as u32));
        micros.push(t.elapsed().as_secs_f64() * 1e6);
        let want = exact(current, &query, K, q);
        found += got.iter().filter(|g| want.contains(&g.slot)).count();
    }
    let queries = micros.len();
    eprintln!(
        "{n} users, {label}: recall@{K} {:.4} against exact search over {queries} users; \
         search {}",
        found as f64 / (queries * K) as f64,
        percentiles(micros)
    );
}

fn bench_users(c: &mut Criterion) {
    let n = users();
    let started = Instant::now();
    let snapshot = demo::generate(&DemoConfig {
        posts: 10_000,
        users: n,
        ..DemoConfig::default()
    })
    .expect("demo world");
    eprintln!(
        "{n} users: world generated in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let index = UserIndex::load(
        &snapshot,
        IndexKind::Hnsw,
        HnswParams::default(),
        UserOptions::default(),
        None,
    )
    .expect("user index");
    eprintln!(
        "{n} users: graph built in {:.1} s, {:.1} MiB",
        started.elapsed().as_secs_f64(),
        index.memory_bytes() as f64 / (1 << 20) as f64
    );
    let mut current = snapshot.user_vectors.clone();
    measure(&index, &current, "snapshot graph");

    // 15% of the users move (each toward another user's place, as saves would turn them),
    // in batches as the events path places them.
    // 15%: past the tenth of appended rows at which the index rebuilds itself.
    let moved = n * 3 / 20;
    let ids: Vec<String> = snapshot.users.iter().map(|u| u.id.clone()).collect();
    let started = Instant::now();
    for batch in (0..moved).collect::<Vec<_>>().chunks(100) {
        let targets: Vec<(usize, Vec<f32>)> = batch
            .iter()
            .map(|&i| {
                let from = current.row(i * 7 % n).to_vec();
                let to = current.row((i * 7919 + 13) % n).to_vec();
                // Halfway between two users: far enough to be placed again.
                let mut v: Vec<f32> = from.iter().zip(&to).map(|(a, b)| a + b).collect();
                let norm = dot(&v, &v).sqrt().max(f32::MIN_POSITIVE);
                v.iter_mut().for_each(|x| *x /= norm);
                (i * 7 % n, v)
            })
            .collect();
        let items: Vec<Placement<'_>> = targets
            .iter()
            .map(|(slot, v)| Placement {
                user_id: ids[*slot].as_str(),
                vector: v.as_slice(),
                start: snapshot.user_vectors.row(*slot).to_slice(),
            })
            .collect();
        index.place(&items);
        for (slot, v) in &targets {
            current
                .row_mut(*slot)
                .assign(&ndarray::ArrayView1::from(v.as_slice()));
        }
    }
    let placed = started.elapsed().as_secs_f64();
    // Before any rebuild is done: the appended rows searched beside the base.
    measure(&index, &current, "right after 15% of them moved");
    index.wait_idle();
    let stats = index.stats();
    eprintln!(
        "{n} users: {} placements in {placed:.1} s, {} background rebuilds done after {:.1} s \
         ({:?}), {:.1} MiB",
        stats.placements,
        stats.rebuilds,
        started.elapsed().as_secs_f64(),
        index.segments(),
        index.memory_bytes() as f64 / (1 << 20) as f64
    );
    measure(&index, &current, "after 15% of them moved and the rebuild");

    let mut group = c.benchmark_group(format!("users_{n}"));
    group.sample_size(50);
    let mut i = 0;
    group.bench_function("nearest_20", |b| {
        b.iter(|| {
            i = (i + 7919) % n;
            black_box(index.nearest(current.row(i).as_slice().expect("row"), K, Some(i as u32)))
        })
    });
    group.finish();
}

criterion_group!(benches, bench_users);
criterion_main!(benches);
