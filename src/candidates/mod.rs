//! Candidate sources: where the posts a feed ranks come from.
//!
//! Ads never enter organic retrieval: the organic index is built over organic and sponsored
//! posts only, so no filter can forget them. Ads have their own index ([`Retriever::ads`]),
//! searched for the ads nearest a user, which the policy may place in ad slots.
//!
//! The organic HNSW index can also be loaded from a file stored next to the snapshot
//! ([`Retriever::load_hnsw`]); it is used only if it was built over this snapshot's organic
//! pool with the same graph parameters.

mod filter;
mod offload;
mod sources;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ndarray::Array2;

use crate::index::{
    ExactIndex, FlatHnswIndex, HnswIndex, HnswParams, IndexBinding, Neighbor, NeighborIndex,
    StoredIndexError,
};
use crate::snapshot::{Metric, Post, PostKind, Snapshot};

pub use filter::{Dropped, UserSignals};
pub use offload::Offloaded;
pub use sources::{PostFacts, Source, SourceLists, SourceQuotas, SourceWindows, Sourced, gather};

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

/// How a model's organic index came to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexOrigin {
    /// Read from the index stored next to the snapshot.
    Loaded { elapsed: Duration },
    /// Built in memory. `rejected` says why a stored index that was present was not used
    /// (`None` when there was none, or when the index kind does not use one).
    Built {
        elapsed: Duration,
        rejected: Option<String>,
    },
}

impl IndexOrigin {
    /// `loaded` or `built`, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            IndexOrigin::Loaded { .. } => "loaded",
            IndexOrigin::Built { .. } => "built",
        }
    }

    /// Time spent loading or building the index.
    pub fn elapsed(&self) -> Duration {
        match self {
            IndexOrigin::Loaded { elapsed } | IndexOrigin::Built { elapsed, .. } => *elapsed,
        }
    }
}

enum PoolIndex {
    Hnsw(FlatHnswIndex),
    Exact(ExactIndex),
}

impl PoolIndex {
    fn get(&self) -> &dyn NeighborIndex {
        match self {
            PoolIndex::Hnsw(index) => index,
            PoolIndex::Exact(index) => index,
        }
    }
}

/// Ad pools up to this size are searched exactly (a scan of a few thousand rows costs tens of
/// microseconds, and no relevant ad is missed); larger ones get an HNSW graph of their own.
pub const EXACT_AD_POOL: usize = 5_000;

/// Retrieval by similarity: the organic index, and the ad index beside it.
pub struct Retriever {
    organic: PoolIndex,
    /// Shared with the searches started on the pool ([`Retriever::start_ads`]).
    ads: Arc<PoolIndex>,
    /// Time spent building the ad index (never stored; see `ad_index`).
    ads_build_time: Duration,
}

impl Retriever {
    pub fn build(
        vectors: &Array2<f32>,
        pools: &Pools,
        metric: Metric,
        kind: IndexKind,
        params: HnswParams,
    ) -> Retriever {
        let organic = match kind {
            IndexKind::Hnsw => PoolIndex::Hnsw(FlatHnswIndex::build(
                vectors,
                &pools.organic,
                metric,
                params,
            )),
            IndexKind::HnswRs => PoolIndex::Hnsw(FlatHnswIndex::from_hnsw(&HnswIndex::build(
                vectors,
                &pools.organic,
                metric,
                params,
            ))),
            IndexKind::Exact => {
                PoolIndex::Exact(ExactIndex::build(vectors, &pools.organic, metric))
            }
        };
        let started = std::time::Instant::now();
        let ads = ad_index(vectors, pools, metric, kind, params);
        Retriever {
            organic,
            ads: Arc::new(ads),
            ads_build_time: started.elapsed(),
        }
    }

    /// Loads the organic HNSW index stored at `path` (see `index::store`), if it was built
    /// over this snapshot's `posts.npy` and organic pool, with its metric and dimension, and
    /// with `params`' `max_connections` and `ef_construction`. Searches use `params.ef_search`.
    pub fn load_hnsw(
        path: &Path,
        snapshot: &Snapshot,
        pools: &Pools,
        params: HnswParams,
    ) -> Result<Retriever, StoredIndexError> {
        let binding = IndexBinding {
            posts_sha256: snapshot.posts_sha256().unwrap_or_default(),
            vectors: &snapshot.post_vectors,
            rows: &pools.organic,
            metric: snapshot.metric(),
            params,
        };
        let organic = PoolIndex::Hnsw(FlatHnswIndex::read_from(path, &binding)?);
        let started = std::time::Instant::now();
        let ads = ad_index(
            &snapshot.post_vectors,
            pools,
            snapshot.metric(),
            IndexKind::Hnsw,
            params,
        );
        Ok(Retriever {
            organic,
            ads: Arc::new(ads),
            ads_build_time: started.elapsed(),
        })
    }

    /// The HNSW index, when organic retrieval uses one (to store it).
    pub fn hnsw(&self) -> Option<&FlatHnswIndex> {
        match &self.organic {
            PoolIndex::Hnsw(index) => Some(index),
            PoolIndex::Exact(_) => None,
        }
    }

    /// Number of posts organic retrieval can return.
    pub fn organic_len(&self) -> usize {
        self.organic.get().len()
    }

    /// Number of ads.
    pub fn ads_len(&self) -> usize {
        self.ads.get().len()
    }

    /// Time spent building the ad index.
    pub fn ads_build_time(&self) -> Duration {
        self.ads_build_time
    }

    /// The `k` organic posts nearest to `query`, best first.
    pub fn similar(&self, query: &[f32], k: usize) -> Vec<Candidate> {
        search(self.organic.get(), query, k)
    }

    /// The `k` ads nearest to `query`, best first.
    pub fn ads(&self, query: &[f32], k: usize) -> Vec<Candidate> {
        search(self.ads.get(), query, k)
    }

    /// [`Retriever::ads`], started on rayon's pool so that the caller can search the organic
    /// index meanwhile; see [`Offloaded`].
    pub fn start_ads(&self, query: &[f32], k: usize) -> Offloaded<Vec<Candidate>> {
        let ads = Arc::clone(&self.ads);
        let query = query.to_vec();
        Offloaded::start(move || search(ads.get(), &query, k))
    }
}

fn search(index: &dyn NeighborIndex, query: &[f32], k: usize) -> Vec<Candidate> {
    if k == 0 || index.is_empty() {
        return Vec::new();
    }
    index
        .search(query, k, None)
        .into_iter()
        .map(|Neighbor { row, similarity }| Candidate { row, similarity })
        .collect()
}

/// The ad index: exact up to [`EXACT_AD_POOL`] ads (or when organic retrieval is exact too),
/// an HNSW graph by feedrank's builder beyond.
fn ad_index(
    vectors: &Array2<f32>,
    pools: &Pools,
    metric: Metric,
    kind: IndexKind,
    params: HnswParams,
) -> PoolIndex {
    if kind == IndexKind::Exact || pools.ads.len() <= EXACT_AD_POOL {
        PoolIndex::Exact(ExactIndex::build(vectors, &pools.ads, metric))
    } else {
        PoolIndex::Hnsw(FlatHnswIndex::build(vectors, &pools.ads, metric, params))
    }
}
