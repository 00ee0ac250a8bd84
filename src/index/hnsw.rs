//! Approximate search on an hnsw_rs graph.
//!
//! hnsw_rs needs a distance that is never negative (it asserts so), and its `DistDot` also panics
//! when rounding lifts the dot product of two unit vectors a hair above 1. Both metrics therefore
//! use [`OffsetDot`], `max(0, B − a·b)`:
//!
//! - Cosine: rows are unit vectors, the query is normalised, and `B = 1`.
//! - Dot: rows are raw. With `R` the largest row norm and `B = R²`, Cauchy–Schwarz gives
//!   `|q·x| ≤ R²` for any query rescaled to norm `R`, so the distance is non-negative. Rescaling
//!   the query by a positive factor does not change the ranking by inner product, and the true
//!   `q·x` is recovered from the distance by undoing the scale.
//!
//! Under Dot this is a "distance" only in name (a row is not closest to itself unless it has the
//! largest norm), as in other inner-product HNSW engines; the graph still finds the top inner
//! products well on clustered data, which the tests check against exact search.

use hnsw_rs::prelude::{DataId, Distance, FilterT, Hnsw};
use ndarray::Array2;

use super::{Neighbor, NeighborIndex, RowFilter, best_first, dot, norm, query_norm};
use crate::snapshot::Metric;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HnswParams {
    /// Links per node per layer (hnsw_rs `max_nb_connection`, "M").
    pub max_connections: usize,
    /// Breadth of the beam while inserting: wider builds a better graph, more slowly.
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

impl HnswParams {
    /// Checks the bounds hnsw_rs imposes (it exits the process on some of them).
    pub fn validate(&self) -> Result<(), String> {
        // hnsw_rs reports M as a `u8`.
        if !(2..=255).contains(&self.max_connections) {
            return Err(format!(
                "max_connections must be in 2..=255, not {}",
                self.max_connections
            ));
        }
        if self.ef_construction == 0 {
            return Err("ef_construction must be positive".into());
        }
        if self.ef_search == 0 {
            return Err("ef_search must be positive".into());
        }
        Ok(())
    }
}

/// Layers in the graph: hnsw_rs's maximum; upper layers hold about `1/M` of the layer below, so
/// 16 is far more than any realistic pool needs.
const MAX_LAYER: usize = 16;

/// `max(0, offset − a·b)`: see the module documentation.
#[derive(Debug, Clone, Copy)]
struct OffsetDot {
    offset: f32,
}

impl Distance<f32> for OffsetDot {
    fn eval(&self, va: &[f32], vb: &[f32]) -> f32 {
        (self.offset - dot(va, vb)).max(0.0)
    }
}

/// Approximate nearest neighbours on a navigable small-world graph. Rows are stored once, inside
/// the graph.
pub struct HnswIndex {
    /// `None` when no rows were given (hnsw_rs has no notion of an empty graph worth keeping).
    graph: Option<Hnsw<'static, f32, OffsetDot>>,
    /// Graph data id `i` is row `rows[i]`.
    rows: Vec<u32>,
    dim: usize,
    metric: Metric,
    /// Norm the query is rescaled to before searching: 1 under cosine, the largest row norm `R`
    /// under dot.
    query_scale: f32,
    /// What the graph was built with; `ef_search` is used by searches.
    params: HnswParams,
}

impl HnswIndex {
    /// Builds the graph over the given `rows` of `vectors`, inserting in parallel.
    ///
    /// Panics if a row is out of range or `params` is invalid (see [`HnswParams::validate`]).
    pub fn build(
        vectors: &Array2<f32>,
        rows: &[u32],
        metric: Metric,
        params: HnswParams,
    ) -> HnswIndex {
        if let Err(e) = params.validate() {
            panic!("invalid HNSW parameters: {e}");
        }
        super::check_rows(rows, vectors.nrows());
        super::debug_check_normalised(vectors, rows, metric);
        let dim = vectors.ncols();
        let vectors = vectors.as_standard_layout();
        let slice = |r: u32| {
            vectors
                .row(r as usize)
                .to_slice()
                .expect("standard layout rows are contiguous")
        };
        let query_scale = match metric {
            Metric::Cosine => 1.0,
            Metric::Dot => {
                let max_norm = rows.iter().map(|&r| norm(slice(r))).fold(0.0f32, f32::max);
                // All-zero rows: every inner product is 0 and any positive scale ranks them.
                if max_norm > 0.0 { max_norm } else { 1.0 }
            }
        };
        let mut index = HnswIndex {
            graph: None,
            rows: rows.to_vec(),
            dim,
            metric,
            query_scale,
            params,
        };
        if rows.is_empty() {
            return index;
        }
        let distance = OffsetDot {
            offset: query_scale * query_scale,
        };
        let mut graph = Hnsw::new(
            params.max_connections,
            rows.len(),
            MAX_LAYER,
            params.ef_construction,
            distance,
        );
        // The graph copies each slice; data id = position in `rows`.
        let data: Vec<(&[f32], usize)> = rows
            .iter()
            .enumerate()
            .map(|(i, &r)| (slice(r), i))
            .collect();
        graph.parallel_insert_slice(&data);
        graph.set_searching_mode(true);
        index.graph = Some(graph);
        index
    }

    /// [`NeighborIndex::search`] with a beam of `max(ef, k)` instead of the configured
    /// `ef_search`: wider finds more of the true neighbours, at a cost roughly linear in `ef`.
    pub fn search_with_ef(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        filter: Option<RowFilter<'_>>,
    ) -> Vec<Neighbor> {
        assert_eq!(query.len(), self.dim, "query has the wrong dimension");
        let k = k.min(self.rows.len());
        let Some(graph) = &self.graph else {
            return Vec::new();
        };
        if k == 0 {
            return Vec::new();
        }
        let Some(query_norm) = query_norm(query) else {
            return Vec::new();
        };
        let factor = self.query_scale / query_norm;
        let scaled: Vec<f32> = query.iter().map(|x| x * factor).collect();
        // At ef = 1 hnsw_rs's filtered search can drop its only (excluded) entry point and return
        // nothing, so the beam is never narrower than 2.
        let ef = ef.max(k).max(2);

        let keep_id = |id: &DataId| filter.is_none_or(|keep| keep(self.rows[*id]));
        let found = match filter {
            None => graph.search_filter(&scaled, k, ef, None),
            Some(_) => {
                // hnsw_rs never ends a filtered search early: it costs about three times an
                // unfiltered one. Filters that exclude a few rows (ads) are served faster by a
                // slightly wider unfiltered search, filtered afterwards; only if that leaves
                // fewer than `k` hits does the filtered graph search run.
                let wide = k + k / 4 + 4;
                let mut found = graph.search_filter(&scaled, wide, ef.max(wide), None);
                found.retain(|n| keep_id(&n.d_id));
                if found.len() < k {
                    // The graph's entry point is a candidate even when excluded, and hnsw_rs
                    // filters only after cutting to `knbn`: ask for the whole beam, cut later.
                    found = graph.search_filter(&scaled, ef, ef, Some(&keep_id as &dyn FilterT));
                }
                found
            }
        };

        // The graph scored `factor · query`: B − distance is that inner product. Under cosine it
        // is already the similarity with the unit query; under dot, divide the scale back out.
        let offset = self.query_scale * self.query_scale;
        let unscale = match self.metric {
            Metric::Cosine => 1.0,
            Metric::Dot => 1.0 / factor,
        };
        let mut hits: Vec<Neighbor> = found
            .into_iter()
            // hnsw_rs may return its excluded entry point.
            .filter(|n| keep_id(&n.d_id))
            .map(|n| Neighbor {
                row: self.rows[n.d_id],
                similarity: (offset - n.distance) * unscale,
            })
            .collect();
        hits.sort_unstable_by(best_first);
        hits.truncate(k);
        hits
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn metric(&self) -> Metric {
        self.metric
    }

    pub fn ef_search(&self) -> usize {
        self.params.ef_search
    }

    /// The parameters the graph was built with.
    pub fn params(&self) -> HnswParams {
        self.params
    }

    /// Graph data id `i` is row `rows()[i]`.
    pub(super) fn rows(&self) -> &[u32] {
        &self.rows
    }

    /// Hands every node of the graph to `visit` as plain data, for [`super::FlatHnswIndex`] to
    /// copy, and returns the position of a node on the top layer to enter the graph by (`None`
    /// for an empty graph).
    pub(super) fn export_graph(&self, mut visit: impl FnMut(GraphNode<'_>)) -> Option<u32> {
        let graph = self.graph.as_ref()?;
        let points = graph.get_point_indexation();
        for point in points {
            let level = usize::from(point.get_point_id().0);
            let mut layers = point.get_neighborhood_id();
            layers.truncate(level + 1);
            let links = layers
                .iter()
                .map(|layer| layer.iter().map(|n| position(n.d_id)).collect())
                .collect();
            visit(GraphNode {
                position: position(point.get_origin_id()),
                vector: point.get_v(),
                links,
            });
        }
        // hnsw_rs keeps its entry point private; any node on the top layer serves, as the top
        // layer is itself a connected graph.
        let top = usize::from(points.get_max_level_observed());
        let entry = points.get_layer_iterator(top).next()?;
        Some(position(entry.get_origin_id()))
    }
}

/// Data id `i` is position `i` in the pool, which is below `u32::MAX` as rows are `u32`.
fn position(id: DataId) -> u32 {
    u32::try_from(id).expect("pool positions fit in u32")
}

/// One node of the graph: its position in the pool, its vector as stored in the graph, and its
/// neighbours' positions on each layer from 0 up to its own level.
pub(super) struct GraphNode<'a> {
    pub position: u32,
    pub vector: &'a [f32],
    pub links: Vec<Vec<u32>>,
}

impl std::fmt::Debug for HnswIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HnswIndex")
            .field("len", &self.rows.len())
            .field("dim", &self.dim)
            .field("metric", &self.metric)
            .field("ef_search", &self.params.ef_search)
            .finish_non_exhaustive()
    }
}

impl NeighborIndex for HnswIndex {
    fn len(&self) -> usize {
        self.rows.len()
    }

    fn search(&self, query: &[f32], k: usize, filter: Option<RowFilter<'_>>) -> Vec<Neighbor> {
        self.search_with_ef(query, k, self.params.ef_search, filter)
    }
}
