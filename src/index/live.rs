//! A live index: the snapshot's graph plus the posts published after it.
//!
//! [`LiveIndex`] answers over three kinds of segment, disjoint in rows:
//!
//! - the **base**: a [`FlatHnswIndex`] given at construction (the snapshot's). It is never
//!   rebuilt here; the next snapshot brings a new one, and with it a new live index;
//! - **sealed** segments: graphs built in the background from rows appended since;
//! - the **delta**: rows appended since the last seal, searched exactly (the SIMD dot kernel
//!   over contiguous row-major chunks), so a new post is found the moment `append` returns.
//!
//! A search runs every graph segment with a beam of `max(ef, k)` and the delta exactly, passes
//! the filter to each, and merges their hits into one top-k in best-first order.
//!
//! **Reads never wait.** The segment set is immutable and published through an [`ArcSwap`]: a
//! search loads the current set once and works on it, whatever writers do meanwhile. Writers
//! (`append` and the background worker) serialise on a mutex, build the next set from the
//! current one and store it. The delta is copy-on-write in chunks of [`CHUNK_ROWS`] rows: an
//! append copies only the last, partly filled chunk (at most 64 KiB at 64 dimensions) and shares
//! the full ones, so appending stays cheap however large the delta grows.
//!
//! **Sealing.** When the delta reaches [`LiveConfig::seal_threshold`] rows, a background thread
//! takes the delta as it is at that moment and builds a graph from it; appends continue into the
//! delta meanwhile. When the build finishes, one new segment set adds the graph and drops those
//! rows from the delta, so no search sees a row twice or misses it. When more than
//! [`LiveConfig::max_sealed`] graphs are sealed, the worker merges them into one in the same way
//! (rebuilding a graph from their rows). One worker per index runs one build at a time, so at
//! most one seal is ever in flight. Builds use hnsw_rs's parallel insertion, on every core.
//!
//! A build that panics publishes nothing: the panic is logged, the rows stay where they were
//! (still found by every search), and the worker carries on; it retries a failed seal once the
//! delta has grown by another threshold, a failed merge once another graph has been sealed.

use std::any::Any;
use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;

use arc_swap::ArcSwap;
use ndarray::{Array2, ArrayView2};

use super::exact::{TopK, prepared_query};
use super::{
    ExactIndex, FlatHnswIndex, HnswParams, Neighbor, NeighborIndex, RowFilter, best_first,
};
use crate::snapshot::Metric;

/// Rows per delta chunk: an append copies at most one partly filled chunk.
pub const CHUNK_ROWS: usize = 256;

/// When the live index seals its delta and merges its sealed graphs.
///
/// The defaults follow `benches/retrieval.rs` (`live/...`, top-200 at 64 dimensions): the exact
/// scan of the delta costs less than a graph search over the same rows up to about 20,000 rows,
/// and every graph segment costs about as much again as a search of the base, so few are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveConfig {
    /// Delta rows at which a background seal starts (default 20,000).
    pub seal_threshold: usize,
    /// Sealed graphs allowed before they are merged into one (at least 1; default 2). A merge
    /// rebuilds a graph from all their rows.
    pub max_sealed: usize,
    /// Parameters of the graphs seals and merges build; `ef_search` is the beam
    /// [`NeighborIndex::search`] uses on every graph segment, the base included.
    pub hnsw: HnswParams,
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            seal_threshold: 20_000,
            max_sealed: 2,
            hnsw: HnswParams::default(),
        }
    }
}

impl LiveConfig {
    pub fn validate(&self) -> Result<(), LiveError> {
        let invalid = |field, problem: &str| LiveError::Config {
            field,
            problem: problem.to_owned(),
        };
        if self.seal_threshold == 0 {
            return Err(invalid("seal_threshold", "must be positive"));
        }
        if self.max_sealed == 0 {
            return Err(invalid("max_sealed", "must be positive"));
        }
        self.hnsw
            .validate()
            .map_err(|problem| invalid("hnsw", &problem))
    }
}

/// Why a live index could not be made or refused an append. An append that fails changes
/// nothing.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LiveError {
    #[error("invalid live index configuration: {field} {problem}")]
    Config {
        field: &'static str,
        problem: String,
    },
    #[error("append: {rows} row numbers but {vectors} vectors")]
    LengthMismatch { rows: usize, vectors: usize },
    #[error("append: vectors have {found} dimensions, the index has {expected}")]
    Dimension { expected: usize, found: usize },
    #[error("append: row {row}: value {column} of its vector is {what}")]
    NonFinite {
        row: u32,
        column: usize,
        what: &'static str,
    },
    #[error("append: row {row} is a zero vector, which has no direction under the cosine metric")]
    ZeroVector { row: u32 },
    #[error("append: row {row} is already in the index")]
    DuplicateRow { row: u32 },
    #[error("append: row {row} appears more than once in the batch")]
    RepeatedRow { row: u32 },
    #[error("cannot start the live index's background thread: {0}")]
    Thread(String),
}

/// Rows per segment, as of one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSizes {
    pub base: usize,
    /// Oldest first.
    pub sealed: Vec<usize>,
    pub delta: usize,
}

impl SegmentSizes {
    pub fn total(&self) -> usize {
        self.base + self.sealed.iter().sum::<usize>() + self.delta
    }
}

/// The segment a live index starts from (the snapshot's): a graph, or for small or exact
/// pools an exact scan. Never rebuilt here.
#[derive(Clone)]
pub enum Base {
    Graph(Arc<FlatHnswIndex>),
    Exact(Arc<ExactIndex>),
}

impl Base {
    fn dim(&self) -> usize {
        match self {
            Base::Graph(g) => g.dim(),
            Base::Exact(e) => e.dim(),
        }
    }

    fn metric(&self) -> Metric {
        match self {
            Base::Graph(g) => g.metric(),
            Base::Exact(e) => e.metric(),
        }
    }

    fn rows(&self) -> &[u32] {
        match self {
            Base::Graph(g) => g.rows(),
            Base::Exact(e) => e.rows(),
        }
    }

    fn len(&self) -> usize {
        self.rows().len()
    }

    fn memory_bytes(&self) -> usize {
        match self {
            Base::Graph(g) => g.memory_bytes(),
            Base::Exact(e) => e.memory_bytes(),
        }
    }

    fn search_with_ef(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        filter: Option<RowFilter<'_>>,
    ) -> Vec<Neighbor> {
        match self {
            Base::Graph(g) => g.search_with_ef(query, k, ef, filter),
            Base::Exact(e) => e.search(query, k, filter),
        }
    }
}

impl From<FlatHnswIndex> for Base {
    fn from(graph: FlatHnswIndex) -> Base {
        Base::Graph(Arc::new(graph))
    }
}

impl From<Arc<FlatHnswIndex>> for Base {
    fn from(graph: Arc<FlatHnswIndex>) -> Base {
        Base::Graph(graph)
    }
}

impl From<ExactIndex> for Base {
    fn from(exact: ExactIndex) -> Base {
        Base::Exact(Arc::new(exact))
    }
}

/// The snapshot's graph, graphs sealed since, and a delta searched exactly; `Send + Sync`, with
/// lock-free searches. See the module documentation.
pub struct LiveIndex {
    shared: Arc<Shared>,
    /// `None` only while dropping.
    worker: Option<JoinHandle<()>>,
}

impl LiveIndex {
    /// A live index over `base` (usually the snapshot's graph), with an empty delta, and its
    /// background worker started. The base fixes the dimension and the metric.
    pub fn new(base: impl Into<Base>, config: LiveConfig) -> Result<LiveIndex, LiveError> {
        config.validate()?;
        let base = base.into();
        if base.dim() == 0 {
            return Err(LiveError::Config {
                field: "base",
                problem: "has no dimensions".into(),
            });
        }
        let base_sorted = base.rows().is_sorted();
        let state = State {
            rows: if base_sorted {
                HashSet::new()
            } else {
                base.rows().iter().copied().collect()
            },
            base_sorted,
            busy: false,
            shutdown: false,
            stopped: false,
            seal_after: 0,
            merge_after: 0,
        };
        let shared = Arc::new(Shared {
            dim: base.dim(),
            metric: base.metric(),
            config,
            segments: ArcSwap::from_pointee(Segments {
                base,
                sealed: Vec::new(),
                delta: Delta::default(),
            }),
            state: Mutex::new(state),
            work: Condvar::new(),
            idle: Condvar::new(),
            #[cfg(test)]
            before_build: Mutex::new(None),
        });
        let worker = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("live-index".into())
                .spawn(move || shared.run_worker())
                .map_err(|e| LiveError::Thread(e.to_string()))?
        };
        Ok(LiveIndex {
            shared,
            worker: Some(worker),
        })
    }

    pub fn dim(&self) -> usize {
        self.shared.dim
    }

    pub fn metric(&self) -> Metric {
        self.shared.metric
    }

    pub fn config(&self) -> &LiveConfig {
        &self.shared.config
    }

    /// Adds `rows`, row `i` of `vectors` being row number `rows[i]`. Once this returns, every
    /// search sees them.
    ///
    /// Rejected, changing nothing: a length or dimension mismatch, a NaN or infinite value, a row
    /// number already in the index or repeated in the batch, and under cosine a zero vector.
    /// Under cosine the vectors are normalised here, as the snapshot loader does, so callers may
    /// pass embeddings of any length; one already of unit norm (to f32 precision) is kept as is.
    pub fn append(&self, rows: &[u32], vectors: ArrayView2<'_, f32>) -> Result<(), LiveError> {
        if rows.len() != vectors.nrows() {
            return Err(LiveError::LengthMismatch {
                rows: rows.len(),
                vectors: vectors.nrows(),
            });
        }
        let dim = self.shared.dim;
        if vectors.ncols() != dim {
            return Err(LiveError::Dimension {
                expected: dim,
                found: vectors.ncols(),
            });
        }
        if rows.is_empty() {
            return Ok(());
        }
        // Everything but the check against the index happens before taking the writers' lock.
        let mut batch = HashSet::with_capacity(rows.len());
        if let Some(&row) = rows.iter().find(|&&row| !batch.insert(row)) {
            return Err(LiveError::RepeatedRow { row });
        }
        let mut data = Vec::with_capacity(rows.len() * dim);
        for (&row, vector) in rows.iter().zip(vectors.rows()) {
            let start = data.len();
            data.extend(vector.iter());
            prepare_vector(row, &mut data[start..], self.shared.metric)?;
        }

        let mut state = self.shared.lock();
        let current = self.shared.segments.load();
        let in_base =
            |row: &u32| state.base_sorted && current.base.rows().binary_search(row).is_ok();
        if let Some(&row) = rows
            .iter()
            .find(|row| state.rows.contains(row) || in_base(row))
        {
            return Err(LiveError::DuplicateRow { row });
        }
        state.rows.extend(rows);
        self.shared.segments.store(Arc::new(Segments {
            base: current.base.clone(),
            sealed: current.sealed.clone(),
            delta: current.delta.appended(dim, rows, &data),
        }));
        let wake = self.shared.due(&state).is_some();
        drop(state);
        if wake {
            self.shared.work.notify_one();
        }
        Ok(())
    }

    /// [`NeighborIndex::search`] with a beam of `max(ef, k)` on every graph segment; the delta
    /// is searched exactly.
    pub fn search_with_ef(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        filter: Option<RowFilter<'_>>,
    ) -> Vec<Neighbor> {
        assert_eq!(
            query.len(),
            self.shared.dim,
            "query has the wrong dimension"
        );
        if k == 0 {
            return Vec::new();
        }
        // One consistent set for the whole search, however writers move rows meanwhile.
        let segments = self.shared.segments.load();
        let mut hits = segments.base.search_with_ef(query, k, ef, filter);
        if segments.sealed.is_empty() && segments.delta.len == 0 {
            // Nothing published since the snapshot: the base's answer, already best first.
            return hits;
        }
        for graph in &segments.sealed {
            hits.extend(graph.search_with_ef(query, k, ef, filter));
        }
        if segments.delta.len > 0
            && let Some(query) = prepared_query(query, self.shared.metric)
        {
            hits.extend(segments.delta.search(&query, k, filter));
        }
        // Segments hold disjoint rows, and each returned its own best k.
        hits.sort_unstable_by(best_first);
        hits.truncate(k);
        hits
    }

    /// Rows in each segment, as of now.
    pub fn segment_sizes(&self) -> SegmentSizes {
        self.shared.segments.load().sizes()
    }

    /// Heap memory held: every segment (the base included, even if shared), the chunk list and
    /// the set of row numbers used to refuse duplicates. Excludes the graphs' per-thread search
    /// scratch and a build in flight.
    pub fn memory_bytes(&self) -> usize {
        let segments = self.shared.segments.load();
        // hashbrown stores one control byte per bucket next to each value.
        let row_set = self.shared.lock().rows.capacity() * (size_of::<u32>() + 1);
        size_of::<Self>()
            + size_of::<Shared>()
            + segments.base.memory_bytes()
            + segments
                .sealed
                .iter()
                .map(|g| g.memory_bytes())
                .sum::<usize>()
            + segments.delta.memory_bytes()
            + row_set
    }

    /// Blocks until no seal or merge is running or due (a failed one is not due again until
    /// the index grows), or the background worker has stopped. For tests and benchmarks.
    pub fn wait_idle(&self) {
        let mut state = self.shared.lock();
        while !state.stopped && (state.busy || self.shared.due(&state).is_some()) {
            state = self
                .shared
                .idle
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl NeighborIndex for LiveIndex {
    fn len(&self) -> usize {
        let segments = self.shared.segments.load();
        segments.base.len()
            + segments.sealed.iter().map(|g| g.len()).sum::<usize>()
            + segments.delta.len
    }

    fn search(&self, query: &[f32], k: usize, filter: Option<RowFilter<'_>>) -> Vec<Neighbor> {
        self.search_with_ef(query, k, self.shared.config.hnsw.ef_search, filter)
    }
}

impl Drop for LiveIndex {
    fn drop(&mut self) {
        let busy = {
            let mut state = self.shared.lock();
            state.shutdown = true;
            state.busy
        };
        self.shared.work.notify_all();
        let Some(worker) = self.worker.take() else {
            return;
        };
        // An idle worker sees `shutdown` at once and exits. A busy one cannot be interrupted
        // inside hnsw_rs: rather than block the dropping thread for the rest of a build, it is
        // left to finish, discard its graph and exit.
        if !busy && worker.join().is_err() {
            tracing::error!("the live index's background thread panicked");
        }
    }
}

impl std::fmt::Debug for LiveIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveIndex")
            .field("dim", &self.shared.dim)
            .field("metric", &self.shared.metric)
            .field("segments", &self.segment_sizes())
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

/// How far from 1 the squared norm of a vector normalised in f32 may be: rounding each value
/// moves it by about 1e-7.
const UNIT_TOLERANCE: f64 = 1e-6;

/// Validates a vector as appended, normalising it under cosine.
fn prepare_vector(row: u32, vector: &mut [f32], metric: Metric) -> Result<(), LiveError> {
    if let Some((column, value)) = vector.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(LiveError::NonFinite {
            row,
            column,
            what: if value.is_nan() { "NaN" } else { "infinite" },
        });
    }
    if metric == Metric::Cosine {
        // f64 squares of finite f32 values cannot overflow.
        let sum_sq: f64 = vector.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        if sum_sq == 0.0 {
            return Err(LiveError::ZeroVector { row });
        }
        // Already unit to f32 precision: kept bit for bit, so that an embedding scores the same
        // here as its copy in a snapshot (normalising again could move its last bits).
        if (sum_sq - 1.0).abs() <= UNIT_TOLERANCE {
            return Ok(());
        }
        let inverse = 1.0 / sum_sq.sqrt();
        for v in vector {
            *v = (f64::from(*v) * inverse) as f32;
        }
    }
    Ok(())
}

/// One immutable view of the index: what a search sees.
struct Segments {
    base: Base,
    /// Oldest first: seals push at the end, merges replace a prefix.
    sealed: Vec<Arc<FlatHnswIndex>>,
    delta: Delta,
}

impl Segments {
    fn sizes(&self) -> SegmentSizes {
        SegmentSizes {
            base: self.base.len(),
            sealed: self.sealed.iter().map(|g| g.len()).collect(),
            delta: self.delta.len,
        }
    }
}

/// Up to [`CHUNK_ROWS`] rows, row-major.
struct Chunk {
    rows: Vec<u32>,
    data: Vec<f32>,
}

impl Chunk {
    fn empty(dim: usize) -> Chunk {
        Chunk {
            rows: Vec::with_capacity(CHUNK_ROWS),
            data: Vec::with_capacity(CHUNK_ROWS * dim),
        }
    }
}

/// Rows appended since the last seal, in order of appending, in chunks shared between versions.
#[derive(Clone, Default)]
struct Delta {
    /// All full but the last, and after a seal, the first.
    chunks: Vec<Arc<Chunk>>,
    len: usize,
}

impl Delta {
    /// This delta and `rows` after it. Full chunks are shared; the last, partly filled one is
    /// copied, as searches may be reading it.
    fn appended(&self, dim: usize, rows: &[u32], data: &[f32]) -> Delta {
        let mut chunks = self.chunks.clone();
        let mut open = Chunk::empty(dim);
        if chunks
            .last()
            .is_some_and(|last| last.rows.len() < CHUNK_ROWS)
        {
            let last = chunks.pop().expect("checked above");
            open.rows.extend_from_slice(&last.rows);
            open.data.extend_from_slice(&last.data);
        }
        for (&row, vector) in rows.iter().zip(data.chunks_exact(dim)) {
            if open.rows.len() == CHUNK_ROWS {
                chunks.push(Arc::new(std::mem::replace(&mut open, Chunk::empty(dim))));
            }
            open.rows.push(row);
            open.data.extend_from_slice(vector);
        }
        if !open.rows.is_empty() {
            chunks.push(Arc::new(open));
        }
        Delta {
            chunks,
            len: self.len + rows.len(),
        }
    }

    /// This delta without its first `n` rows.
    fn without_first(&self, n: usize, dim: usize) -> Delta {
        assert!(n <= self.len, "cannot drop {n} of {} rows", self.len);
        let mut skip = n;
        let mut chunks = Vec::with_capacity(self.chunks.len());
        for chunk in &self.chunks {
            let len = chunk.rows.len();
            if skip >= len {
                skip -= len;
            } else if skip > 0 {
                chunks.push(Arc::new(Chunk {
                    rows: chunk.rows[skip..].to_vec(),
                    data: chunk.data[skip * dim..].to_vec(),
                }));
                skip = 0;
            } else {
                chunks.push(Arc::clone(chunk));
            }
        }
        Delta {
            chunks,
            len: self.len - n,
        }
    }

    fn rows(&self) -> impl Iterator<Item = u32> + '_ {
        self.chunks.iter().flat_map(|c| c.rows.iter().copied())
    }

    /// The rows and their vectors as one matrix, for a graph build.
    fn to_matrix(&self, dim: usize) -> (Vec<u32>, Array2<f32>) {
        let mut data = Vec::with_capacity(self.len * dim);
        for chunk in &self.chunks {
            data.extend_from_slice(&chunk.data);
        }
        let matrix = Array2::from_shape_vec((self.len, dim), data).expect("len × dim values");
        (self.rows().collect(), matrix)
    }

    /// Exact top `k` for a prepared (normalised under cosine) query.
    fn search(&self, query: &[f32], k: usize, filter: Option<RowFilter<'_>>) -> Vec<Neighbor> {
        let mut best = TopK::new(k);
        for chunk in &self.chunks {
            best.scan(query, &chunk.data, &chunk.rows, filter);
        }
        best.into_sorted()
    }

    fn memory_bytes(&self) -> usize {
        self.chunks.capacity() * size_of::<Arc<Chunk>>()
            + self
                .chunks
                .iter()
                .map(|c| {
                    size_of::<Chunk>()
                        + c.rows.capacity() * size_of::<u32>()
                        + c.data.capacity() * size_of::<f32>()
                })
                .sum::<usize>()
    }
}

/// What the index and its worker share.
struct Shared {
    dim: usize,
    metric: Metric,
    config: LiveConfig,
    /// What searches read; stored only with `state` locked.
    segments: ArcSwap<Segments>,
    state: Mutex<State>,
    /// Wakes the worker: a job may be due, or the index is dropped.
    work: Condvar,
    /// Wakes [`LiveIndex::wait_idle`]: the worker has nothing to do, or stopped.
    idle: Condvar,
    /// Runs at the start of every build, inside its panic guard: lets tests fail or hold one.
    #[cfg(test)]
    #[allow(clippy::type_complexity)]
    before_build: Mutex<Option<Box<dyn Fn() + Send + Sync>>>,
}

/// The writers' state, behind the mutex.
struct State {
    /// Every row appended (and the base's, if they are not sorted): appends refuse these.
    rows: HashSet<u32>,
    /// The base's rows are sorted, so appends check them by binary search instead of holding
    /// them all in `rows` (megabytes for a snapshot of a million posts).
    base_sorted: bool,
    /// A build is running.
    busy: bool,
    /// The index is being dropped: the worker stops.
    shutdown: bool,
    /// The worker has exited.
    stopped: bool,
    /// After a failed seal, the next waits until the delta holds this many rows.
    seal_after: usize,
    /// After a failed merge, the next waits until this many graphs are sealed.
    merge_after: usize,
}

#[derive(Debug, Clone, Copy)]
enum JobKind {
    Seal,
    Merge,
}

/// A build and its input, taken from the segment set current when it started.
enum Job {
    Seal(Delta),
    Merge(Vec<Arc<FlatHnswIndex>>),
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Builds run without the lock and the code under it does not panic, but a poisoned
        // lock must not take the index down with it either.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The job due now, if any. Sealing comes first: the delta's exact scan is what grows the
    /// cost of every search.
    fn due(&self, state: &State) -> Option<JobKind> {
        let segments = self.segments.load();
        let sealed = segments.sealed.len();
        if segments.delta.len >= self.config.seal_threshold.max(state.seal_after) {
            Some(JobKind::Seal)
        } else if sealed > self.config.max_sealed && sealed >= 2 && sealed >= state.merge_after {
            Some(JobKind::Merge)
        } else {
            None
        }
    }

    fn run_worker(&self) {
        let _stopped = MarkStopped(self);
        loop {
            let job = {
                let mut state = self.lock();
                loop {
                    if state.shutdown {
                        return;
                    }
                    if let Some(kind) = self.due(&state) {
                        state.busy = true;
                        let segments = self.segments.load();
                        break match kind {
                            JobKind::Seal => Job::Seal(segments.delta.clone()),
                            JobKind::Merge => Job::Merge(segments.sealed.clone()),
                        };
                    }
                    self.idle.notify_all();
                    state = self
                        .work
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            };
            let start = Instant::now();
            let built = catch_unwind(AssertUnwindSafe(|| self.build(&job)));
            let mut state = self.lock();
            state.busy = false;
            if state.shutdown {
                return;
            }
            match built {
                Ok(graph) => self.publish(&mut state, job, graph, start),
                Err(panic) => {
                    let message = panic_message(panic.as_ref());
                    match job {
                        Job::Seal(delta) => {
                            tracing::error!(
                                rows = delta.len,
                                "sealing the live index's delta panicked: {message}; its rows \
                                 stay in the delta"
                            );
                            state.seal_after = delta.len + self.config.seal_threshold;
                        }
                        Job::Merge(graphs) => {
                            tracing::error!(
                                graphs = graphs.len(),
                                "merging the live index's sealed graphs panicked: {message}; \
                                 they stay as they are"
                            );
                            state.merge_after = graphs.len() + 1;
                        }
                    }
                }
            }
        }
    }

    fn build(&self, job: &Job) -> FlatHnswIndex {
        #[cfg(test)]
        if let Some(hook) = self
            .before_build
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            hook();
        }
        let (rows, vectors) = match job {
            Job::Seal(delta) => delta.to_matrix(self.dim),
            Job::Merge(graphs) => {
                let total = graphs.iter().map(|g| g.len()).sum::<usize>();
                let mut rows = Vec::with_capacity(total);
                let mut data = Vec::with_capacity(total * self.dim);
                for graph in graphs {
                    rows.extend_from_slice(graph.rows());
                    for position in 0..graph.len() {
                        data.extend_from_slice(graph.vector(position));
                    }
                }
                let vectors =
                    Array2::from_shape_vec((total, self.dim), data).expect("total × dim values");
                (rows, vectors)
            }
        };
        FlatHnswIndex::build_labelled(&vectors, rows, self.metric, self.config.hnsw)
    }

    /// Stores the segment set with `graph` in place of what it was built from. Called with the
    /// lock held, so nothing else changes the set meanwhile.
    fn publish(&self, state: &mut State, job: Job, graph: FlatHnswIndex, start: Instant) {
        let current = self.segments.load();
        let graph = Arc::new(graph);
        let next = match job {
            Job::Seal(sealed) => {
                // Since the seal took the delta only appends changed it (one build at a time),
                // so its first rows are the ones sealed.
                debug_assert!(current.delta.rows().take(sealed.len).eq(sealed.rows()));
                state.seal_after = 0;
                tracing::info!(
                    rows = sealed.len,
                    elapsed_ms = start.elapsed().as_millis(),
                    "sealed the live index's delta into a graph"
                );
                let mut graphs = current.sealed.clone();
                graphs.push(graph);
                Segments {
                    base: current.base.clone(),
                    sealed: graphs,
                    delta: current.delta.without_first(sealed.len, self.dim),
                }
            }
            Job::Merge(merged) => {
                // Seals only push at the end, so the merged graphs still lead the list.
                assert!(
                    merged.len() <= current.sealed.len()
                        && merged
                            .iter()
                            .zip(&current.sealed)
                            .all(|(a, b)| Arc::ptr_eq(a, b)),
                    "the sealed graphs changed during a merge"
                );
                state.merge_after = 0;
                tracing::info!(
                    graphs = merged.len(),
                    rows = graph.len(),
                    elapsed_ms = start.elapsed().as_millis(),
                    "merged the live index's sealed graphs"
                );
                let mut graphs = vec![graph];
                graphs.extend(current.sealed[merged.len()..].iter().cloned());
                Segments {
                    base: current.base.clone(),
                    sealed: graphs,
                    delta: current.delta.clone(),
                }
            }
        };
        self.segments.store(Arc::new(next));
    }
}

/// Marks the worker stopped however it exits, so that `wait_idle` never waits for a dead one.
struct MarkStopped<'a>(&'a Shared);

impl Drop for MarkStopped<'_> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.stopped = true;
        state.busy = false;
        drop(state);
        self.0.idle.notify_all();
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    use ndarray::s;

    use super::*;
    use crate::index::{ExactIndex, synthetic};

    const DIM: usize = 16;

    fn vectors() -> Array2<f32> {
        synthetic::clustered(1_000, DIM, 8, 0.5, 3)
    }

    /// A live index whose base holds rows `0..base` of `vectors`.
    fn live(vectors: &Array2<f32>, base: u32, config: LiveConfig) -> LiveIndex {
        let rows: Vec<u32> = (0..base).collect();
        let graph = FlatHnswIndex::build(vectors, &rows, Metric::Cosine, HnswParams::default());
        LiveIndex::new(graph, config).unwrap()
    }

    fn append_range(index: &LiveIndex, vectors: &Array2<f32>, rows: std::ops::Range<u32>) {
        let ids: Vec<u32> = rows.clone().collect();
        let view = vectors.slice(s![rows.start as usize..rows.end as usize, ..]);
        index.append(&ids, view).unwrap();
    }

    fn never_seal() -> LiveConfig {
        LiveConfig {
            seal_threshold: usize::MAX,
            ..LiveConfig::default()
        }
    }

    /// Installs `hook` to run at the start of every build.
    fn set_hook(index: &LiveIndex, hook: impl Fn() + Send + Sync + 'static) {
        *index.shared.before_build.lock().unwrap() = Some(Box::new(hook));
    }

    #[test]
    fn the_delta_shares_full_chunks_and_drops_a_prefix_exactly() {
        let vectors = vectors();
        let index = live(&vectors, 0, never_seal());
        // Batches that end inside chunks and one that spans several.
        append_range(&index, &vectors, 0..100);
        let first = index.shared.segments.load().delta.clone();
        append_range(&index, &vectors, 100..700);
        append_range(&index, &vectors, 700..701);
        let delta = index.shared.segments.load().delta.clone();
        let sizes: Vec<usize> = delta.chunks.iter().map(|c| c.rows.len()).collect();
        assert_eq!(sizes, [256, 256, 189]);
        assert_eq!(delta.len, 701);
        assert!(delta.rows().eq(0..701));
        // The chunk a search may still hold from before was copied, not changed.
        assert_eq!(first.chunks.len(), 1);
        assert_eq!(first.chunks[0].rows.len(), 100);
        append_range(&index, &vectors, 701..702);
        let after = index.shared.segments.load().delta.clone();
        assert!(Arc::ptr_eq(&after.chunks[0], &delta.chunks[0]));
        assert!(Arc::ptr_eq(&after.chunks[1], &delta.chunks[1]));
        assert!(!Arc::ptr_eq(&after.chunks[2], &delta.chunks[2]));

        let exact_over = |rows: std::ops::Range<u32>| {
            ExactIndex::build(&vectors, &rows.collect::<Vec<_>>(), Metric::Cosine)
        };
        let query = synthetic::queries(1, DIM, 8, 0.5, 3).row(0).to_vec();
        for n in [0, 1, 255, 256, 300, 702] {
            let rest = after.without_first(n, DIM);
            assert_eq!(rest.len, 702 - n);
            assert!(rest.rows().eq(n as u32..702));
            let (rows, matrix) = rest.to_matrix(DIM);
            assert_eq!(rows, (n as u32..702).collect::<Vec<_>>());
            assert_eq!(matrix, vectors.slice(s![n..702, ..]));
            assert_eq!(
                rest.search(&query, 40, None),
                exact_over(n as u32..702).search(&query, 40, None)
            );
        }
        assert!(index.memory_bytes() >= 702 * DIM * 4);
    }

    #[test]
    fn a_seal_in_flight_blocks_neither_appends_nor_searches() {
        let vectors = vectors();
        let config = LiveConfig {
            seal_threshold: 100,
            ..LiveConfig::default()
        };
        let index = live(&vectors, 200, config);
        let (started, wait_started) = mpsc::channel();
        let (release, wait_release) = mpsc::channel::<()>();
        let wait_release = Mutex::new(wait_release);
        set_hook(&index, move || {
            started.send(()).unwrap();
            wait_release.lock().unwrap().recv().unwrap();
        });
        append_range(&index, &vectors, 200..330);
        wait_started.recv().unwrap();
        // The seal of rows 200..330 is held: appends and searches go on.
        append_range(&index, &vectors, 330..430);
        let sizes = index.segment_sizes();
        assert_eq!((sizes.base, sizes.sealed.len(), sizes.delta), (200, 0, 230));
        for row in [205, 329, 330, 429] {
            let hits = index.search(vectors.row(row as usize).as_slice().unwrap(), 1, None);
            assert_eq!(hits[0].row, row);
        }
        release.send(()).unwrap();
        // The delta is at the threshold again, so a second seal follows.
        wait_started.recv().unwrap();
        release.send(()).unwrap();
        index.wait_idle();
        let sizes = index.segment_sizes();
        assert_eq!(sizes.sealed, [130, 100]);
        assert_eq!(sizes.delta, 0);
        let exact = ExactIndex::build(&vectors, &(0..430).collect::<Vec<_>>(), Metric::Cosine);
        for q in synthetic::queries(10, DIM, 8, 0.5, 3).rows() {
            let q = q.as_slice().unwrap();
            let rows = |hits: Vec<Neighbor>| hits.iter().map(|n| n.row).collect::<Vec<_>>();
            assert_eq!(
                rows(index.search_with_ef(q, 30, 430, None)),
                rows(exact.search(q, 30, None))
            );
        }
    }

    #[test]
    fn a_panicking_build_keeps_its_rows_and_the_worker_carries_on() {
        let vectors = vectors();
        let config = LiveConfig {
            seal_threshold: 50,
            max_sealed: 1,
            ..LiveConfig::default()
        };
        let index = live(&vectors, 100, config);
        let builds = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&builds);
        // The first seal fails, and so does the first merge (the fourth build).
        set_hook(&index, move || {
            let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
            if n == 1 || n == 4 {
                panic!("injected failure of build {n}");
            }
        });
        append_range(&index, &vectors, 100..160);
        index.wait_idle();
        assert_eq!(index.segment_sizes().delta, 60);
        assert_eq!(builds.load(Ordering::SeqCst), 1);
        let row = vectors.row(130).to_vec();
        assert_eq!(index.search(&row, 1, None)[0].row, 130);

        // Retried once the delta has grown by another threshold: 60 + 50 rows.
        append_range(&index, &vectors, 160..209);
        index.wait_idle();
        assert_eq!(index.segment_sizes().sealed, Vec::<usize>::new());
        append_range(&index, &vectors, 209..210);
        index.wait_idle();
        assert_eq!(index.segment_sizes().sealed, [110]);

        // A second seal makes two graphs, over `max_sealed`: the merge fails, both stay.
        append_range(&index, &vectors, 210..260);
        index.wait_idle();
        let sizes = index.segment_sizes();
        assert_eq!((sizes.sealed, sizes.delta), (vec![110, 50], 0));
        assert_eq!(builds.load(Ordering::SeqCst), 4);
        // A third graph brings the merge back, and it succeeds.
        append_range(&index, &vectors, 260..310);
        index.wait_idle();
        assert_eq!(index.segment_sizes().sealed, [210]);
        assert_eq!(builds.load(Ordering::SeqCst), 6);
        assert_eq!(index.len(), 310);
        assert!(!index.shared.lock().stopped);
    }

    #[test]
    fn dropping_the_index_stops_its_worker_without_waiting_for_a_build() {
        let vectors = vectors();
        let idle = live(&vectors, 50, LiveConfig::default());
        let shared = Arc::downgrade(&idle.shared);
        drop(idle);
        // Joined: nothing holds the shared state any more.
        assert!(shared.upgrade().is_none());

        let config = LiveConfig {
            seal_threshold: 10,
            ..LiveConfig::default()
        };
        let busy = live(&vectors, 50, config);
        let (started, wait_started) = mpsc::channel();
        let (release, wait_release) = mpsc::channel::<()>();
        let wait_release = Mutex::new(wait_release);
        set_hook(&busy, move || {
            started.send(()).unwrap();
            wait_release.lock().unwrap().recv().unwrap();
        });
        append_range(&busy, &vectors, 50..60);
        wait_started.recv().unwrap();
        let shared = Arc::downgrade(&busy.shared);
        // Returns while the build is held.
        drop(busy);
        release.send(()).unwrap();
        // The worker finishes its build, discards it and exits, releasing the state.
        while shared.upgrade().is_some() {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn configurations_are_checked() {
        let vectors = vectors();
        let graph = Arc::new(FlatHnswIndex::build(
            &vectors,
            &[0, 1],
            Metric::Cosine,
            HnswParams::default(),
        ));
        let with = |config| LiveIndex::new(Arc::clone(&graph), config).map(|_| ());
        let defaults = LiveConfig::default();
        for (config, field) in [
            (
                LiveConfig {
                    seal_threshold: 0,
                    ..defaults
                },
                "seal_threshold must be positive",
            ),
            (
                LiveConfig {
                    max_sealed: 0,
                    ..defaults
                },
                "max_sealed must be positive",
            ),
            (
                LiveConfig {
                    hnsw: HnswParams {
                        max_connections: 1,
                        ..defaults.hnsw
                    },
                    ..defaults
                },
                "hnsw max_connections must be in 2..=255, not 1",
            ),
        ] {
            let error = with(config).unwrap_err().to_string();
            assert!(error.contains(field), "{error}");
        }
        assert_eq!(with(defaults), Ok(()));
    }
}
