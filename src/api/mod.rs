//! HTTP API (axum). The only module that knows about HTTP: handlers parse and validate
//! requests, call the feed layer, and turn results or errors into JSON.
//!
//! | route | answer |
//! |---|---|
//! | `GET /v1/users/{user_id}/feed?limit=20&cursor=...&weights=...&explain=true` | a page of ranked post ids |
//! | `GET /healthz` | 200 while the process runs |
//! | `GET /readyz` | 200 once a model serves, else 503 `not_ready` |

mod error;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tower_http::trace::{DefaultMakeSpan, DefaultOnFailure, DefaultOnResponse, TraceLayer};
use tracing::Level;

pub use error::ApiError;

use crate::feed::{DEFAULT_LIMIT, FeedError, FeedRequest, Model, RequestContext};

/// What the handlers share: the model being served (none until the first load finishes).
pub struct AppState {
    model: ArcSwapOption<Model>,
    request_timeout: Duration,
}

impl AppState {
    pub fn new(request_timeout: Duration) -> Arc<AppState> {
        Arc::new(AppState {
            model: ArcSwapOption::empty(),
            request_timeout,
        })
    }

    /// Starts serving `model`. Requests already running finish on the model they started with.
    pub fn serve_model(&self, model: Arc<Model>) {
        self.model.store(Some(model));
    }

    pub fn model(&self) -> Option<Arc<Model>> {
        self.model.load_full()
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    let timeout = state.request_timeout;
    Router::new()
        .route("/v1/users/{user_id}/feed", get(feed))
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
    let limit = match query.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(raw) => raw
            .parse::<usize>()
            .map_err(|_| FeedError::InvalidLimit(format!("{raw:?}")))?,
    };
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
    let context = RequestContext {
        signals: None,
        weights: weights.as_ref(),
        explain,
    };
    let page = model.feed_with(&request, context)?;
    Ok(Json(page).into_response())
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
