//! The user index: users' embeddings in the same live nearest-neighbour machinery as posts
//! (a graph or an exact scan as the base, appended rows searched at once), and what each user
//! engaged with recently, which the lookalike source reads.
//!
//! Users move: events turn their embedding, and newcomers are placed when they onboard. A live
//! index only appends, so a move is a new row (a *placement*) and the user's earlier row is
//! superseded: every search filters rows that are no longer their user's current one. To keep
//! that bounded, a moved user is placed again only once their vector has turned more than
//! `replace_degrees` from where it was last placed, and at most `max_placements` rows are
//! appended per model; past that, moves wait for the next model (`placements_refused`
//! counts them). A new snapshot places everyone afresh.
//!
//! Appended rows cost every search: superseded ones must be walked past, and each graph sealed
//! from the appended rows costs about as much again as the base (measured: after a tenth of
//! 100,000 users moved, a search took 2.4 times as long). So once appended rows pass a tenth
//! of the rows, the index is *rebuilt* in the background on one thread: a new base over every
//! placed user's current vector, numbered by slot. Searches and
//! placements go on against the old index meanwhile; placements made during the rebuild are
//! appended to the new one before it is swapped in, under the write lock, so no search sees a
//! user twice or misses one.
//!
//! Slots number users: the snapshot's users first (slot = row of `users.npy`), then users met
//! since (newcomers, users who only have events), in arrival order.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Instant;

use ndarray::{Array2, ArrayView2};
use serde::{Deserialize, Serialize};

use super::{IndexKind, IndexOrigin, Offloaded, RetrieverError};
use crate::index::{
    Base, ExactIndex, FlatHnswIndex, HnswParams, IndexBinding, LiveConfig, LiveIndex,
    NeighborIndex, SegmentSizes, dot,
};
use crate::snapshot::{Metric, Snapshot, files};

/// User pools up to this size are searched exactly (tens of microseconds a search); larger ones
/// get a graph, like the posts.
pub const EXACT_USER_POOL: usize = 5_000;

/// Marks a slot whose user has no row (engagements recorded, no vector yet).
const NOT_PLACED: u32 = u32::MAX;

/// `[feed.users]`: the user index, the lookalike source, and newcomers' neighbours.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UserOptions {
    /// Nearest users whose engagements the lookalike source reads, per request.
    pub neighbours: usize,
    /// Candidates the lookalike source contributes per request (0 turns it off).
    pub lookalike_candidates: usize,
    /// Engagements (likes, saves, shares) kept per user, the most recent.
    pub recent_per_user: usize,
    /// A user whose vector moved is placed again once it turned this many degrees from where
    /// it was last placed.
    pub replace_degrees: f32,
    /// Rows appended to the user index per model (moves and newcomers). Past it, moves are
    /// not placed until the next model.
    pub max_placements: usize,
    /// A user onboarded with hashtags and unknown to the snapshot is placed at the centroid of
    /// the snapshot users who follow those hashtags, and their hashtag recommendations count
    /// what their nearest users follow.
    pub newcomer_neighbours: bool,
}

impl Default for UserOptions {
    fn default() -> Self {
        UserOptions {
            neighbours: 20,
            lookalike_candidates: 40,
            recent_per_user: 32,
            replace_degrees: 5.0,
            max_placements: 200_000,
            newcomer_neighbours: true,
        }
    }
}

impl UserOptions {
    /// Checks the ranges; `Err((field, problem))`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.neighbours == 0 || self.neighbours > 1_000 {
            return Err(("neighbours", "must be 1 to 1000".into()));
        }
        if self.recent_per_user == 0 || self.recent_per_user > 1_000 {
            return Err(("recent_per_user", "must be 1 to 1000".into()));
        }
        if !(0.0..=90.0).contains(&self.replace_degrees) {
            return Err(("replace_degrees", "must be 0 to 90".into()));
        }
        if self.lookalike_candidates > 1_000 {
            return Err(("lookalike_candidates", "must be at most 1000".into()));
        }
        Ok(())
    }
}

/// A nearest user.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UserNeighbor {
    pub slot: u32,
    /// Inner product with the (normalised, under cosine) query.
    pub similarity: f32,
}

/// A user to place at `vector` ([`UserIndex::place`]).
#[derive(Debug, Clone, Copy)]
pub struct Placement<'a> {
    pub user_id: &'a str,
    pub vector: &'a [f32],
    /// Where the snapshot had them (their `users.npy` row), for a user not moved yet.
    pub start: Option<&'a [f32]>,
}

/// One engagement kept for the lookalike source.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Engaged {
    pub row: u32,
    /// How much it says about the post: saves most, then shares, then likes.
    pub weight: f32,
}

/// Counts for `/metrics` and the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UserIndexStats {
    /// Users met since the snapshot.
    pub new_users: usize,
    /// Rows appended since the model loaded (moves and newcomers).
    pub placements: usize,
    /// Background rebuilds done (see the module docs), and whether one runs now.
    pub rebuilds: u64,
    pub rebuilding: bool,
    /// Moves not placed because `max_placements` was reached.
    pub placements_refused: u64,
}

/// Rebuild once rows appended since the base was built are more than this share of the
/// index's rows ...
const REBUILD_SHARE: f64 = 0.1;
/// ... and at least this many.
const REBUILD_MIN_APPENDED: usize = 1_000;

struct State {
    /// The index searched now (replaced by a rebuild).
    index: Arc<LiveIndex>,
    /// Rows below this are the base's, numbered by slot (the snapshot's users at load, every
    /// placed user after a rebuild); rows from it on were appended, their slots in `owner`.
    base_rows: u32,
    /// Rows in the index (base and appended), and in its base.
    rows: usize,
    base_len: usize,
    /// Slots with a row.
    placed_users: usize,
    /// A rebuild is running; placements meanwhile are also kept in `during_rebuild`.
    rebuilding: bool,
    during_rebuild: Vec<u32>,
    /// Rows appended since the model loaded, across rebuilds (bounded by `max_placements`).
    placements: usize,
    rebuilds: u64,
    /// Ids of the users met since the snapshot (slot − snapshot users).
    new_ids: Vec<String>,
    new_slots: HashMap<String, u32>,
    /// Per slot: its user's current row, or [`NOT_PLACED`].
    current: Vec<u32>,
    /// Per appended row (row − `base_rows`): its user's slot.
    owner: Vec<u32>,
    /// Where moved users were last placed (their vector then), for the replace test.
    placed: HashMap<u32, Vec<f32>>,
    /// Per slot: the most recent engagements, oldest first.
    recent: HashMap<u32, Vec<Engaged>>,
}

/// Users' embeddings, searchable, with their recent engagements. `Send + Sync`: searches take
/// a read lock on the slot table, placements a write lock.
pub struct UserIndex {
    /// The snapshot's graph, when there is one (to store it).
    graph: Option<Arc<FlatHnswIndex>>,
    origin: IndexOrigin,
    metric: Metric,
    snapshot_ids: Vec<String>,
    snapshot_slots: HashMap<String, u32>,
    /// Snapshot users (rows) following each hashtag, for newcomers' placement.
    followers: HashMap<String, Vec<u32>>,
    state: Arc<RwLock<State>>,
    /// The snapshot's user vectors (as loaded), which a rebuild starts from.
    snapshot_vectors: Arc<Array2<f32>>,
    kind: IndexKind,
    config: LiveConfig,
    rebuild: Mutex<Option<JoinHandle<()>>>,
    options: UserOptions,
    replace_cos: f32,
    refused: AtomicU64,
    /// Users with at least one engagement recorded: none, and the lookalike source has
    /// nothing to find (a request skips its search).
    engaged_users: AtomicU64,
}

impl UserIndex {
    /// Indexes the snapshot's users: exact up to [`EXACT_USER_POOL`] users or under the exact
    /// index kind, else an HNSW graph, loaded from `stored` (`users.index`) when it was built
    /// from this `users.npy` with these parameters, built otherwise (a stale file is named in
    /// a warning, never used).
    pub fn load(
        snapshot: &Snapshot,
        kind: IndexKind,
        params: HnswParams,
        options: UserOptions,
        stored: Option<&Path>,
    ) -> Result<UserIndex, RetrieverError> {
        let vectors = &snapshot.user_vectors;
        let rows: Vec<u32> = (0..vectors.nrows() as u32).collect();
        let metric = snapshot.metric();
        let started = Instant::now();
        let mut rejected = None;
        let (base, origin) = if searched_exactly(kind, rows.len()) {
            let exact = ExactIndex::build(vectors, &rows, metric);
            let origin = IndexOrigin::Built {
                elapsed: started.elapsed(),
                rejected: None,
            };
            (Base::from(exact), origin)
        } else {
            let binding = IndexBinding {
                source: files::USERS_NPY,
                source_sha256: snapshot.users_sha256().unwrap_or_default(),
                vectors,
                rows: &rows,
                metric,
                params,
            };
            let loaded = match stored.map(|path| (path, FlatHnswIndex::read_from(path, &binding))) {
                Some((_, Ok(graph))) => Some(graph),
                Some((_, Err(e))) if e.is_not_found() => None,
                Some((path, Err(e))) => {
                    tracing::warn!(
                        file = %path.display(),
                        reason = %e,
                        "stored user index not used; building it instead"
                    );
                    rejected = Some(e.to_string());
                    None
                }
                None => None,
            };
            match loaded {
                Some(graph) => (
                    Base::from(graph),
                    IndexOrigin::Loaded {
                        elapsed: started.elapsed(),
                    },
                ),
                None => {
                    let graph = FlatHnswIndex::build(vectors, &rows, metric, params);
                    let origin = IndexOrigin::Built {
                        elapsed: started.elapsed(),
                        rejected,
                    };
                    (Base::from(graph), origin)
                }
            }
        };
        let graph = match &base {
            Base::Graph(g) => Some(Arc::clone(g)),
            Base::Exact(_) => None,
        };
        let config = LiveConfig {
            // Users move often: keep the exactly scanned part small.
            seal_threshold: 5_000,
            hnsw: params,
            ..LiveConfig::default()
        };
        let snapshot_ids: Vec<String> = snapshot.users.iter().map(|u| u.id.clone()).collect();
        let snapshot_slots = snapshot_ids
            .iter()
            .enumerate()
            .map(|(slot, id)| (id.clone(), slot as u32))
            .collect();
        let mut followers: HashMap<String, Vec<u32>> = HashMap::new();
        for (row, user) in snapshot.users.iter().enumerate() {
            for tag in &user.follows {
                followers.entry(tag.clone()).or_default().push(row as u32);
            }
        }
        let state = State {
            index: Arc::new(LiveIndex::new(base, config)?),
            base_rows: rows.len() as u32,
            rows: rows.len(),
            base_len: rows.len(),
            placed_users: rows.len(),
            rebuilding: false,
            during_rebuild: Vec::new(),
            placements: 0,
            rebuilds: 0,
            new_ids: Vec::new(),
            new_slots: HashMap::new(),
            current: rows,
            owner: Vec::new(),
            placed: HashMap::new(),
            recent: HashMap::new(),
        };
        Ok(UserIndex {
            graph,
            origin,
            metric,
            snapshot_ids,
            snapshot_slots,
            followers,
            state: Arc::new(RwLock::new(state)),
            snapshot_vectors: Arc::new(vectors.clone()),
            kind,
            config,
            rebuild: Mutex::new(None),
            options,
            replace_cos: options.replace_degrees.to_radians().cos(),
            refused: AtomicU64::new(0),
            engaged_users: AtomicU64::new(0),
        })
    }

    /// The snapshot's graph, when the users have one (to store it as `users.index`).
    pub fn graph(&self) -> Option<&FlatHnswIndex> {
        self.graph.as_deref()
    }

    /// Whether the graph was loaded or built, and how long it took.
    pub fn origin(&self) -> &IndexOrigin {
        &self.origin
    }

    pub fn options(&self) -> &UserOptions {
        &self.options
    }

    /// The row of `user_id` in the snapshot's users.
    pub fn snapshot_row(&self, user_id: &str) -> Option<u32> {
        self.snapshot_slots.get(user_id).copied()
    }

    /// The slot of `user_id`, if the index has met them.
    pub fn slot(&self, user_id: &str) -> Option<u32> {
        self.snapshot_row(user_id).or_else(|| {
            let state = self.read();
            state.new_slots.get(user_id).copied()
        })
    }

    /// The id of the user in `slot`.
    pub fn id(&self, slot: u32) -> Option<String> {
        let n = self.snapshot_ids.len() as u32;
        if slot < n {
            return Some(self.snapshot_ids[slot as usize].clone());
        }
        self.read().new_ids.get((slot - n) as usize).cloned()
    }

    /// Whether the user in `slot` has a row (a vector) in the index.
    pub fn is_placed(&self, slot: u32) -> bool {
        self.read()
            .current
            .get(slot as usize)
            .is_some_and(|&row| row != NOT_PLACED)
    }

    /// Up to `k` users nearest to `query`, best first, leaving out `exclude` (the asking user).
    /// Only each user's current row counts.
    pub fn nearest(&self, query: &[f32], k: usize, exclude: Option<u32>) -> Vec<UserNeighbor> {
        let state = self.read();
        if k == 0 || state.index.is_empty() || query.len() != state.index.dim() {
            return Vec::new();
        }
        let n = state.base_rows;
        let slot_of = |row: u32| {
            if row < n {
                Some(row)
            } else {
                state.owner.get((row - n) as usize).copied()
            }
        };
        let filter = |row: u32| {
            slot_of(row).is_some_and(|slot| {
                Some(slot) != exclude && state.current.get(slot as usize) == Some(&row)
            })
        };
        state
            .index
            .search(query, k, Some(&filter))
            .into_iter()
            .filter_map(|hit| {
                Some(UserNeighbor {
                    slot: slot_of(hit.row)?,
                    similarity: hit.similarity,
                })
            })
            .collect()
    }

    /// [`UserIndex::nearest`], started on rayon's pool so that the caller can search the
    /// posts meanwhile (see [`Offloaded`]).
    pub fn start_nearest(
        self: &Arc<Self>,
        query: Vec<f32>,
        k: usize,
        exclude: Option<u32>,
    ) -> Offloaded<Vec<UserNeighbor>> {
        let index = Arc::clone(self);
        Offloaded::start(move || index.nearest(&query, k, exclude))
    }

    /// Places each user: one new to the index gets a slot and a row;
    /// a user already placed gets a new row only if `vector` turned more than
    /// `replace_degrees` from their last placement (`start`, the snapshot's vector, for a
    /// snapshot user not moved yet). One append for the whole batch. Returns how many rows
    /// were added. Vectors of the wrong dimension or without direction are skipped.
    pub fn place(&self, items: &[Placement<'_>]) -> usize {
        let mut state = self.write();
        let dim = state.index.dim();
        let first_row = state.base_rows + state.owner.len() as u32;
        let mut rows = Vec::new();
        let mut data: Vec<f32> = Vec::new();
        let mut placed: Vec<(u32, Vec<f32>)> = Vec::new();
        for &Placement {
            user_id,
            vector,
            start,
        } in items
        {
            let norm = dot(vector, vector).sqrt();
            if vector.len() != dim || norm == 0.0 || !norm.is_finite() {
                continue;
            }
            let slot = self.slot_in(&mut state, user_id);
            // Placed within this batch already: the later vector replaces it.
            if let Some(at) = placed.iter().position(|(s, _)| *s == slot) {
                placed[at].1 = vector.to_vec();
                data[at * dim..(at + 1) * dim].copy_from_slice(vector);
                continue;
            }
            let current = state.current[slot as usize];
            if current != NOT_PLACED {
                let last = state.placed.get(&slot).map(Vec::as_slice).or(start);
                if let Some(last) = last
                    && cosine(last, vector) >= self.replace_cos
                {
                    continue;
                }
            }
            if state.placements + placed.len() >= self.options.max_placements {
                self.refused.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            rows.push(first_row + placed.len() as u32);
            data.extend_from_slice(vector);
            placed.push((slot, vector.to_vec()));
        }
        if rows.is_empty() {
            return 0;
        }
        let matrix = ArrayView2::from_shape((rows.len(), dim), &data).expect("rows × dim values");
        if let Err(e) = state.index.append(&rows, matrix) {
            // Validated above (dimension, finite, direction): not expected.
            tracing::error!(error = %e, "users not placed");
            return 0;
        }
        for (row, (slot, vector)) in rows.iter().zip(placed) {
            state.owner.push(slot);
            if state.current[slot as usize] == NOT_PLACED {
                state.placed_users += 1;
            }
            state.current[slot as usize] = *row;
            state.placed.insert(slot, vector);
            if state.rebuilding {
                state.during_rebuild.push(slot);
            }
        }
        state.rows += rows.len();
        state.placements += rows.len();
        if !state.rebuilding && needs_rebuild(&state) {
            state.rebuilding = true;
            state.during_rebuild.clear();
            self.start_rebuild();
        }
        rows.len()
    }

    /// Starts a rebuild on its own thread (see the module docs); `rebuilding` is set.
    fn start_rebuild(&self) {
        let rebuild = Rebuild {
            shared: Arc::clone(&self.state),
            snapshot: Arc::clone(&self.snapshot_vectors),
            kind: self.kind,
            config: self.config,
            metric: self.metric,
        };
        let spawned = std::thread::Builder::new()
            .name("user-index-rebuild".into())
            .spawn(move || rebuild.run());
        match spawned {
            Ok(handle) => {
                let mut slot = self.rebuild.lock().unwrap_or_else(|e| e.into_inner());
                // The previous rebuild finished (it cleared `rebuilding` before this began).
                *slot = Some(handle);
            }
            Err(e) => {
                tracing::error!(error = %e, "user index rebuild not started");
            }
        }
    }

    /// Records that `user_id` engaged with post `row` (most recent last; the oldest leave
    /// past `recent_per_user`).
    pub fn record_engagement(&self, user_id: &str, engaged: Engaged) {
        let mut state = self.write();
        let slot = self.slot_in(&mut state, user_id);
        let recent = state.recent.entry(slot).or_default();
        if recent.is_empty() {
            self.engaged_users.fetch_add(1, Ordering::Relaxed);
        }
        if recent.len() >= self.options.recent_per_user {
            recent.remove(0);
        }
        recent.push(engaged);
    }

    /// Where a newcomer who picked `tags` is placed: the centroid of the snapshot users who
    /// follow them ([`followers_centroid`]; `skip` leaves one user out, for evaluations).
    pub fn newcomer_vector(
        &self,
        tags: &[String],
        vectors: &Array2<f32>,
        skip: Option<u32>,
    ) -> Option<Vec<f32>> {
        followers_centroid(&self.followers, tags, vectors, skip)
    }

    /// Calls `f` with each neighbour's similarity and recent engagements, under one read lock.
    pub fn with_recent<R>(
        &self,
        neighbours: &[UserNeighbor],
        f: impl FnOnce(&mut dyn Iterator<Item = (f32, &[Engaged])>) -> R,
    ) -> R {
        let state = self.read();
        let mut each = neighbours
            .iter()
            .filter_map(|n| Some((n.similarity, state.recent.get(&n.slot)?.as_slice())));
        f(&mut each)
    }

    /// Whether any user has an engagement recorded.
    pub fn has_engagements(&self) -> bool {
        self.engaged_users.load(Ordering::Relaxed) > 0
    }

    /// Where the user in `slot` was last placed after the snapshot (moved or onboarded).
    pub fn placed_vector(&self, slot: u32) -> Option<Vec<f32>> {
        self.read().placed.get(&slot).cloned()
    }

    /// The recent engagements of the user in `slot`, oldest first.
    pub fn recent(&self, slot: u32) -> Vec<Engaged> {
        self.read().recent.get(&slot).cloned().unwrap_or_default()
    }

    pub fn stats(&self) -> UserIndexStats {
        let state = self.read();
        UserIndexStats {
            new_users: state.new_ids.len(),
            placements: state.placements,
            rebuilds: state.rebuilds,
            rebuilding: state.rebuilding,
            placements_refused: self.refused.load(Ordering::Relaxed),
        }
    }

    /// Heap bytes of the index (graph or scan, sealed graphs, delta), without the slot table.
    pub fn memory_bytes(&self) -> usize {
        self.read().index.memory_bytes()
    }

    /// Rows in each segment of the index (the snapshot's, sealed, delta).
    pub fn segments(&self) -> SegmentSizes {
        self.read().index.segment_sizes()
    }

    /// Waits until a running rebuild and background seals are done (tests and benches).
    pub fn wait_idle(&self) {
        let handle = self
            .rebuild
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(handle) = handle
            && handle.join().is_err()
        {
            tracing::error!("user index rebuild panicked");
        }
        let index = Arc::clone(&self.read().index);
        index.wait_idle();
    }

    fn slot_in(&self, state: &mut State, user_id: &str) -> u32 {
        if let Some(slot) = self.snapshot_row(user_id) {
            return slot;
        }
        if let Some(&slot) = state.new_slots.get(user_id) {
            return slot;
        }
        let slot = (self.snapshot_ids.len() + state.new_ids.len()) as u32;
        state.new_ids.push(user_id.to_owned());
        state.new_slots.insert(user_id.to_owned(), slot);
        state.current.push(NOT_PLACED);
        slot
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// Cosine of two vectors: the angle a user turned, whatever the metric (an inner product
/// under `dot` would weigh length in).
fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (na, nb) = (dot(a, a).sqrt(), dot(b, b).sqrt());
    if na == 0.0 || nb == 0.0 {
        return -1.0;
    }
    dot(a, b) / (na * nb)
}

/// Whether appended rows are past the share that calls for a rebuild.
fn needs_rebuild(state: &State) -> bool {
    let appended = state.rows - state.base_len;
    appended >= REBUILD_MIN_APPENDED && appended as f64 > REBUILD_SHARE * state.rows as f64
}

/// Rebuilds until the index no longer needs it: the moves placed during one rebuild are
/// appended to its result, and may be many.
fn searched_exactly(kind: IndexKind, users: usize) -> bool {
    kind == IndexKind::Exact || users <= EXACT_USER_POOL
}

/// What a background rebuild works on: the index's shared state and how to build its base.
struct Rebuild {
    shared: Arc<RwLock<State>>,
    /// The snapshot's user vectors, for users not moved since.
    snapshot: Arc<Array2<f32>>,
    kind: IndexKind,
    config: LiveConfig,
    metric: Metric,
}

impl Rebuild {
    fn run(&self) {
        while self.once() {
            let mut state = self.shared.write().unwrap_or_else(|e| e.into_inner());
            if !needs_rebuild(&state) {
                return;
            }
            state.rebuilding = true;
            state.during_rebuild.clear();
        }
    }

    /// Builds a new base over every placed user's current vector and swaps it in (see the
    /// module docs); `true` if it did. A failure or panic leaves the old index serving and
    /// `rebuilding` cleared.
    fn once(&self) -> bool {
        let Rebuild {
            shared,
            snapshot,
            kind,
            config,
            metric,
        } = self;
        let (kind, config, metric) = (*kind, *config, *metric);
        let started = Instant::now();
        let (vectors, rows) = {
            let state = shared.read().unwrap_or_else(|e| e.into_inner());
            let slots = state.current.len();
            let dim = state.index.dim();
            let mut vectors = Array2::<f32>::zeros((slots, dim));
            let mut rows = Vec::with_capacity(state.placed_users);
            for (slot, &row) in state.current.iter().enumerate() {
                if row == NOT_PLACED {
                    continue;
                }
                let source = match state.placed.get(&(slot as u32)) {
                    Some(v) => v.as_slice(),
                    None => snapshot.row(slot).to_slice().expect("standard layout"),
                };
                let norm = dot(source, source).sqrt();
                let scale = if metric == Metric::Cosine && norm > 0.0 {
                    1.0 / norm
                } else {
                    1.0
                };
                vectors
                    .row_mut(slot)
                    .iter_mut()
                    .zip(source)
                    .for_each(|(x, v)| *x = v * scale);
                rows.push(slot as u32);
            }
            (vectors, rows)
        };
        let built = std::panic::catch_unwind(|| {
            let base = if searched_exactly(kind, rows.len()) {
                Base::from(ExactIndex::build(&vectors, &rows, metric))
            } else {
                // One thread: requests keep the other cores.
                Base::from(FlatHnswIndex::build_with_threads(
                    &vectors,
                    &rows,
                    metric,
                    config.hnsw,
                    1,
                ))
            };
            LiveIndex::new(base, config)
        });
        let mut state = shared.write().unwrap_or_else(|e| e.into_inner());
        state.rebuilding = false;
        let index = match built {
            Ok(Ok(index)) => index,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "user index rebuild failed");
                return false;
            }
            Err(_) => {
                tracing::error!("user index rebuild panicked; the old index serves");
                return false;
            }
        };
        // Users placed while it was built: appended to the new index at their latest place.
        let base_rows = vectors.nrows() as u32;
        let mut moved: Vec<u32> = std::mem::take(&mut state.during_rebuild);
        moved.sort_unstable();
        moved.dedup();
        let dim = vectors.ncols();
        let mut data = Vec::with_capacity(moved.len() * dim);
        for slot in &moved {
            data.extend_from_slice(&state.placed[slot]);
        }
        let appended: Vec<u32> = (0..moved.len() as u32).map(|i| base_rows + i).collect();
        if !moved.is_empty() {
            let matrix = ArrayView2::from_shape((moved.len(), dim), &data).expect("rows × dim");
            if let Err(e) = index.append(&appended, matrix) {
                tracing::error!(error = %e, "user index rebuild not swapped in");
                return false;
            }
        }
        for &slot in &rows {
            state.current[slot as usize] = slot;
        }
        for (&slot, &row) in moved.iter().zip(&appended) {
            state.current[slot as usize] = row;
        }
        let placed_users = state.current.iter().filter(|&&r| r != NOT_PLACED).count();
        state.owner = moved;
        state.base_rows = base_rows;
        state.rows = rows.len() + appended.len();
        state.base_len = rows.len();
        state.placed_users = placed_users;
        state.index = Arc::new(index);
        state.rebuilds += 1;
        tracing::info!(
            users = placed_users,
            appended = appended.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "user index rebuilt"
        );
        true
    }
}

/// Posts the neighbours engaged with, scored by the sum over neighbours of their similarity
/// (floored at 0) times the engagement's weight, best first (ties: smaller row), at most
/// `limit`, skipping `excluded` rows. A post engaged with by several close users rises above
/// one a single distant user liked.
pub fn lookalike_posts<'a>(
    neighbours: impl Iterator<Item = (f32, &'a [Engaged])>,
    limit: usize,
    excluded: impl Fn(u32) -> bool,
) -> Vec<(u32, f32)> {
    let mut scores: HashMap<u32, f32> = HashMap::new();
    for (similarity, engaged) in neighbours {
        let similarity = similarity.max(0.0);
        for e in engaged {
            *scores.entry(e.row).or_insert(0.0) += similarity * e.weight;
        }
    }
    let mut ranked: Vec<(u32, f32)> = scores
        .into_iter()
        .filter(|&(row, score)| score > 0.0 && !excluded(row))
        .collect();
    ranked.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.truncate(limit);
    ranked
}

/// The centroid (unit length) of the snapshot users who follow any of `tags`, each weighted
/// by how many of them they follow; `None` when nobody follows any.
pub fn followers_centroid(
    followers: &HashMap<String, Vec<u32>>,
    tags: &[String],
    vectors: &Array2<f32>,
    skip: Option<u32>,
) -> Option<Vec<f32>> {
    let mut weight: HashMap<u32, f32> = HashMap::new();
    for tag in tags {
        for &row in followers.get(tag).map_or(&[][..], Vec::as_slice) {
            if Some(row) == skip {
                continue;
            }
            *weight.entry(row).or_insert(0.0) += 1.0;
        }
    }
    if weight.is_empty() {
        return None;
    }
    let mut rows: Vec<(u32, f32)> = weight.into_iter().collect();
    // A fixed order, so the sum (and the placement) is the same on every replay.
    rows.sort_unstable_by_key(|&(row, _)| row);
    let mut sum = vec![0.0f32; vectors.ncols()];
    for (row, w) in rows {
        let v = vectors.row(row as usize);
        let norm = v.dot(&v).sqrt();
        if norm == 0.0 {
            continue;
        }
        for (s, x) in sum.iter_mut().zip(v.iter()) {
            *s += w * x / norm;
        }
    }
    let norm = dot(&sum, &sum).sqrt();
    (norm > 0.0 && norm.is_finite()).then(|| sum.iter().map(|x| x / norm).collect())
}

#[cfg(test)]
mod tests;
