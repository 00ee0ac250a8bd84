//! HTTP API (axum). The only module that knows about HTTP: handlers parse and validate
//! requests, call the feed layer, and turn results or errors into JSON.
//!
//! | route | answer |
//! |---|---|
//! | `GET /v1/users/{user_id}/feed?limit=20&cursor=...&weights=...&explain=true` | a page of ranked post ids |
//! | `GET /v1/users/{user_id}/hashtags?limit=10&lang=en` | hashtags to recommend, with reasons |
//! | `PUT /v1/users/{user_id}` | onboard or update a user: languages and picked hashtags |
//! | `GET /v1/users/{user_id}` | what the service knows of a user |
//! | `POST /v1/events` | a batch of user events, logged durably, then applied |
//! | `POST /v1/posts` | publish posts (all or none), logged durably, then rankable |
//! | `GET /v1/posts/{post_id}` | a post as the service ranks it now |
//! | `GET /healthz` | 200 while the process runs |
//! | `GET /readyz` | 200 once a model serves, else 503 `not_ready` |

mod error;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tower_http::trace::{DefaultMakeSpan, DefaultOnFailure, DefaultOnResponse, TraceLayer};
use tracing::Level;

pub use error::ApiError;

use crate::feed::{
    DEFAULT_HASHTAG_LIMIT, DEFAULT_LIMIT, FeedError, FeedRequest, Model, RequestContext,
};
use crate::live::{Live, LiveError};
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

/// What the handlers share: the model being served (none until the first load finishes) and
/// the onboarded users' profiles (which outlive any model).
pub struct AppState {
    model: ArcSwapOption<Model>,
    /// Live events and their log, for the served model (none: events are refused).
    live: ArcSwapOption<Live>,
    profiles: Arc<Profiles>,
    request_timeout: Duration,
}

impl AppState {
    pub fn new(request_timeout: Duration) -> Arc<AppState> {
        AppState::with_profile_capacity(request_timeout, DEFAULT_PROFILE_CAPACITY)
    }

    /// With room for `capacity` onboarded users.
    pub fn with_profile_capacity(request_timeout: Duration, capacity: usize) -> Arc<AppState> {
        Arc::new(AppState {
            model: ArcSwapOption::empty(),
            live: ArcSwapOption::empty(),
            profiles: Arc::new(Profiles::new(capacity)),
            request_timeout,
        })
    }

    /// The onboarded users' profiles: give them to `Live::open`, which logs and replays them.
    pub fn profiles(&self) -> &Arc<Profiles> {
        &self.profiles
    }

    /// Starts serving `model`. Requests already running finish on the model they started with.
    pub fn serve_model(&self, model: Arc<Model>) {
        self.model.store(Some(model));
    }

    pub fn model(&self) -> Option<Arc<Model>> {
        self.model.load_full()
    }

    /// Starts serving `live`'s model with live events (durable, replayed from its log).
    pub fn serve_live(&self, live: Arc<Live>) {
        self.live.store(Some(live.clone()));
        self.model.store(Some(live.model().clone()));
    }

    pub fn live(&self) -> Option<Arc<Live>> {
        self.live.load_full()
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    let timeout = state.request_timeout;
    Router::new()
        .route("/v1/users/{user_id}/feed", get(feed))
        .route("/v1/users/{user_id}/hashtags", get(hashtags))
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
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(move |req, next| {
            with_timeout(timeout, req, next)
        }))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_response(DefaultOnResponse::new().level(Level::INFO))
                // The response line already carries the status; errors we cause are logged
                // where they are mapped (api/error.rs).
                .on_failure(DefaultOnFailure::new().level(Level::DEBUG)),
        )
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
    let Path(user_id) = user_id.map_err(|e| ApiError::InvalidPath(e.body_text()))?;
    let Query(query) = query.map_err(|e| ApiError::InvalidQuery(e.body_text()))?;
    let limit = parse_limit(
        query.limit.as_deref(),
        DEFAULT_LIMIT,
        FeedError::InvalidLimit,
    )?;
    let model = state.model().ok_or(ApiError::NotReady)?;
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
    let viewed = live_state(&state, &model, &user_id, query.cursor.is_none());
    let context = RequestContext {
        signals: viewed.as_ref().map(|v| &v.signals),
        weights: weights.as_ref(),
        explain,
        profile: profile.as_deref(),
        user_vector: viewed.as_ref().and_then(|v| v.vector.as_deref()),
    };
    let page = model.feed_with(&request, context)?;
    Ok(Json(page).into_response())
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
    let Path(user_id) = user_id.map_err(|e| ApiError::InvalidPath(e.body_text()))?;
    let Query(query) = query.map_err(|e| ApiError::InvalidQuery(e.body_text()))?;
    let limit = parse_limit(
        query.limit.as_deref(),
        DEFAULT_HASHTAG_LIMIT,
        FeedError::InvalidHashtagLimit,
    )?;
    let model = state.model().ok_or(ApiError::NotReady)?;
    let profile = state.profiles.get(&user_id);
    // Only the embedding counts here: the user's signals are not built.
    let vector = state
        .live()
        .filter(|live| Arc::ptr_eq(live.model(), &model))
        .and_then(|live| live.vector(&user_id));
    let page = model.recommend_hashtags(
        &user_id,
        profile.as_deref(),
        vector.as_deref(),
        query.lang.as_deref(),
        limit,
    )?;
    Ok(Json(page).into_response())
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

/// `user_id`'s live state, if the served model has live events and the user any.
fn live_state(
    state: &AppState,
    model: &Arc<Model>,
    user_id: &str,
    with_seen: bool,
) -> Option<crate::live::Viewed> {
    let live = state.live()?;
    // A model served without its live state (swapped in alone) has no events to show.
    if !Arc::ptr_eq(live.model(), model) {
        return None;
    }
    live.viewed(user_id, with_seen)
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
    let live = state.live().ok_or(ApiError::LiveDisabled)?;
    let outcome = tokio::task::spawn_blocking(move || live.ingest(input.events))
        .await
        .map_err(|e| ApiError::Internal(format!("event ingestion stopped: {e}")))??;
    Ok(Json(outcome).into_response())
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
    let live = state.live().ok_or(ApiError::LiveDisabled)?;
    let publisher = live.clone();
    let rows = tokio::task::spawn_blocking(move || publisher.publish(input.posts))
        .await
        .map_err(|e| ApiError::Internal(format!("publishing stopped: {e}")))??;
    let model = live.model();
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
        Some(live) => {
            let id = user_id.clone();
            tokio::task::spawn_blocking(move || live.put_profile(&id, profile))
                .await
                .map_err(|e| ApiError::Internal(format!("profile store stopped: {e}")))?
                .map_err(|e| match e {
                    LiveError::Profile(e) => ApiError::Profile(e),
                    other => ApiError::Live(other),
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
