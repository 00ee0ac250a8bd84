//! Approximate search on an hnsw_rs graph.

use ndarray::Array2;

use super::{Neighbor, NeighborIndex, RowFilter};
use crate::snapshot::Metric;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HnswParams {
    /// Links per node per layer (hnsw_rs `max_nb_connection`, "M").
    pub max_connections: usize,
    pub ef_construction: usize,
    /// Breadth of the search beam; the search uses `max(ef_search, k)`.
    pub ef_search: usize,
}

impl Default for HnswParams {
    fn default() -> Self {
        HnswParams {
            max_connections: 16,
            ef_construction: 200,
            ef_search: 64,
        }
    }
}

pub struct HnswIndex {}

impl HnswIndex {
    /// Builds the graph over the given `rows` of `vectors`, inserting in parallel.
    pub fn build(
        vectors: &Array2<f32>,
        rows: &[u32],
        metric: Metric,
        params: HnswParams,
    ) -> HnswIndex {
        let _ = (vectors, rows, metric, params);
        todo!()
    }
}

impl NeighborIndex for HnswIndex {
    fn len(&self) -> usize {
        todo!()
    }

    fn search(&self, query: &[f32], k: usize, filter: Option<RowFilter<'_>>) -> Vec<Neighbor> {
        let _ = (query, k, filter);
        todo!()
    }
}
