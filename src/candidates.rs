//! Candidate sources: where the posts a feed ranks come from.
//!
//! Ads never enter organic retrieval: the organic index is built over organic and sponsored
//! posts only, so no filter can forget them. Ads are kept apart in `Pools::ads`; no feed
//! serves them yet.

use ndarray::Array2;

use crate::index::{ExactIndex, FlatHnswIndex, HnswIndex, HnswParams, Neighbor, NeighborIndex};
use crate::snapshot::{Metric, Post, PostKind};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Row of the post in the snapshot.
    pub row: u32,
    /// Similarity to the user.
    pub similarity: f32,
}

/// Which search structure serves organic retrieval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexKind {
    /// HNSW graph built by feedrank's parallel builder straight into flat arrays and searched
    /// there.
    #[default]
    Hnsw,
    /// The same search over a graph built by hnsw_rs and copied into flat arrays: the
    /// reference builder, several times slower to build.
    #[serde(rename = "hnsw_rs")]
    HnswRs,
    /// Exact scan: no build time, linear search; fine below ~100,000 posts.
    Exact,
}

/// Rows of the snapshot's posts split by pool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pools {
    /// Organic and sponsored posts: what organic retrieval may return.
    pub organic: Vec<u32>,
    /// Paid placements.
    pub ads: Vec<u32>,
}

impl Pools {
    pub fn of(posts: &[Post]) -> Pools {
        let mut pools = Pools::default();
        for (row, post) in posts.iter().enumerate() {
            match post.kind {
                PostKind::Ad => pools.ads.push(row as u32),
                PostKind::Organic | PostKind::Sponsored => pools.organic.push(row as u32),
            }
        }
        pools
    }
}

/// Organic retrieval by similarity.
pub struct Retriever {
    organic: Box<dyn NeighborIndex>,
}

impl Retriever {
    pub fn build(
        vectors: &Array2<f32>,
        pools: &Pools,
        metric: Metric,
        kind: IndexKind,
        params: HnswParams,
    ) -> Retriever {
        let organic: Box<dyn NeighborIndex> = match kind {
            IndexKind::Hnsw => Box::new(FlatHnswIndex::build(
                vectors,
                &pools.organic,
                metric,
                params,
            )),
            IndexKind::HnswRs => Box::new(FlatHnswIndex::from_hnsw(&HnswIndex::build(
                vectors,
                &pools.organic,
                metric,
                params,
            ))),
            IndexKind::Exact => Box::new(ExactIndex::build(vectors, &pools.organic, metric)),
        };
        Retriever { organic }
    }

    /// Number of posts organic retrieval can return.
    pub fn organic_len(&self) -> usize {
        self.organic.len()
    }

    /// The `k` organic posts nearest to `query`, best first.
    pub fn similar(&self, query: &[f32], k: usize) -> Vec<Candidate> {
        self.organic
            .search(query, k, None)
            .into_iter()
            .map(|Neighbor { row, similarity }| Candidate { row, similarity })
            .collect()
    }
}
