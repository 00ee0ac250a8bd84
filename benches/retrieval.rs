//! Retrieval latency at 100,000 clustered 64-d posts: exact scan against the HNSW graph.
//!
//! One query per iteration, cycling through a fixed query set. The graph is built once, outside
//! the timed loops; its build time and the recall of each configuration go to stderr.

use std::collections::HashSet;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use feedrank::index::{
    ExactIndex, HnswIndex, HnswParams, Neighbor, NeighborIndex, RowFilter, synthetic,
};
use feedrank::snapshot::Metric;

// As in the service: hnsw_rs allocates per point and per query.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const N: usize = 100_000;
const DIM: usize = 64;
/// 500 posts per cluster, so a top-200 lies mostly within the query's own topic, as a feed's
/// candidates do. (With clusters smaller than k the tail of the top-k is a near-random pick among
/// all other posts: the isotropic worst case, and not what retrieval faces.)
const CLUSTERS: usize = 200;
const SPREAD: f32 = 1.0;
const QUERIES: usize = 200;
const SEED: u64 = 42;

/// Every 20th post is an ad, excluded from organic retrieval.
fn organic(row: u32) -> bool {
    !row.is_multiple_of(20)
}

/// A filter too selective for over-fetching, so the graph search itself applies it.
fn even(row: u32) -> bool {
    row.is_multiple_of(2)
}

fn recall(
    hnsw: &HnswIndex,
    exact: &ExactIndex,
    queries: &[Vec<f32>],
    (k, ef): (usize, usize),
    filter: Option<RowFilter<'_>>,
) -> f64 {
    let found: usize = queries
        .iter()
        .map(|q| {
            let got: HashSet<u32> = hnsw
                .search_with_ef(q, k, ef, filter)
                .iter()
                .map(|n| n.row)
                .collect();
            exact
                .search(q, k, filter)
                .iter()
                .filter(|n| got.contains(&n.row))
                .count()
        })
        .sum();
    found as f64 / (k * queries.len()) as f64
}

/// Times `search` on one query per iteration, cycling through `queries`.
fn bench_queries(
    c: &mut Criterion,
    name: &str,
    queries: &[Vec<f32>],
    search: impl Fn(&[f32]) -> Vec<Neighbor>,
) {
    let mut next = 0;
    c.bench_function(name, |b| {
        b.iter(|| {
            let q = &queries[next % queries.len()];
            next += 1;
            black_box(search(black_box(q)))
        })
    });
}

fn retrieval(c: &mut Criterion) {
    let vectors = synthetic::clustered(N, DIM, CLUSTERS, SPREAD, SEED);
    let queries: Vec<Vec<f32>> = synthetic::queries(QUERIES, DIM, CLUSTERS, SPREAD, SEED)
        .rows()
        .into_iter()
        .map(|q| q.to_vec())
        .collect();
    let rows: Vec<u32> = (0..N as u32).collect();
    let exact = ExactIndex::build(&vectors, &rows, Metric::Cosine);

    let params = HnswParams::default();
    let start = Instant::now();
    let hnsw = HnswIndex::build(&vectors, &rows, Metric::Cosine, params);
    eprintln!(
        "HNSW build, {N} x {DIM} (M = {}, ef_construction = {}): {:.1?}",
        params.max_connections,
        params.ef_construction,
        start.elapsed()
    );
    let recall_of = |config, filter| recall(&hnsw, &exact, &queries, config, filter);
    eprintln!(
        "recall over {QUERIES} queries: @200 ef 200 {:.4}; @10 ef 64 {:.4}; \
         @200 ef 200 without ads {:.4}; @200 ef 200 even rows {:.4}",
        recall_of((200, 200), None),
        recall_of((10, 64), None),
        recall_of((200, 200), Some(&organic)),
        recall_of((200, 200), Some(&even)),
    );

    bench_queries(c, "exact/top200", &queries, |q| exact.search(q, 200, None));
    bench_queries(c, "hnsw/top200_ef200", &queries, |q| {
        hnsw.search_with_ef(q, 200, 200, None)
    });
    bench_queries(c, "hnsw/top10_ef64", &queries, |q| {
        hnsw.search_with_ef(q, 10, 64, None)
    });
    // Ads excluded: a slightly wider unfiltered search, filtered afterwards.
    bench_queries(c, "hnsw/top200_ef200_organic", &queries, |q| {
        hnsw.search_with_ef(q, 200, 200, Some(&organic))
    });
    // Half the rows excluded: hnsw_rs's filtered search, which never stops early.
    bench_queries(c, "hnsw/top200_ef200_even", &queries, |q| {
        hnsw.search_with_ef(q, 200, 200, Some(&even))
    });
}

criterion_group! {
    name = benches;
    // Modest samples: the whole run, graph build included, takes a few minutes on two cores.
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = retrieval
}
criterion_main!(benches);
