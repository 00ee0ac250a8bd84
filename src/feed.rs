//! The feed: a loaded model and the pipeline that turns a user id into a ranked page.
//!
//! Stages, in order: candidate sources (`candidates`: personal retrieval, followed hashtags,
//! value-trending, fresh) merged without duplicates → filters (the viewer's seen, hidden and
//! reported posts and blocked authors; posts past the report threshold) → hydration (similarity
//! of the non-personal candidates to the viewer) → scoring (`scoring`) → ordering (`policy`) →
//! pagination. Everything that does not depend on the viewer (each post's value and freshness,
//! the source lists, the non-personal ranking) is computed once when the model loads, so a
//! request costs one similarity search plus a sort of a few hundred candidates.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::candidates::{
    self, IndexKind, IndexOrigin, Pools, PostFacts, Retriever, SourceLists, SourceQuotas,
    SourceWindows, Sourced, UserSignals,
};
use crate::index::HnswParams;
use crate::policy::{self, Scored};
use crate::scoring::{self, ScoringConfig, ScoringError};
use crate::snapshot::{self, MAX_ID_BYTES, Snapshot, SnapshotError, files};

/// Page sizes a request may ask for.
pub const LIMIT_RANGE: std::ops::RangeInclusive<usize> = 1..=100;
pub const DEFAULT_LIMIT: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("manifest.json: {0}")]
    Scoring(#[from] ScoringError),
    #[error("limit must be an integer from {min} to {max}, got {0}", min = LIMIT_RANGE.start(), max = LIMIT_RANGE.end())]
    InvalidLimit(String),
    #[error("cursor is not one this service issued for this user")]
    InvalidCursor,
    #[error("user_id must be 1 to {MAX_ID_BYTES} bytes, got {0} bytes")]
    InvalidUserId(usize),
    #[error("weights: {0}")]
    InvalidWeights(ScoringError),
}

/// How a model is indexed and how deep its feeds go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedOptions {
    pub index: IndexKind,
    /// HNSW links per node ("M").
    pub hnsw_max_connections: usize,
    pub hnsw_ef_construction: usize,
    pub hnsw_ef_search: usize,
    /// Posts retrieved by similarity for each personal feed request.
    pub candidates: usize,
    /// Candidates from the hashtags the user follows, per request.
    pub hashtag_candidates: usize,
    /// Candidates from the value-trending list, per request.
    pub trending_candidates: usize,
    /// Candidates from the fresh (recent, few views) list, per request: the exploration share.
    pub fresh_candidates: usize,
    /// Trending ranks posts at most this old, by value per view.
    pub trending_window_hours: u32,
    /// Fresh takes posts at most this old ...
    pub fresh_window_hours: u32,
    /// ... with fewer views than this.
    pub fresh_max_views: u64,
    /// How many posts a feed can page through before `next_cursor` is null.
    pub max_depth: usize,
}

impl Default for FeedOptions {
    fn default() -> Self {
        let hnsw = HnswParams::default();
        FeedOptions {
            index: IndexKind::Hnsw,
            hnsw_max_connections: hnsw.max_connections,
            hnsw_ef_construction: hnsw.ef_construction,
            hnsw_ef_search: hnsw.ef_search,
            candidates: 200,
            // Beside 200 personal candidates: enough from each other source to fill a page
            // on its own, few enough that similarity still decides most of the feed.
            hashtag_candidates: 60,
            trending_candidates: 40,
            fresh_candidates: 20,
            trending_window_hours: 72,
            fresh_window_hours: 24,
            fresh_max_views: 200,
            max_depth: 500,
        }
    }
}

impl FeedOptions {
    /// Per-request quotas of the candidate sources.
    pub fn source_quotas(&self) -> SourceQuotas {
        SourceQuotas {
            personal: self.candidates,
            hashtag: self.hashtag_candidates,
            trending: self.trending_candidates,
            fresh: self.fresh_candidates,
        }
    }

    fn source_windows(&self, now: i64) -> SourceWindows {
        SourceWindows {
            now,
            trending_window_secs: i64::from(self.trending_window_hours) * 3600,
            fresh_window_secs: i64::from(self.fresh_window_hours) * 3600,
            fresh_max_views: self.fresh_max_views,
            // Deep enough for any page of any source; bounded so the lists stay small.
            per_hashtag: self.max_depth,
            list_len: self.max_depth,
        }
    }

    pub fn hnsw_params(&self) -> HnswParams {
        HnswParams {
            max_connections: self.hnsw_max_connections,
            ef_construction: self.hnsw_ef_construction,
            ef_search: self.hnsw_ef_search,
        }
    }
}

/// A snapshot made ready to serve: indexed, with per-post scores precomputed. Immutable; a
/// new snapshot makes a new `Model`.
pub struct Model {
    snapshot: Snapshot,
    options: FeedOptions,
    scoring: ScoringConfig,
    retriever: Retriever,
    user_rows: HashMap<String, u32>,
    /// Per post row: viewer-independent part of the blend (value and freshness terms).
    prior_score: Vec<f32>,
    /// Per post row: reported past the threshold, so shown to nobody.
    reported_out: Vec<bool>,
    /// The non-personal candidate sources, best first.
    source_lists: SourceLists,
    /// The non-personal feed: good recent organic posts, languages interleaved.
    popular: Vec<Scored>,
    /// Reference instant for freshness: the newest post in the snapshot.
    now: i64,
    build_time: Duration,
    index_origin: IndexOrigin,
}

/// One ranked post of a page. Borrows the post id from the model: no copies until JSON.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FeedItem<'m> {
    pub post_id: &'m str,
    pub score: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeedPage<'m> {
    pub model_version: &'m str,
    pub items: Vec<FeedItem<'m>>,
    /// Pass back as `cursor` for the next page; `None` at the end of the feed.
    pub next_cursor: Option<String>,
}

/// What a request may add to the model's defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestContext<'a> {
    /// The viewer's seen, hidden and reported posts and blocked authors.
    pub signals: Option<&'a UserSignals>,
    /// Scoring weights for this request only (an experiment): they re-weigh the personal
    /// feed's candidates. The candidate lists, the report filter and the non-personal feed are
    /// computed once per model with the model's weights and do not change.
    pub scoring: Option<&'a ScoringConfig>,
}

/// A feed request, as validated plain data.
#[derive(Debug, Clone, Copy)]
pub struct FeedRequest<'a> {
    pub user_id: &'a str,
    pub limit: usize,
    pub cursor: Option<&'a str>,
}

impl Model {
    /// Loads, validates and indexes the snapshot in `dir`.
    ///
    /// Under the HNSW index kind, a stored index in the directory (`posts.index`) is loaded
    /// instead of building the graph, if it was built from this snapshot with these options'
    /// `hnsw_max_connections` and `hnsw_ef_construction`; otherwise a warning says why not,
    /// and the index is built as without it.
    pub fn load(dir: &Path, options: FeedOptions) -> Result<Model, FeedError> {
        let started = Instant::now();
        let snapshot = snapshot::load(dir)?;
        tracing::info!(
            dir = %dir.display(),
            model_version = snapshot.model_version(),
            posts = snapshot.posts.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "snapshot validated"
        );
        Model::prepare(snapshot, options, Some(&dir.join(files::POSTS_INDEX)))
    }

    /// Indexes an already validated snapshot (always building the index).
    pub fn build(snapshot: Snapshot, options: FeedOptions) -> Result<Model, FeedError> {
        Model::prepare(snapshot, options, None)
    }

    /// Indexes the snapshot, loading the HNSW index from `stored_index` when it fits.
    fn prepare(
        snapshot: Snapshot,
        options: FeedOptions,
        stored_index: Option<&Path>,
    ) -> Result<Model, FeedError> {
        let started = Instant::now();
        let scoring = ScoringConfig::with_overrides(&snapshot.manifest.scoring)?;
        let pools = Pools::of(&snapshot.posts);
        let (retriever, index_origin) = index_posts(&snapshot, &pools, &options, stored_index);
        let now = snapshot.newest_post_time().unwrap_or(0);
        let value: Vec<f32> = snapshot
            .posts
            .iter()
            .map(|p| scoring::value_score(&p.stats, &scoring))
            .collect();
        let prior_score: Vec<f32> = snapshot
            .posts
            .iter()
            .zip(&value)
            .map(|(p, &value)| {
                let fresh = scoring::freshness(p.created_at, now, &scoring);
                scoring::blend(0.0, value, fresh, &scoring)
            })
            .collect();
        let reported_out: Vec<bool> = snapshot
            .posts
            .iter()
            .map(|p| scoring::reported_past_threshold(&p.stats, &scoring))
            .collect();
        let admitted: Vec<u32> = pools
            .organic
            .iter()
            .copied()
            .filter(|&row| !reported_out[row as usize])
            .collect();
        let facts: Vec<PostFacts<'_>> = admitted
            .iter()
            .map(|&row| {
                let post = &snapshot.posts[row as usize];
                PostFacts {
                    row,
                    hashtags: &post.hashtags,
                    created_at: post.created_at,
                    views: post.stats.views,
                    value: value[row as usize],
                    prior: prior_score[row as usize],
                }
            })
            .collect();
        let source_lists = SourceLists::build(&facts, &options.source_windows(now));
        drop(facts);
        let popular = popular_ranking(&snapshot, &admitted, &prior_score, options.max_depth);
        let user_rows = snapshot
            .users
            .iter()
            .enumerate()
            .map(|(row, u)| (u.id.clone(), row as u32))
            .collect();
        let build_time = started.elapsed();
        tracing::info!(
            model_version = snapshot.model_version(),
            index = ?options.index,
            index_origin = index_origin.name(),
            index_elapsed_ms = index_origin.elapsed().as_millis() as u64,
            organic_posts = retriever.organic_len(),
            ads = pools.ads.len(),
            elapsed_ms = build_time.as_millis() as u64,
            "model indexed"
        );
        Ok(Model {
            snapshot,
            options,
            scoring,
            retriever,
            user_rows,
            prior_score,
            reported_out,
            source_lists,
            popular,
            now,
            build_time,
            index_origin,
        })
    }

    pub fn model_version(&self) -> &str {
        self.snapshot.model_version()
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    pub fn options(&self) -> &FeedOptions {
        &self.options
    }

    pub fn scoring(&self) -> &ScoringConfig {
        &self.scoring
    }

    /// Time spent indexing and precomputing (after validation).
    pub fn build_time(&self) -> Duration {
        self.build_time
    }

    /// Whether the organic index was loaded from the stored index or built, and how long it
    /// took.
    pub fn index_origin(&self) -> &IndexOrigin {
        &self.index_origin
    }

    /// Organic retrieval (for instance, to store its HNSW index).
    pub fn retriever(&self) -> &Retriever {
        &self.retriever
    }

    /// The instant freshness is measured from.
    pub fn now(&self) -> i64 {
        self.now
    }

    /// Whether the snapshot knows this user (and so has an embedding for them).
    pub fn knows_user(&self, user_id: &str) -> bool {
        self.user_rows.contains_key(user_id)
    }

    /// The user's embedding, if the snapshot knows them.
    pub fn user_vector(&self, user_id: &str) -> Option<&[f32]> {
        let row = *self.user_rows.get(user_id)?;
        self.snapshot.user_vectors.row(row as usize).to_slice()
    }

    /// One page of `user_id`'s feed. Deterministic for a model: the same request gives the
    /// same page, and consecutive pages never repeat a post.
    pub fn feed(&self, request: &FeedRequest<'_>) -> Result<FeedPage<'_>, FeedError> {
        self.feed_with(request, RequestContext::default())
    }

    /// [`Model::feed`] with what the request adds: the viewer's signals (none of the posts
    /// they exclude is ranked) and scoring weights for this request. The cursor counts
    /// positions in the ranking, so neither should change while a viewer pages through one
    /// feed.
    pub fn feed_with(
        &self,
        request: &FeedRequest<'_>,
        context: RequestContext<'_>,
    ) -> Result<FeedPage<'_>, FeedError> {
        let signals = context.signals;
        let user_id = request.user_id;
        if user_id.is_empty() || user_id.len() > MAX_ID_BYTES {
            return Err(FeedError::InvalidUserId(user_id.len()));
        }
        if !LIMIT_RANGE.contains(&request.limit) {
            return Err(FeedError::InvalidLimit(request.limit.to_string()));
        }
        let offset = match request.cursor {
            Some(c) => cursor::decode(c, user_id).ok_or(FeedError::InvalidCursor)?,
            None => 0,
        };
        let end = (offset + request.limit).min(self.options.max_depth);
        // Rank one past the page to learn whether another page exists.
        let signals = signals.filter(|s| !s.is_empty());
        let ranked = match self.user_rows.get(user_id) {
            Some(&row) => self.personal_ranking(row, end + 1, signals, context.scoring),
            None => match signals {
                None => self.popular[..(end + 1).min(self.popular.len())].to_vec(),
                Some(signals) => self
                    .popular
                    .iter()
                    .filter(|s| {
                        signals
                            .drops(&self.snapshot.posts[s.row as usize])
                            .is_none()
                    })
                    .take(end + 1)
                    .copied()
                    .collect(),
            },
        };
        let page = ranked.get(offset..end.min(ranked.len())).unwrap_or(&[]);
        let items = page
            .iter()
            .map(|s| FeedItem {
                post_id: &self.snapshot.posts[s.row as usize].id,
                score: s.score,
            })
            .collect();
        let next_cursor = (ranked.len() > end && end < self.options.max_depth)
            .then(|| cursor::encode(end, user_id));
        Ok(FeedPage {
            model_version: self.model_version(),
            items,
            next_cursor,
        })
    }

    /// The merged candidates of a known user's feed, before scoring: personal retrieval,
    /// followed hashtags, trending and fresh, each within its quota, without the posts the
    /// filters drop. `None` for a user the snapshot does not know.
    pub fn candidates(&self, user_id: &str, signals: Option<&UserSignals>) -> Option<Vec<Sourced>> {
        let row = *self.user_rows.get(user_id)?;
        Some(self.gather(row, signals.filter(|s| !s.is_empty())))
    }

    fn gather(&self, user_row: u32, signals: Option<&UserSignals>) -> Vec<Sourced> {
        let query = self.user_query(user_row);
        let personal = self.retriever.similar(query, self.options.candidates);
        let follows = &self.snapshot.users[user_row as usize].follows;
        let quotas = self.options.source_quotas();
        let posts = &self.snapshot.posts;
        candidates::gather(&personal, follows, &self.source_lists, &quotas, |row| {
            self.reported_out[row as usize]
                || signals.is_some_and(|s| s.drops(&posts[row as usize]).is_some())
        })
    }

    fn user_query(&self, user_row: u32) -> &[f32] {
        self.snapshot
            .user_vectors
            .row(user_row as usize)
            .to_slice()
            .expect("snapshot matrices are contiguous")
    }

    /// The merged candidates blended with their value, best first; topped up from the
    /// non-personal ranking when a page goes deeper than the candidates.
    fn personal_ranking(
        &self,
        user_row: u32,
        depth: usize,
        signals: Option<&UserSignals>,
        weights: Option<&ScoringConfig>,
    ) -> Vec<Scored> {
        let query = self.user_query(user_row);
        let vectors = &self.snapshot.post_vectors;
        let scoring = weights.unwrap_or(&self.scoring);
        // The viewer-independent part: precomputed with the model's weights, recomputed from
        // the post's data under a request's own.
        let prior = |row: u32| match weights {
            None => self.prior_score[row as usize],
            Some(w) => {
                let post = &self.snapshot.posts[row as usize];
                let value = scoring::value_score(&post.stats, w);
                let fresh = scoring::freshness(post.created_at, self.now, w);
                scoring::blend(0.0, value, fresh, w)
            }
        };
        let mut ranked: Vec<Scored> = self
            .gather(user_row, signals)
            .iter()
            .map(|c| {
                // Hydration: the other sources' posts get their similarity to the viewer too,
                // so that every candidate competes on the same blend.
                let similarity = c.similarity.unwrap_or_else(|| {
                    let row = vectors.row(c.row as usize);
                    crate::index::dot(query, row.as_slice().expect("contiguous"))
                });
                Scored {
                    row: c.row,
                    score: scoring.similarity_weight * similarity + prior(c.row),
                }
            })
            .collect();
        policy::order_by_score(&mut ranked);
        if ranked.len() < depth {
            let mut taken: Vec<u32> = ranked.iter().map(|s| s.row).collect();
            taken.sort_unstable();
            let posts = &self.snapshot.posts;
            let top_up = self.popular.iter().filter(|s| {
                taken.binary_search(&s.row).is_err()
                    && signals.is_none_or(|sig| sig.drops(&posts[s.row as usize]).is_none())
            });
            let missing = depth - ranked.len();
            ranked.extend(top_up.take(missing));
        }
        ranked
    }
}

/// The organic index: loaded from `stored_index` if the options ask for HNSW and the file
/// exists and fits this snapshot and these options (a stale or damaged one is never used),
/// built otherwise.
fn index_posts(
    snapshot: &Snapshot,
    pools: &Pools,
    options: &FeedOptions,
    stored_index: Option<&Path>,
) -> (Retriever, IndexOrigin) {
    let mut rejected = None;
    if options.index != IndexKind::Exact
        && let Some(path) = stored_index
    {
        let started = Instant::now();
        match Retriever::load_hnsw(path, snapshot, pools, options.hnsw_params()) {
            Ok(retriever) => {
                let elapsed = started.elapsed();
                return (retriever, IndexOrigin::Loaded { elapsed });
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                tracing::warn!(
                    file = %path.display(),
                    reason = %e,
                    "stored index not used; building the index instead"
                );
                rejected = Some(e.to_string());
            }
        }
    }
    let started = Instant::now();
    let retriever = Retriever::build(
        &snapshot.post_vectors,
        pools,
        snapshot.metric(),
        options.index,
        options.hnsw_params(),
    );
    let elapsed = started.elapsed();
    (retriever, IndexOrigin::Built { elapsed, rejected })
}

/// The `organic` posts (the pool without those past the report threshold) by their
/// viewer-independent score, languages interleaved, `depth` long.
fn popular_ranking(
    snapshot: &Snapshot,
    organic: &[u32],
    prior: &[f32],
    depth: usize,
) -> Vec<Scored> {
    let mut ranked: Vec<Scored> = organic
        .iter()
        .map(|&row| Scored {
            row,
            score: prior[row as usize],
        })
        .collect();
    policy::order_by_score(&mut ranked);
    let mut lang_ids: HashMap<&str, usize> = HashMap::new();
    let post_lang: Vec<usize> = snapshot
        .posts
        .iter()
        .map(|p| {
            let next = lang_ids.len();
            *lang_ids.entry(p.lang.as_str()).or_insert(next)
        })
        .collect();
    let mut mixed = policy::interleave_by_language(&ranked, |row| post_lang[row as usize]);
    mixed.truncate(depth);
    mixed
}

/// Opaque page cursors: the offset, with a check so a cursor cannot be edited or replayed for
/// another user without being noticed. They survive a model reload (they hold no version).
mod cursor {
    pub fn encode(offset: usize, user_id: &str) -> String {
        let offset = offset as u32;
        format!("{offset:08x}{:08x}", check(offset, user_id))
    }

    pub fn decode(cursor: &str, user_id: &str) -> Option<usize> {
        if cursor.len() != 16 || !cursor.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let offset = u32::from_str_radix(&cursor[..8], 16).ok()?;
        let sum = u32::from_str_radix(&cursor[8..], 16).ok()?;
        (sum == check(offset, user_id)).then_some(offset as usize)
    }

    /// FNV-1a over the user id and offset: a guard against mistakes, not a secret.
    fn check(offset: u32, user_id: &str) -> u32 {
        let mut h: u32 = 0x811c_9dc5;
        for &b in user_id.as_bytes().iter().chain(offset.to_le_bytes().iter()) {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
        h
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn round_trips_and_rejects_tampering() {
            let c = encode(40, "u_1");
            assert_eq!(decode(&c, "u_1"), Some(40));
            assert_eq!(decode(&c, "u_2"), None, "a cursor is bound to its user");
            let edited = format!("{:08x}{}", 41, &c[8..]);
            assert_eq!(decode(&edited, "u_1"), None);
            assert_eq!(decode("zz", "u_1"), None);
            assert_eq!(decode("", "u_1"), None);
        }
    }
}
