//! HTTP API (axum). The only module that knows about HTTP: handlers parse and validate
//! requests, call the feed layer, and turn results or errors into JSON.
//!
//! | route | answer |
//! |---|---|
//! | `GET /v1/users/{user_id}/feed?limit=20&cursor=...&weights=...&explain=true` | a page of ranked post ids |
//! | `GET /v1/users/{user_id}/hashtags?limit=10&lang=en` | hashtags to recommend, with reasons |
//! | `PUT /v1/users/{user_id}` | onboard or update a user: languages and picked hashtags |
//! | `GET /v1/users/{user_id}` | what the service knows of a user |
//! | `GET /v1/users/{user_id}/similar?limit=20` | the users nearest to a user |
//! | `POST /v1/events` | a batch of user events, logged durably, then applied |
//! | `POST /v1/posts` | publish posts (all or none), logged durably, then rankable |
//! | `GET /v1/posts/{post_id}` | a post as the service ranks it now |
//! | `GET /v1/posts/{post_id}/audience?limit=20` | who a post would be offered to |
//! | `GET /admin/snapshots` | the serving snapshot and the one before (bearer token) |
//! | `POST /admin/snapshots/reload` | load a snapshot of the models directory and swap it in |
//! | `POST /admin/snapshots/rollback` | back to the snapshot that served before |
//! | `POST`/`DELETE /admin/arms/candidate` | put a snapshot on trial for a share of users / end it |
//! | `POST /admin/arms/candidate/promote` | the candidate serves everyone |
//! | `GET /healthz` | 200 while the process runs |
//! | `GET /readyz` | 200 once a model serves, else 503 `not_ready` |
//! | `GET /metrics` | Prometheus text exposition (`api/metrics.rs`, `crate::metrics`) |

mod error;
mod metrics;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tower_http::trace::{DefaultMakeSpan, DefaultOnFailure, DefaultOnResponse, TraceLayer};
use tracing::Level;

pub use error::ApiError;

use crate::feed::{
    DEFAULT_HASHTAG_LIMIT, DEFAULT_LIMIT, FeedError, FeedRequest, Model, RequestContext,
};
use crate::lifecycle::{Lifecycle, LoadInfo, ReloadError, Served};
use crate::live::{Live, LiveError};
use crate::metrics::Metrics;
use crate::profiles::{Profile, ProfileInput, Profiles, Stored};

/// Largest `PUT /v1/users/{id}` body: 50 hashtags of 128 bytes fit with room to spare.
pub const PROFILE_BODY_LIMIT: usize = 16 * 1024;

/// Largest `POST /v1/events` body: a full batch of events with long ids fits.
pub const EVENTS_BODY_LIMIT: usize = 512 * 1024;

/// Largest `POST /v1/posts` body: a full batch of posts with 1,024-dimensional embeddings
/// written in full precision fits.
pub const POSTS_BODY_LIMIT: usize = 4 * 1024 * 1024;

/// Onboarded users held when no capacity is configured.
pub const DEFAULT_PROFILE_CAPACITY: usize = 1_000_000;

/// What serves, swapped as one: the model and its live state, so a request never pairs a
/// model with another model's live state, and the candidate arm if one is on trial.
pub struct Serving {
    pub model: Arc<Model>,
    /// Live events and their log, for this model (none: events are refused).
    pub live: Option<Arc<Live>>,
    pub candidate: Option<Arc<Candidate>>,
}

/// A second snapshot serving a share of users (an A/B arm). It ranks with its own snapshot's
/// embeddings and stats; the users' hides, reports and seen posts (kept by the main arm's live
/// state, by post id) apply to it too. Live stats, moved embeddings and published posts stay
/// with the main arm until the candidate is promoted.
pub struct Candidate {
    pub model: Arc<Model>,
    /// Share of users it serves, in (0, 1).
    pub share: f64,
    pub info: LoadInfo,
}

/// Which arm served a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Arm {
    Main,
    Candidate,
}

impl Serving {
    /// The arm serving `user_id`: the candidate for a stable share of users (a hash of the
    /// id below the share), the main arm for the rest.
    pub fn arm_for(&self, user_id: &str) -> (&Arc<Model>, Arm) {
        match &self.candidate {
            Some(c) if user_bucket(user_id) < c.share => (&c.model, Arm::Candidate),
            _ => (&self.model, Arm::Main),
        }
    }
}

/// A user's place in [0, 1): a fixed hash of the id (FNV-1a, then splitmix64's finaliser,
/// without which ids that differ in their last characters, `u_0001`, `u_0002`, ..., share
/// their top bits), so a user stays in one arm across requests, processes and restarts.
pub fn user_bucket(user_id: &str) -> f64 {
    let mut hash = user_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^= hash >> 31;
    // The top 53 bits: every value exactly representable.
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

/// A response body with the arm that produced it.
#[derive(Serialize)]
struct WithArm<T: Serialize> {
    #[serde(flatten)]
    body: T,
    arm: Arm,
}

/// What the handlers share: what serves (nothing until the first load finishes), the
/// onboarded users' profiles (which outlive any model), and for admin routes the lifecycle
/// and its token.
pub struct AppState {
    serving: ArcSwapOption<Serving>,
    profiles: Arc<Profiles>,
    request_timeout: Duration,
    admin: Option<Admin>,
    metrics: Arc<Metrics>,
}

/// What the admin routes need: the lifecycle (reloads, confined to its models directory)
/// and the SHA-256 of the bearer token they require.
struct Admin {
    lifecycle: Arc<Lifecycle>,
    token_sha256: [u8; 32],
}

impl AppState {
    pub fn new(request_timeout: Duration) -> Arc<AppState> {
        AppState::with_profile_capacity(request_timeout, DEFAULT_PROFILE_CAPACITY)
    }

    /// With room for `capacity` onboarded users.
    pub fn with_profile_capacity(request_timeout: Duration, capacity: usize) -> Arc<AppState> {
        Arc::new(AppState::build(request_timeout, capacity, None))
    }

    /// With admin routes: reloads through `lifecycle`, for requests bearing `token`. Without a
    /// token (or an empty one) the admin routes are disabled.
    pub fn with_admin(
        request_timeout: Duration,
        capacity: usize,
        lifecycle: Arc<Lifecycle>,
        token: Option<&str>,
    ) -> Arc<AppState> {
        let admin = token.filter(|t| !t.is_empty()).map(|token| Admin {
            lifecycle,
            token_sha256: Sha256::digest(token.as_bytes()).into(),
        });
        Arc::new(AppState::build(request_timeout, capacity, admin))
    }

    fn build(request_timeout: Duration, capacity: usize, admin: Option<Admin>) -> AppState {
        AppState {
            serving: ArcSwapOption::empty(),
            profiles: Arc::new(Profiles::new(capacity)),
            request_timeout,
            admin,
            metrics: Arc::new(Metrics::new()),
        }
    }

    /// The onboarded users' profiles: give them to `Live::open`, which logs and replays them.
    pub fn profiles(&self) -> &Arc<Profiles> {
        &self.profiles
    }

    /// Starts serving `model` without live state. Requests already running finish on the
    /// model they started with.
    pub fn serve_model(&self, model: Arc<Model>) {
        self.store(model, None);
    }

    /// Stores what serves, keeping the candidate arm on trial.
    fn store(&self, model: Arc<Model>, live: Option<Arc<Live>>) {
        self.serving.rcu(|current| {
            Some(Arc::new(Serving {
                model: Arc::clone(&model),
                live: live.clone(),
                candidate: current.as_ref().and_then(|s| s.candidate.clone()),
            }))
        });
    }

    /// Puts `candidate` on trial (or, with `None`, ends the trial).
    pub fn set_candidate(&self, candidate: Option<Candidate>) {
        let candidate = candidate.map(Arc::new);
        self.serving.rcu(|current| {
            current.as_ref().map(|s| {
                Arc::new(Serving {
                    model: Arc::clone(&s.model),
                    live: s.live.clone(),
                    candidate: candidate.clone(),
                })
            })
        });
    }

    /// Starts serving `live`'s model with live events (durable, replayed from its log).
    pub fn serve_live(&self, live: Arc<Live>) {
        self.store(Arc::clone(live.model()), Some(live));
    }

    /// What serves now: one consistent model and live state for a whole request.
    pub fn serving(&self) -> Option<Arc<Serving>> {
        self.serving.load_full()
    }

    pub fn model(&self) -> Option<Arc<Model>> {
        self.serving().map(|s| Arc::clone(&s.model))
    }

    pub fn live(&self) -> Option<Arc<Live>> {
        self.serving().and_then(|s| s.live.clone())
    }

    /// What `GET /metrics` renders.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Starts serving what a reload produced.
    pub fn install(&self, served: Served) {
        match served {
            Served::Live(live) => self.serve_live(live),
            Served::Model(model) => self.serve_model(model),
        }
    }
}

/// Runs a write on the live state that serves, on a blocking thread; if a reload retired
/// that state meanwhile, runs it again on its successor.
async fn on_live<T: Send + 'static>(
    state: &AppState,
    what: &'static str,
    write: impl Fn(&Live) -> Result<T, LiveError> + Send + Sync + 'static,
) -> Result<T, ApiError> {
    let write = Arc::new(write);
    let mut attempts = 0;
    loop {
        let live = state.live().ok_or(ApiError::LiveDisabled)?;
        let run = Arc::clone(&write);
        let result = tokio::task::spawn_blocking(move || run(&live))
            .await
            .map_err(|e| ApiError::Internal(format!("{what} stopped: {e}")))?;
        match result {
            Err(LiveError::Retired) if attempts < 10 => attempts += 1,
            other => return other.map_err(ApiError::Live),
        }
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    let timeout = state.request_timeout;
    Router::new()
        .route("/v1/users/{user_id}/feed", get(feed))
        .route("/v1/users/{user_id}/hashtags", get(hashtags))
        .route("/v1/users/{user_id}/similar", get(similar_users))
        .route(
            "/v1/users/{user_id}",
            get(get_user)
                .put(put_user)
                .layer(DefaultBodyLimit::max(PROFILE_BODY_LIMIT)),
        )
        .route(
            "/v1/events",
            post(post_events).layer(DefaultBodyLimit::max(EVENTS_BODY_LIMIT)),
        )
        .route(
            "/v1/posts",
            post(post_posts).layer(DefaultBodyLimit::max(POSTS_BODY_LIMIT)),
        )
        .route("/v1/posts/{post_id}", get(get_post))
        .route("/v1/posts/{post_id}/audience", get(post_audience))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::scrape))
        .layer(middleware::from_fn(move |req, next| {
            with_timeout(timeout, req, next)
        }))
        // Outside the request timeout: a reload takes as long as loading the snapshot.
        .route("/admin/snapshots", get(admin_snapshots))
        .route("/admin/snapshots/reload", post(admin_reload))
        .route("/admin/snapshots/rollback", post(admin_rollback))
        .route(
            "/admin/arms/candidate",
            post(admin_candidate).delete(admin_drop_candidate),
        )
        .route("/admin/arms/candidate/promote", post(admin_promote))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_response(DefaultOnResponse::new().level(Level::INFO))
                // The response line already carries the status; errors we cause are logged
                // where they are mapped (api/error.rs).
                .on_failure(DefaultOnFailure::new().level(Level::DEBUG)),
        )
        .layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            metrics::track,
        ))
        .with_state(state)
}

/// Serves `router(state)` on `listener` until `shutdown` resolves, then lets requests in
/// flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

#[derive(Debug, Deserialize)]
struct FeedQuery {
    // Strings, so a bad value becomes our own `invalid_limit` rather than a generic rejection.
    limit: Option<String>,
    cursor: Option<String>,
    /// Weights and policy knobs for this request, `key:value,...` (see
    /// `Model::request_weights`).
    weights: Option<String>,
    /// `true` adds an explanation to every item and the ads considered to the page.
    explain: Option<String>,
}

async fn feed(
    State(state): State<Arc<AppState>>,
    user_id: Result<Path<String>, PathRejection>,
    query: Result<Query<FeedQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (user_id, query) = path_and_query(user_id, query)?;
    let limit = parse_limit(
        query.limit.as_deref(),
        DEFAULT_LIMIT,
        FeedError::InvalidLimit,
    )?;
    let serving = state.serving().ok_or(ApiError::NotReady)?;
    let (model, arm) = serving.arm_for(&user_id);
    let request = FeedRequest {
        user_id: &user_id,
        limit,
        cursor: query.cursor.as_deref(),
    };
    let explain = match query.explain.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::InvalidQuery(format!(
                "explain: must be true or false, got {other:?}"
            )));
        }
    };
    let weights = match query.weights.as_deref() {
        None => None,
        Some(text) => Some(model.request_weights(text)?),
    };
    let profile = state.profiles.get(&user_id);
    // Seen posts leave only a fresh feed: a cursor's offset counts positions of the sequence
    // its first page was cut from.
    let viewed = serving
        .live
        .as_ref()
        .and_then(|live| live.viewed(&user_id, query.cursor.is_none()));
    let context = RequestContext {
        signals: viewed.as_ref().map(|v| &v.signals),
        weights: weights.as_ref(),
        explain,
        profile: profile.as_deref(),
        // Moved in the main arm's embedding space: of no use to another model's.
        user_vector: viewed
            .as_ref()
            .filter(|_| arm == Arm::Main)
            .and_then(|v| v.vector.as_deref()),
        metrics: Some(state.metrics.feed_of(arm == Arm::Candidate)),
    };
    let page = model.feed_with(&request, context)?;
    Ok(Json(WithArm { body: page, arm }).into_response())
}

#[derive(Debug, Deserialize)]
struct HashtagsQuery {
    limit: Option<String>,
    lang: Option<String>,
}

async fn hashtags(
    State(state): State<Arc<AppState>>,
    user_id: Result<Path<String>, PathRejection>,
    query: Result<Query<HashtagsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (user_id, query) = path_and_query(user_id, query)?;
    let limit = parse_limit(
        query.limit.as_deref(),
        DEFAULT_HASHTAG_LIMIT,
        FeedError::InvalidHashtagLimit,
    )?;
    let serving = state.serving().ok_or(ApiError::NotReady)?;
    let (model, arm) = serving.arm_for(&user_id);
    let profile = state.profiles.get(&user_id);
    // Only the embedding counts here (the main arm's): the user's signals are not built.
    let vector = serving
        .live
        .as_ref()
        .filter(|_| arm == Arm::Main)
        .and_then(|live| live.vector(&user_id));
    let page = model.recommend_hashtags(
        &user_id,
        profile.as_deref(),
        vector.as_deref(),
        query.lang.as_deref(),
        limit,
    )?;
    Ok(Json(WithArm { body: page, arm }).into_response())
}

/// The query of the routes that take only a `limit` (other keys are ignored, as the feed's
/// and hashtags' routes ignore theirs).
#[derive(Debug, Deserialize)]
struct LimitQuery {
    limit: Option<String>,
}

/// A user near a user or a post.
#[derive(Debug, Serialize)]
struct NearUser {
    user_id: String,
    /// Cosine to the user or post asked about (the inner product under the `dot` metric).
    similarity: f32,
}

fn near_users(users: Vec<(String, f32)>) -> Vec<NearUser> {
    users
        .into_iter()
        .map(|(user_id, similarity)| NearUser {
            user_id,
            similarity,
        })
        .collect()
}

#[derive(Debug, Serialize)]
struct SimilarUsers<'a> {
    model_version: &'a str,
    user_id: &'a str,
    /// Closest first; never the user asked about.
    users: Vec<NearUser>,
}

/// The users nearest to a user, by their embedding as events moved it, else the snapshot's,
/// else where onboarding placed them. Always the main arm: the user index, moved embeddings
/// and onboarded users' placements are its.
async fn similar_users(
    State(state): State<Arc<AppState>>,
    user_id: Result<Path<String>, PathRejection>,
    query: Result<Query<LimitQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (user_id, query) = path_and_query(user_id, query)?;
    let limit = parse_limit(
        query.limit.as_deref(),
        DEFAULT_LIMIT,
        FeedError::InvalidLimit,
    )?;
    let serving = state.serving().ok_or(ApiError::NotReady)?;
    let model = &serving.model;
    // The live state paired with this model: its moved embeddings are in this model's space.
    let vector = serving.live.as_ref().and_then(|live| live.vector(&user_id));
    let users = model.similar_users(&user_id, vector.as_deref(), limit)?;
    let body = SimilarUsers {
        model_version: model.model_version(),
        user_id: &user_id,
        users: near_users(users),
    };
    Ok(Json(body).into_response())
}

/// Where a post's offer to its first audience stands.
#[derive(Debug, Serialize)]
struct OfferView {
    /// Still offered.
    active: bool,
    /// Impression events on it, or its views if those are more.
    impressions: u64,
    /// The similarity a viewer needs to be in the audience; `null` when every user is (the
    /// index held fewer users than an audience when the post was published).
    radius: Option<f32>,
}

#[derive(Debug, Serialize)]
struct AudienceView<'a> {
    model_version: &'a str,
    post_id: &'a str,
    /// Its author is a small creator (their snapshot posts' views add up to few).
    small_creator: bool,
    /// `null` if the post was never offered (not published since the snapshot, not organic,
    /// not a small creator's, or gone from the table of offers).
    offer: Option<OfferView>,
    /// Its nearest users now, closest first.
    users: Vec<NearUser>,
}

/// Who a post would be offered to. The main arm: published posts and offers are its.
async fn post_audience(
    State(state): State<Arc<AppState>>,
    post_id: Result<Path<String>, PathRejection>,
    query: Result<Query<LimitQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (post_id, query) = path_and_query(post_id, query)?;
    let limit = parse_limit(
        query.limit.as_deref(),
        DEFAULT_LIMIT,
        FeedError::InvalidLimit,
    )?;
    let model = state.model().ok_or(ApiError::NotReady)?;
    let audience = model.post_audience(&post_id, limit)?;
    let body = AudienceView {
        model_version: model.model_version(),
        post_id: &post_id,
        small_creator: audience.small_creator,
        offer: audience.offer.map(|o| OfferView {
            active: o.active,
            impressions: o.impressions,
            radius: o.radius.is_finite().then_some(o.radius),
        }),
        users: near_users(audience.users),
    };
    Ok(Json(body).into_response())
}

/// A route's path parameter and query, or the error naming which of them is malformed.
fn path_and_query<Q>(
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Q>, QueryRejection>,
) -> Result<(String, Q), ApiError> {
    let Path(path) = path.map_err(|e| ApiError::InvalidPath(e.body_text()))?;
    let Query(query) = query.map_err(|e| ApiError::InvalidQuery(e.body_text()))?;
    Ok((path, query))
}

/// A `limit` query parameter: the default when absent; a value that is not a number is the
/// route's own error (the range is checked by the feed layer).
fn parse_limit(
    raw: Option<&str>,
    default: usize,
    invalid: fn(String) -> FeedError,
) -> Result<usize, FeedError> {
    match raw {
        None => Ok(default),
        Some(raw) => raw.parse().map_err(|_| invalid(format!("{raw:?}"))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsBody {
    events: Vec<serde_json::Value>,
}

async fn post_events(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let input: EventsBody = json_body(body, EVENTS_BODY_LIMIT, EVENTS_EXAMPLE)?;
    // Taken by the live state that handles them (no copy), left for its successor if a
    // reload retired it.
    let events = std::sync::Mutex::new(Some(input.events));
    let (model, outcome) = on_live(&state, "event ingestion", move |live| {
        let mut events = events.lock().unwrap_or_else(|e| e.into_inner());
        Ok((Arc::clone(live.model()), live.ingest_from(&mut events)?))
    })
    .await?;
    state
        .metrics
        .record_events(outcome.accepted, outcome.rejected.len());
    let body = Applied {
        model_version: model.model_version(),
        outcome,
    };
    Ok(Json(body).into_response())
}

/// A write's answer with the model whose live state took it.
#[derive(Serialize)]
struct Applied<'a, T: Serialize> {
    model_version: &'a str,
    #[serde(flatten)]
    outcome: T,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PostsBody {
    posts: Vec<serde_json::Value>,
}

#[derive(Debug, Serialize)]
struct Published<'a> {
    model_version: &'a str,
    /// Ids of the posts published, in the request's order.
    published: Vec<&'a str>,
}

async fn post_posts(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let input: PostsBody = json_body(body, POSTS_BODY_LIMIT, POSTS_EXAMPLE)?;
    let posts = std::sync::Mutex::new(Some(input.posts));
    let (model, rows) = on_live(&state, "publishing", move |live| {
        let mut posts = posts.lock().unwrap_or_else(|e| e.into_inner());
        Ok((Arc::clone(live.model()), live.publish_from(&mut posts)?))
    })
    .await?;
    state.metrics.record_published(rows.len());
    let body = Published {
        model_version: model.model_version(),
        published: rows
            .iter()
            .map(|&row| model.post(row).id.as_str())
            .collect(),
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// A post as the service ranks it now.
#[derive(Debug, Serialize)]
struct PostView<'a> {
    model_version: &'a str,
    #[serde(flatten)]
    post: &'a crate::snapshot::Post,
    /// Published after the snapshot (`POST /v1/posts`).
    published: bool,
    /// Taken out for everyone by reports.
    suppressed: bool,
}

async fn get_post(
    State(state): State<Arc<AppState>>,
    post_id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(post_id) = post_id.map_err(|e| ApiError::InvalidPath(e.body_text()))?;
    let model = state.model().ok_or(ApiError::NotReady)?;
    let row = model
        .post_row(&post_id)
        .ok_or_else(|| ApiError::UnknownPost(post_id.clone()))?;
    let mut post = model.post(row).clone();
    post.stats = model.post_stats(row);
    let view = PostView {
        model_version: model.model_version(),
        post: &post,
        published: row as usize >= model.snapshot().posts.len(),
        suppressed: model.suppressed_by_reports(row)
            || crate::scoring::reported_past_threshold(&post.stats, model.scoring()),
    };
    Ok(Json(view).into_response())
}

/// What the service knows of a user: `GET` answers it, `PUT` answers it after the update.
#[derive(Debug, Serialize)]
struct UserView {
    user_id: String,
    langs: Vec<String>,
    follows: Vec<String>,
    /// Onboarded through `PUT` (the profile's lists replace the snapshot's).
    onboarded: bool,
    /// The serving model has an embedding for this user; `null` before a model is loaded.
    in_model: Option<bool>,
    /// Followed hashtags the serving model has no organic posts under (kept: posts may come).
    #[serde(skip_serializing_if = "Option::is_none")]
    unknown_hashtags: Option<Vec<String>>,
    /// Counts of what live events recorded for the user, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    live: Option<crate::live::UserSummary>,
}

impl UserView {
    fn of(user_id: &str, profile: &Profile, model: Option<&Model>) -> UserView {
        UserView {
            user_id: user_id.to_string(),
            langs: profile.langs.clone(),
            follows: profile.follows.clone(),
            onboarded: true,
            in_model: model.map(|m| m.knows_user(user_id)),
            unknown_hashtags: model.map(|m| {
                profile
                    .follows
                    .iter()
                    .filter(|tag| m.hashtags().organic_posts(tag) == 0)
                    .cloned()
                    .collect()
            }),
            live: None,
        }
    }
}

fn validated_user_id(user_id: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(user_id) = user_id.map_err(|e| ApiError::InvalidPath(e.body_text()))?;
    if user_id.is_empty() || user_id.len() > crate::snapshot::MAX_ID_BYTES {
        return Err(FeedError::InvalidUserId(user_id.len()).into());
    }
    Ok(user_id)
}

async fn put_user(
    State(state): State<Arc<AppState>>,
    user_id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let user_id = validated_user_id(user_id)?;
    let input: ProfileInput = json_body(body, PROFILE_BODY_LIMIT, PROFILE_EXAMPLE)?;
    let profile = Profile::from_input(input)?;
    let model = state.model();
    let view = UserView::of(&user_id, &profile, model.as_deref());
    // With live events, the profile is logged durably before it is stored and answered.
    let stored = match state.live() {
        Some(_) => {
            let id = user_id.clone();
            on_live(&state, "profile store", move |live| {
                live.put_profile(&id, profile.clone())
            })
            .await
            .map_err(|e| match e {
                ApiError::Live(LiveError::Profile(e)) => ApiError::Profile(e),
                other => other,
            })?
        }
        None => state.profiles.put(&user_id, profile)?,
    };
    let status = match stored {
        Stored::Created => StatusCode::CREATED,
        Stored::Updated => StatusCode::OK,
    };
    tracing::info!(user_id, status = status.as_u16(), "user profile stored");
    Ok((status, Json(view)).into_response())
}

const PROFILE_EXAMPLE: &str = r#"{"langs": ["en"], "follows": ["cats"]}"#;
const POSTS_EXAMPLE: &str = r#"{"posts": [{"id": "p1", "author": "a1", "lang": "en", "hashtags": ["cats"], "kind": "organic", "created_at": 1737000000, "embedding": [0.1, 0.2]}]}"#;

const EVENTS_EXAMPLE: &str =
    r#"{"events": [{"user_id": "u1", "post_id": "p1", "type": "save", "ts": 1737000000}]}"#;

/// A JSON body of type `T`, or the error naming the path of the field at fault (and for a body
/// that is not even the right shape, an example of one).
fn json_body<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
    example: &str,
) -> Result<T, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(limit)
        } else {
            ApiError::InvalidBody(e.body_text())
        }
    })?;
    let mut deserializer = serde_json::Deserializer::from_slice(&body);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner();
        if path == "." || path.is_empty() {
            ApiError::InvalidBody(format!("body: {inner} (expected {example})"))
        } else {
            ApiError::InvalidBody(format!("{path}: {inner}"))
        }
    })
}

async fn get_user(
    State(state): State<Arc<AppState>>,
    user_id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let user_id = validated_user_id(user_id)?;
    let model = state.model();
    let live = state.live().and_then(|l| l.summary(&user_id));
    if let Some(profile) = state.profiles.get(&user_id) {
        let view = UserView {
            live,
            ..UserView::of(&user_id, &profile, model.as_deref())
        };
        return Ok(Json(view).into_response());
    }
    let model = model.ok_or(ApiError::NotReady)?;
    let view = match (model.snapshot_user(&user_id), live) {
        (Some(user), live) => UserView {
            user_id: user_id.clone(),
            langs: user.langs.clone(),
            follows: user.follows.clone(),
            onboarded: false,
            in_model: Some(true),
            unknown_hashtags: None,
            live,
        },
        (None, Some(live)) => UserView {
            user_id: user_id.clone(),
            langs: Vec::new(),
            follows: Vec::new(),
            onboarded: false,
            in_model: Some(false),
            unknown_hashtags: None,
            live: Some(live),
        },
        (None, None) => return Err(ApiError::UnknownUser(user_id)),
    };
    Ok(Json(view).into_response())
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    model_version: Option<String>,
}

/// The admin routes' state, if the request bears their token (compared as SHA-256 digests in
/// constant time, so the time taken says nothing about how much of a guess was right).
fn authorized<'a>(state: &'a AppState, headers: &HeaderMap) -> Result<&'a Admin, ApiError> {
    let admin = state.admin.as_ref().ok_or(ApiError::AdminDisabled)?;
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(ApiError::Unauthorized)?;
    let digest: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
    let differs = digest
        .iter()
        .zip(&admin.token_sha256)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if differs != 0 {
        return Err(ApiError::Unauthorized);
    }
    Ok(admin)
}

/// Counts a reload that was attempted: done, or failed loading or handing over (a refused
/// path or a reload already running attempted nothing).
pub fn record_reload<T>(state: &AppState, outcome: &Result<T, ReloadError>) {
    match outcome {
        Ok(_) => state.metrics.record_reload(true),
        Err(ReloadError::Load { .. } | ReloadError::Live(_)) => state.metrics.record_reload(false),
        Err(_) => {}
    }
}

/// The serving snapshot, the one before it, and the candidate arm on trial.
#[derive(Debug, Serialize)]
struct Snapshots {
    serving: Option<LoadInfo>,
    previous: Option<LoadInfo>,
    candidate: Option<CandidateView>,
}

#[derive(Debug, Serialize)]
struct CandidateView {
    #[serde(flatten)]
    info: LoadInfo,
    share: f64,
}

impl Snapshots {
    fn of(lifecycle: &Lifecycle, state: &AppState) -> Snapshots {
        let (serving, previous) = lifecycle.status();
        let candidate = state
            .serving()
            .and_then(|s| s.candidate.clone())
            .map(|c| CandidateView {
                info: c.info.clone(),
                share: c.share,
            });
        Snapshots {
            serving,
            previous,
            candidate,
        }
    }
}

async fn admin_snapshots(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let admin = authorized(&state, &headers)?;
    Ok(Json(Snapshots::of(&admin.lifecycle, &state)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReloadBody {
    /// A snapshot directory, relative to the models directory.
    path: String,
}

async fn admin_reload(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let lifecycle = Arc::clone(&authorized(&state, &headers)?.lifecycle);
    let input: ReloadBody = json_body(body, PROFILE_BODY_LIMIT, r#"{"path": "demo"}"#)?;
    let current = state.live();
    let installer = Arc::clone(&state);
    let done = Arc::clone(&lifecycle);
    let outcome = tokio::task::spawn_blocking(move || {
        lifecycle.reload(&input.path, current, |served| installer.install(served))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("reload stopped: {e}")))?;
    record_reload(&state, &outcome);
    outcome?;
    Ok(Json(Snapshots::of(&done, &state)).into_response())
}

async fn admin_rollback(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let lifecycle = Arc::clone(&authorized(&state, &headers)?.lifecycle);
    let current = state.live();
    let installer = Arc::clone(&state);
    let done = Arc::clone(&lifecycle);
    let outcome = tokio::task::spawn_blocking(move || {
        lifecycle.rollback(current, |served| installer.install(served))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("rollback stopped: {e}")))?;
    record_reload(&state, &outcome);
    outcome?;
    Ok(Json(Snapshots::of(&done, &state)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CandidateBody {
    /// A snapshot directory, relative to the models directory.
    path: String,
    /// Share of users the candidate serves, above 0 and below 1.
    share: f64,
}

/// Loads a snapshot as the candidate arm, serving `share` of the users (replacing any
/// candidate on trial).
async fn admin_candidate(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let lifecycle = Arc::clone(&authorized(&state, &headers)?.lifecycle);
    let input: CandidateBody = json_body(
        body,
        PROFILE_BODY_LIMIT,
        r#"{"path": "demo-next", "share": 0.1}"#,
    )?;
    if !(input.share > 0.0 && input.share < 1.0) {
        return Err(ApiError::InvalidBody(format!(
            "share: must be above 0 and below 1, got {}",
            input.share
        )));
    }
    state.serving().ok_or(ApiError::NotReady)?;
    let loader = Arc::clone(&lifecycle);
    let (model, info) = tokio::task::spawn_blocking(move || loader.load_candidate(&input.path))
        .await
        .map_err(|e| ApiError::Internal(format!("candidate load stopped: {e}")))??;
    state.set_candidate(Some(Candidate {
        model,
        share: input.share,
        info,
    }));
    Ok(Json(Snapshots::of(&lifecycle, &state)).into_response())
}

/// Ends the trial: every user is served by the main arm again.
async fn admin_drop_candidate(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let lifecycle = Arc::clone(&authorized(&state, &headers)?.lifecycle);
    state
        .serving()
        .and_then(|s| s.candidate.clone())
        .ok_or(ApiError::NoCandidate)?;
    state.set_candidate(None);
    Ok(Json(Snapshots::of(&lifecycle, &state)).into_response())
}

/// Makes the candidate the main arm for everyone (live state handed over, as in a reload).
async fn admin_promote(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let lifecycle = Arc::clone(&authorized(&state, &headers)?.lifecycle);
    let candidate = state
        .serving()
        .and_then(|s| s.candidate.clone())
        .ok_or(ApiError::NoCandidate)?;
    let current = state.live();
    let installer = Arc::clone(&state);
    let promoter = Arc::clone(&lifecycle);
    let outcome = tokio::task::spawn_blocking(move || {
        promoter.promote(
            Arc::clone(&candidate.model),
            candidate.info.clone(),
            current,
            |served| installer.install(served),
        )
    })
    .await
    .map_err(|e| ApiError::Internal(format!("promotion stopped: {e}")))?;
    record_reload(&state, &outcome);
    outcome?;
    state.set_candidate(None);
    Ok(Json(Snapshots::of(&lifecycle, &state)).into_response())
}

async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok",
        model_version: None,
    })
}

async fn readyz(State(state): State<Arc<AppState>>) -> Result<Json<Health>, ApiError> {
    let model = state.model().ok_or(ApiError::NotReady)?;
    Ok(Json(Health {
        status: "ready",
        model_version: Some(model.model_version().to_string()),
    }))
}

async fn not_found(request: Request) -> ApiError {
    ApiError::NotFound(request.uri().path().to_string())
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed(method.to_string())
}

async fn with_timeout(limit: Duration, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout(limit.as_millis() as u64).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::user_bucket;

    #[test]
    fn user_buckets_spread_evenly_even_over_sequential_ids() {
        for format in ["u_{}", "{}", "user-{}@example.com"] {
            let ids: Vec<String> = (0..10_000)
                .map(|i| format.replace("{}", &i.to_string()))
                .collect();
            for share in [0.01, 0.1, 0.3, 0.5] {
                let below = ids.iter().filter(|id| user_bucket(id) < share).count() as f64;
                let got = below / ids.len() as f64;
                assert!(
                    (got - share).abs() < 0.02,
                    "{format}: {got} for a share of {share}"
                );
            }
        }
        assert_eq!(user_bucket("u_1"), user_bucket("u_1"));
        assert!((0.0..1.0).contains(&user_bucket("")));
    }
}
