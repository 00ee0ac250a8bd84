//! Nearest-neighbour search over embedding matrices.
//!
//! [`NeighborIndex`] is the one interface; [`ExactIndex`] (a vectorised scan, the reference and
//! the choice for small pools) and [`HnswIndex`] (hnsw_rs graph) implement it.

mod exact;
mod hnsw;

pub use exact::ExactIndex;
pub use hnsw::{HnswIndex, HnswParams};

/// A search hit: `row` is the row of the matrix the index was built from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbor {
    pub row: u32,
    /// Inner product with the (normalised, under cosine) query: higher is closer.
    pub similarity: f32,
}

/// Keeps only rows for which it returns `true`.
pub type RowFilter<'a> = &'a (dyn Fn(u32) -> bool + Sync);

pub trait NeighborIndex: Send + Sync {
    /// Number of indexed rows.
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Up to `k` rows most similar to `query`, best first, that pass `filter`.
    fn search(&self, query: &[f32], k: usize, filter: Option<RowFilter<'_>>) -> Vec<Neighbor>;
}
