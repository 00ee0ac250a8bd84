//! Exact search: a scan over a contiguous matrix.

use ndarray::Array2;

use super::{Neighbor, NeighborIndex, RowFilter};
use crate::snapshot::Metric;

pub struct ExactIndex {}

impl ExactIndex {
    /// Indexes the given `rows` of `vectors` (rows as in the matrix; results name them).
    pub fn build(vectors: &Array2<f32>, rows: &[u32], metric: Metric) -> ExactIndex {
        let _ = (vectors, rows, metric);
        todo!()
    }
}

impl NeighborIndex for ExactIndex {
    fn len(&self) -> usize {
        todo!()
    }

    fn search(&self, query: &[f32], k: usize, filter: Option<RowFilter<'_>>) -> Vec<Neighbor> {
        let _ = (query, k, filter);
        todo!()
    }
}
