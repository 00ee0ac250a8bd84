//! The feed: a loaded model and the pipeline that turns a user id into a ranked page.
//!
//! Stages, in order:
//!
//! 1. **Candidate sources** (`candidates`): personal retrieval, followed hashtags,
//!    value-trending and fresh posts, merged without duplicates within their quotas; for a
//!    user the model does not know, the non-personal ranking. A deep feed is topped up from
//!    the non-personal ranking.
//! 2. **Filters**: the viewer's seen, hidden and reported posts and blocked authors; posts
//!    past the report threshold.
//! 3. **Hydration**: similarity of every candidate to the viewer (cosine), and the
//!    viewer-independent terms of each post (value, freshness, clickbait), precomputed.
//! 4. **Scoring** (`scoring::blend`), with the model's weights or the request's.
//! 5. **Ads**: the ads nearest the viewer from the ad index, filtered like posts, judged by
//!    relevance (cosine).
//! 6. **Selector** (`policy::arrange`): the feed sequence under the low-ad, diversity and
//!    language rules, to one past the requested page.
//! 7. **Pagination**: the page is a cut of that sequence; the cursor is the offset.
//!
//! Everything that does not depend on the viewer (each post's terms, the source lists, the
//! non-personal ranking, dense author, language and hashtag ids) is computed once when the
//! model loads, so a request costs one similarity search over posts, one over ads, and work
//! linear in a few hundred candidates.

mod audience;
mod cursor;
mod explain;
mod published;
mod tables;
mod updates;
mod viewer;

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::candidates::{
    self, Candidate, Engaged, IndexKind, IndexOrigin, Offloaded, Placement, Pools, PostFacts,
    Retriever, Source, SourceInputs, SourceLists, SourceQuotas, SourceWindows, Sourced, UserIndex,
    UserNeighbor, UserOptions, UserSignals,
};
use crate::hashtags::{
    HashtagNeighbour, HashtagOptions, HashtagPick, HashtagQuery, Hashtags, PostCount,
};
use crate::index::HnswParams;
use crate::metrics::{FeedMetrics, Stage, StageClock};
use crate::policy::{
    self, AdCandidate, Arrangement, CandidateSet, Lang, OrganicCandidate, PolicyConfig,
    PolicyError, Scored, UserLanguages,
};
use crate::profiles::Profile;
use crate::scoring::{self, PostTerms, ScoringConfig, ScoringError};
use crate::snapshot::{
    self, MAX_ID_BYTES, NewPost, Post, PostKind, Snapshot, SnapshotError, Stats, files,
};

pub use audience::{Audience, AudienceOptions, OfferStatus};
pub use explain::{AdConsidered, Explanation, Penalties};
use tables::{NewRow, PostTables};
use updates::{PostFlags, PostUpdates};
use viewer::Viewer;

/// Page sizes a request may ask for.
pub const LIMIT_RANGE: std::ops::RangeInclusive<usize> = 1..=100;
pub const DEFAULT_LIMIT: usize = 20;

/// Hashtags a recommendation may ask for.
pub const HASHTAG_LIMIT_RANGE: std::ops::RangeInclusive<usize> = 1..=50;
pub const DEFAULT_HASHTAG_LIMIT: usize = 10;

/// Organic candidates beyond the depth arranged: room for the ones the selector's hard rules
/// (the sponsored cap, near-duplicates) pass over.
const CANDIDATE_MARGIN: usize = 20;

/// Posts of the non-personal ranking arranged first for a user the model does not know; the
/// rest, to `max_depth`, are reserves, added only for deeper pages.
const POPULAR_PRIMARY: usize = 120;

/// Ads fetched beyond the ad slots a sequence can hold, so an explanation shows the runners-up
/// and a filtered ad does not leave a slot empty.
const AD_MARGIN: usize = 5;

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
    #[error("limit must be an integer from {min} to {max}, got {0}", min = HASHTAG_LIMIT_RANGE.start(), max = HASHTAG_LIMIT_RANGE.end())]
    InvalidHashtagLimit(String),
    #[error(
        "lang must be a language code such as en or zh (2-3 letters, then optional -subtags), got {0:?}"
    )]
    InvalidLang(String),
    #[error("{0}")]
    InvalidOptions(String),
    #[error("user_id: no user {0:?} in the snapshot, onboarded or with events")]
    UnknownUser(String),
    #[error("post_id: no post {0:?}")]
    UnknownPost(String),
    /// The live index could not start (its background thread).
    #[error("index: {0}")]
    Index(#[from] crate::index::LiveError),
    /// The selector refused the candidates the pipeline built: a bug, not a bad request.
    #[error("policy: {0}")]
    Policy(#[from] PolicyError),
}

/// Scoring weights and policy knobs together: what `manifest.scoring` and a request's
/// `weights` override.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Weights {
    pub scoring: ScoringConfig,
    pub policy: PolicyConfig,
}

impl Weights {
    /// These weights with `overrides` applied key by key: policy knobs (`PolicyConfig::KEYS`)
    /// go to the policy, every other key to scoring. Unknown keys, wrong types and values out
    /// of range are errors naming the key.
    pub fn overridden(
        &self,
        overrides: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Weights, ScoringError> {
        let (policy_keys, scoring_keys): (serde_json::Map<_, _>, serde_json::Map<_, _>) = overrides
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .partition(|(k, _)| PolicyConfig::KEYS.contains(&k.as_str()));
        let scoring = self.scoring.overridden(&scoring_keys).map_err(|mut e| {
            if e.message.starts_with("unknown key") {
                e.message = format!(
                    "{}; policy knobs are {}",
                    e.message,
                    PolicyConfig::KEYS.join(", ")
                );
            }
            e
        })?;
        let policy = self.policy.overridden(&policy_keys).map_err(|e| match e {
            PolicyError::Config { field, message } => ScoringError {
                field: field.to_string(),
                message,
            },
            other => ScoringError {
                field: "?".into(),
                message: other.to_string(),
            },
        })?;
        Ok(Weights { scoring, policy })
    }
}

/// How a model is indexed and how deep its feeds go.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
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
    /// How hashtags are recommended (`[feed.hashtags]`).
    pub hashtags: HashtagOptions,
    /// The user index, the lookalike source and newcomers' neighbours (`[feed.users]`).
    pub users: UserOptions,
    /// A first audience for new posts of small creators (`[feed.audience]`).
    pub audience: AudienceOptions,
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
            hashtags: HashtagOptions::default(),
            users: UserOptions::default(),
            audience: AudienceOptions::default(),
        }
    }
}

impl FeedOptions {
    /// Per-request quotas of the candidate sources.
    pub fn source_quotas(&self) -> SourceQuotas {
        SourceQuotas {
            audience: self.audience.candidates,
            personal: self.candidates,
            lookalike: self.users.lookalike_candidates,
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

/// A snapshot made ready to serve: indexed, with per-post scores precomputed. Immutable but
/// for the engagement live events record (`Model::record_engagement`); a new snapshot makes a
/// new `Model`.
pub struct Model {
    snapshot: Snapshot,
    options: FeedOptions,
    weights: Weights,
    retriever: Retriever,
    /// The users' index (snapshot users, moved and onboarded ones) and their recent
    /// engagements.
    users: Arc<UserIndex>,
    /// New posts of small creators on offer to their nearest users.
    audience: Audience,
    /// Per post: dense ids, scoring terms, flags (`tables.rs`).
    tables: PostTables,
    /// Hashtag statistics and vectors, for recommendations and newcomers' interests.
    hashtags: Hashtags,
    /// The non-personal candidate sources, best first.
    source_lists: SourceLists,
    /// The non-personal feed: good recent organic posts, languages interleaved.
    popular: Vec<Scored>,
    /// Reference instant for freshness: the newest post in the snapshot.
    now: i64,
    build_time: Duration,
    index_origin: IndexOrigin,
    /// Post ids by hash: (hash of the id, row), sorted. 12 bytes a post, where a map of
    /// owned ids would cost several times that at a million posts.
    post_ids: Vec<(u64, u32)>,
    /// Engagement recorded since the snapshot (live events): the only mutable part.
    updates: PostUpdates,
    /// Known users' requests being arranged now: the ad search runs beside the organic one
    /// only while there are fewer than cores, as on a saturated machine the hand-over costs
    /// throughput and saves no latency.
    in_flight: AtomicUsize,
}

/// One item of a page. Borrows the post id from the model: no copies until JSON.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FeedItem<'m> {
    pub post_id: &'m str,
    /// `organic`, `sponsored` (label it as such) or `ad`.
    pub kind: PostKind,
    /// The blended score (`scoring`). The page is in the policy's order, so scores need not
    /// decrease along it.
    pub score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explain: Option<Explanation>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeedPage<'m> {
    pub model_version: &'m str,
    pub items: Vec<FeedItem<'m>>,
    /// Pass back as `cursor` for the next page; `None` at the end of the feed.
    pub next_cursor: Option<String>,
    /// With `explain`: every ad considered for the policy pages this page overlaps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ads_considered: Option<Vec<AdConsidered<'m>>>,
}

/// Hashtags recommended to one user.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HashtagPage<'m> {
    pub model_version: &'m str,
    /// The language whose community's activity counted and whose display forms are given;
    /// `None` when neither the request nor the user names one.
    pub lang: Option<String>,
    /// Affinity to the user's interests was blended in.
    pub personal: bool,
    pub hashtags: Vec<HashtagPick<'m>>,
}

/// Who a post would be offered to (`Model::post_audience`).
#[derive(Debug, Clone, PartialEq)]
pub struct PostAudience {
    /// Its author is a small creator (see `audience`).
    pub small_creator: bool,
    /// Where its offer stands; `None` if it was never offered.
    pub offer: Option<OfferStatus>,
    /// Its nearest users, closest first, with their similarity.
    pub users: Vec<(String, f32)>,
}

/// What a request may add to the model's defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestContext<'a> {
    /// The viewer's seen, hidden and reported posts, blocked authors and engaged languages.
    pub signals: Option<&'a UserSignals>,
    /// Weights and policy knobs for this request only (an experiment; see
    /// [`Model::request_weights`]). The candidate lists, the report filter and the
    /// non-personal ranking are computed once per model with the model's weights and do not
    /// change.
    pub weights: Option<&'a Weights>,
    /// Explain every item and the page's ads.
    pub explain: bool,
    /// What the user said when onboarding (languages, picked hashtags): it replaces the
    /// snapshot's lists, and for a user the snapshot does not know, the picked hashtags make
    /// the feed personal.
    pub profile: Option<&'a Profile>,
    /// The user's embedding as live events moved it (see `live`): replaces the snapshot's,
    /// and makes the feed personal for a user the snapshot does not know.
    pub user_vector: Option<&'a [f32]>,
    /// Where to record the time of each stage and the composition of the page served
    /// (`feedrank_feed_*`); with none, no clock is read.
    pub metrics: Option<&'a FeedMetrics>,
}

/// A feed request, as validated plain data.
#[derive(Debug, Clone, Copy)]
pub struct FeedRequest<'a> {
    pub user_id: &'a str,
    pub limit: usize,
    pub cursor: Option<&'a str>,
}

/// A candidate after hydration and scoring.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hydrated {
    pub row: u32,
    pub source: Source,
    /// Cosine similarity to the viewer; `None` in a non-personal feed.
    pub similarity: Option<f32>,
    pub terms: PostTerms,
    /// The blended score.
    pub blend: f32,
    /// In a non-personal feed, `1 − i / n` for the `i`-th post of the ranking (`n` its
    /// length): the order the selector keeps. 0 otherwise.
    pub rank: f32,
    /// Given to the selector as a reserve (`CandidateSet::push_reserve`): placed only where
    /// no other candidate could be.
    pub reserve: bool,
}

/// A user's feed sequence to some depth, with the candidates it was arranged from.
#[derive(Debug, Clone)]
pub struct ArrangedFeed {
    pub arrangement: Arrangement,
    /// Every candidate (organic, reserves if the sequence needed them, and ads).
    pub candidates: Vec<Hydrated>,
    /// Arranged for a viewer with interests (candidates compete on their blend), not from
    /// the non-personal ranking.
    pub personal: bool,
    /// The least score a post on offer (the audience source) competed with.
    pub explore_floor: f32,
}

impl ArrangedFeed {
    /// The candidate of post `row`. A scan: a page looks up at most 100 of a few hundred
    /// candidates, which costs less than sorting them for every request.
    pub fn candidate(&self, row: u32) -> Option<&Hydrated> {
        self.candidates.iter().find(|c| c.row == row)
    }
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
        Model::prepare(snapshot, options, Some(dir))
    }

    /// Indexes an already validated snapshot (always building the index).
    pub fn build(snapshot: Snapshot, options: FeedOptions) -> Result<Model, FeedError> {
        Model::prepare(snapshot, options, None)
    }

    /// Indexes the snapshot, loading the HNSW indexes stored in `dir` (`posts.index`,
    /// `users.index`) when they fit.
    fn prepare(
        snapshot: Snapshot,
        options: FeedOptions,
        dir: Option<&Path>,
    ) -> Result<Model, FeedError> {
        let started = Instant::now();
        options
            .hashtags
            .validate()
            .map_err(FeedError::InvalidOptions)?;
        let invalid = |section: &str, (field, problem): (&str, String)| {
            FeedError::InvalidOptions(format!("feed.{section}.{field}: {problem}"))
        };
        options.users.validate().map_err(|e| invalid("users", e))?;
        options
            .audience
            .validate()
            .map_err(|e| invalid("audience", e))?;
        let stored_index = dir.map(|d| d.join(files::POSTS_INDEX));
        let stored_index = stored_index.as_deref();
        let weights = Weights::default().overridden(&snapshot.manifest.scoring)?;
        let scoring = &weights.scoring;
        let pools = Pools::of(&snapshot.posts);
        let (retriever, index_origin) = index_posts(&snapshot, &pools, &options, stored_index)?;
        let now = snapshot.newest_post_time().unwrap_or(0);
        let terms: Vec<PostTerms> = snapshot
            .posts
            .iter()
            .map(|p| PostTerms::of(&p.stats, p.created_at, now, scoring))
            .collect();
        let prior_score: Vec<f32> = terms
            .iter()
            .map(|t| scoring::blend(0.0, t, scoring))
            .collect();
        let reported_out: Vec<bool> = snapshot
            .posts
            .iter()
            .map(|p| scoring::reported_past_threshold(&p.stats, scoring))
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
                    value: terms[row as usize].value,
                    prior: prior_score[row as usize],
                }
            })
            .collect();
        let source_lists = SourceLists::build(&facts, &options.source_windows(now));
        drop(facts);
        // Deep enough for the last page of any feed, with the selector's margin, plus posts
        // the viewers' own filters may drop.
        let popular_depth = 2 * (options.max_depth + 1 + CANDIDATE_MARGIN);
        let popular = popular_ranking(&snapshot, &admitted, &prior_score, popular_depth);
        let users = Arc::new(
            UserIndex::load(
                &snapshot,
                options.index,
                options.hnsw_params(),
                options.users,
                dir.map(|d| d.join(files::USERS_INDEX)).as_deref(),
            )
            .map_err(|e| FeedError::InvalidOptions(format!("user index: {e}")))?,
        );
        let audience = Audience::new(
            options.audience,
            snapshot
                .posts
                .iter()
                .map(|p| (p.author.as_str(), p.stats.views)),
        );
        let tables = PostTables::build(&snapshot, &terms, &reported_out);
        let posts = snapshot.posts.len();
        let mut post_ids: Vec<(u64, u32)> = snapshot
            .posts
            .iter()
            .enumerate()
            .map(|(row, p)| (id_hash(&p.id), row as u32))
            .collect();
        post_ids.sort_unstable();
        let hashtags = Hashtags::build(&snapshot, scoring, now, options.hashtags);
        drop(terms);
        drop(reported_out);
        let build_time = started.elapsed();
        tracing::info!(
            model_version = snapshot.model_version(),
            index = ?options.index,
            index_origin = index_origin.name(),
            index_elapsed_ms = index_origin.elapsed().as_millis() as u64,
            organic_posts = retriever.organic_len(),
            ads = retriever.ads_len(),
            ads_index_ms = retriever.ads_build_time().as_millis() as u64,
            users = snapshot.users.len(),
            users_index = users.origin().name(),
            users_index_ms = users.origin().elapsed().as_millis() as u64,
            hashtags = hashtags.len(),
            hashtags_recommendable = hashtags.eligible(),
            elapsed_ms = build_time.as_millis() as u64,
            "model indexed"
        );
        Ok(Model {
            snapshot,
            options,
            weights,
            retriever,
            users,
            audience,
            tables,
            hashtags,
            source_lists,
            popular,
            now,
            build_time,
            index_origin,
            post_ids,
            updates: PostUpdates::new(posts),
            in_flight: AtomicUsize::new(0),
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

    /// The model's weights: defaults, overridden by `manifest.scoring`.
    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    pub fn scoring(&self) -> &ScoringConfig {
        &self.weights.scoring
    }

    pub fn policy(&self) -> &PolicyConfig {
        &self.weights.policy
    }

    /// A request's weights: the model's, overridden by `key:value,...` pairs (scoring weights
    /// and policy knobs, as in `manifest.scoring`).
    pub fn request_weights(&self, text: &str) -> Result<Weights, FeedError> {
        scoring::parse_overrides(text)
            .and_then(|map| self.weights.overridden(&map))
            .map_err(FeedError::InvalidWeights)
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

    /// Retrieval (for instance, to store its HNSW index).
    pub fn retriever(&self) -> &Retriever {
        &self.retriever
    }

    /// The instant freshness is measured from.
    pub fn now(&self) -> i64 {
        self.now
    }

    /// Whether the snapshot knows this user (and so has an embedding for them).
    pub fn knows_user(&self, user_id: &str) -> bool {
        self.users.snapshot_row(user_id).is_some()
    }

    /// The snapshot's record of a user.
    /// The row of post `post_id`.
    pub fn post_row(&self, post_id: &str) -> Option<u32> {
        let hash = id_hash(post_id);
        let start = self.post_ids.partition_point(|&(h, _)| h < hash);
        self.post_ids[start..]
            .iter()
            .take_while(|&&(h, _)| h == hash)
            .map(|&(_, row)| row)
            .find(|&row| self.snapshot.posts[row as usize].id == post_id)
            .or_else(|| self.tables.published_row(post_id))
    }

    /// The embedding of post `row` (unit length under `cosine`).
    pub fn post_vector(&self, row: u32) -> &[f32] {
        self.tables.vector(&self.snapshot.post_vectors, row)
    }

    /// Post `row`'s record: the snapshot's, or one published since.
    pub fn post(&self, row: u32) -> &Post {
        self.tables.post(&self.snapshot.posts, row)
    }

    fn flags(&self, row: u32) -> &PostFlags {
        match self.updates.flags(row) {
            Some(flags) => flags,
            None => self.tables.published_flags(row),
        }
    }

    /// Post `row`'s stats now: the snapshot's plus the engagement recorded since.
    pub fn post_stats(&self, row: u32) -> Stats {
        self.updates
            .stats(row, self.flags(row))
            .unwrap_or(self.post(row).stats)
    }

    /// Records engagement on post `row` (counts to add to its stats): from the next request
    /// on, its value and clickbait terms use the new stats, its hashtags' mean value and
    /// reported share follow, and once its reports pass the threshold it is shown to nobody. Returns the new stats. The non-personal lists
    /// (trending, fresh, the newcomers' ranking) keep the snapshot's order until the next
    /// model; each of their posts is scored with the new stats.
    pub fn record_engagement(&self, row: u32, delta: &Stats) -> Stats {
        let post = &self.post(row);
        let scoring = &self.weights.scoring;
        let before = self.post_stats(row);
        let after = self
            .updates
            .add(row, self.flags(row), &post.stats, delta, scoring);
        // The post's tags: their mean value, and the share of their posts reported.
        let count = |stats: &Stats| post_count(post.kind, stats, scoring);
        self.hashtags
            .record_post_change(&post.hashtags, count(&before), count(&after));
        after
    }

    /// Adds posts published after the snapshot, as the next rows: from now on each is found by
    /// similarity (the organic index, or the ad index for an ad), offered by the fresh source
    /// while it has few views, its id is known to `post_row`, and its hashtags count it.
    /// Returns each post's row, or `None` for one whose id exists already (it changes
    /// nothing).
    pub fn publish(&self, posts: Vec<NewPost>) -> Vec<Option<u32>> {
        let scoring = &self.weights.scoring;
        let rows: Vec<NewRow> = posts
            .into_iter()
            .map(|NewPost { post, vector }| NewRow {
                terms: PostTerms::of(&post.stats, post.created_at, self.now, scoring),
                reported_out: scoring::reported_past_threshold(&post.stats, scoring),
                post,
                vector,
            })
            .collect();
        let rows = self.tables.publish(
            rows,
            |id| self.post_row(id).is_some(),
            |added| {
                let kinds: Vec<PostKind> = added.iter().map(|&r| self.post(r).kind).collect();
                let vectors: Vec<&[f32]> = added.iter().map(|&r| self.post_vector(r)).collect();
                // Validated already (dimension, finite values): an append cannot fail here.
                if let Err(e) = self.retriever.publish(added, &kinds, &vectors) {
                    tracing::error!(error = %e, "published posts not indexed");
                }
            },
        );
        // New posts of small creators are offered to their audience; finding it is a search
        // of the user index per post, so the batch's run on every core.
        let offered: Vec<u32> = rows
            .iter()
            .flatten()
            .copied()
            .filter(|&row| {
                let post = self.post(row);
                self.audience.published_at(post.created_at);
                post.kind == PostKind::Organic && self.audience.is_small_creator(&post.author)
            })
            .collect();
        // One post is searched here: handing it to the pool would cost more than the search.
        let radii: Vec<Option<f32>> = if offered.len() > 1 {
            use rayon::prelude::*;
            offered
                .par_iter()
                .map(|&row| self.audience_radius(row))
                .collect()
        } else {
            offered
                .iter()
                .map(|&row| self.audience_radius(row))
                .collect()
        };
        let offers: Vec<(u32, i64, f32)> = offered
            .iter()
            .zip(radii)
            .filter_map(|(&row, radius)| Some((row, self.post(row).created_at, radius?)))
            .collect();
        if !offers.is_empty() {
            self.audience.offer(&offers);
        }
        for &row in rows.iter().flatten() {
            let post = self.post(row);
            let count = post_count(post.kind, &post.stats, scoring);
            self.hashtags.record_published(
                &post.hashtags,
                &post.lang,
                post.kind,
                post.created_at,
                count,
            );
        }
        rows
    }

    /// The similarity a user needs to be in post `row`'s audience: that of its
    /// `audience_size`-th nearest user now (−∞ when there are fewer users: everyone is);
    /// `None` when there are no users at all.
    fn audience_radius(&self, row: u32) -> Option<f32> {
        let size = self.options.audience.audience_size;
        let nearest = self.users.nearest(self.post_vector(row), size, None);
        match nearest.last() {
            None => None,
            Some(_) if nearest.len() < size => Some(f32::NEG_INFINITY),
            Some(last) => Some(last.similarity),
        }
    }

    /// Records that `user_id` saved, shared or liked post `row` (`weight`: how much that
    /// says), for the lookalike source of the users near them. Ads are left out: they reach a
    /// feed only through its ad slots.
    pub fn record_user_engagement(&self, user_id: &str, row: u32, weight: f32) {
        if self.post(row).kind == PostKind::Ad {
            return;
        }
        self.users
            .record_engagement(user_id, Engaged { row, weight });
    }

    /// Records an impression of post `row` (it counts toward ending an offer).
    pub fn record_impression(&self, row: u32) {
        self.audience.record_impression(row);
    }

    /// Places users whose embedding moved (`(user_id, vector)`) in the user index, each only
    /// if it turned far enough from its last placement (`[feed.users] replace_degrees`).
    pub fn place_users(&self, moved: &[(&str, &[f32])]) -> usize {
        let items: Vec<Placement<'_>> = moved
            .iter()
            .map(|&(user_id, vector)| Placement {
                user_id,
                vector,
                start: self.user_vector(user_id),
            })
            .collect();
        self.users.place(&items)
    }

    /// Up to `limit` users nearest to `user_id` (the asking user left out), with their
    /// similarity: by the user's embedding as events moved it (`live_vector`), else the
    /// snapshot's, else where onboarding placed them.
    pub fn similar_users(
        &self,
        user_id: &str,
        live_vector: Option<&[f32]>,
        limit: usize,
    ) -> Result<Vec<(String, f32)>, FeedError> {
        if user_id.is_empty() || user_id.len() > MAX_ID_BYTES {
            return Err(FeedError::InvalidUserId(user_id.len()));
        }
        if !LIMIT_RANGE.contains(&limit) {
            return Err(FeedError::InvalidLimit(limit.to_string()));
        }
        let slot = self.users.slot(user_id);
        let placed = slot.and_then(|s| self.users.placed_vector(s));
        let query = live_vector
            .or_else(|| self.user_vector(user_id))
            .or(placed.as_deref())
            .ok_or_else(|| FeedError::UnknownUser(user_id.to_owned()))?;
        Ok(self.named(self.users.nearest(query, limit, slot)))
    }

    /// Who post `post_id` would be offered to: its `limit` nearest users now, whether its
    /// author is a small creator, and where its offer stands (`None`: never offered).
    pub fn post_audience(&self, post_id: &str, limit: usize) -> Result<PostAudience, FeedError> {
        if !LIMIT_RANGE.contains(&limit) {
            return Err(FeedError::InvalidLimit(limit.to_string()));
        }
        let row = self
            .post_row(post_id)
            .ok_or_else(|| FeedError::UnknownPost(post_id.to_owned()))?;
        let post = self.post(row);
        Ok(PostAudience {
            small_creator: self.audience.is_small_creator(&post.author),
            offer: self.audience.status(row, self.post_stats(row).views),
            users: self.named(self.users.nearest(self.post_vector(row), limit, None)),
        })
    }

    fn named(&self, neighbours: Vec<candidates::UserNeighbor>) -> Vec<(String, f32)> {
        neighbours
            .into_iter()
            .filter_map(|n| Some((self.users.id(n.slot)?, n.similarity)))
            .collect()
    }

    /// The user index (its counts, its graph to store).
    pub fn user_index(&self) -> &UserIndex {
        &self.users
    }

    /// The posts on offer to their audience.
    pub fn audience(&self) -> &Audience {
        &self.audience
    }

    /// Records that `user_id` onboarded (or changed their picks) with `after`, `before` being
    /// their previous profile: the hashtags' follower counts follow (the snapshot's follows
    /// of a snapshot user onboarding for the first time are replaced).
    pub fn record_onboarding(&self, user_id: &str, before: Option<&Profile>, after: &Profile) {
        let hashtags = &self.hashtags;
        match (before, self.snapshot_user(user_id)) {
            (Some(p), _) => hashtags.record_follows(&p.follows, &p.langs, -1, true),
            (None, Some(u)) => {
                hashtags.record_follows(&u.follows, &u.langs, -1, hashtags.is_recent(u.created_at))
            }
            (None, None) => {}
        }
        hashtags.record_follows(&after.follows, &after.langs, 1, true);
        // A newcomer is placed among the snapshot users who follow what they picked.
        if self.options.users.newcomer_neighbours
            && self.users.snapshot_row(user_id).is_none()
            && let Some(vector) =
                self.users
                    .newcomer_vector(&after.follows, &self.snapshot.user_vectors, None)
        {
            self.users.place(&[Placement {
                user_id,
                vector: &vector,
                start: None,
            }]);
        }
    }

    /// Posts published since the snapshot, and the heap bytes they hold (records, vectors
    /// and ids; the index holds another copy of each vector).
    pub fn published(&self) -> (usize, usize) {
        self.tables.published_count()
    }

    /// Whether post `row` was taken out by reports recorded since the snapshot.
    pub fn suppressed_by_reports(&self, row: u32) -> bool {
        self.flags(row).suppressed()
    }

    pub fn snapshot_user(&self, user_id: &str) -> Option<&snapshot::User> {
        let row = self.users.snapshot_row(user_id)?;
        Some(&self.snapshot.users[row as usize])
    }

    /// The user's embedding, if the snapshot knows them.
    pub fn user_vector(&self, user_id: &str) -> Option<&[f32]> {
        let row = self.users.snapshot_row(user_id)?;
        self.snapshot.user_vectors.row(row as usize).to_slice()
    }

    /// The model's hashtag statistics and recommender.
    pub fn hashtags(&self) -> &Hashtags {
        &self.hashtags
    }

    /// The viewer of a request: the snapshot's user and embedding if the snapshot knows
    /// `user_id`, with the profile's languages and follows if there is one; for a user known
    /// only by a profile, interests made from the hashtags they picked.
    /// The viewer of a request. `live_vector`, the user's embedding as live events moved it,
    /// replaces the snapshot's (or the picked hashtags') as the one interest.
    fn viewer<'a>(
        &'a self,
        user_id: &str,
        profile: Option<&'a Profile>,
        live_vector: Option<&'a [f32]>,
    ) -> Viewer<'a> {
        let row = self.users.snapshot_row(user_id);
        let snapshot_lists = row.map(|row| {
            let user = &self.snapshot.users[row as usize];
            (&user.follows[..], &user.langs[..])
        });
        let (follows, langs) = Viewer::lists(profile, snapshot_lists);
        let interests = match (live_vector, row) {
            (Some(v), _) => vec![Cow::Borrowed(v)],
            (None, Some(row)) => vec![Cow::Borrowed(self.user_query(row))],
            (None, None) => self
                .hashtags
                .interests(follows)
                .into_iter()
                .map(Cow::Owned)
                .collect(),
        };
        let mut viewer = Viewer::new(interests, follows, langs);
        // A snapshot user's slot is their row: no second lookup.
        viewer.slot = row.or_else(|| self.users.slot(user_id));
        viewer.newcomer = live_vector.is_none() && row.is_none();
        viewer
    }

    /// Up to `limit` hashtags to recommend to `user_id` (see `hashtags`): for a user with
    /// interests (a snapshot user, or one who picked hashtags), affinity is blended in; for a
    /// newcomer, what their nearest users follow (`hashtag_neighbours`); tags they follow are
    /// left out. `lang` chooses the language community whose activity counts
    /// and the display forms; by default the user's first language.
    pub fn recommend_hashtags(
        &self,
        user_id: &str,
        profile: Option<&Profile>,
        user_vector: Option<&[f32]>,
        lang: Option<&str>,
        limit: usize,
    ) -> Result<HashtagPage<'_>, FeedError> {
        if user_id.is_empty() || user_id.len() > MAX_ID_BYTES {
            return Err(FeedError::InvalidUserId(user_id.len()));
        }
        if !HASHTAG_LIMIT_RANGE.contains(&limit) {
            return Err(FeedError::InvalidHashtagLimit(limit.to_string()));
        }
        let lang = match lang {
            Some(code) if !snapshot::is_reader_lang(code) => {
                return Err(FeedError::InvalidLang(code.to_string()));
            }
            Some(code) => Some(code.to_ascii_lowercase()),
            None => None,
        };
        let viewer = self.viewer(user_id, profile, user_vector);
        let lang = lang.or_else(|| viewer.langs.first().cloned());
        let interests: Vec<&[f32]> = viewer.interests.iter().map(|i| &i[..]).collect();
        let neighbours = self.hashtag_neighbours(&viewer);
        let hashtags = self.hashtags.recommend(&HashtagQuery {
            lang: lang.as_deref(),
            interests: &interests,
            exclude: viewer.follows,
            neighbours: &neighbours,
            limit,
        });
        Ok(HashtagPage {
            model_version: self.model_version(),
            lang,
            personal: viewer.is_personal(),
            hashtags,
        })
    }

    /// The viewer's nearest snapshot users with the hashtags they follow, for the hashtag
    /// neighbour term: `[feed.users] neighbours` of them, while `newcomer_neighbours` is on.
    /// Users met since the snapshot are left out (the model does not hold what they follow).
    ///
    /// Only for a newcomer (known by a profile alone): on the hashtag-prefs data set the term
    /// lifts newcomers' hit@10 but lowers that of users with an embedding, whose own vector
    /// already says more than their neighbours do (see `HashtagOptions::neighbour_weight`).
    fn hashtag_neighbours(&self, viewer: &Viewer<'_>) -> Vec<HashtagNeighbour<'_>> {
        if !(self.options.users.newcomer_neighbours && viewer.newcomer) {
            return Vec::new();
        }
        self.neighbours_of(viewer, self.options.users.neighbours)
            .into_iter()
            .filter_map(|n| {
                let user = self.snapshot.users.get(n.slot as usize)?;
                Some(HashtagNeighbour {
                    similarity: n.similarity,
                    follows: &user.follows,
                })
            })
            .collect()
    }

    /// One page of `user_id`'s feed. Deterministic for a model: the same request gives the
    /// same page, and consecutive pages never repeat a post.
    pub fn feed(&self, request: &FeedRequest<'_>) -> Result<FeedPage<'_>, FeedError> {
        self.feed_with(request, RequestContext::default())
    }

    /// [`Model::feed`] with what the request adds: the viewer's signals (none of the posts
    /// they exclude is shown), weights for this request, and explanations. The cursor counts
    /// positions in the arranged sequence, so signals and weights should not change while a
    /// viewer pages through one feed.
    pub fn feed_with(
        &self,
        request: &FeedRequest<'_>,
        context: RequestContext<'_>,
    ) -> Result<FeedPage<'_>, FeedError> {
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
        let weights = context.weights.unwrap_or(&self.weights);
        // Arrange one past the page to learn whether another page exists (none does past
        // `max_depth`). With explanations, to the end of the last policy page this page
        // overlaps: what became of an ad on a policy page is known only once the whole page is
        // arranged. Never past `max_depth`, where nothing is served.
        let max_depth = self.options.max_depth;
        let mut depth = if end < max_depth { end + 1 } else { end };
        if context.explain {
            let page_size = weights.policy.page_size;
            depth = depth.max(
                end.div_ceil(page_size)
                    .saturating_mul(page_size)
                    .min(max_depth),
            );
        }
        let mut clock = StageClock::start(context.metrics);
        let arranged = self.arranged_timed(user_id, depth, context, &mut clock)?;
        let personal = arranged.personal;
        let sequence = &arranged.arrangement.items;
        let page = sequence
            .get(offset.min(sequence.len())..end.min(sequence.len()))
            .unwrap_or(&[]);
        let items = page
            .iter()
            .map(|placed| {
                let candidate = arranged
                    .candidate(placed.row)
                    .expect("placed posts come from the candidates");
                FeedItem {
                    post_id: &self.post(placed.row).id,
                    kind: placed.kind,
                    score: candidate.blend,
                    explain: context.explain.then(|| {
                        let clickbait =
                            weights.scoring.clickbait_weight * candidate.terms.clickbait;
                        // What the post competed with: its blend, or in a non-personal feed
                        // its rank score (see `organic_candidate`).
                        let competed = match (personal, candidate.source) {
                            (false, _) => candidate.rank,
                            (true, Source::Audience) => candidate.blend.max(arranged.explore_floor),
                            (true, _) => candidate.blend,
                        };
                        let penalties = Penalties::of(competed, clickbait, &placed.decisions);
                        Explanation {
                            source: candidate.source,
                            similarity: candidate.similarity,
                            value: candidate.terms.value,
                            freshness: candidate.terms.freshness,
                            penalties,
                            blend: candidate.blend,
                            placed_score: placed.score,
                            decisions: placed.decisions,
                        }
                    }),
                }
            })
            .collect();
        let ads_considered = context.explain.then(|| {
            let page_size = arranged.arrangement.page_size;
            let pages = if page.is_empty() {
                0..0
            } else {
                offset / page_size..(end - 1) / page_size + 1
            };
            pages
                .flat_map(|p| arranged.arrangement.ads_on_page(p))
                .map(|report| AdConsidered {
                    post_id: &self.post(report.row).id,
                    page: report.page,
                    relevance: report.relevance,
                    verdict: report.verdict,
                })
                .collect()
        });
        let next_cursor = (sequence.len() > end && end < self.options.max_depth)
            .then(|| cursor::encode(end, user_id));
        if let Some(metrics) = context.metrics {
            clock.lap(Stage::Page);
            clock.finish();
            let count = |kind| page.iter().filter(|placed| placed.kind == kind).count();
            metrics.record_page(
                count(PostKind::Organic),
                count(PostKind::Sponsored),
                count(PostKind::Ad),
            );
        }
        Ok(FeedPage {
            model_version: self.model_version(),
            items,
            next_cursor,
            ads_considered,
        })
    }

    /// The merged candidates of a known user's feed, before scoring: personal retrieval,
    /// followed hashtags, trending and fresh, each within its quota, without the posts the
    /// filters drop. `None` for a user the snapshot does not know.
    pub fn candidates(&self, user_id: &str, signals: Option<&UserSignals>) -> Option<Vec<Sourced>> {
        self.users.snapshot_row(user_id)?;
        let viewer = self.viewer(user_id, None, None);
        Some(self.gather(&viewer, active_filters(signals), None))
    }

    /// All sources merged. `neighbours`: the viewer's nearest users, when their search was
    /// started beside the posts' (else it runs here, if the lookalike source needs it).
    fn gather(
        &self,
        viewer: &Viewer<'_>,
        signals: Option<&UserSignals>,
        neighbours: Option<Offloaded<Vec<UserNeighbor>>>,
    ) -> Vec<Sourced> {
        let personal = self.similar_posts(viewer);
        // The retrieved posts' records are scattered over a table of every post: loading them
        // all at once overlaps the misses that the filters and hydration would take in turn.
        for c in &personal {
            self.tables.prefetch(c.row, false);
        }
        let quotas = self.options.source_quotas();
        let excluded = |row: u32| self.excluded(row, signals);
        let audience = self.offered_to(viewer, excluded);
        let lookalike = self.lookalike(viewer, quotas.lookalike, neighbours, excluded);
        candidates::gather_sources(
            SourceInputs {
                audience: &audience,
                personal: &personal,
                lookalike: &lookalike,
                follows: viewer.follows,
                lists: &self.source_lists,
                fresh_first: self.published_fresh(),
            },
            &quotas,
            excluded,
        )
    }

    /// The audience source: new posts of small creators on offer whose audience includes the
    /// viewer, closest first (see `audience`).
    fn offered_to(&self, viewer: &Viewer<'_>, excluded: impl Fn(u32) -> bool) -> Vec<u32> {
        if self.audience.offered() == 0 || !viewer.is_personal() {
            return Vec::new();
        }
        let similarity = self.similarity_to(viewer);
        self.audience
            .for_viewer(
                |row| similarity(row, None),
                |row| self.post_stats(row).views,
                excluded,
            )
            .into_iter()
            .map(|(row, _)| row)
            .collect()
    }

    /// The lookalike source: posts the viewer's nearest users recently saved, shared or liked
    /// (`candidates::lookalike_posts`). Skipped while no user has engaged with anything.
    fn lookalike(
        &self,
        viewer: &Viewer<'_>,
        quota: usize,
        started: Option<Offloaded<Vec<UserNeighbor>>>,
        excluded: impl Fn(u32) -> bool,
    ) -> Vec<u32> {
        if quota == 0 || !self.users.has_engagements() {
            return Vec::new();
        }
        let neighbours = match started {
            Some(search) => search.join(),
            None => self.neighbours_of(viewer, self.options.users.neighbours),
        };
        // Twice the quota: some are found by the personal search first.
        self.users
            .with_recent(&neighbours, |each| {
                // Ads are never recorded; checked again, as an ad among organic
                // candidates would break the ad rules.
                candidates::lookalike_posts(each, 2 * quota, |row| {
                    excluded(row) || self.post(row).kind == PostKind::Ad
                })
            })
            .into_iter()
            .map(|(row, _)| row)
            .collect()
    }

    /// The users nearest to the viewer: by their embedding (moved or the snapshot's), or for
    /// a newcomer by where onboarding placed them (else their interests' mean).
    fn neighbours_of(&self, viewer: &Viewer<'_>, k: usize) -> Vec<UserNeighbor> {
        match self.neighbour_query(viewer) {
            Some(query) => self.users.nearest(&query, k, viewer.slot),
            None => Vec::new(),
        }
    }

    /// What the viewer's nearest users are searched with (see `neighbours_of`).
    fn neighbour_query<'v>(&self, viewer: &'v Viewer<'_>) -> Option<Cow<'v, [f32]>> {
        let placed = match (viewer.newcomer, viewer.slot) {
            (true, Some(slot)) => self.users.placed_vector(slot),
            _ => None,
        };
        let query = match placed {
            Some(v) => Cow::Owned(v),
            None => Cow::Borrowed(&viewer.ad_query[..]),
        };
        (!query.is_empty()).then_some(query)
    }

    /// The lookalike source's user search, started on the pool (like the ad search) when
    /// it will be needed.
    fn start_neighbours(&self, viewer: &Viewer<'_>) -> Option<Offloaded<Vec<UserNeighbor>>> {
        if self.options.users.lookalike_candidates == 0 || !self.users.has_engagements() {
            return None;
        }
        let query = self.neighbour_query(viewer)?.into_owned();
        Some(
            self.users
                .start_nearest(query, self.options.users.neighbours, viewer.slot),
        )
    }

    /// Published posts for the fresh source, newest first: organic ones within its window
    /// with fewer views than its bar (their stats as events left them), among the newest
    /// `max_depth`. Ahead of the
    /// snapshot's fresh list, which they are newer than.
    fn published_fresh(&self) -> impl Iterator<Item = u32> + '_ {
        let window = i64::from(self.options.fresh_window_hours) * 3600;
        // As deep as the snapshot's fresh list: a request never scans every published post.
        self.tables
            .published_newest_first()
            .take(self.options.max_depth)
            .filter(move |(row, p)| {
                p.post.kind != PostKind::Ad
                    && self.now.saturating_sub(p.post.created_at) <= window
                    && self.post_stats(*row).views < self.options.fresh_max_views
            })
            .map(|(row, _)| row)
    }

    /// The personal source: the posts nearest the viewer's interest, or with several
    /// interests, an equal share nearest each, taken in turns without repeats (so every
    /// picked topic is in the feed, best posts first).
    fn similar_posts(&self, viewer: &Viewer<'_>) -> Vec<Candidate> {
        let k = self.options.candidates;
        match viewer.interests.as_slice() {
            [] => Vec::new(),
            [one] => self.retriever.similar(one, k),
            many => {
                let share = k.div_ceil(many.len());
                let lists: Vec<Vec<Candidate>> = many
                    .iter()
                    .map(|q| self.retriever.similar(q, share))
                    .collect();
                let mut seen = std::collections::HashSet::with_capacity(k);
                let mut merged = Vec::with_capacity(k);
                for i in 0..share {
                    for list in &lists {
                        if let Some(c) = list.get(i)
                            && merged.len() < k
                            && seen.insert(c.row)
                        {
                            merged.push(*c);
                        }
                    }
                }
                merged
            }
        }
    }

    /// Whether post `row` is shown to nobody, or not to this viewer.
    fn excluded(&self, row: u32, signals: Option<&UserSignals>) -> bool {
        self.tables.meta(row).reported_out
            || self.flags(row).suppressed()
            || signals.is_some_and(|s| s.drops(self.post(row)).is_some())
    }

    fn user_query(&self, user_row: u32) -> &[f32] {
        tables::row(&self.snapshot.user_vectors, user_row)
    }

    /// `user_id`'s feed sequence to `depth` positions (fewer if the candidates run out), with
    /// the candidates it was arranged from: the whole pipeline but the cut into a page.
    ///
    /// The candidates (organic and ads) do not depend on `depth`: there are always enough for
    /// the deepest page (`max_depth`). So arranging deeper only extends the sequence, which is
    /// what lets a cursor be an offset.
    ///
    /// With `context.metrics`, records the time of the stages to the selector (sources,
    /// hydration, ads, arrangement).
    pub fn arranged(
        &self,
        user_id: &str,
        depth: usize,
        context: RequestContext<'_>,
    ) -> Result<ArrangedFeed, FeedError> {
        let mut clock = StageClock::start(context.metrics);
        let arranged = self.arranged_timed(user_id, depth, context, &mut clock)?;
        clock.finish();
        Ok(arranged)
    }

    /// [`Model::arranged`], charging each stage's time to `clock`.
    fn arranged_timed(
        &self,
        user_id: &str,
        depth: usize,
        context: RequestContext<'_>,
        clock: &mut StageClock<'_>,
    ) -> Result<ArrangedFeed, FeedError> {
        let weights = context.weights.unwrap_or(&self.weights);
        let signals = context.signals;
        let filters = active_filters(signals);
        let viewer = self.viewer(user_id, context.profile, context.user_vector);
        let personal = viewer.is_personal();
        let user_langs: Vec<Lang> = viewer
            .langs
            .iter()
            .filter_map(|code| self.tables.lang_of(code))
            .collect();
        let engaged: Vec<Lang> = signals
            .map(|s| {
                s.engaged_langs
                    .iter()
                    .filter_map(|code| self.tables.lang_of(code))
                    .collect()
            })
            .unwrap_or_default();
        let user = UserLanguages {
            listed: &user_langs,
            engaged: &engaged,
        };
        let (mut candidates, ads) = match personal {
            // The two searches are independent: on an idle core the ads cost no latency. On a
            // busy pool the caller runs both in turn (rayon's work stealing), so nothing waits.
            true => {
                let in_flight = InFlight::enter(&self.in_flight);
                let query = &viewer.ad_query[..];
                let ads_wanted = self.ads_wanted(weights);
                // The ad search runs beside the organic one when a core is likely free.
                let offloaded = ads_wanted
                    .filter(|_| in_flight.count < rayon::current_num_threads())
                    .map(|k| self.retriever.start_ads(query, k));
                let free_core = in_flight.count < rayon::current_num_threads();
                let neighbours = if free_core {
                    self.start_neighbours(&viewer)
                } else {
                    None
                };
                let candidates =
                    self.personal_candidates(&viewer, filters, weights, neighbours, clock);
                let found = match (offloaded, ads_wanted) {
                    (Some(ads), _) => ads.join(),
                    (None, Some(k)) => self.retriever.ads(query, k),
                    (None, None) => Vec::new(),
                };
                drop(in_flight);
                let ads = self.hydrate_ads(found, &viewer, &user, filters, weights);
                clock.lap(Stage::Ads);
                (candidates, ads)
            }
            false => {
                let candidates = self.popular_candidates(0, POPULAR_PRIMARY, filters, weights);
                clock.lap(Stage::Sources);
                clock.skip(Stage::Hydrate);
                clock.skip(Stage::Ads);
                (candidates, Vec::new())
            }
        };
        let ad_candidates: Vec<AdCandidate> = ads
            .iter()
            .map(|a| AdCandidate {
                row: a.row,
                relevance: a.similarity.unwrap_or(0.0),
                score: a.blend,
            })
            .collect();
        let vectors = &self.snapshot.post_vectors;
        let arrange = |set: &CandidateSet| {
            policy::arrange(
                set,
                &ad_candidates,
                &user,
                |a, b| self.tables.cosine(vectors, a, b),
                &weights.policy,
                depth,
            )
        };

        // The candidates first; the reserves (the non-personal ranking's next posts) only if
        // the sequence ends before `depth`. Reserves never displace candidates, so the
        // sequence is the same whether or not they were added (see `CandidateSet`).
        let mut set = CandidateSet::with_capacity(candidates.len(), candidates.len() * 4);
        let explore_floor = self.explore_floor(&candidates);
        for c in &candidates {
            let candidate = self.organic_candidate(c, personal, explore_floor);
            set.push(candidate, self.tables.tags(c.row));
        }
        // Without reserves, the sequence cannot be longer than the candidates and ads; if that
        // is short of `depth`, arranging without them first would be wasted.
        let short = candidates.len() + ad_candidates.len() < depth;
        let mut arrangement = if short { None } else { Some(arrange(&set)?) };
        if arrangement.as_ref().is_none_or(|a| a.items.len() < depth) {
            let reserves = match personal {
                true => self.top_up(&viewer, &candidates, filters, weights),
                false => self.popular_candidates(
                    candidates.len(),
                    self.candidate_depth(),
                    filters,
                    weights,
                ),
            };
            if !reserves.is_empty() {
                for c in &reserves {
                    let candidate = self.organic_candidate(c, personal, explore_floor);
                    set.push_reserve(candidate, self.tables.tags(c.row));
                }
                arrangement = None;
                candidates.extend(
                    reserves
                        .into_iter()
                        .map(|c| Hydrated { reserve: true, ..c }),
                );
            }
        }
        let arrangement = match arrangement {
            Some(arrangement) => arrangement,
            None => arrange(&set)?,
        };
        candidates.extend(ads);
        clock.lap(Stage::Arrange);
        Ok(ArrangedFeed {
            arrangement,
            candidates,
            personal,
            explore_floor,
        })
    }

    /// A hydrated candidate as the selector takes it. A personal feed's candidates compete on
    /// their blend; the non-personal ranking interleaves languages, an order no score gives,
    /// so its candidates carry rank scores (`Hydrated::rank`) that keep it, and the rules
    /// still apply.
    ///
    /// A post on offer (the audience source) competes with at least `explore_floor`, the
    /// score of the viewer's `rank`-th best other candidate, and is marked exploring, which
    /// the selector caps per page.
    fn organic_candidate(
        &self,
        c: &Hydrated,
        personal: bool,
        explore_floor: f32,
    ) -> OrganicCandidate {
        let meta = self.tables.meta(c.row);
        let exploring = personal && c.source == Source::Audience;
        OrganicCandidate {
            row: c.row,
            score: match (personal, exploring) {
                (false, _) => c.rank,
                (true, false) => c.blend,
                (true, true) => c.blend.max(explore_floor),
            },
            author: meta.author,
            lang: meta.lang,
            sponsored: meta.sponsored,
            exploring,
        }
    }

    /// The score of the `rank`-th best candidate not on offer (see `organic_candidate`);
    /// −∞ when there is no post on offer among them.
    fn explore_floor(&self, candidates: &[Hydrated]) -> f32 {
        if !candidates.iter().any(|c| c.source == Source::Audience) {
            return f32::NEG_INFINITY;
        }
        let mut others: Vec<f32> = candidates
            .iter()
            .filter(|c| c.source != Source::Audience)
            .map(|c| c.blend)
            .collect();
        let rank = self.options.audience.rank.min(others.len());
        if rank == 0 {
            return f32::NEG_INFINITY;
        }
        let (_, nth, _) = others.select_nth_unstable_by(rank - 1, |a, b| b.total_cmp(a));
        *nth
    }

    /// A post's terms under `weights`: precomputed for the model's own, recomputed otherwise.
    /// Recomputed too for a post whose stats live events changed.
    fn terms(&self, row: u32, weights: &Weights) -> PostTerms {
        let post = &self.post(row);
        if let Some(stats) = self.updates.stats(row, self.flags(row)) {
            PostTerms::of(&stats, post.created_at, self.now, &weights.scoring)
        } else if std::ptr::eq(weights, &self.weights) {
            self.tables.meta(row).terms
        } else {
            PostTerms::of(&post.stats, post.created_at, self.now, &weights.scoring)
        }
    }

    fn hydrate(
        &self,
        row: u32,
        source: Source,
        similarity: Option<f32>,
        weights: &Weights,
    ) -> Hydrated {
        let terms = self.terms(row, weights);
        Hydrated {
            row,
            source,
            similarity,
            terms,
            blend: scoring::blend(similarity.unwrap_or(0.0), &terms, &weights.scoring),
            rank: 0.0,
            reserve: false,
        }
    }

    /// Candidates enough for the deepest sequence a cursor can reach.
    fn candidate_depth(&self) -> usize {
        self.options.max_depth + 1 + CANDIDATE_MARGIN
    }

    /// A known user's organic candidates, hydrated and scored: the merged sources.
    fn personal_candidates(
        &self,
        viewer: &Viewer<'_>,
        filters: Option<&UserSignals>,
        weights: &Weights,
        neighbours: Option<Offloaded<Vec<UserNeighbor>>>,
        clock: &mut StageClock<'_>,
    ) -> Vec<Hydrated> {
        let similarity = self.similarity_to(viewer);
        let gathered = self.gather(viewer, filters, neighbours);
        clock.lap(Stage::Sources);
        for c in &gathered {
            self.tables.prefetch(c.row, true);
        }
        let hydrated = gathered
            .iter()
            .map(|c| {
                self.hydrate(
                    c.row,
                    c.source,
                    Some(similarity(c.row, c.similarity)),
                    weights,
                )
            })
            .collect();
        clock.lap(Stage::Hydrate);
        hydrated
    }

    /// Hydration: cosine similarity of post `row` to the viewer (to their closest interest),
    /// from the metric's similarity when the search already computed it (with one interest).
    /// Every candidate, whatever its source, gets one, so all compete on the same blend.
    fn similarity_to<'v>(
        &'v self,
        viewer: &'v Viewer<'_>,
    ) -> impl Fn(u32, Option<f32>) -> f32 + 'v {
        let vectors = &self.snapshot.post_vectors;
        let single = viewer.interests.len() == 1;
        move |row, known| {
            let post = self.tables.vector(vectors, row);
            viewer
                .interests
                .iter()
                .zip(&viewer.norms)
                .map(|(query, &norm)| {
                    let raw = match known {
                        Some(raw) if single => raw,
                        _ => crate::index::dot(query, post),
                    };
                    self.tables.to_cosine(raw, row, norm)
                })
                .fold(f32::NEG_INFINITY, f32::max)
        }
    }

    /// The reserves of a personal feed: the non-personal ranking's posts that are not
    /// candidates already, enough for the deepest sequence, hydrated like candidates.
    fn top_up(
        &self,
        viewer: &Viewer<'_>,
        candidates: &[Hydrated],
        filters: Option<&UserSignals>,
        weights: &Weights,
    ) -> Vec<Hydrated> {
        let wanted = self.candidate_depth().saturating_sub(candidates.len());
        let mut taken: Vec<u32> = candidates.iter().map(|c| c.row).collect();
        taken.sort_unstable();
        let similarity = self.similarity_to(viewer);
        self.popular
            .iter()
            .map(|s| s.row)
            .filter(|&row| taken.binary_search(&row).is_err() && !self.excluded(row, filters))
            .take(wanted)
            .map(|row| self.hydrate(row, Source::Popular, Some(similarity(row, None)), weights))
            .collect()
    }

    /// Posts `from..to` of the non-personal ranking, after the filters, with their rank
    /// scores.
    fn popular_candidates(
        &self,
        from: usize,
        to: usize,
        filters: Option<&UserSignals>,
        weights: &Weights,
    ) -> Vec<Hydrated> {
        let n = self.candidate_depth() as f32;
        self.popular
            .iter()
            .filter(|s| !self.excluded(s.row, filters))
            .enumerate()
            .skip(from)
            .take(to.saturating_sub(from))
            .map(|(i, s)| Hydrated {
                rank: 1.0 - i as f32 / n,
                ..self.hydrate(s.row, Source::Popular, None, weights)
            })
            .collect()
    }

    /// The ads nearest the user that the filters admit, enough for every ad slot of the
    /// deepest sequence and a few more; `similarity` is their relevance (cosine). An ad in a
    /// language the user neither lists nor engages with is not relevant, however close its
    /// embedding: they could not read it (and it would slip past the page's language cap).
    /// How many ads a known user's request fetches: enough for every ad slot to `max_depth`,
    /// and [`AD_MARGIN`] more for the filters to drop. `None` if the policy has no ad slot
    /// there.
    fn ads_wanted(&self, weights: &Weights) -> Option<usize> {
        let policy = &weights.policy;
        let depth = self.options.max_depth + 1;
        let slots = if depth > policy.first_ad_position {
            (depth - policy.first_ad_position - 1) / (policy.organic_per_ad + 1) + 1
        } else {
            0
        };
        (slots > 0).then_some(slots + AD_MARGIN)
    }

    /// The ads found for a user, without those the filters drop or in a language the user
    /// does not read, hydrated with their relevance (cosine similarity to the user).
    fn hydrate_ads(
        &self,
        found: Vec<Candidate>,
        viewer: &Viewer<'_>,
        user: &UserLanguages<'_>,
        filters: Option<&UserSignals>,
        weights: &Weights,
    ) -> Vec<Hydrated> {
        let similarity = self.similarity_to(viewer);
        found
            .into_iter()
            .filter(|c| {
                !self.excluded(c.row, filters) && !user.is_foreign(self.tables.meta(c.row).lang)
            })
            .map(|c| {
                // Relevance to the closest interest; the search's own similarity is to the
                // ad query, which is the interest itself only for a single one.
                let relevance = similarity(c.row, Some(c.similarity));
                self.hydrate(c.row, Source::Ads, Some(relevance), weights)
            })
            .collect()
    }
}

/// Counts a request in for as long as it lives.
struct InFlight<'a> {
    counter: &'a AtomicUsize,
    /// Requests in flight, this one included, when it entered.
    count: usize,
}

impl<'a> InFlight<'a> {
    fn enter(counter: &'a AtomicUsize) -> InFlight<'a> {
        let count = counter.fetch_add(1, Ordering::Relaxed) + 1;
        InFlight { counter, count }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The signals, if they filter anything.
fn active_filters(signals: Option<&UserSignals>) -> Option<&UserSignals> {
    signals.filter(|s| !s.filters_nothing())
}

/// The organic index: loaded from `stored_index` if the options ask for HNSW and the file
/// exists and fits this snapshot and these options (a stale or damaged one is never used),
/// built otherwise.
fn index_posts(
    snapshot: &Snapshot,
    pools: &Pools,
    options: &FeedOptions,
    stored_index: Option<&Path>,
) -> Result<(Retriever, IndexOrigin), FeedError> {
    let mut rejected = None;
    if options.index != IndexKind::Exact
        && let Some(path) = stored_index
    {
        let started = Instant::now();
        match Retriever::load_hnsw(path, snapshot, pools, options.hnsw_params()) {
            Ok(retriever) => {
                // The organic index's own time: the ad index is built either way.
                let elapsed = started.elapsed().saturating_sub(retriever.ads_build_time());
                return Ok((retriever, IndexOrigin::Loaded { elapsed }));
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
    )?;
    let elapsed = started.elapsed().saturating_sub(retriever.ads_build_time());
    Ok((retriever, IndexOrigin::Built { elapsed, rejected }))
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

/// How a post counts toward its hashtags' statistics.
fn post_count(kind: PostKind, stats: &Stats, scoring: &ScoringConfig) -> PostCount {
    let reported = scoring::reported_past_threshold(stats, scoring);
    PostCount {
        organic: kind == PostKind::Organic && !reported,
        reported,
        value: scoring::value_score(stats, scoring),
    }
}

/// A stable 64-bit hash of a post id (FNV-1a): the key of `Model::post_row`'s table.
fn id_hash(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
