//! `feedrank bench ann`: recall and single-thread latency of the flat HNSW index (what the
//! service builds and searches), an hnsw_rs graph searched by hnsw_rs, and the exact scan, on base vectors,
//! queries and a ground truth handed over as `.npy` files.
//!
//! The scheme, fixed so that the figures compare across engines and with other libraries
//! (`scripts/bench_peers.py` follows it for hnswlib and faiss):
//!
//! - Each graph is built on every core: the flat index by feedrank's builder, the hnsw_rs graph
//!   by hnsw_rs (its rayon pool).
//! - Runs are per engine, per `k` requested and per beam. The `k` requested are the smallest
//!   and the largest recall cut-off (`--k 10,100,200` runs `k = 10` and `k = 200`). The beam of
//!   a run is `max(ef, k)` for each `--ef`, as the searches widen a narrower beam to `k`
//!   anyway; duplicates are run once. The exact scan has no beam: one run per `k`.
//! - Each run first searches up to [`WARMUP_QUERIES`] queries untimed, then times each query
//!   alone, one after the other on the calling thread, in `passes` passes over all the queries;
//!   a query's time is its fastest pass. On a shared machine, other tenants only ever add time,
//!   so the fastest of a few passes is the closest to the engine's own cost, and the engines
//!   compared see the same treatment.
//! - recall@j of a run that asked for `k ≥ j` results is `|first j returned ∩ first j of the
//!   truth| / j`, averaged over the queries: what a caller asking for `j` results from that
//!   beam would get.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::str::FromStr;
use std::time::Instant;

use ndarray::Array2;
use serde::Serialize;

use super::EvalError;
use crate::index::{ExactIndex, FlatHnswIndex, HnswIndex, HnswParams, Neighbor, NeighborIndex};
use crate::snapshot::Metric;
use crate::snapshot::npy::{self, NpyError};

/// Queries searched untimed before each timed run, to fault in pages and warm caches.
pub const WARMUP_QUERIES: usize = 100;

/// A search engine under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    /// [`FlatHnswIndex`] built by feedrank's own builder: what the service builds and searches.
    Flat,
    /// [`HnswIndex`]: a graph built and searched by hnsw_rs.
    HnswRs,
    /// [`ExactIndex`]: the scan.
    Exact,
}

impl Engine {
    pub const ALL: [Engine; 3] = [Engine::Flat, Engine::HnswRs, Engine::Exact];

    pub fn name(self) -> &'static str {
        match self {
            Engine::Flat => "flat",
            Engine::HnswRs => "hnsw_rs",
            Engine::Exact => "exact",
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Engine {
    type Err = String;

    fn from_str(s: &str) -> Result<Engine, String> {
        Engine::ALL
            .into_iter()
            .find(|e| e.name() == s)
            .ok_or_else(|| format!("unknown engine `{s}` (known: flat, hnsw_rs, exact)"))
    }
}

/// What to measure. Parameter errors name the command line's flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnBenchConfig {
    pub metric: Metric,
    /// HNSW links per node ("M").
    pub max_connections: usize,
    pub ef_construction: usize,
    /// Search beams to sweep.
    pub efs: Vec<usize>,
    /// Recall cut-offs; the smallest and the largest are the `k` requested.
    pub ks: Vec<usize>,
    /// Engines, in the order they are run.
    pub engines: Vec<Engine>,
    /// Queries the exact scan runs (the first ones); `None` for all.
    pub exact_queries: Option<usize>,
    /// Timed passes over the queries per run; each query counts its fastest.
    pub passes: usize,
}

impl AnnBenchConfig {
    pub fn validate(&self) -> Result<(), EvalError> {
        let params = HnswParams {
            max_connections: self.max_connections,
            ef_construction: self.ef_construction,
            ef_search: 1,
        };
        if let Err(message) = params.validate() {
            let name = if message.starts_with("max_connections") {
                "--m"
            } else {
                "--ef-construction"
            };
            return Err(EvalError::parameter(name, message));
        }
        for (name, values) in [("--ef", &self.efs), ("--k", &self.ks)] {
            if values.is_empty() {
                return Err(EvalError::parameter(name, "give at least one value"));
            }
            if values.contains(&0) {
                return Err(EvalError::parameter(name, "values must be positive"));
            }
        }
        if self.engines.is_empty() {
            return Err(EvalError::parameter(
                "--engines",
                "give at least one engine",
            ));
        }
        if self.exact_queries == Some(0) {
            return Err(EvalError::parameter("--exact-queries", "must be positive"));
        }
        if self.passes == 0 {
            return Err(EvalError::parameter("--passes", "must be positive"));
        }
        Ok(())
    }

    /// The largest recall cut-off: the truth needs at least this many columns.
    pub fn max_k(&self) -> usize {
        self.ks.iter().copied().max().unwrap_or(0)
    }

    /// Recall cut-offs, ascending, without repeats.
    pub fn recall_ks(&self) -> Vec<usize> {
        let mut ks = self.ks.clone();
        ks.sort_unstable();
        ks.dedup();
        ks
    }

    /// The `k` requested: the smallest and the largest cut-off.
    pub fn requested_ks(&self) -> Vec<usize> {
        let ks = self.recall_ks();
        match (ks.first(), ks.last()) {
            (Some(&lo), Some(&hi)) if lo != hi => vec![lo, hi],
            (Some(&lo), _) => vec![lo],
            _ => Vec::new(),
        }
    }

    /// Beams of the runs asking for `k`: `max(ef, k)` for each `--ef`, ascending, without
    /// repeats.
    pub fn beams(&self, k: usize) -> Vec<usize> {
        let mut beams: Vec<usize> = self.efs.iter().map(|&ef| ef.max(k)).collect();
        beams.sort_unstable();
        beams.dedup();
        beams
    }

    fn wants(&self, engine: Engine) -> bool {
        self.engines.contains(&engine)
    }
}

/// Vectors, queries and ground truth, checked against each other.
#[derive(Debug, Clone)]
pub struct AnnData {
    /// `n × d`; unit rows under cosine.
    base: Array2<f32>,
    /// `q × d`, as given (searches normalise queries under cosine).
    queries: Array2<f32>,
    /// `q × K`: row ids of each query's exact top-K, best first.
    truth: Array2<u32>,
}

impl AnnData {
    /// Reads `base` (n × d float32), `queries` (q × d float32) and `truth` (q × K int32 row
    /// ids of the base, best first, K ≥ `max_k`) and checks they fit together; under cosine
    /// normalises the base rows. Every error names the file and the problem.
    pub fn load(
        base_path: &Path,
        queries_path: &Path,
        truth_path: &Path,
        metric: Metric,
        max_k: usize,
    ) -> Result<AnnData, EvalError> {
        let mut base = read_npy(base_path, npy::read_f32_matrix)?;
        let queries = read_npy(queries_path, npy::read_f32_matrix)?;
        let truth = read_npy(truth_path, npy::read_i32_matrix)?;

        let (n, dim) = base.dim();
        if n == 0 || dim == 0 {
            return Err(EvalError::input(
                base_path,
                format!("shape ({n}, {dim}): needs at least one row and one column"),
            ));
        }
        if u32::try_from(n).is_err() {
            return Err(EvalError::input(
                base_path,
                format!("{n} rows: at most {} are supported", u32::MAX),
            ));
        }
        check_finite(base_path, &base)?;
        if metric == Metric::Cosine {
            for (r, mut row) in base.rows_mut().into_iter().enumerate() {
                let norm = row.dot(&row).sqrt();
                if norm == 0.0 {
                    return Err(EvalError::input(
                        base_path,
                        format!("row {r} is zero: it has no direction under metric cosine"),
                    ));
                }
                row /= norm;
            }
        }

        let (q, query_dim) = queries.dim();
        if query_dim != dim {
            return Err(EvalError::input(
                queries_path,
                format!(
                    "queries have dimension {query_dim}, but the base vectors in {} have {dim}",
                    base_path.display()
                ),
            ));
        }
        if q == 0 {
            return Err(EvalError::input(queries_path, "has no queries (0 rows)"));
        }
        check_finite(queries_path, &queries)?;

        let (truth_rows, truth_k) = truth.dim();
        if truth_rows != q {
            return Err(EvalError::input(
                truth_path,
                format!(
                    "{truth_rows} rows, but {} has {q} queries: the truth needs one row per query",
                    queries_path.display()
                ),
            ));
        }
        if truth_k < max_k {
            return Err(EvalError::input(
                truth_path,
                format!(
                    "{truth_k} columns, too few for recall@{max_k}: it needs each query's exact \
                     top-{max_k} row ids (or ask for a smaller --k)"
                ),
            ));
        }
        let mut seen = HashSet::with_capacity(truth_k);
        for (r, row) in truth.rows().into_iter().enumerate() {
            seen.clear();
            for (c, &id) in row.iter().enumerate() {
                if id < 0 || id as usize >= n {
                    return Err(EvalError::input(
                        truth_path,
                        format!(
                            "row {r}, column {c}: id {id} is not a row of {} (rows 0 to {})",
                            base_path.display(),
                            n - 1
                        ),
                    ));
                }
                if !seen.insert(id) {
                    return Err(EvalError::input(
                        truth_path,
                        format!("row {r} lists id {id} twice"),
                    ));
                }
            }
        }
        let truth = truth.mapv(|id| id as u32);
        Ok(AnnData {
            base,
            queries,
            truth,
        })
    }

    pub fn base_rows(&self) -> usize {
        self.base.nrows()
    }

    pub fn dim(&self) -> usize {
        self.base.ncols()
    }

    pub fn query_count(&self) -> usize {
        self.queries.nrows()
    }
}

fn read_npy<T>(
    path: &Path,
    read: fn(BufReader<File>) -> Result<Array2<T>, NpyError>,
) -> Result<Array2<T>, EvalError> {
    let file = File::open(path).map_err(|e| EvalError::input(path, format!("cannot open: {e}")))?;
    read(BufReader::new(file)).map_err(|e| {
        let message = match e.field {
            Some(field) => format!("field `{field}`: {}", e.message),
            None => e.message,
        };
        EvalError::input(path, message)
    })
}

fn check_finite(path: &Path, m: &Array2<f32>) -> Result<(), EvalError> {
    for (r, row) in m.rows().into_iter().enumerate() {
        if let Some(c) = row.iter().position(|v| !v.is_finite()) {
            return Err(EvalError::input(
                path,
                format!("row {r}, column {c}: {} is not finite", row[c]),
            ));
        }
    }
    Ok(())
}

/// `|first j of returned ∩ first j of truth| / j`. Panics if `j` is zero or the truth holds
/// fewer than `j` ids.
pub fn recall_at(returned: &[u32], truth: &[u32], j: usize) -> f64 {
    assert!(j > 0, "recall@0 is undefined");
    assert!(truth.len() >= j, "the truth holds fewer than {j} ids");
    let mut wanted = truth[..j].to_vec();
    wanted.sort_unstable();
    let found = returned[..j.min(returned.len())]
        .iter()
        .filter(|id| wanted.binary_search(id).is_ok())
        .count();
    found as f64 / j as f64
}

/// The `p`-th percentile (0 to 100) of ascending `sorted` values, interpolating linearly
/// between the two nearest ranks (numpy's default, so Python peers report the same statistic).
/// Panics if `sorted` is empty or `p` is outside 0..=100.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    assert!(!sorted.is_empty(), "percentile of no values");
    assert!((0.0..=100.0).contains(&p), "percentile {p} outside 0..=100");
    let position = p / 100.0 * (sorted.len() - 1) as f64;
    let below = position.floor() as usize;
    let above = position.ceil() as usize;
    let fraction = position - below as f64;
    sorted[below] + (sorted[above] - sorted[below]) * fraction
}

/// Per-query latency of a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    pub median_us: f64,
    pub p99_us: f64,
    pub mean_us: f64,
    /// Queries per second on one thread: `1 / mean`.
    pub qps: f64,
}

impl Latency {
    /// Summarises per-query times in microseconds. Panics if there are none.
    pub fn of(micros: &[f64]) -> Latency {
        let mut sorted = micros.to_vec();
        sorted.sort_unstable_by(f64::total_cmp);
        let mean_us = sorted.iter().sum::<f64>() / sorted.len() as f64;
        Latency {
            median_us: percentile(&sorted, 50.0),
            p99_us: percentile(&sorted, 99.0),
            mean_us,
            qps: if mean_us > 0.0 { 1e6 / mean_us } else { 0.0 },
        }
    }
}

/// Resident memory of this process, from `/proc/self/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ProcessMemory {
    /// Resident now.
    pub vm_rss_bytes: u64,
    /// Peak resident so far.
    pub vm_hwm_bytes: u64,
}

impl ProcessMemory {
    /// `None` where `/proc/self/status` is not available (not Linux).
    pub fn current() -> Option<ProcessMemory> {
        ProcessMemory::parse_status(&std::fs::read_to_string("/proc/self/status").ok()?)
    }

    /// Reads the `VmRSS` and `VmHWM` lines (in kB) of a `/proc/PID/status` text.
    pub fn parse_status(status: &str) -> Option<ProcessMemory> {
        let field = |name: &str| -> Option<u64> {
            let line = status.lines().find(|l| l.starts_with(name))?;
            let rest = line[name.len()..].trim();
            let kb = rest.strip_suffix("kB")?.trim().parse::<u64>().ok()?;
            Some(kb * 1024)
        };
        Some(ProcessMemory {
            vm_rss_bytes: field("VmRSS:")?,
            vm_hwm_bytes: field("VmHWM:")?,
        })
    }
}

/// What the benchmark reports, one record at a time (`--json` prints each as a JSON line).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    Setup(Setup),
    Build(Build),
    Memory(Memory),
    Search(SearchRun),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Setup {
    pub base_rows: usize,
    pub dim: usize,
    pub queries: usize,
    /// Columns of the truth file.
    pub truth_k: usize,
    pub metric: Metric,
    pub m: usize,
    pub ef_construction: usize,
    /// Threads the graph build uses: hnsw_rs inserts on rayon's global pool, which has one
    /// thread per core unless `RAYON_NUM_THREADS` says otherwise.
    pub build_threads: usize,
    /// Every search runs on one thread.
    pub search_threads: usize,
    pub warmup_queries: usize,
    /// Timed passes over the queries per run; each query counts its fastest.
    pub passes: usize,
    pub recall_ks: Vec<usize>,
    pub requested_ks: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Build {
    pub engine: Engine,
    /// Wall time to make the index from the vectors.
    pub seconds: f64,
    /// Heap bytes the index holds, where it can tell (`flat`, `exact`).
    pub memory_bytes: Option<usize>,
    /// Growth of the process's resident memory across this build, including memory the
    /// allocator keeps after the build freed it.
    pub rss_growth_bytes: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Memory {
    /// When it was read: `before_build`, `after_build` (indexes built, input matrix dropped).
    pub stage: &'static str,
    #[serde(flatten)]
    pub process: ProcessMemory,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchRun {
    pub engine: Engine,
    /// The beam, `max(--ef, k)`; `None` for the exact scan.
    pub ef: Option<usize>,
    pub k_requested: usize,
    /// Queries timed.
    pub queries: usize,
    #[serde(flatten)]
    pub latency: Latency,
    /// recall@j for every cut-off `j ≤ k_requested`.
    pub recall: BTreeMap<usize, f64>,
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MB: f64 = 1024.0 * 1024.0;
        match self {
            Record::Setup(s) => write!(
                f,
                "ANN benchmark: {} base vectors of dimension {}, {} queries, truth top-{}, \
                 metric {}, M {}, ef_construction {}; build on {} thread(s), search on {} \
                 thread, {} warm-up queries per run, each query's fastest of {} timed \
                 pass(es)",
                s.base_rows,
                s.dim,
                s.queries,
                s.truth_k,
                match s.metric {
                    Metric::Cosine => "cosine",
                    Metric::Dot => "dot",
                },
                s.m,
                s.ef_construction,
                s.build_threads,
                s.search_threads,
                s.warmup_queries,
                s.passes
            ),
            Record::Build(b) => {
                write!(f, "build {:<7} {:>9.2} s", b.engine.name(), b.seconds)?;
                if let Some(bytes) = b.memory_bytes {
                    write!(f, ", heap {:.1} MB", bytes as f64 / MB)?;
                }
                if let Some(growth) = b.rss_growth_bytes {
                    write!(f, ", RSS {:+.1} MB", growth as f64 / MB)?;
                }
                Ok(())
            }
            Record::Memory(m) => write!(
                f,
                "memory {}: VmRSS {:.1} MB, VmHWM {:.1} MB",
                m.stage,
                m.process.vm_rss_bytes as f64 / MB,
                m.process.vm_hwm_bytes as f64 / MB
            ),
            Record::Search(s) => {
                let ef = s.ef.map_or_else(|| "-".to_string(), |ef| ef.to_string());
                write!(
                    f,
                    "search {:<7} ef {:>4}  k {:>4}  median {:>9.1} µs  p99 {:>9.1} µs  \
                     mean {:>9.1} µs  {:>8.0} q/s  ({} queries)",
                    s.engine.name(),
                    ef,
                    s.k_requested,
                    s.latency.median_us,
                    s.latency.p99_us,
                    s.latency.mean_us,
                    s.latency.qps,
                    s.queries
                )?;
                for (j, recall) in &s.recall {
                    write!(f, "  recall@{j} {recall:.4}")?;
                }
                Ok(())
            }
        }
    }
}

/// Builds the indexes the configuration asks for and runs every search, handing each record to
/// `emit` as soon as it is measured.
pub fn run(
    data: AnnData,
    config: &AnnBenchConfig,
    mut emit: impl FnMut(&Record),
) -> Result<(), EvalError> {
    config.validate()?;
    let AnnData {
        base,
        queries,
        truth,
    } = data;
    if truth.ncols() < config.max_k() {
        return Err(EvalError::parameter(
            "--k",
            format!(
                "recall@{} needs that many truth columns; the truth has {}",
                config.max_k(),
                truth.ncols()
            ),
        ));
    }
    let requested_ks = config.requested_ks();
    let recall_ks = config.recall_ks();
    emit(&Record::Setup(Setup {
        base_rows: base.nrows(),
        dim: base.ncols(),
        queries: queries.nrows(),
        truth_k: truth.ncols(),
        metric: config.metric,
        m: config.max_connections,
        ef_construction: config.ef_construction,
        build_threads: build_threads(),
        search_threads: 1,
        warmup_queries: WARMUP_QUERIES,
        passes: config.passes,
        recall_ks: recall_ks.clone(),
        requested_ks: requested_ks.clone(),
    }));
    let rss = || ProcessMemory::current().map(|m| m.vm_rss_bytes as i64);
    let growth = |before: Option<i64>, after: Option<i64>| Some(after? - before?);
    if let Some(process) = ProcessMemory::current() {
        emit(&Record::Memory(Memory {
            stage: "before_build",
            process,
        }));
    }

    let rows: Vec<u32> = (0..base.nrows() as u32).collect();
    let mut hnsw = None;
    let mut flat = None;
    let params = HnswParams {
        max_connections: config.max_connections,
        ef_construction: config.ef_construction,
        ef_search: config.efs[0],
    };
    if config.wants(Engine::Flat) {
        let before = rss();
        let started = Instant::now();
        let index = FlatHnswIndex::build(&base, &rows, config.metric, params);
        emit(&Record::Build(Build {
            engine: Engine::Flat,
            seconds: started.elapsed().as_secs_f64(),
            memory_bytes: Some(index.memory_bytes()),
            rss_growth_bytes: growth(before, rss()),
        }));
        flat = Some(index);
    }
    if config.wants(Engine::HnswRs) {
        let before = rss();
        let started = Instant::now();
        let graph = HnswIndex::build(&base, &rows, config.metric, params);
        emit(&Record::Build(Build {
            engine: Engine::HnswRs,
            seconds: started.elapsed().as_secs_f64(),
            memory_bytes: None,
            rss_growth_bytes: growth(before, rss()),
        }));
        hnsw = Some(graph);
    }
    let mut exact = None;
    if config.wants(Engine::Exact) {
        let before = rss();
        let started = Instant::now();
        let scan = ExactIndex::build(&base, &rows, config.metric);
        emit(&Record::Build(Build {
            engine: Engine::Exact,
            seconds: started.elapsed().as_secs_f64(),
            memory_bytes: Some(scan.memory_bytes()),
            rss_growth_bytes: growth(before, rss()),
        }));
        exact = Some(scan);
    }
    // Every index holds its own copy of the vectors.
    drop(base);
    if let Some(process) = ProcessMemory::current() {
        emit(&Record::Memory(Memory {
            stage: "after_build",
            process,
        }));
    }

    let mut engines = config.engines.clone();
    let mut seen = HashSet::new();
    engines.retain(|e| seen.insert(*e));
    for engine in engines {
        for &k in &requested_ks {
            let beams: Vec<Option<usize>> = match engine {
                Engine::Exact => vec![None],
                _ => config.beams(k).into_iter().map(Some).collect(),
            };
            let query_count = match engine {
                Engine::Exact => config
                    .exact_queries
                    .map_or(queries.nrows(), |limit| limit.min(queries.nrows())),
                _ => queries.nrows(),
            };
            for beam in beams {
                let search = |query: &[f32]| -> Vec<Neighbor> {
                    let ef = beam.unwrap_or(k);
                    match engine {
                        Engine::Flat => flat
                            .as_ref()
                            .expect("built")
                            .search_with_ef(query, k, ef, None),
                        Engine::HnswRs => hnsw
                            .as_ref()
                            .expect("built")
                            .search_with_ef(query, k, ef, None),
                        Engine::Exact => exact.as_ref().expect("built").search(query, k, None),
                    }
                };
                let (latency, recall) = time_queries(
                    &queries,
                    query_count,
                    config.passes,
                    &truth,
                    k,
                    &recall_ks,
                    search,
                );
                emit(&Record::Search(SearchRun {
                    engine,
                    ef: beam,
                    k_requested: k,
                    queries: query_count,
                    latency,
                    recall,
                }));
            }
        }
    }
    Ok(())
}

/// The size of rayon's global pool, by the rule rayon documents: `RAYON_NUM_THREADS` when it is
/// a positive number, otherwise one thread per core.
fn build_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Warms up, then times the first `count` queries one at a time; returns their latency and the
/// mean recall at each cut-off up to `k`.
fn time_queries(
    queries: &Array2<f32>,
    count: usize,
    passes: usize,
    truth: &Array2<u32>,
    k: usize,
    recall_ks: &[usize],
    search: impl Fn(&[f32]) -> Vec<Neighbor>,
) -> (Latency, BTreeMap<usize, f64>) {
    let query = |i: usize| {
        queries
            .row(i)
            .to_slice()
            .expect("matrices read from .npy are in standard layout")
    };
    for i in 0..count.min(WARMUP_QUERIES) {
        std::hint::black_box(search(query(i)));
    }
    let cutoffs: Vec<usize> = recall_ks.iter().copied().filter(|&j| j <= k).collect();
    let mut sums = vec![0.0f64; cutoffs.len()];
    let mut micros = vec![f64::INFINITY; count];
    let mut returned = Vec::with_capacity(k);
    for pass in 0..passes {
        for (i, fastest) in micros.iter_mut().enumerate() {
            let q = query(i);
            let started = Instant::now();
            let hits = search(q);
            *fastest = fastest.min(started.elapsed().as_secs_f64() * 1e6);
            // The searches are deterministic: every pass returns the same rows.
            if pass > 0 {
                continue;
            }
            returned.clear();
            returned.extend(hits.iter().map(|h| h.row));
            let wanted = truth
                .row(i)
                .to_slice()
                .expect("matrices built here are in standard layout");
            for (sum, &j) in sums.iter_mut().zip(&cutoffs) {
                *sum += recall_at(&returned, wanted, j);
            }
        }
    }
    let recall = cutoffs
        .into_iter()
        .zip(sums)
        .map(|(j, sum)| (j, sum / count as f64))
        .collect();
    (Latency::of(&micros), recall)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Counts the shared ids with a set: independent of the sort-and-search in `recall_at`.
    fn naive_recall(returned: &[u32], truth: &[u32], j: usize) -> f64 {
        let truth: HashSet<u32> = truth[..j].iter().copied().collect();
        let hits = returned
            .iter()
            .take(j)
            .filter(|r| truth.contains(r))
            .count();
        hits as f64 / j as f64
    }

    #[test]
    fn recall_counts_only_the_first_j_of_each_list() {
        let truth = [5, 4, 3, 2, 1, 0];
        assert_eq!(recall_at(&[5, 4, 3], &truth, 3), 1.0);
        // Order within the cut-off does not matter.
        assert_eq!(recall_at(&[3, 5, 4], &truth, 3), 1.0);
        // 2 is a true neighbour but not a top-3 one.
        assert_eq!(recall_at(&[5, 2, 3, 4], &truth, 3), 2.0 / 3.0);
        // 4 comes fourth: outside the first three returned.
        assert_eq!(recall_at(&[5, 9, 8, 4], &truth, 3), 1.0 / 3.0);
        // Fewer results than asked for count as misses.
        assert_eq!(recall_at(&[5], &truth, 2), 0.5);
        assert_eq!(recall_at(&[], &truth, 2), 0.0);
    }

    #[test]
    #[should_panic(expected = "fewer than 4")]
    fn recall_refuses_a_truth_shorter_than_the_cutoff() {
        recall_at(&[1, 2, 3], &[1, 2, 3], 4);
    }

    proptest! {
        #[test]
        fn recall_matches_a_set_count(
            returned in proptest::collection::vec(0u32..40, 0..30),
            truth in proptest::collection::hash_set(0u32..40, 1..30),
            j_seed in 0usize..1000,
        ) {
            let truth: Vec<u32> = truth.into_iter().collect();
            let j = 1 + j_seed % truth.len();
            // Returned lists never repeat an id.
            let mut seen = HashSet::new();
            let returned: Vec<u32> = returned.into_iter().filter(|r| seen.insert(*r)).collect();
            prop_assert_eq!(recall_at(&returned, &truth, j), naive_recall(&returned, &truth, j));
        }

        #[test]
        fn percentile_lies_between_the_nearest_ranks(
            mut values in proptest::collection::vec(-1e6f64..1e6, 1..200),
            p in 0.0f64..=100.0,
        ) {
            values.sort_unstable_by(f64::total_cmp);
            let got = percentile(&values, p);
            let rank = p / 100.0 * (values.len() - 1) as f64;
            let (lo, hi) = (values[rank.floor() as usize], values[rank.ceil() as usize]);
            prop_assert!(lo - 1e-9 <= got && got <= hi + 1e-9, "{lo} <= {got} <= {hi}");
        }
    }

    #[test]
    fn percentile_interpolates_like_numpy() {
        // numpy.percentile([1, 2, 3, 4], [0, 50, 99, 100]) == [1, 2.5, 3.97, 4].
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 50.0), 2.5);
        assert!((percentile(&v, 99.0) - 3.97).abs() < 1e-12);
        assert_eq!(percentile(&v, 100.0), 4.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        // Odd count: the median is the middle value.
        assert_eq!(percentile(&[1.0, 10.0, 100.0], 50.0), 10.0);
    }

    #[test]
    fn latency_summarises_unsorted_times() {
        let micros: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let l = Latency::of(&micros);
        assert_eq!(l.median_us, 50.5);
        assert!((l.p99_us - 99.01).abs() < 1e-9);
        assert_eq!(l.mean_us, 50.5);
        assert!((l.qps - 1e6 / 50.5).abs() < 1e-6);
    }

    #[test]
    fn parses_proc_status_memory_lines() {
        let status =
            "Name:\tfeedrank\nVmPeak:\t  900 kB\nVmHWM:\t    2048 kB\nVmRSS:\t    1024 kB\n";
        assert_eq!(
            ProcessMemory::parse_status(status),
            Some(ProcessMemory {
                vm_rss_bytes: 1024 * 1024,
                vm_hwm_bytes: 2048 * 1024,
            })
        );
        assert_eq!(
            ProcessMemory::parse_status("Name:\tx\nVmRSS:\t12 kB\n"),
            None
        );
        #[cfg(target_os = "linux")]
        assert!(ProcessMemory::current().is_some_and(|m| m.vm_rss_bytes > 0));
    }

    fn config(efs: &[usize], ks: &[usize]) -> AnnBenchConfig {
        AnnBenchConfig {
            metric: Metric::Cosine,
            max_connections: 16,
            ef_construction: 200,
            efs: efs.to_vec(),
            ks: ks.to_vec(),
            engines: Engine::ALL.to_vec(),
            exact_queries: None,
            passes: 3,
        }
    }

    #[test]
    fn plans_the_smallest_and_largest_k_and_widened_beams() {
        let c = config(&[32, 64, 128, 256, 512], &[100, 10, 200]);
        assert_eq!(c.recall_ks(), [10, 100, 200]);
        assert_eq!(c.requested_ks(), [10, 200]);
        assert_eq!(c.beams(10), [32, 64, 128, 256, 512]);
        // Beams narrower than k are widened to k, and run once.
        assert_eq!(c.beams(200), [200, 256, 512]);
        assert_eq!(config(&[16], &[10, 10]).requested_ks(), [10]);
    }

    #[test]
    fn rejects_parameters_naming_the_flag() {
        let name = |c: AnnBenchConfig| match c.validate() {
            Err(EvalError::Parameter { name, .. }) => name,
            other => panic!("{other:?}"),
        };
        assert_eq!(name(config(&[], &[10])), "--ef");
        assert_eq!(name(config(&[0, 10], &[10])), "--ef");
        assert_eq!(name(config(&[10], &[0])), "--k");
        let mut c = config(&[10], &[10]);
        c.max_connections = 1;
        assert_eq!(name(c), "--m");
        let mut c = config(&[10], &[10]);
        c.ef_construction = 0;
        assert_eq!(name(c), "--ef-construction");
        let mut c = config(&[10], &[10]);
        c.engines.clear();
        assert_eq!(name(c), "--engines");
        let mut c = config(&[10], &[10]);
        c.exact_queries = Some(0);
        assert_eq!(name(c), "--exact-queries");
        let mut c = config(&[10], &[10]);
        c.passes = 0;
        assert_eq!(name(c), "--passes");
        assert!(config(&[10], &[10]).validate().is_ok());
    }

    #[test]
    fn engines_parse_from_their_names() {
        for e in Engine::ALL {
            assert_eq!(e.name().parse::<Engine>(), Ok(e));
        }
        assert!("faiss".parse::<Engine>().unwrap_err().contains("faiss"));
    }
}
