//! Retrieval latency over clustered 64-d posts: exact scan against HNSW graphs, searched by
//! hnsw_rs and from the flat arrays (graph built by feedrank's builder, and by hnsw_rs).
//! Also the live index (a 100,000-post graph plus posts appended after it) with deltas of
//! several sizes, before and after sealing.
//!
//! `cargo bench --bench retrieval` runs 100,000 posts; `FEEDRANK_BENCH_SIZES=100000,1000000`
//! adds a million. hnsw_rs takes over ten minutes and gigabytes to build a million-point graph,
//! so above 200,000 points only the exact scan and the native graph run, unless
//! `FEEDRANK_BENCH_HNSW_RS=1`.
//!
//! One query per iteration, cycling through a fixed query set. Graphs are built once, outside
//! the timed loops; build times, the memory each index holds and the recall of each
//! configuration go to stderr.

use std::alloc::{GlobalAlloc, Layout};
use std::collections::HashSet;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use feedrank::index::{
    ExactIndex, FlatHnswIndex, HnswIndex, HnswParams, LiveConfig, LiveIndex, Neighbor,
    NeighborIndex, RowFilter, synthetic,
};
use feedrank::snapshot::Metric;

// As in the service (hnsw_rs allocates per point and per query), counting live bytes while the
// indexes are built so their memory can be reported.
#[global_allocator]
static GLOBAL: Counting = Counting;

/// Counts live heap bytes while `COUNTING` is on; otherwise one relaxed load per call.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded unchanged to mimalloc; the counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: the caller upholds `alloc`'s contract.
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        // SAFETY: `ptr` came from this allocator, i.e. from mimalloc, with `layout`.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: the caller upholds `alloc_zeroed`'s contract.
        unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        // SAFETY: the caller upholds `realloc`'s contract.
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
}

#[inline]
fn count(bytes: isize) {
    if COUNTING.load(Ordering::Relaxed) {
        LIVE.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// `make()`'s result and the heap bytes it still holds once built (requested sizes, without the
/// allocator's rounding). Allocations made outside `make` on other threads would be counted too:
/// the benchmark runs nothing else meanwhile.
fn measured<T>(make: impl FnOnce() -> T) -> (T, usize) {
    LIVE.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    let value = make();
    COUNTING.store(false, Ordering::Relaxed);
    (value, LIVE.load(Ordering::Relaxed).max(0) as usize)
}

const MB: f64 = 1024.0 * 1024.0;

const DIM: usize = 64;
/// 500 posts per cluster at 100,000 posts (clusters grow with the corpus), so a top-200 lies mostly within the query's own topic, as a feed's
/// candidates do. (With clusters smaller than k the tail of the top-k is a near-random pick among
/// all other posts: the isotropic worst case, and not what retrieval faces.)
const POSTS_PER_CLUSTER: usize = 500;
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

/// `search(query, k, ef, filter)`.
type Search<'a> = dyn Fn(&[f32], usize, usize, Option<RowFilter<'_>>) -> Vec<Neighbor> + 'a;

fn recall(
    search: &Search<'_>,
    exact: &ExactIndex,
    queries: &[Vec<f32>],
    (k, ef): (usize, usize),
    filter: Option<RowFilter<'_>>,
) -> f64 {
    let found: usize = queries
        .iter()
        .map(|q| {
            let got: HashSet<u32> = search(q, k, ef, filter).iter().map(|n| n.row).collect();
            exact
                .search(q, k, filter)
                .iter()
                .filter(|n| got.contains(&n.row))
                .count()
        })
        .sum();
    found as f64 / (k * queries.len()) as f64
}

fn sizes() -> Vec<usize> {
    std::env::var("FEEDRANK_BENCH_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![100_000])
}

fn retrieval(c: &mut Criterion) {
    for n in sizes() {
        retrieval_at(c, n);
    }
}

fn retrieval_at(c: &mut Criterion, n: usize) {
    let clusters = (n / POSTS_PER_CLUSTER).max(1);
    let vectors = synthetic::clustered(n, DIM, clusters, SPREAD, SEED);
    let queries: Vec<Vec<f32>> = synthetic::queries(QUERIES, DIM, clusters, SPREAD, SEED)
        .rows()
        .into_iter()
        .map(|q| q.to_vec())
        .collect();
    let rows: Vec<u32> = (0..n as u32).collect();
    let exact = ExactIndex::build(&vectors, &rows, Metric::Cosine);
    let params = HnswParams::default();
    let shape = format!(
        "{n} x {DIM} (M = {}, ef_construction = {})",
        params.max_connections, params.ef_construction
    );

    let start = Instant::now();
    let (native, native_bytes) =
        measured(|| FlatHnswIndex::build(&vectors, &rows, Metric::Cosine, params));
    eprintln!(
        "native graph build, {shape}: {:.1?}, heap held {:.1} MB ({} B/point)",
        start.elapsed(),
        native_bytes as f64 / MB,
        native_bytes / n
    );
    let with_hnsw_rs = n <= 200_000 || std::env::var_os("FEEDRANK_BENCH_HNSW_RS").is_some();
    let hnsw_rs = with_hnsw_rs.then(|| {
        let start = Instant::now();
        let (hnsw, hnsw_bytes) =
            measured(|| HnswIndex::build(&vectors, &rows, Metric::Cosine, params));
        eprintln!("hnsw_rs graph build, {shape}: {:.1?}", start.elapsed());
        let (flat, flat_bytes) = measured(|| FlatHnswIndex::from_hnsw(&hnsw));
        eprintln!(
            "heap held: hnsw_rs {:.1} MB ({} B/point), its flat copy {:.1} MB, exact {:.1} MB",
            hnsw_bytes as f64 / MB,
            hnsw_bytes / n,
            flat_bytes as f64 / MB,
            (n * DIM * 4) as f64 / MB,
        );
        (hnsw, flat)
    });

    let by_native = |q: &[f32], k, ef, f: Option<RowFilter<'_>>| native.search_with_ef(q, k, ef, f);
    let mut searches: Vec<(&str, &Search<'_>)> = vec![("flat", &by_native)];
    let by_hnsw_rs;
    let by_copy;
    if let Some((hnsw, copy)) = &hnsw_rs {
        by_hnsw_rs =
            move |q: &[f32], k, ef, f: Option<RowFilter<'_>>| hnsw.search_with_ef(q, k, ef, f);
        by_copy =
            move |q: &[f32], k, ef, f: Option<RowFilter<'_>>| copy.search_with_ef(q, k, ef, f);
        searches.push(("hnsw_rs", &by_hnsw_rs));
        searches.push(("flat_hnsw_rs_graph", &by_copy));
    }
    for (name, search) in &searches {
        let recall_of = |config, filter| recall(*search, &exact, &queries, config, filter);
        eprintln!(
            "{n}: {name} recall over {QUERIES} queries: @200 ef 200 {:.4}; @10 ef 64 {:.4}; \
             @200 ef 200 without ads {:.4}; @200 ef 200 even rows {:.4}",
            recall_of((200, 200), None),
            recall_of((10, 64), None),
            recall_of((200, 200), Some(&organic)),
            recall_of((200, 200), Some(&even)),
        );
    }

    let mut group = c.benchmark_group(format!("retrieval_{n}"));
    let mut bench = |name: &str, search: &dyn Fn(&[f32]) -> Vec<Neighbor>| {
        let mut next = 0;
        group.bench_function(name, |b| {
            b.iter(|| {
                let q = &queries[next % queries.len()];
                next += 1;
                black_box(search(black_box(q)))
            })
        });
    };
    bench("exact/top200", &|q| exact.search(q, 200, None));
    bench("flat/top200_ef200", &|q| {
        native.search_with_ef(q, 200, 200, None)
    });
    bench("flat/top10_ef64", &|q| {
        native.search_with_ef(q, 10, 64, None)
    });
    // Filters apply inside the flat search, with its early stop.
    bench("flat/top200_ef200_organic", &|q| {
        native.search_with_ef(q, 200, 200, Some(&organic))
    });
    bench("flat/top200_ef200_even", &|q| {
        native.search_with_ef(q, 200, 200, Some(&even))
    });
    if let Some((hnsw, copy)) = &hnsw_rs {
        bench("hnsw_rs/top200_ef200", &|q| {
            hnsw.search_with_ef(q, 200, 200, None)
        });
        bench("hnsw_rs/top10_ef64", &|q| {
            hnsw.search_with_ef(q, 10, 64, None)
        });
        // Ads excluded: a slightly wider unfiltered search, filtered afterwards.
        bench("hnsw_rs/top200_ef200_organic", &|q| {
            hnsw.search_with_ef(q, 200, 200, Some(&organic))
        });
        // Half the rows excluded: hnsw_rs's filtered search, which never stops early.
        bench("hnsw_rs/top200_ef200_even", &|q| {
            hnsw.search_with_ef(q, 200, 200, Some(&even))
        });
        bench("flat_hnsw_rs_graph/top200_ef200", &|q| {
            copy.search_with_ef(q, 200, 200, None)
        });
    }
    group.finish();
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

/// Posts in the live benchmarks' base graph.
const N: usize = 100_000;
const CLUSTERS: usize = N / POSTS_PER_CLUSTER;

/// Largest delta measured.
const APPENDED: usize = 30_000;

/// A top-200 on the 100,000-post graph plus posts appended after it: in the delta (an exact scan
/// on top of the graph search) or sealed into a graph of their own.
fn live(c: &mut Criterion) {
    let base = {
        let vectors = synthetic::clustered(N, DIM, CLUSTERS, SPREAD, SEED);
        let rows: Vec<u32> = (0..N as u32).collect();
        let params = HnswParams::default();
        Arc::new(FlatHnswIndex::build(
            &vectors,
            &rows,
            Metric::Cosine,
            params,
        ))
    };
    let base = &base;
    // The same sequence as the base's vectors, continued: rows N.. are the new posts.
    let vectors = synthetic::clustered(N + APPENDED, DIM, CLUSTERS, SPREAD, SEED);
    let queries: Vec<Vec<f32>> = synthetic::queries(QUERIES, DIM, CLUSTERS, SPREAD, SEED)
        .rows()
        .into_iter()
        .map(|q| q.to_vec())
        .collect();
    let live_with = |appended: usize, seal_threshold: usize| {
        let config = LiveConfig {
            seal_threshold,
            ..LiveConfig::default()
        };
        let index = LiveIndex::new(Arc::clone(base), config).expect("valid configuration");
        let rows: Vec<u32> = (N as u32..(N + appended) as u32).collect();
        let new_posts = vectors.slice(ndarray::s![N..N + appended, ..]);
        index.append(&rows, new_posts).expect("new rows");
        index
    };
    let report = |name: &str, index: &LiveIndex| {
        let union: Vec<u32> = (0..index.len() as u32).collect();
        let exact = ExactIndex::build(&vectors, &union, Metric::Cosine);
        let search = |q: &[f32], k, ef, f: Option<RowFilter<'_>>| index.search_with_ef(q, k, ef, f);
        eprintln!(
            "{name}: segments {:?}, {:.1} MB, recall@200 ef 200 {:.4}",
            index.segment_sizes(),
            index.memory_bytes() as f64 / MB,
            recall(&search, &exact, &queries, (200, 200), None),
        );
    };

    // Appending one post at a time: each append copies the delta's last, partly filled chunk.
    let one_by_one = LiveIndex::new(
        Arc::clone(base),
        LiveConfig {
            seal_threshold: usize::MAX,
            ..LiveConfig::default()
        },
    )
    .expect("valid configuration");
    let start = Instant::now();
    for row in N..N + APPENDED {
        let post = vectors.slice(ndarray::s![row..row + 1, ..]);
        one_by_one.append(&[row as u32], post).expect("a new row");
    }
    eprintln!(
        "appending {APPENDED} posts one at a time: {:.1?} per post",
        start.elapsed() / APPENDED as u32
    );
    drop(one_by_one);

    for appended in [0, 1_000, 3_000, 10_000, 20_000, APPENDED] {
        let index = live_with(appended, usize::MAX);
        let name = format!("live/top200_ef200_delta{appended}");
        report(&name, &index);
        bench_queries(c, &name, &queries, |q| {
            index.search_with_ef(q, 200, 200, None)
        });
    }
    for appended in [1_000, 10_000, 20_000, APPENDED] {
        let start = Instant::now();
        let index = live_with(appended, appended);
        index.wait_idle();
        let name = format!("live/top200_ef200_sealed{appended}");
        eprintln!("sealing {appended} posts: {:.1?}", start.elapsed());
        report(&name, &index);
        bench_queries(c, &name, &queries, |q| {
            index.search_with_ef(q, 200, 200, None)
        });
    }
    // Two sealed graphs, as many as the default configuration keeps before merging.
    let index = live_with(10_000, 10_000);
    index.wait_idle();
    let rows: Vec<u32> = ((N + 10_000) as u32..(N + 20_000) as u32).collect();
    let more = vectors.slice(ndarray::s![N + 10_000..N + 20_000, ..]);
    index.append(&rows, more).expect("new rows");
    index.wait_idle();
    let name = "live/top200_ef200_sealed2x10000";
    report(name, &index);
    bench_queries(c, name, &queries, |q| {
        index.search_with_ef(q, 200, 200, None)
    });
}

criterion_group! {
    name = benches;
    // Modest samples: the whole run, graph builds included, takes about a quarter of an hour on
    // two cores.
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = retrieval, live
}
criterion_main!(benches);
