//! HNSW search over a graph kept in flat arrays.
//!
//! hnsw_rs searches its graph slowly: every query allocates a hash map of visited points and an
//! `Arc` per candidate, and takes a lock per neighbour list; every node costs kilobytes of
//! pointers. [`FlatHnswIndex`] keeps the graph (built by feedrank's own builder, `builder.rs`,
//! or copied from hnsw_rs) in compact arrays:
//!
//! - vectors in one row-major block, each row padded to a whole number of 64-byte cache lines
//!   and aligned to one, so that a 64-d row is exactly four lines;
//! - neighbour lists per layer in compressed sparse rows (offsets + one `Vec<u32>`): layer 0 is
//!   indexed by position, upper layers (a few percent of the nodes) by binary search in their
//!   sorted member list, as the greedy descent touches only a handful of them per query;
//! - per-thread scratch (visited stamps, heaps, the prepared query), so a query allocates only
//!   its result;
//! - the rows of a node's unvisited neighbours are prefetched together before any is scored.
//!
//! Scores are inner products with the query (normalised under cosine, raw under dot): rescaling
//! the query does not change the ranking, so the search needs no distance offset, and the
//! similarity reported is the true one, as [`super::HnswIndex`] reports it.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

use ndarray::Array2;

use super::hnsw::GraphNode;
use super::{
    GraphBuilder, HnswIndex, HnswParams, Neighbor, NeighborIndex, RowFilter, best_first, builder,
    dot,
};
use crate::snapshot::Metric;

/// Floats per cache line.
pub(super) const LANES: usize = 16;

/// One cache line of a row; rows start on a line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(super) struct Line(pub(super) [f32; LANES]);

// SAFETY: `Line` is `repr(C)` around `[f32; LANES]`: 64 bytes, no padding (its size equals its
// alignment), and every bit pattern is a valid `f32`. The stored-index format reads and writes
// rows through these impls.
unsafe impl bytemuck::Zeroable for Line {}
unsafe impl bytemuck::Pod for Line {}

/// Neighbour lists of consecutive nodes: node `i`'s are `links[offsets[i]..offsets[i + 1]]`.
#[derive(Default)]
pub(super) struct Adjacency {
    pub(super) offsets: Vec<u32>,
    pub(super) links: Vec<u32>,
}

impl Adjacency {
    fn from_lists<'a>(lists: impl IntoIterator<Item = &'a [u32]>) -> Adjacency {
        let mut adjacency = Adjacency {
            offsets: vec![0],
            links: Vec::new(),
        };
        for list in lists {
            adjacency.links.extend_from_slice(list);
            let end = u32::try_from(adjacency.links.len()).expect("fewer than 2^32 links");
            adjacency.offsets.push(end);
        }
        adjacency.offsets.shrink_to_fit();
        adjacency.links.shrink_to_fit();
        adjacency
    }

    #[inline]
    fn neighbours(&self, i: usize) -> &[u32] {
        &self.links[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    fn memory_bytes(&self) -> usize {
        (self.offsets.capacity() + self.links.capacity()) * size_of::<u32>()
    }
}

/// A layer above 0: its members (positions, sorted) and their neighbour lists.
pub(super) struct UpperLayer {
    pub(super) members: Vec<u32>,
    pub(super) adjacency: Adjacency,
}

impl UpperLayer {
    fn neighbours(&self, position: u32) -> &[u32] {
        match self.members.binary_search(&position) {
            Ok(i) => self.adjacency.neighbours(i),
            // Only nodes on this layer are ever looked up here; an absent one has no links.
            Err(_) => &[],
        }
    }
}

/// Approximate nearest neighbours on an HNSW graph searched from flat arrays: about a sixth of
/// hnsw_rs's memory (at 64-d, mostly the vectors), and three to eight times faster per query
/// than hnsw_rs's own search (see `benches/retrieval.rs`).
///
/// [`FlatHnswIndex::write_to`] stores it in a file and [`FlatHnswIndex::read_from`] loads it
/// back (see [`super::store`]), which is much faster than building the graph again.
pub struct FlatHnswIndex {
    pub(super) builder: GraphBuilder,
    pub(super) dim: usize,
    /// Floats per stored row: `dim` rounded up to whole cache lines, zero-padded.
    pub(super) stride: usize,
    pub(super) metric: Metric,
    /// What the graph was built with (`max_connections`, `ef_construction`); `ef_search` is
    /// the search's beam.
    pub(super) params: HnswParams,
    /// Position `i` (in the graph and in `vectors`) is row `rows[i]` of the matrix.
    pub(super) rows: Vec<u32>,
    /// `rows.len() × stride` floats.
    pub(super) vectors: Vec<Line>,
    pub(super) base: Adjacency,
    /// `upper[l - 1]` is layer `l`.
    pub(super) upper: Vec<UpperLayer>,
    /// Where every search starts: a node on the top layer.
    pub(super) entry: u32,
}

impl FlatHnswIndex {
    /// Builds the graph over the given `rows` of `vectors` with feedrank's own parallel
    /// builder (see `builder.rs`), on all available cores.
    ///
    /// Panics if a row is out of range or `params` is invalid (see [`HnswParams::validate`]).
    pub fn build(
        vectors: &Array2<f32>,
        rows: &[u32],
        metric: Metric,
        params: HnswParams,
    ) -> FlatHnswIndex {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        FlatHnswIndex::build_with_threads(vectors, rows, metric, params, threads)
    }

    /// [`FlatHnswIndex::build`] on `threads` threads; with one thread the graph is the same on
    /// every run.
    pub fn build_with_threads(
        vectors: &Array2<f32>,
        rows: &[u32],
        metric: Metric,
        params: HnswParams,
        threads: usize,
    ) -> FlatHnswIndex {
        if let Err(e) = params.validate() {
            panic!("invalid HNSW parameters: {e}");
        }
        super::check_rows(rows, vectors.nrows());
        super::debug_check_normalised(vectors, rows, metric);
        let dim = vectors.ncols();
        let lines_per_row = dim.div_ceil(LANES);
        let mut lines = vec![Line([0.0; LANES]); rows.len() * lines_per_row];
        for (p, &r) in rows.iter().enumerate() {
            let row = &mut lines[p * lines_per_row..(p + 1) * lines_per_row];
            for (i, &x) in vectors.row(r as usize).iter().enumerate() {
                row[i / LANES].0[i % LANES] = x;
            }
        }
        let stride = lines_per_row * LANES;
        let graph = {
            // SAFETY: as in `data`: `Line` is plain `[f32; LANES]` without padding.
            let data = unsafe {
                std::slice::from_raw_parts(lines.as_ptr().cast::<f32>(), lines.len() * LANES)
            };
            builder::build(
                data,
                stride,
                rows.len(),
                builder::Shape {
                    m: params.max_connections,
                    ef_construction: params.ef_construction,
                    threads,
                },
            )
        };
        FlatHnswIndex::from_links(
            GraphBuilder::Native,
            dim,
            metric,
            params,
            rows.to_vec(),
            lines,
            &graph,
        )
    }

    /// Builds a graph over every row of `vectors`, naming row `i` of the matrix `rows[i]` in
    /// results: for vectors that are not rows of one matrix indexed by their row numbers (the
    /// live index's segments). Panics if the lengths differ, or as [`FlatHnswIndex::build`].
    pub(super) fn build_labelled(
        vectors: &Array2<f32>,
        rows: Vec<u32>,
        metric: Metric,
        params: HnswParams,
    ) -> FlatHnswIndex {
        assert_eq!(vectors.nrows(), rows.len(), "one row number per vector");
        let positions: Vec<u32> =
            (0..u32::try_from(rows.len()).expect("fewer than 2^32 rows")).collect();
        let mut index = FlatHnswIndex::build(vectors, &positions, metric, params);
        // Position `i` is matrix row `i`: renaming the rows renames every result.
        index.rows = rows;
        index
    }

    /// Copies the graph of `hnsw`, with its metric, rows and parameters. The copy does not
    /// refer to `hnsw`, which can be dropped.
    pub fn from_hnsw(hnsw: &HnswIndex) -> FlatHnswIndex {
        let dim = hnsw.dim();
        let n = hnsw.rows().len();
        let lines_per_row = dim.div_ceil(LANES);
        let mut vectors = vec![Line([0.0; LANES]); n * lines_per_row];
        let mut links: Vec<Vec<Vec<u32>>> = vec![Vec::new(); n];
        let mut seen = vec![false; n];
        let entry = hnsw.export_graph(|node: GraphNode<'_>| {
            let p = node.position as usize;
            assert!(!seen[p], "position {p} appears twice in the graph");
            seen[p] = true;
            assert_eq!(
                node.vector.len(),
                dim,
                "graph vector of the wrong dimension"
            );
            let row = &mut vectors[p * lines_per_row..(p + 1) * lines_per_row];
            for (line, chunk) in row.iter_mut().zip(node.vector.chunks(LANES)) {
                line.0[..chunk.len()].copy_from_slice(chunk);
            }
            links[p] = node.links;
        });
        assert!(
            seen.iter().all(|&s| s),
            "the graph lacks some of the pool's rows"
        );

        FlatHnswIndex::from_links(
            GraphBuilder::HnswRs,
            dim,
            hnsw.metric(),
            hnsw.params(),
            hnsw.rows().to_vec(),
            vectors,
            &builder::BuiltGraph { links, entry },
        )
    }

    /// Assembles an index from padded rows (`lines`, one block of `dim` rounded up to whole
    /// lines per position) and per position its links from layer 0 up to its level.
    fn from_links(
        builder: GraphBuilder,
        dim: usize,
        metric: Metric,
        params: HnswParams,
        rows: Vec<u32>,
        vectors: Vec<Line>,
        graph: &builder::BuiltGraph,
    ) -> FlatHnswIndex {
        let links = &graph.links;
        let entry = graph.entry;
        let n = rows.len();
        let stride = dim.div_ceil(LANES) * LANES;
        debug_assert_eq!(vectors.len() * LANES, n * stride);
        debug_assert_eq!(links.len(), n);
        let base = Adjacency::from_lists(
            links
                .iter()
                .map(|l| l.first().map_or(&[][..], Vec::as_slice)),
        );
        let top = links.iter().map(|l| l.len().saturating_sub(1)).max();
        let upper = (1..=top.unwrap_or(0))
            .map(|layer| {
                // Positions ascend, so members come out sorted.
                let members: Vec<u32> = (0..n as u32)
                    .filter(|&p| links[p as usize].len() > layer)
                    .collect();
                let adjacency = Adjacency::from_lists(
                    members.iter().map(|&p| links[p as usize][layer].as_slice()),
                );
                UpperLayer { members, adjacency }
            })
            .collect();
        FlatHnswIndex {
            builder,
            dim,
            stride,
            metric,
            params,
            rows,
            vectors,
            base,
            upper,
            entry: entry.unwrap_or(0),
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Who built the graph.
    pub fn builder(&self) -> GraphBuilder {
        self.builder
    }

    pub fn metric(&self) -> Metric {
        self.metric
    }

    pub fn ef_search(&self) -> usize {
        self.params.ef_search
    }

    /// The parameters the graph was built with, and the search's `ef_search`.
    pub fn params(&self) -> HnswParams {
        self.params
    }

    /// Position `i` of the graph is row `rows()[i]` of the matrix it was built from.
    pub fn rows(&self) -> &[u32] {
        &self.rows
    }

    /// The top layer's number (0 when the graph has one layer or none).
    pub fn max_level(&self) -> usize {
        self.upper.len()
    }

    /// Heap memory held by the index (vectors, links, row map), excluding the per-thread search
    /// scratch (4 bytes per node plus the heaps, per searching thread).
    pub fn memory_bytes(&self) -> usize {
        size_of::<Self>()
            + self.rows.capacity() * size_of::<u32>()
            + self.vectors.capacity() * size_of::<Line>()
            + self.base.memory_bytes()
            + self.upper.capacity() * size_of::<UpperLayer>()
            + self
                .upper
                .iter()
                .map(|l| l.members.capacity() * size_of::<u32>() + l.adjacency.memory_bytes())
                .sum::<usize>()
    }

    /// The stored vector of the node at `position` (as indexed: unit under cosine).
    pub(super) fn vector(&self, position: usize) -> &[f32] {
        let start = position * self.stride;
        &self.data()[start..start + self.dim]
    }

    /// All stored floats, `stride` per position.
    #[inline]
    pub(super) fn data(&self) -> &[f32] {
        // SAFETY: `Line` is `repr(C)` around `[f32; LANES]` with no padding (its size, 64 bytes,
        // equals its alignment), so the lines are `len × LANES` initialised, contiguous `f32`s,
        // borrowed for as long as `self`.
        unsafe {
            std::slice::from_raw_parts(
                self.vectors.as_ptr().cast::<f32>(),
                self.vectors.len() * LANES,
            )
        }
    }

    /// [`NeighborIndex::search`] with a beam of `max(ef, k)` instead of the configured
    /// `ef_search`: wider finds more of the true neighbours, at a cost roughly linear in `ef`.
    ///
    /// A filter is applied inside the search: excluded nodes are walked through but never
    /// returned, and the search goes on until the beam holds `max(ef, k)` kept nodes or the graph
    /// is exhausted, so a very selective filter costs up to a walk of the whole graph.
    pub fn search_with_ef(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        filter: Option<RowFilter<'_>>,
    ) -> Vec<Neighbor> {
        assert_eq!(query.len(), self.dim, "query has the wrong dimension");
        let k = k.min(self.rows.len());
        if k == 0 {
            return Vec::new();
        }
        let Some(query_norm) = super::query_norm(query) else {
            return Vec::new();
        };
        let scale = match self.metric {
            Metric::Cosine => 1.0 / query_norm,
            Metric::Dot => 1.0,
        };
        let ef = ef.max(k);
        with_scratch(|scratch| {
            scratch.query.clear();
            scratch.query.extend(query.iter().map(|x| x * scale));
            scratch.query.resize(self.stride, 0.0);
            let found = match filter {
                None => self.beam_search(scratch, ef, |_| true),
                Some(keep) => self.beam_search(scratch, ef, |p| keep(self.rows[p as usize])),
            };
            let mut hits: Vec<Neighbor> = found
                .map(|c| Neighbor {
                    row: self.rows[c.position as usize],
                    similarity: c.similarity,
                })
                .collect();
            hits.sort_unstable_by(best_first);
            hits.truncate(k);
            hits
        })
    }

    /// Greedy descent through the upper layers, then a beam of `ef` on layer 0. Leaves the best
    /// `ef` kept nodes in `scratch.results` (in no order) and drains them.
    fn beam_search<'s>(
        &self,
        scratch: &'s mut Scratch,
        ef: usize,
        keep: impl Fn(u32) -> bool,
    ) -> std::collections::binary_heap::Drain<'s, Worst> {
        let data = self.data();
        let stride = self.stride;
        let Scratch {
            query,
            stamps,
            generation,
            candidates,
            results,
            fresh,
        } = scratch;
        let query = query.as_slice();
        let score = |p: u32| {
            let start = p as usize * stride;
            dot(query, &data[start..start + stride])
        };

        let mut current = Candidate {
            similarity: score(self.entry),
            position: self.entry,
        };
        for layer in self.upper.iter().rev() {
            // Move to a better neighbour until there is none: similarity strictly rises, so
            // this ends.
            loop {
                let mut best = current;
                for &p in layer.neighbours(current.position) {
                    let similarity = score(p);
                    if similarity > best.similarity {
                        best = Candidate {
                            similarity,
                            position: p,
                        };
                    }
                }
                if best.position == current.position {
                    break;
                }
                current = best;
            }
        }

        // Visited stamps: a node is visited in this query when its stamp equals `generation`,
        // which changes every query, so the array is never cleared (but on wrap-around).
        if stamps.len() < self.rows.len() {
            stamps.resize(self.rows.len(), 0);
        }
        *generation = generation.wrapping_add(1);
        if *generation == 0 {
            stamps.fill(0);
            *generation = 1;
        }
        let generation = *generation;
        candidates.clear();
        results.clear();

        stamps[current.position as usize] = generation;
        candidates.push(current);
        if keep(current.position) {
            results.push(Worst(current));
        }
        while let Some(candidate) = candidates.pop() {
            // The closest unexpanded node is worse than the beam's worst: nothing reachable
            // through it can enter the beam.
            if results.len() >= ef
                && results
                    .peek()
                    .is_some_and(|w| candidate.similarity < w.0.similarity)
            {
                break;
            }
            // Mark and prefetch every unvisited neighbour first, then score them: at a million
            // rows most are in no cache, and the loads overlap instead of following one another.
            fresh.clear();
            for &p in self.base.neighbours(candidate.position as usize) {
                let stamp = &mut stamps[p as usize];
                if *stamp != generation {
                    *stamp = generation;
                    fresh.push(p);
                    let start = p as usize * stride;
                    super::prefetch_row(&data[start..start + stride]);
                }
            }
            for &p in fresh.iter() {
                let similarity = score(p);
                let full = results.len() >= ef;
                if full && results.peek().is_some_and(|w| similarity <= w.0.similarity) {
                    continue;
                }
                let next = Candidate {
                    similarity,
                    position: p,
                };
                candidates.push(next);
                if keep(p) {
                    results.push(Worst(next));
                    if full {
                        results.pop();
                    }
                }
            }
        }
        results.drain()
    }
}

/// A scored node.
#[derive(Debug, Clone, Copy)]
pub(super) struct Candidate {
    pub similarity: f32,
    pub position: u32,
}

impl Candidate {
    /// Higher similarity first, then the smaller position: `Less` when `self` is better.
    pub(super) fn better_first(&self, other: &Candidate) -> Ordering {
        (other.similarity + 0.0)
            .total_cmp(&(self.similarity + 0.0))
            .then(self.position.cmp(&other.position))
    }
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Candidate {}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Max-heap order: the best candidate is the greatest.
impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        other.better_first(self)
    }
}

/// A kept node, ordered so that a max-heap's top is the worst of the beam.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Worst(pub Candidate);

impl std::ops::Deref for Worst {
    type Target = Candidate;

    fn deref(&self) -> &Candidate {
        &self.0
    }
}

impl PartialOrd for Worst {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Worst {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.better_first(&other.0)
    }
}

/// Per-thread search state, reused across queries and indexes.
#[derive(Default)]
struct Scratch {
    /// The prepared query, padded to the index's stride.
    query: Vec<f32>,
    /// Per position, the generation of the last query that visited it.
    stamps: Vec<u32>,
    generation: u32,
    candidates: BinaryHeap<Candidate>,
    results: BinaryHeap<Worst>,
    /// The unvisited neighbours of the node being expanded.
    fresh: Vec<u32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `f` on this thread's scratch, or on a fresh one if it is in use (a filter that searches
/// again on the same thread).
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => f(&mut scratch),
        Err(_) => f(&mut Scratch::default()),
    })
}

impl std::fmt::Debug for FlatHnswIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the vectors or links: megabytes help nobody reading a log.
        f.debug_struct("FlatHnswIndex")
            .field("len", &self.rows.len())
            .field("dim", &self.dim)
            .field("metric", &self.metric)
            .field("ef_search", &self.params.ef_search)
            .field("max_level", &self.max_level())
            .field("memory_bytes", &self.memory_bytes())
            .finish_non_exhaustive()
    }
}

impl NeighborIndex for FlatHnswIndex {
    fn len(&self) -> usize {
        self.rows.len()
    }

    fn search(&self, query: &[f32], k: usize, filter: Option<RowFilter<'_>>) -> Vec<Neighbor> {
        self.search_with_ef(query, k, self.params.ef_search, filter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{ExactIndex, synthetic};

    fn rows(hits: &[Neighbor]) -> Vec<u32> {
        hits.iter().map(|n| n.row).collect()
    }

    #[test]
    fn copies_the_whole_graph_and_searches_it_exactly_with_a_wide_beam() {
        // 100 dimensions: rows padded from 100 to 112 floats.
        let vectors = synthetic::clustered(300, 100, 5, 0.7, 11);
        let queries = synthetic::queries(20, 100, 5, 0.7, 11);
        let pool: Vec<u32> = (0..300).rev().step_by(2).collect();
        let hnsw = HnswIndex::build(&vectors, &pool, Metric::Cosine, HnswParams::default());
        let flat = FlatHnswIndex::from_hnsw(&hnsw);
        let exact = ExactIndex::build(&vectors, &pool, Metric::Cosine);
        assert_eq!((flat.len(), flat.dim(), flat.stride), (150, 100, 112));
        assert_eq!(flat.base.offsets.len(), 151);
        for q in queries.rows() {
            let q = q.as_slice().unwrap();
            let want = exact.search(q, 150, None);
            let got = flat.search_with_ef(q, 150, 150, None);
            assert_eq!(rows(&got), rows(&want));
            for (g, w) in got.iter().zip(&want) {
                assert!((g.similarity - w.similarity).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn visited_stamps_survive_generation_wrap_around() {
        let vectors = synthetic::clustered(200, 16, 4, 0.5, 5);
        let pool: Vec<u32> = (0..200).collect();
        let flat = FlatHnswIndex::build(&vectors, &pool, Metric::Cosine, HnswParams::default());
        let q = vectors.row(17).to_vec();
        let before = flat.search_with_ef(&q, 20, 200, None);
        assert_eq!(before.len(), 20);
        SCRATCH.with(|s| s.borrow_mut().generation = u32::MAX - 1);
        for _ in 0..3 {
            assert_eq!(flat.search_with_ef(&q, 20, 200, None), before);
        }
        SCRATCH.with(|s| assert!(s.borrow().generation < 5));
    }

    #[test]
    fn a_filter_may_search_again_on_the_same_thread() {
        let vectors = synthetic::clustered(200, 16, 4, 0.5, 6);
        let pool: Vec<u32> = (0..200).collect();
        let flat = FlatHnswIndex::build(&vectors, &pool, Metric::Cosine, HnswParams::default());
        let q = vectors.row(3).to_vec();
        let inner = flat.search_with_ef(&q, 5, 200, None);
        let reentrant = |row: u32| {
            assert_eq!(flat.search_with_ef(&q, 5, 200, None), inner);
            row != inner[0].row
        };
        let got = flat.search_with_ef(&q, 5, 200, Some(&reentrant));
        // The best hit excluded: the other four move up.
        assert_eq!(got.len(), 5);
        assert_eq!(rows(&got[..4]), rows(&inner[1..]));
        assert_ne!(got[4].row, inner[0].row);
    }

    #[test]
    fn debug_shows_the_shape_not_the_vectors() {
        let vectors = synthetic::clustered(50, 8, 2, 0.5, 2);
        let pool: Vec<u32> = (0..50).collect();
        let flat = FlatHnswIndex::build(&vectors, &pool, Metric::Dot, HnswParams::default());
        let shown = format!("{flat:?}");
        assert!(shown.starts_with("FlatHnswIndex { len: 50, dim: 8, metric: Dot"));
        assert!(shown.len() < 200, "{shown}");
        // At least the padded vectors and one link per node.
        assert!(flat.memory_bytes() >= 50 * 16 * 4 + 50 * 4);
    }
}
