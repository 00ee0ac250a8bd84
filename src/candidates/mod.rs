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
mod users;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ndarray::{Array2, ArrayView2};

use crate::index::{
    Base, ExactIndex, FlatHnswIndex, HnswIndex, HnswParams, IndexBinding, LiveConfig, LiveError,
    LiveIndex, Neighbor, NeighborIndex, SegmentSizes, StoredIndexError,
};
use crate::snapshot::{Metric, Post, PostKind, Snapshot, files};

pub use filter::{Dropped, UserSignals};
pub use offload::Offloaded;
pub use sources::{
    PostFacts, Source, SourceInputs, SourceLists, SourceQuotas, SourceWindows, Sourced, gather,
    gather_sources,
};
pub use users::{
    EXACT_USER_POOL, Engaged, Placement, UserIndex, UserIndexStats, UserNeighbor, UserOptions,
    followers_centroid, lookalike_posts,
};

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

/// Ad pools up to this size are searched exactly (a scan of a few thousand rows costs tens of
/// microseconds, and no relevant ad is missed); larger ones get an HNSW graph of their own.
pub const EXACT_AD_POOL: usize = 5_000;

/// Retrieval by similarity: the organic index, and the ad index beside it. Both are live
/// indexes: the snapshot's posts as built (or loaded), and posts published since
/// ([`Retriever::publish`]), found from the moment they are added.
pub struct Retriever {
    organic: LiveIndex,
    /// The snapshot's organic graph, when there is one (to store it).
    organic_graph: Option<Arc<FlatHnswIndex>>,
    /// Shared with the searches started on the pool ([`Retriever::start_ads`]).
    ads: Arc<LiveIndex>,
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
    ) -> Result<Retriever, LiveError> {
        let organic = match kind {
            IndexKind::Hnsw => Base::from(FlatHnswIndex::build(
                vectors,
                &pools.organic,
                metric,
                params,
            )),
            IndexKind::HnswRs => Base::from(FlatHnswIndex::from_hnsw(&HnswIndex::build(
                vectors,
                &pools.organic,
                metric,
                params,
            ))),
            IndexKind::Exact => Base::from(ExactIndex::build(vectors, &pools.organic, metric)),
        };
        Retriever::assemble(organic, vectors, pools, metric, kind, params)
    }

    /// The retriever over the organic index `organic`, with the ad index built beside it.
    fn assemble(
        organic: Base,
        vectors: &Array2<f32>,
        pools: &Pools,
        metric: Metric,
        kind: IndexKind,
        params: HnswParams,
    ) -> Result<Retriever, LiveError> {
        let started = std::time::Instant::now();
        let ads = ad_index(vectors, pools, metric, kind, params);
        let ads_build_time = started.elapsed();
        let config = LiveConfig {
            hnsw: params,
            ..LiveConfig::default()
        };
        let organic_graph = match &organic {
            Base::Graph(graph) => Some(Arc::clone(graph)),
            Base::Exact(_) => None,
        };
        Ok(Retriever {
            organic: LiveIndex::new(organic, config)?,
            organic_graph,
            ads: Arc::new(LiveIndex::new(ads, config)?),
            ads_build_time,
        })
    }

    /// Loads the organic HNSW index stored at `path` (see `index::store`), if it was built
    /// over this snapshot's `posts.npy` and organic pool, with its metric and dimension, and
    /// with `params`' `max_connections` and `ef_construction`. Searches use `params.ef_search`.
    pub fn load_hnsw(
        path: &Path,
        snapshot: &Snapshot,
        pools: &Pools,
        params: HnswParams,
    ) -> Result<Retriever, RetrieverError> {
        let binding = IndexBinding {
            source: files::POSTS_NPY,
            source_sha256: snapshot.posts_sha256().unwrap_or_default(),
            vectors: &snapshot.post_vectors,
            rows: &pools.organic,
            metric: snapshot.metric(),
            params,
        };
        let organic = Base::from(FlatHnswIndex::read_from(path, &binding)?);
        Ok(Retriever::assemble(
            organic,
            &snapshot.post_vectors,
            pools,
            snapshot.metric(),
            IndexKind::Hnsw,
            params,
        )?)
    }

    /// The HNSW index, when organic retrieval uses one (to store it).
    pub fn hnsw(&self) -> Option<&FlatHnswIndex> {
        self.organic_graph.as_deref()
    }

    /// Number of posts organic retrieval can return.
    pub fn organic_len(&self) -> usize {
        self.organic.len()
    }

    /// Number of ads.
    pub fn ads_len(&self) -> usize {
        self.ads.len()
    }

    /// Adds posts published after the snapshot, `rows[i]` with embedding `vectors[i]` (each
    /// validated already, and normalised under cosine), organic and sponsored ones to the
    /// organic index and ads to the ad index: the next search finds them. One append per
    /// index, so a batch copies the live indexes' open chunk once, not once a post.
    pub fn publish(
        &self,
        rows: &[u32],
        kinds: &[PostKind],
        vectors: &[&[f32]],
    ) -> Result<(), LiveError> {
        let dim = vectors.first().map_or(0, |v| v.len());
        for (is_ad, index) in [(false, &self.organic), (true, &*self.ads)] {
            let picked: Vec<usize> = (0..rows.len())
                .filter(|&i| (kinds[i] == PostKind::Ad) == is_ad)
                .collect();
            if picked.is_empty() {
                continue;
            }
            let ids: Vec<u32> = picked.iter().map(|&i| rows[i]).collect();
            let data: Vec<f32> = picked
                .iter()
                .flat_map(|&i| vectors[i].iter().copied())
                .collect();
            let matrix = ArrayView2::from_shape((ids.len(), dim), &data).map_err(|_| {
                LiveError::Dimension {
                    expected: dim,
                    found: data.len() / ids.len(),
                }
            })?;
            index.append(&ids, matrix)?;
        }
        Ok(())
    }

    /// Rows of the organic index in each segment (the snapshot's, sealed, delta).
    pub fn organic_segments(&self) -> SegmentSizes {
        self.organic.segment_sizes()
    }

    /// Rows of the ad index in each segment (the snapshot's, sealed, delta).
    pub fn ads_segments(&self) -> SegmentSizes {
        self.ads.segment_sizes()
    }

    /// Time spent building the ad index.
    pub fn ads_build_time(&self) -> Duration {
        self.ads_build_time
    }

    /// The `k` organic posts nearest to `query`, best first.
    pub fn similar(&self, query: &[f32], k: usize) -> Vec<Candidate> {
        search(&self.organic, query, k)
    }

    /// The `k` ads nearest to `query`, best first.
    pub fn ads(&self, query: &[f32], k: usize) -> Vec<Candidate> {
        search(&*self.ads, query, k)
    }

    /// [`Retriever::ads`], started on rayon's pool so that the caller can search the organic
    /// index meanwhile; see [`Offloaded`].
    pub fn start_ads(&self, query: &[f32], k: usize) -> Offloaded<Vec<Candidate>> {
        let ads = Arc::clone(&self.ads);
        let query = query.to_vec();
        Offloaded::start(move || search(&*ads, &query, k))
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
) -> Base {
    if kind == IndexKind::Exact || pools.ads.len() <= EXACT_AD_POOL {
        Base::from(ExactIndex::build(vectors, &pools.ads, metric))
    } else {
        Base::from(FlatHnswIndex::build(vectors, &pools.ads, metric, params))
    }
}

/// Why a retriever could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RetrieverError {
    #[error(transparent)]
    Stored(#[from] StoredIndexError),
    #[error("live index: {0}")]
    Live(#[from] LiveError),
}

impl RetrieverError {
    /// No stored index at the path: not an error worth a warning.
    pub fn is_not_found(&self) -> bool {
        matches!(self, RetrieverError::Stored(e) if e.is_not_found())
    }
}
