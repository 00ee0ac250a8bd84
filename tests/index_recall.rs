//! HNSW against exact search on clustered data: recall, filters, row mapping, the dot metric and
//! degenerate inputs. Run with `--nocapture` to see the measured recall.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use feedrank::index::{
    ExactIndex, FlatHnswIndex, HnswIndex, HnswParams, LiveConfig, LiveIndex, Neighbor,
    NeighborIndex, synthetic,
};
use feedrank::snapshot::Metric;
use ndarray::{Array2, s};
use proptest::prelude::*;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

// As in the service: hnsw_rs allocates per point and per query.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const N: usize = 20_000;
const DIM: usize = 64;
/// About 100 points per cluster, as many as K: a top-100 reaches into other clusters, which is
/// harder for a graph than staying inside one.
const CLUSTERS: usize = 200;
/// Noise as large as the centre: neighbours within a cluster are far from identical.
const SPREAD: f32 = 1.0;
const QUERIES: usize = 100;
const K: usize = 100;

/// One 20,000-point graph shared by the tests that need it: building it dominates the runtime.
struct World {
    vectors: Array2<f32>,
    queries: Array2<f32>,
    exact: ExactIndex,
    hnsw: HnswIndex,
    /// A copy of `hnsw`'s graph: the two search the same links.
    flat: FlatHnswIndex,
    /// A graph of feedrank's own builder over the same points.
    native: FlatHnswIndex,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let vectors = synthetic::clustered(N, DIM, CLUSTERS, SPREAD, 7);
        let queries = synthetic::queries(QUERIES, DIM, CLUSTERS, SPREAD, 7);
        let rows: Vec<u32> = (0..N as u32).collect();
        let exact = ExactIndex::build(&vectors, &rows, Metric::Cosine);
        let start = Instant::now();
        // The service's defaults: M = 16, ef_construction = 200, and a search beam of
        // max(ef_search, k) = 100 for a top-100.
        let params = HnswParams::default();
        let hnsw = HnswIndex::build(&vectors, &rows, Metric::Cosine, params);
        eprintln!("built HNSW over {N} points in {:.1?}", start.elapsed());
        let flat = FlatHnswIndex::from_hnsw(&hnsw);
        let start = Instant::now();
        let native = FlatHnswIndex::build(&vectors, &rows, Metric::Cosine, params);
        eprintln!("built the native graph in {:.1?}", start.elapsed());
        World {
            vectors,
            queries,
            exact,
            hnsw,
            flat,
            native,
        }
    })
}

fn rows(hits: &[Neighbor]) -> Vec<u32> {
    hits.iter().map(|n| n.row).collect()
}

/// Share of `truth` found in `got`.
fn recall(got: &[Neighbor], truth: &[Neighbor]) -> f64 {
    if truth.is_empty() {
        return 1.0;
    }
    let got: HashSet<u32> = got.iter().map(|n| n.row).collect();
    truth.iter().filter(|n| got.contains(&n.row)).count() as f64 / truth.len() as f64
}

fn assert_best_first(hits: &[Neighbor]) {
    for pair in hits.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        assert!(
            a.similarity > b.similarity || (a.similarity == b.similarity && a.row < b.row),
            "not best first: {a:?} before {b:?}"
        );
    }
}

fn exact_dot(vectors: &Array2<f32>, row: u32, query: &[f32]) -> f32 {
    vectors
        .row(row as usize)
        .iter()
        .zip(query)
        .map(|(x, y)| x * y)
        .sum()
}

#[test]
fn recall_at_100_on_clustered_data() {
    let w = world();
    let mut total = 0.0;
    for q in w.queries.rows() {
        let q = q.as_slice().unwrap();
        let truth = w.exact.search(q, K, None);
        let got = w.hnsw.search(q, K, None);
        assert_eq!(got.len(), K);
        assert_best_first(&got);
        for n in &got {
            // Similarity is the cosine of the (unit) query with the row the hit names.
            assert!((n.similarity - exact_dot(&w.vectors, n.row, q)).abs() < 1e-5);
        }
        total += recall(&got, &truth);
    }
    let mean = total / QUERIES as f64;
    eprintln!("HNSW recall@{K} over {QUERIES} queries: {mean:.4}");
    assert!(mean >= 0.95, "recall@{K} = {mean:.4}");
}

/// Mean recall@K of HNSW against exact search under `keep`, checking that neither returns an
/// excluded row.
fn filtered_recall(w: &World, keep: &(dyn Fn(u32) -> bool + Sync)) -> f64 {
    let mut total = 0.0;
    for q in w.queries.rows() {
        let q = q.as_slice().unwrap();
        let truth = w.exact.search(q, K, Some(keep));
        let got = w.hnsw.search(q, K, Some(keep));
        assert_eq!(truth.len(), K);
        assert!(truth.iter().chain(&got).all(|n| keep(n.row)));
        assert_best_first(&got);
        total += recall(&got, &truth);
    }
    total / QUERIES as f64
}

#[test]
fn filtered_search_never_returns_excluded_rows() {
    let w = world();
    // Every 20th row is an ad, which organic retrieval must never return (served by a wider
    // unfiltered search, filtered afterwards).
    let organic = filtered_recall(w, &|row| !row.is_multiple_of(20));
    eprintln!("HNSW filtered recall@{K}, every 20th row excluded: {organic:.4}");
    assert!(organic >= 0.95, "filtered recall@{K} = {organic:.4}");
    // Half the rows excluded: too many for that, so the graph search applies the filter.
    let half = filtered_recall(w, &|row| row.is_multiple_of(2));
    eprintln!("HNSW filtered recall@{K}, every other row excluded: {half:.4}");
    assert!(half >= 0.95, "filtered recall@{K} = {half:.4}");

    // A filter that keeps 21 rows scattered over the clusters is the hard case for a graph:
    // hnsw_rs then walks the whole graph, so it should still find them.
    let rare = |row: u32| row.is_multiple_of(997);
    let mut total = 0.0;
    for q in w.queries.rows().into_iter().take(20) {
        let q = q.as_slice().unwrap();
        let got = w.hnsw.search(q, 10, Some(&rare));
        assert!(got.iter().all(|n| rare(n.row)));
        total += recall(&got, &w.exact.search(q, 10, Some(&rare)));
    }
    eprintln!("HNSW filtered recall@10, 21 rows kept: {:.4}", total / 20.0);
    assert!(
        total / 20.0 >= 0.9,
        "rare-filter recall@10 = {}",
        total / 20.0
    );
}

#[test]
fn results_name_rows_of_the_matrix_not_positions_in_the_pool() {
    let w = world();
    // A pool of 2,000 rows, out of order, none of them at its own position.
    let pool: Vec<u32> = (0..2_000u32).map(|i| (N as u32 - 1) - 7 * i).collect();
    let members: HashSet<u32> = pool.iter().copied().collect();
    let exact = ExactIndex::build(&w.vectors, &pool, Metric::Cosine);
    let hnsw = HnswIndex::build(&w.vectors, &pool, Metric::Cosine, HnswParams::default());
    assert_eq!((exact.len(), hnsw.len()), (pool.len(), pool.len()));
    let mut total = 0.0;
    for q in w.queries.rows().into_iter().take(50) {
        let q = q.as_slice().unwrap();
        let truth = exact.search(q, 10, None);
        let got = hnsw.search(q, 10, None);
        for n in truth.iter().chain(&got) {
            assert!(members.contains(&n.row), "row {} is not in the pool", n.row);
            assert!((n.similarity - exact_dot(&w.vectors, n.row, q)).abs() < 1e-5);
        }
        total += recall(&got, &truth);
    }
    assert!(
        total / 50.0 >= 0.95,
        "recall@10 on the pool = {}",
        total / 50.0
    );
}

/// Clustered directions with norms between 0.25 and 4 (the largest inner product is often not
/// the closest direction), and queries longer than any row (scores above the largest squared
/// row norm must not break the graph's non-negative distance).
fn check_dot_metric(name: &str, build: fn(&Array2<f32>, &[u32]) -> Box<dyn NeighborIndex>) {
    let n = 2_000;
    let mut vectors = synthetic::clustered(n, 32, 30, 0.5, 3);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for mut row in vectors.rows_mut() {
        row *= rng.random_range(0.25f32..4.0);
    }
    let mut queries = synthetic::queries(50, 32, 30, 0.5, 3);
    queries *= 10.0;
    let pool: Vec<u32> = (0..n as u32).collect();
    let exact = ExactIndex::build(&vectors, &pool, Metric::Dot);
    let index = build(&vectors, &pool);
    let mut total = 0.0;
    let mut top_hit_misses = 0;
    for q in queries.rows() {
        let q = q.as_slice().unwrap();
        let truth = exact.search(q, 10, None);
        let got = index.search(q, 10, None);
        assert_eq!(got.len(), 10);
        assert_best_first(&got);
        top_hit_misses += usize::from(got[0].row != truth[0].row);
        for n in &got {
            let expected = exact_dot(&vectors, n.row, q);
            assert!(
                (n.similarity - expected).abs() < 1e-4 * expected.abs().max(1.0),
                "{name}: row {}: similarity {} but q·x = {expected}",
                n.row,
                n.similarity
            );
        }
        total += recall(&got, &truth);
    }
    let mean = total / 50.0;
    eprintln!(
        "{name} recall@10 under the dot metric: {mean:.4}, top hit missed {top_hit_misses}/50"
    );
    assert!(mean >= 0.95, "{name}: dot recall@10 = {mean:.4}");
    // The graph is approximate and the parallel build differs from run to run: over 200 builds
    // the top hit was missed for at most 2 of the 50 queries. Ranking by cosine instead of the
    // raw inner product would miss 47 of them.
    assert!(
        top_hit_misses <= 3,
        "{name}: the top hit differs from exact search for {top_hit_misses} of 50 queries"
    );
}

#[test]
fn dot_metric_ranks_raw_inner_products() {
    check_dot_metric("HNSW", |v, pool| {
        Box::new(HnswIndex::build(
            v,
            pool,
            Metric::Dot,
            HnswParams::default(),
        ))
    });
}

type Build = fn(&Array2<f32>, &[u32], Metric) -> Box<dyn NeighborIndex>;

/// Empty pools, `k == 0`, queries without a direction, filters that keep nothing, `k` beyond
/// the pool (the whole pool, in exact order) and a single-row pool, under both metrics.
fn check_degenerate_inputs(build: Build) {
    let vectors = synthetic::clustered(6, 8, 2, 0.5, 1);
    let query = synthetic::queries(1, 8, 2, 0.5, 1);
    let query = query.row(0).to_vec();
    for metric in [Metric::Cosine, Metric::Dot] {
        let empty = build(&vectors, &[], metric);
        assert!(empty.is_empty());
        assert!(empty.search(&query, 10, None).is_empty());

        let pool = [5, 1, 3, 0, 2];
        let index = build(&vectors, &pool, metric);
        assert!(index.search(&query, 0, None).is_empty());
        assert!(index.search(&[0.0; 8], 3, None).is_empty());
        assert!(index.search(&[f32::NAN; 8], 3, None).is_empty());
        assert!(index.search(&[f32::INFINITY; 8], 3, None).is_empty());
        assert!(index.search(&query, 3, Some(&|_| false)).is_empty());
        let exact = ExactIndex::build(&vectors, &pool, metric);
        assert_eq!(
            rows(&index.search(&query, 50, None)),
            rows(&exact.search(&query, 50, None))
        );
        let odd = |r: u32| !r.is_multiple_of(2);
        assert_eq!(
            rows(&index.search(&query, 50, Some(&odd))),
            rows(&exact.search(&query, 50, Some(&odd)))
        );
        let one = build(&vectors, &[4], metric);
        assert_eq!(rows(&one.search(&query, 3, None)), [4]);
    }
}

#[test]
fn degenerate_inputs_return_nothing_or_everything() {
    check_degenerate_inputs(|v, pool, metric| {
        Box::new(HnswIndex::build(v, pool, metric, HnswParams::default()))
    });
}

/// Mean recall@k of `search` against exact search over the world's queries, checking order,
/// similarities and the filter on the way.
fn mean_recall(
    w: &World,
    k: usize,
    filter: Option<&(dyn Fn(u32) -> bool + Sync)>,
    search: impl Fn(&[f32]) -> Vec<Neighbor>,
) -> f64 {
    let mut total = 0.0;
    for q in w.queries.rows() {
        let q = q.as_slice().unwrap();
        let truth = w.exact.search(q, k, filter);
        let got = search(q);
        assert_eq!(got.len(), truth.len());
        assert_best_first(&got);
        for n in &got {
            assert!(
                filter.is_none_or(|keep| keep(n.row)),
                "row {} excluded",
                n.row
            );
            assert!((n.similarity - exact_dot(&w.vectors, n.row, q)).abs() < 1e-5);
        }
        total += recall(&got, &truth);
    }
    total / w.queries.nrows() as f64
}

#[test]
fn flat_recall_at_100_on_clustered_data() {
    let w = world();
    assert_eq!(w.flat.len(), N);
    let mean = mean_recall(w, K, None, |q| w.flat.search(q, K, None));
    eprintln!("flat HNSW recall@{K} over {QUERIES} queries: {mean:.4}");
    assert!(mean >= 0.95, "flat recall@{K} = {mean:.4}");
}

#[test]
fn flat_search_finds_at_least_what_hnsw_rs_finds_on_the_same_graph() {
    let w = world();
    // hnsw_rs descends each upper layer by one step only; the flat search descends to a local
    // optimum, and otherwise runs the same beam, so it should never do noticeably worse.
    for (k, ef) in [(K, 100), (10, 16), (10, 64), (200, 200)] {
        let flat = mean_recall(w, k, None, |q| w.flat.search_with_ef(q, k, ef, None));
        let hnsw = mean_recall(w, k, None, |q| w.hnsw.search_with_ef(q, k, ef, None));
        eprintln!("recall@{k} ef {ef}: flat {flat:.4}, hnsw_rs {hnsw:.4}");
        assert!(
            flat >= hnsw - 0.005,
            "recall@{k} ef {ef}: flat {flat:.4} < hnsw_rs {hnsw:.4}"
        );
    }
}

#[test]
fn the_native_graph_finds_about_what_the_hnsw_rs_graph_finds() {
    let w = world();
    assert_eq!(w.native.len(), N);
    for (k, ef) in [(K, 100), (10, 16), (10, 64), (200, 200)] {
        let native = mean_recall(w, k, None, |q| w.native.search_with_ef(q, k, ef, None));
        let hnsw_rs = mean_recall(w, k, None, |q| w.flat.search_with_ef(q, k, ef, None));
        eprintln!("recall@{k} ef {ef}: native graph {native:.4}, hnsw_rs graph {hnsw_rs:.4}");
        assert!(
            native >= hnsw_rs - 0.02,
            "recall@{k} ef {ef}: native graph {native:.4} < hnsw_rs graph {hnsw_rs:.4}"
        );
    }
    let mean = mean_recall(w, K, None, |q| w.native.search(q, K, None));
    assert!(mean >= 0.95, "native graph recall@{K} = {mean:.4}");
}

#[test]
fn a_graph_built_on_more_threads_than_cores_finds_every_row_by_its_own_vector() {
    // Many threads on few cores interleave insertions as much as a loaded machine does. A node
    // that became visible before all its own links were written once left other nodes linked
    // only to it, and those were then missed even by their own vector (28 to 64 of these 6,000
    // rows in a debug build).
    let w = live_world();
    let rows: Vec<u32> = (0..w.vectors.nrows() as u32).collect();
    let params = HnswParams {
        max_connections: 8,
        ef_construction: 64,
        ef_search: 64,
    };
    let graph = FlatHnswIndex::build_with_threads(&w.vectors, &rows, Metric::Cosine, params, 16);
    let missed: Vec<u32> = rows
        .iter()
        .copied()
        .filter(|&r| {
            graph.search(w.vectors.row(r as usize).as_slice().unwrap(), 1, None)[0].row != r
        })
        .collect();
    eprintln!(
        "rows missed by their own vector: {} of {}",
        missed.len(),
        rows.len()
    );
    assert!(missed.len() <= 2, "{missed:?}");
}

#[test]
fn flat_filtered_search_never_returns_excluded_rows() {
    let w = world();
    for (name, keep) in [
        (
            "every 20th row excluded",
            &(|row: u32| !row.is_multiple_of(20)) as &(dyn Fn(u32) -> bool + Sync),
        ),
        ("every other row excluded", &|row: u32| {
            row.is_multiple_of(2)
        }),
        ("one row in ten kept", &|row: u32| row.is_multiple_of(10)),
    ] {
        let mean = mean_recall(w, K, Some(keep), |q| w.flat.search(q, K, Some(keep)));
        eprintln!("flat filtered recall@{K}, {name}: {mean:.4}");
        assert!(mean >= 0.95, "flat filtered recall@{K}, {name} = {mean:.4}");
    }
    // 21 rows kept, scattered over the clusters: the search walks on until it has found them.
    let rare = |row: u32| row.is_multiple_of(997);
    let mut total = 0.0;
    for q in w.queries.rows() {
        let q = q.as_slice().unwrap();
        let got = w.flat.search(q, 10, Some(&rare));
        assert!(got.iter().all(|n| rare(n.row)));
        total += recall(&got, &w.exact.search(q, 10, Some(&rare)));
    }
    let mean = total / QUERIES as f64;
    eprintln!("flat filtered recall@10, 21 rows kept: {mean:.4}");
    assert!(mean >= 0.95, "rare-filter recall@10 = {mean:.4}");
}

#[test]
fn flat_results_name_rows_of_the_matrix() {
    let w = world();
    let pool: Vec<u32> = (0..2_000u32).map(|i| (N as u32 - 1) - 7 * i).collect();
    let members: HashSet<u32> = pool.iter().copied().collect();
    let exact = ExactIndex::build(&w.vectors, &pool, Metric::Cosine);
    let flat = FlatHnswIndex::build(&w.vectors, &pool, Metric::Cosine, HnswParams::default());
    assert_eq!(flat.len(), pool.len());
    let mut total = 0.0;
    for q in w.queries.rows().into_iter().take(50) {
        let q = q.as_slice().unwrap();
        let truth = exact.search(q, 10, None);
        let got = flat.search(q, 10, None);
        assert_eq!(got.len(), 10);
        for n in &got {
            assert!(members.contains(&n.row), "row {} is not in the pool", n.row);
            assert!((n.similarity - exact_dot(&w.vectors, n.row, q)).abs() < 1e-5);
        }
        total += recall(&got, &truth);
    }
    assert!(
        total / 50.0 >= 0.95,
        "recall@10 on the pool = {}",
        total / 50.0
    );
}

#[test]
fn flat_dot_metric_ranks_raw_inner_products() {
    check_dot_metric("flat", |v, pool| {
        Box::new(FlatHnswIndex::build(
            v,
            pool,
            Metric::Dot,
            HnswParams::default(),
        ))
    });
}

#[test]
fn flat_degenerate_inputs_return_nothing_or_everything() {
    check_degenerate_inputs(|v, pool, metric| {
        Box::new(FlatHnswIndex::build(v, pool, metric, HnswParams::default()))
    });
}

proptest! {
    // No failure file: an integration test has no source root for proptest to put it under.
    #![proptest_config(ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// On small clustered sets a beam as wide as the pool finds the exact answer, filtered or
    /// not. Cosine only: under dot the graph's "distance" is not a metric, and rows of small norm
    /// can end up in no neighbour list at all, unreachable by any beam (the dot metric's recall
    /// is checked on realistic data above). At least two dimensions: unit vectors in one are all
    /// +1 or -1, and a graph of exact duplicates need not link the two groups.
    #[test]
    fn flat_with_a_full_beam_matches_exact(
        n in 1usize..300,
        dim in 2usize..40,
        clusters in 1usize..8,
        seed in 0u64..1_000,
        k in 1usize..40,
        modulus in 1u32..5,
    ) {
        let metric = Metric::Cosine;
        let vectors = synthetic::clustered(n, dim, clusters, 0.6, seed);
        let queries = synthetic::queries(5, dim, clusters, 0.6, seed);
        let pool: Vec<u32> = (0..n as u32).collect();
        let exact = ExactIndex::build(&vectors, &pool, metric);
        let flat = FlatHnswIndex::build(&vectors, &pool, metric, HnswParams::default());
        let keep = |row: u32| row.is_multiple_of(modulus);
        for q in queries.rows() {
            let q = q.as_slice().unwrap();
            for filter in [None, Some(&keep as &(dyn Fn(u32) -> bool + Sync))] {
                let truth = exact.search(q, k, filter);
                let got = flat.search_with_ef(q, k, n, filter);
                prop_assert_eq!(got.len(), truth.len());
                prop_assert!(got.iter().all(|h| filter.is_none_or(|keep| keep(h.row))));
                // Rounding can order near-equal scores differently in the two kernels: compare
                // the score sequences, which equal top-k sets (up to ties) must share.
                for (g, t) in got.iter().zip(&truth) {
                    let tolerance = 1e-5 * t.similarity.abs().max(1.0);
                    prop_assert!(
                        (g.similarity - t.similarity).abs() <= tolerance,
                        "{:?} where exact search has {:?}", g, t
                    );
                }
            }
        }
    }
}

// ---- The live index: a base graph, sealed graphs and an exact delta ----

const LIVE_BASE: usize = 3_000;
const LIVE_APPENDED: usize = 3_000;
const LIVE_DIM: usize = 32;
const LIVE_CLUSTERS: usize = 30;
const LIVE_SPREAD: f32 = 1.0;

/// Rows `0..LIVE_BASE` in a shared base graph; the rest are appended by the tests.
struct LiveWorld {
    vectors: Array2<f32>,
    queries: Array2<f32>,
    base: Arc<FlatHnswIndex>,
}

fn live_world() -> &'static LiveWorld {
    static WORLD: OnceLock<LiveWorld> = OnceLock::new();
    WORLD.get_or_init(|| {
        let n = LIVE_BASE + LIVE_APPENDED;
        let vectors = synthetic::clustered(n, LIVE_DIM, LIVE_CLUSTERS, LIVE_SPREAD, 21);
        let queries = synthetic::queries(50, LIVE_DIM, LIVE_CLUSTERS, LIVE_SPREAD, 21);
        let rows: Vec<u32> = (0..LIVE_BASE as u32).collect();
        let base = FlatHnswIndex::build(&vectors, &rows, Metric::Cosine, HnswParams::default());
        LiveWorld {
            vectors,
            queries,
            base: Arc::new(base),
        }
    })
}

fn live_index(config: LiveConfig) -> LiveIndex {
    LiveIndex::new(Arc::clone(&live_world().base), config).unwrap()
}

/// Appends rows `range` of the world's matrix under their own numbers.
fn append_rows(index: &LiveIndex, range: std::ops::Range<usize>) {
    let rows: Vec<u32> = (range.start as u32..range.end as u32).collect();
    let vectors = live_world().vectors.slice(s![range, ..]);
    index.append(&rows, vectors).unwrap();
}

/// Mean recall@k of the live index against exact search over rows `0..upto` (the base and
/// everything appended so far), checking order and similarities on the way.
fn live_recall(
    index: &LiveIndex,
    upto: usize,
    k: usize,
    filter: Option<&(dyn Fn(u32) -> bool + Sync)>,
) -> f64 {
    let w = live_world();
    let union: Vec<u32> = (0..upto as u32).collect();
    let exact = ExactIndex::build(&w.vectors, &union, Metric::Cosine);
    let mut total = 0.0;
    for q in w.queries.rows() {
        let q = q.as_slice().unwrap();
        let truth = exact.search(q, k, filter);
        let got = index.search(q, k, filter);
        assert_eq!(got.len(), truth.len());
        assert_best_first(&got);
        for n in &got {
            assert!((n.row as usize) < upto, "row {} was never added", n.row);
            assert!(filter.is_none_or(|keep| keep(n.row)));
            assert!((n.similarity - exact_dot(&w.vectors, n.row, q)).abs() < 1e-5);
        }
        total += recall(&got, &truth);
    }
    total / w.queries.nrows() as f64
}

#[test]
fn live_recall_before_during_and_after_sealing() {
    let config = LiveConfig {
        seal_threshold: 500,
        max_sealed: 2,
        ..LiveConfig::default()
    };
    let index = live_index(config);
    let organic = |row: u32| !row.is_multiple_of(20);
    let mut worst = f64::INFINITY;
    // Seals and merges run in the background while batches arrive and searches go on.
    for end in (LIVE_BASE + 250..=LIVE_BASE + LIVE_APPENDED).step_by(250) {
        append_rows(&index, end - 250..end);
        assert_eq!(index.len(), end);
        worst = worst
            .min(live_recall(&index, end, 50, None))
            .min(live_recall(&index, end, 50, Some(&organic)));
    }
    eprintln!("live recall@50 while appending: at worst {worst:.4}");
    assert!(worst >= 0.95, "live recall@50 while appending: {worst:.4}");

    index.wait_idle();
    let sizes = index.segment_sizes();
    eprintln!("live segments when idle: {sizes:?}");
    assert_eq!(sizes.base, LIVE_BASE);
    assert!(sizes.sealed.len() <= config.max_sealed, "{sizes:?}");
    assert!(sizes.delta < config.seal_threshold, "{sizes:?}");
    assert_eq!(sizes.total(), LIVE_BASE + LIVE_APPENDED);
    let all = LIVE_BASE + LIVE_APPENDED;
    let after = live_recall(&index, all, 50, None);
    let filtered = live_recall(&index, all, 50, Some(&organic));
    eprintln!("live recall@50 once sealed and merged: {after:.4}, without ads {filtered:.4}");
    assert!(
        after >= 0.95 && filtered >= 0.95,
        "{after:.4}, {filtered:.4}"
    );
}

#[test]
fn live_appends_are_found_at_once_even_while_sealing() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    // A threshold this small keeps a seal or a merge in flight most of the time.
    let index = live_index(LiveConfig {
        seal_threshold: 200,
        max_sealed: 3,
        ..LiveConfig::default()
    });
    let w = live_world();
    let published = AtomicUsize::new(LIVE_BASE);
    let done = AtomicBool::new(false);
    let own_vector = |row: usize| w.vectors.row(row).to_vec();
    // Visibility, not graph quality: a filter that keeps only the row makes every graph walk
    // all its reachable nodes (and every node is reachable), so a published row that some
    // segment holds is always found, and one that none holds never is.
    let nearest = |row: usize| {
        let only = |r: u32| r as usize == row;
        index.search_with_ef(&own_vector(row), 1, 1, Some(&only))
    };
    let checked = std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut rng = ChaCha8Rng::seed_from_u64(5);
            let mut checked = 0;
            while !done.load(Ordering::Acquire) {
                let upto = published.load(Ordering::Acquire);
                let row = rng.random_range(LIVE_BASE..upto.max(LIVE_BASE + 1));
                if row < upto {
                    let hits = nearest(row);
                    assert_eq!(hits.len(), 1, "row {row} is in no segment");
                    assert_eq!(hits[0].row as usize, row, "{hits:?}");
                    checked += 1;
                }
            }
            checked
        });
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        let mut next = LIVE_BASE;
        while next < LIVE_BASE + LIVE_APPENDED {
            let end = (next + rng.random_range(1..40)).min(LIVE_BASE + LIVE_APPENDED);
            append_rows(&index, next..end);
            published.store(end, Ordering::Release);
            for row in next..end {
                let hits = nearest(row);
                assert_eq!(hits.len(), 1, "row {row} is in no segment");
                assert_eq!(hits[0].row as usize, row, "{hits:?}");
                assert!((hits[0].similarity - 1.0).abs() < 1e-5);
            }
            next = end;
        }
        done.store(true, Ordering::Release);
        reader.join().unwrap()
    });
    eprintln!(
        "read-your-writes: {checked} concurrent checks; segments {:?}",
        index.segment_sizes()
    );
    assert!(checked > 0);
    // Sealed and merged into graphs, rows are still their own nearest neighbours, as far as an
    // approximate search finds them with its default beam.
    index.wait_idle();
    assert!(index.segment_sizes().delta < 200);
    let found = (LIVE_BASE..LIVE_BASE + LIVE_APPENDED)
        .filter(|&row| index.search(&own_vector(row), 1, None)[0].row as usize == row)
        .count();
    let share = found as f64 / LIVE_APPENDED as f64;
    eprintln!("appended rows found first with their own vector once sealed: {share:.4}");
    assert!(share >= 0.99, "{share:.4}");
}

#[test]
fn live_rows_are_never_lost_or_duplicated_across_seals_and_merges() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let index = live_index(LiveConfig {
        seal_threshold: 300,
        max_sealed: 2,
        ..LiveConfig::default()
    });
    let w = live_world();
    let published = AtomicUsize::new(LIVE_BASE);
    let done = AtomicBool::new(false);
    let query = w.queries.row(0).to_vec();
    let total = LIVE_BASE + LIVE_APPENDED;
    // Every row at once, with a beam as wide as the index: every segment returns all its rows,
    // so a row missed or repeated while moving between segments would show.
    let everything = || index.search_with_ef(&query, total, total, None);
    let whole_rows = |hits: &[Neighbor], upto: usize| {
        let rows: HashSet<u32> = hits.iter().map(|n| n.row).collect();
        assert_eq!(rows.len(), hits.len(), "a row came back twice");
        let missing = (0..upto as u32).filter(|r| !rows.contains(r)).count();
        assert_eq!(missing, 0, "{missing} of the first {upto} rows are missing");
    };
    let searches = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(Ordering::Acquire) {
                let upto = published.load(Ordering::Acquire);
                whole_rows(&everything(), upto);
                searches.fetch_add(1, Ordering::AcqRel);
            }
        });
        for end in (LIVE_BASE + 150..=total).step_by(150) {
            append_rows(&index, end - 150..end);
            published.store(end, Ordering::Release);
            // At least one whole search between appends, while seals and merges run.
            let seen = searches.load(Ordering::Acquire);
            while searches.load(Ordering::Acquire) < seen + 2 {
                std::thread::yield_now();
            }
        }
        done.store(true, Ordering::Release);
    });
    let searches = searches.into_inner();
    index.wait_idle();
    eprintln!(
        "{searches} full searches while sealing; segments {:?}",
        index.segment_sizes()
    );
    assert_eq!(index.len(), total);
    let hits = everything();
    assert_eq!(hits.len(), total);
    whole_rows(&hits, total);
    assert_best_first(&hits);
}

#[test]
fn live_rejected_appends_change_nothing_and_name_the_problem() {
    let w = live_world();
    let index = live_index(LiveConfig::default());
    append_rows(&index, LIVE_BASE..LIVE_BASE + 10);
    let query = w.queries.row(1).to_vec();
    let before = (index.segment_sizes(), index.search(&query, 20, None));
    let one = |v: Vec<f32>| Array2::from_shape_vec((1, v.len()), v).unwrap();
    let good = w.vectors.row(LIVE_BASE + 20).to_vec();
    let mut nan = good.clone();
    nan[3] = f32::NAN;
    let mut infinite = good.clone();
    infinite[31] = f32::NEG_INFINITY;
    let two = w
        .vectors
        .slice(s![LIVE_BASE + 20..LIVE_BASE + 22, ..])
        .to_owned();
    let cases: [(&[u32], Array2<f32>, &str); 8] = [
        (
            &[9_000],
            one(vec![1.0; 31]),
            "vectors have 31 dimensions, the index has 32",
        ),
        (
            &[9_000, 9_001],
            one(good.clone()),
            "2 row numbers but 1 vectors",
        ),
        (&[9_000], one(nan), "row 9000: value 3 of its vector is NaN"),
        (
            &[9_000],
            one(infinite),
            "row 9000: value 31 of its vector is infinite",
        ),
        (&[9_000], one(vec![0.0; 32]), "row 9000 is a zero vector"),
        (&[17], one(good.clone()), "row 17 is already in the index"),
        (
            &[LIVE_BASE as u32 + 4],
            one(good.clone()),
            "row 3004 is already in the index",
        ),
        (
            &[9_000, 9_000],
            two,
            "row 9000 appears more than once in the batch",
        ),
    ];
    for (rows, vectors, message) in cases {
        let error = index.append(rows, vectors.view()).unwrap_err().to_string();
        assert!(error.contains(message), "{error:?} should say {message:?}");
        assert_eq!(
            (index.segment_sizes(), index.search(&query, 20, None)),
            before
        );
    }
    // The row refused above as a zero vector, with its real vector: accepted.
    index.append(&[9_000], one(good.clone()).view()).unwrap();
    assert_eq!(index.len(), LIVE_BASE + 11);
}

#[test]
fn live_cosine_normalises_appended_vectors() {
    let w = live_world();
    let index = live_index(LiveConfig::default());
    let direction = w.vectors.row(LIVE_BASE).to_vec();
    let long: Vec<f32> = direction.iter().map(|x| x * 7.5).collect();
    index
        .append(
            &[LIVE_BASE as u32],
            Array2::from_shape_vec((1, LIVE_DIM), long).unwrap().view(),
        )
        .unwrap();
    let hits = index.search(&direction, 1, None);
    assert_eq!(hits[0].row, LIVE_BASE as u32);
    assert!((hits[0].similarity - 1.0).abs() < 1e-5, "{hits:?}");
}

#[test]
fn live_ties_across_segments_come_smaller_row_first() {
    // Small integers under the dot metric: equal scores are exact. Rows 1, 2 and 4 of the base
    // and appended rows 0, 6 and 7 all score 1.
    let base_vectors = Array2::from_shape_vec(
        (5, 2),
        vec![0.0, 1.0, 1.0, 0.0, 1.0, 0.0, -1.0, 0.0, 1.0, 0.0],
    )
    .unwrap();
    let base = FlatHnswIndex::build(
        &base_vectors,
        &[4, 2, 1, 3],
        Metric::Dot,
        HnswParams::default(),
    );
    let config = LiveConfig {
        seal_threshold: 2,
        ..LiveConfig::default()
    };
    let index = LiveIndex::new(base, config).unwrap();
    let appended =
        Array2::from_shape_vec((4, 2), vec![1.0, 0.0, 1.0, 0.0, 0.0, 3.0, 1.0, 0.0]).unwrap();
    index.append(&[6, 0], appended.slice(s![..2, ..])).unwrap();
    index.wait_idle();
    assert_eq!(index.segment_sizes().sealed, [2]);
    index.append(&[5, 7], appended.slice(s![2.., ..])).unwrap();
    // Tied rows in the base, in a sealed graph and (unless sealed already) in the delta.
    let hits = index.search(&[1.0, 0.0], 6, None);
    assert_eq!(rows(&hits), [0, 1, 2, 4, 6, 7]);
    assert!(hits.iter().all(|n| n.similarity == 1.0));
    let hits = index.search(&[0.0, 1.0], 3, None);
    assert_eq!(rows(&hits), [5, 0, 1]);
    assert_eq!(hits[0].similarity, 3.0);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 32,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Random batches appended to a small base, searched with random queries and filters while
    /// seals may be in flight. The delta is searched exactly: every appended row that beats the
    /// k-th hit must be among the hits, under either metric. Under cosine a beam as wide as the
    /// index makes the graphs exact too (see `flat_with_a_full_beam_matches_exact`), so the whole
    /// answer must match exact search over the union; under dot the graphs guarantee no such
    /// thing, so nothing is sealed there.
    #[test]
    fn live_search_matches_exact_over_the_union(
        base_len in 1usize..120,
        batches in proptest::collection::vec(1usize..30, 0..8),
        dim in 2usize..24,
        clusters in 1usize..6,
        seed in 0u64..1_000,
        k in 1usize..40,
        modulus in 1u32..4,
        dot in any::<bool>(),
        seal_threshold in 1usize..40,
    ) {
        let total = base_len + batches.iter().sum::<usize>();
        let metric = if dot { Metric::Dot } else { Metric::Cosine };
        let mut vectors = synthetic::clustered(total, dim, clusters, 0.6, seed);
        let mut queries = synthetic::queries(4, dim, clusters, 0.6, seed);
        if dot {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            for mut row in vectors.rows_mut() {
                row *= rng.random_range(0.25f32..4.0);
            }
            queries *= 3.0;
        }
        let base_rows: Vec<u32> = (0..base_len as u32).collect();
        let base = FlatHnswIndex::build(&vectors, &base_rows, metric, HnswParams::default());
        let config = LiveConfig {
            seal_threshold: if dot { usize::MAX } else { seal_threshold },
            max_sealed: 2,
            ..LiveConfig::default()
        };
        let index = LiveIndex::new(base, config).unwrap();
        let mut start = base_len;
        for batch in &batches {
            let rows: Vec<u32> = (start as u32..(start + batch) as u32).collect();
            index.append(&rows, vectors.slice(s![start..start + batch, ..])).unwrap();
            start += batch;
        }
        prop_assert_eq!(index.len(), total);

        let union: Vec<u32> = (0..total as u32).collect();
        let exact = ExactIndex::build(&vectors, &union, metric);
        let keep = |row: u32| row.is_multiple_of(modulus);
        for q in queries.rows() {
            let q = q.as_slice().unwrap();
            for filter in [None, Some(&keep as &(dyn Fn(u32) -> bool + Sync))] {
                let passes = |row: u32| filter.is_none_or(|keep| keep(row));
                let truth = exact.search(q, k, filter);
                let got = index.search_with_ef(q, k, total, filter);
                assert_best_first(&got);
                prop_assert!(got.len() <= truth.len());
                let found: HashSet<u32> = got.iter().map(|n| n.row).collect();
                prop_assert_eq!(found.len(), got.len(), "a row came back twice");
                for n in &got {
                    prop_assert!(passes(n.row) && (n.row as usize) < total);
                    let expected = exact_dot(&vectors, n.row, q) / match metric {
                        Metric::Cosine => q.iter().map(|x| x * x).sum::<f32>().sqrt(),
                        Metric::Dot => 1.0,
                    };
                    let tolerance = 1e-4 * expected.abs().max(1.0);
                    prop_assert!((n.similarity - expected).abs() <= tolerance, "{:?}", n);
                }
                // Appended rows: any that beats the k-th hit (all of them, if fewer than k came
                // back) is a hit.
                let bar = if got.len() < k { f32::NEG_INFINITY } else { got[k - 1].similarity };
                for t in exact.search(q, total, filter) {
                    let tolerance = 1e-5 * t.similarity.abs().max(1.0);
                    if t.row as usize >= base_len && t.similarity > bar + tolerance {
                        prop_assert!(found.contains(&t.row), "appended {:?} is missing", t);
                    }
                }
                if !dot {
                    prop_assert_eq!(got.len(), truth.len());
                    for (g, t) in got.iter().zip(&truth) {
                        let tolerance = 1e-5 * t.similarity.abs().max(1.0);
                        prop_assert!(
                            (g.similarity - t.similarity).abs() <= tolerance,
                            "{:?} where exact search has {:?}", g, t
                        );
                    }
                }
            }
        }
    }
}
