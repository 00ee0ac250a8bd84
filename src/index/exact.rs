//! Exact search: a scan over a contiguous matrix.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

use ndarray::Array2;

use super::{Neighbor, NeighborIndex, RowFilter, best_first, dot_many, query_norm};
use crate::snapshot::Metric;

/// Brute-force search at the speed memory streams: at 100,000 × 64 a top-200 costs about twice
/// the hnsw_rs graph's (see `benches/retrieval.rs`), with perfect recall and no build. The right
/// choice for small pools, and the reference the approximate index is measured against.
#[derive(Clone)]
pub struct ExactIndex {
    dim: usize,
    metric: Metric,
    /// `rows.len() × dim`, row-major: one sequential pass per query.
    data: Vec<f32>,
    rows: Vec<u32>,
}

impl ExactIndex {
    /// Indexes the given `rows` of `vectors` (rows as in the matrix; results name them).
    ///
    /// Panics if a row is out of range.
    pub fn build(vectors: &Array2<f32>, rows: &[u32], metric: Metric) -> ExactIndex {
        super::check_rows(rows, vectors.nrows());
        super::debug_check_normalised(vectors, rows, metric);
        let dim = vectors.ncols();
        let mut data = Vec::with_capacity(rows.len() * dim);
        for &r in rows {
            data.extend(vectors.row(r as usize).iter());
        }
        ExactIndex {
            dim,
            metric,
            data,
            rows: rows.to_vec(),
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// The rows indexed, in the order given.
    pub fn rows(&self) -> &[u32] {
        &self.rows
    }

    /// Heap memory held by the index: the copied vectors and the row map.
    pub fn memory_bytes(&self) -> usize {
        size_of::<Self>()
            + self.data.capacity() * size_of::<f32>()
            + self.rows.capacity() * size_of::<u32>()
    }
}

impl std::fmt::Debug for ExactIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the vectors: megabytes of floats help nobody reading a log.
        f.debug_struct("ExactIndex")
            .field("len", &self.rows.len())
            .field("dim", &self.dim)
            .field("metric", &self.metric)
            .finish_non_exhaustive()
    }
}

/// Heap entry ordered so that the heap's top is the worst hit kept so far.
struct Worst(Neighbor);

impl PartialEq for Worst {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Worst {}

impl PartialOrd for Worst {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Worst {
    fn cmp(&self, other: &Self) -> Ordering {
        best_first(&self.0, &other.0)
    }
}

impl NeighborIndex for ExactIndex {
    fn len(&self) -> usize {
        self.rows.len()
    }

    fn search(&self, query: &[f32], k: usize, filter: Option<RowFilter<'_>>) -> Vec<Neighbor> {
        assert_eq!(query.len(), self.dim, "query has the wrong dimension");
        let k = k.min(self.rows.len());
        if k == 0 {
            return Vec::new();
        }
        let Some(query) = prepared_query(query, self.metric) else {
            return Vec::new();
        };
        let mut best = TopK::new(k);
        best.scan(&query, &self.data, &self.rows, filter);
        best.into_sorted()
    }
}

/// The query as the scan scores it: normalised under cosine, as is under dot; `None` when it
/// has no direction.
pub(super) fn prepared_query(query: &[f32], metric: Metric) -> Option<Cow<'_, [f32]>> {
    let norm = query_norm(query)?;
    Some(match metric {
        Metric::Cosine => Cow::Owned(query.iter().map(|x| x / norm).collect()),
        Metric::Dot => Cow::Borrowed(query),
    })
}

/// The best `k` hits among the rows scanned so far, over one or several row-major blocks.
pub(super) struct TopK {
    k: usize,
    heap: BinaryHeap<Worst>,
    /// The k-th best similarity once `k` hits are kept: anything below it cannot enter.
    floor: f32,
}

impl TopK {
    pub(super) fn new(k: usize) -> TopK {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
            floor: f32::NEG_INFINITY,
        }
    }

    /// Scores `rows` (row-major in `data`, `query.len()` floats each) against the prepared
    /// `query` and keeps the best that pass `filter`.
    pub(super) fn scan(
        &mut self,
        query: &[f32],
        data: &[f32],
        rows: &[u32],
        filter: Option<RowFilter<'_>>,
    ) {
        let dim = query.len();
        debug_assert_eq!(data.len(), rows.len() * dim, "data does not hold the rows");
        if self.k == 0 || rows.is_empty() {
            return;
        }
        // Scores a block of rows at a time, then keeps the best in a bounded heap. With rows in
        // no particular order only O(k log(n/k)) of them beat the current k-th best, so the
        // filter (a dynamic call) and the heap are rarely touched; `floor` rejects the rest with
        // one comparison.
        const BLOCK: usize = 256;
        let mut scores = [0.0f32; BLOCK];
        for (block, rows) in data.chunks(BLOCK * dim.max(1)).zip(rows.chunks(BLOCK)) {
            let scores = &mut scores[..rows.len()];
            dot_many(query, block, scores);
            for (&similarity, &row) in scores.iter().zip(rows) {
                if similarity < self.floor {
                    continue;
                }
                let hit = Neighbor { row, similarity };
                if self.heap.len() == self.k
                    && self
                        .heap
                        .peek()
                        .is_some_and(|w| best_first(&hit, &w.0) != Ordering::Less)
                {
                    continue;
                }
                if filter.is_some_and(|keep| !keep(row)) {
                    continue;
                }
                if self.heap.len() < self.k {
                    self.heap.push(Worst(hit));
                } else if let Some(mut worst) = self.heap.peek_mut() {
                    *worst = Worst(hit);
                }
                if self.heap.len() == self.k {
                    self.floor = self.heap.peek().map_or(self.floor, |w| w.0.similarity);
                }
            }
        }
    }

    /// The hits kept, best first.
    pub(super) fn into_sorted(self) -> Vec<Neighbor> {
        let mut hits: Vec<Neighbor> = self.heap.into_iter().map(|w| w.0).collect();
        hits.sort_unstable_by(best_first);
        hits
    }
}

#[cfg(test)]
mod tests {
    use ndarray::Array2;
    use proptest::prelude::*;

    use super::*;
    use crate::index::{dot, norm};

    /// Sort-everything reference: score every row, filter, sort best first, cut to `k`.
    fn reference(
        vectors: &Array2<f32>,
        rows: &[u32],
        metric: Metric,
        query: &[f32],
        k: usize,
        keep: &dyn Fn(u32) -> bool,
    ) -> Vec<Neighbor> {
        let n = norm(query);
        if n == 0.0 {
            return Vec::new();
        }
        let query: Vec<f32> = match metric {
            Metric::Cosine => query.iter().map(|x| x / n).collect(),
            Metric::Dot => query.to_vec(),
        };
        let mut all: Vec<Neighbor> = rows
            .iter()
            .filter(|&&r| keep(r))
            .map(|&r| Neighbor {
                row: r,
                similarity: dot(&query, vectors.row(r as usize).as_slice().unwrap()),
            })
            .collect();
        all.sort_by(best_first);
        all.truncate(k);
        all
    }

    fn matrix(n: usize, dim: usize, values: &[i8]) -> Array2<f32> {
        Array2::from_shape_fn((n, dim), |(i, j)| f32::from(values[i * dim + j]))
    }

    fn normalised(mut m: Array2<f32>) -> Array2<f32> {
        for mut row in m.rows_mut() {
            let n = row.dot(&row).sqrt();
            if n > 0.0 {
                row.mapv_inplace(|x| x / n);
            }
        }
        m
    }

    /// A small matrix of small integers (so equal scores are common and exact), a shuffled
    /// subset of its rows, a query, a keep-mask over rows and a `k` that may exceed the pool.
    fn case() -> impl Strategy<Value = (Array2<f32>, Vec<u32>, Vec<f32>, Vec<bool>, usize)> {
        (0usize..40, 1usize..20).prop_flat_map(|(n, dim)| {
            (
                proptest::collection::vec(-2i8..=2, n * dim),
                proptest::sample::subsequence((0..n as u32).collect::<Vec<_>>(), 0..=n)
                    .prop_shuffle(),
                proptest::collection::vec(-2i8..=2, dim),
                proptest::collection::vec(proptest::bool::weighted(0.7), n),
                0usize..50,
            )
                .prop_map(move |(values, rows, query, mask, k)| {
                    let query = query.into_iter().map(f32::from).collect();
                    (matrix(n, dim, &values), rows, query, mask, k)
                })
        })
    }

    proptest! {
        #[test]
        fn matches_reference((vectors, rows, query, mask, k) in case()) {
            for metric in [Metric::Dot, Metric::Cosine] {
                let vectors = match metric {
                    Metric::Dot => vectors.clone(),
                    Metric::Cosine => normalised(vectors.clone()),
                };
                let index = ExactIndex::build(&vectors, &rows, metric);
                prop_assert_eq!(index.len(), rows.len());
                let keep = |r: u32| mask[r as usize];
                let filtered = index.search(&query, k, Some(&keep));
                prop_assert_eq!(&filtered, &reference(&vectors, &rows, metric, &query, k, &keep));
                prop_assert!(filtered.iter().all(|n| mask[n.row as usize]));
                let all = index.search(&query, k, None);
                prop_assert_eq!(all, reference(&vectors, &rows, metric, &query, k, &|_| true));
            }
        }
    }

    #[test]
    fn ties_come_smaller_row_first() {
        // Rows 1, 2, 4, 5 all score 1; the pool lists them out of order.
        let vectors = matrix(6, 2, &[0, 1, 1, 0, 1, 0, -1, 0, 1, 0, 1, 0]);
        let index = ExactIndex::build(&vectors, &[5, 3, 2, 4, 1, 0], Metric::Dot);
        let hits = index.search(&[1.0, 0.0], 3, None);
        let rows: Vec<u32> = hits.iter().map(|n| n.row).collect();
        assert_eq!(rows, [1, 2, 4]);
        assert!(hits.iter().all(|n| n.similarity == 1.0));
    }

    #[test]
    fn cosine_normalises_the_query_and_dot_does_not() {
        let vectors = normalised(matrix(3, 2, &[1, 0, 0, 1, 1, 1]));
        let cosine = ExactIndex::build(&vectors, &[0, 1, 2], Metric::Cosine);
        let hits = cosine.search(&[10.0, 0.0], 1, None);
        assert_eq!(hits[0].row, 0);
        assert!((hits[0].similarity - 1.0).abs() < 1e-6);

        let raw = matrix(3, 2, &[1, 0, 0, 2, 2, 2]);
        let dot = ExactIndex::build(&raw, &[0, 1, 2], Metric::Dot);
        let hits = dot.search(&[3.0, 0.0], 3, None);
        let got: Vec<(u32, f32)> = hits.iter().map(|n| (n.row, n.similarity)).collect();
        assert_eq!(got, [(2, 6.0), (0, 3.0), (1, 0.0)]);
    }

    #[test]
    fn empty_cases_return_nothing() {
        let vectors = matrix(3, 2, &[1, 0, 0, 1, 1, 1]);
        let index = ExactIndex::build(&vectors, &[0, 1, 2], Metric::Dot);
        assert!(index.search(&[1.0, 0.0], 0, None).is_empty());
        assert!(index.search(&[0.0, 0.0], 3, None).is_empty());
        assert!(index.search(&[f32::NAN, 0.0], 3, None).is_empty());
        assert!(index.search(&[1.0, 0.0], 3, Some(&|_| false)).is_empty());

        let empty = ExactIndex::build(&vectors, &[], Metric::Cosine);
        assert!(empty.is_empty());
        assert!(empty.search(&[1.0, 0.0], 10, None).is_empty());
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn rejects_rows_outside_the_matrix() {
        ExactIndex::build(&matrix(2, 1, &[1, 1]), &[0, 2], Metric::Dot);
    }

    #[test]
    #[should_panic(expected = "wrong dimension")]
    fn rejects_queries_of_the_wrong_dimension() {
        ExactIndex::build(&matrix(2, 1, &[1, 1]), &[0, 1], Metric::Dot).search(
            &[1.0, 0.0],
            1,
            None,
        );
    }
}
