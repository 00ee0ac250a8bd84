//! The one place where errors become HTTP responses.
//!
//! Every error body is `{"code": "...", "message": "..."}`. Codes are stable and
//! machine-readable (clients switch on them); messages are for people and may change.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::feed::FeedError;
use crate::lifecycle::ReloadError;
use crate::live::LiveError;
use crate::snapshot::Issue;

/// A snapshot's defects as JSON: file, line, field, message.
fn snapshot_issues(issues: &[Issue]) -> serde_json::Value {
    issues
        .iter()
        .map(|i| {
            serde_json::json!({
                "file": i.file, "line": i.line, "field": i.field, "message": i.message,
            })
        })
        .collect()
}
use crate::profiles::ProfileError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Feed(#[from] FeedError),
    #[error("{0}")]
    InvalidQuery(String),
    #[error("{0}")]
    InvalidPath(String),
    /// A request body that is not the JSON the route takes (the message names the field).
    #[error("{0}")]
    InvalidBody(String),
    #[error("the request body is larger than the {0}-byte limit")]
    PayloadTooLarge(usize),
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error("no user {0:?}: neither the model nor an onboarding knows them")]
    UnknownUser(String),
    #[error("no post {0:?} in the serving model or published since")]
    UnknownPost(String),
    #[error(transparent)]
    Live(#[from] LiveError),
    #[error("this service does not take live events (it runs without a data directory)")]
    LiveDisabled,
    #[error("{0}")]
    Internal(String),
    #[error("admin routes need `Authorization: Bearer <token>` with the configured admin token")]
    Unauthorized,
    #[error(
        "admin routes are disabled: no admin token is configured (admin_token, or FEEDRANK_ADMIN_TOKEN)"
    )]
    AdminDisabled,
    #[error(transparent)]
    Reload(#[from] ReloadError),
    #[error("no candidate arm is on trial")]
    NoCandidate,
    #[error("no snapshot is loaded yet; retry shortly")]
    NotReady,
    #[error("no route for {0}")]
    NotFound(String),
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(String),
    #[error("the request took longer than {0} ms")]
    Timeout(u64),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: String,
    /// Every problem, when a request has several (a publishing request's posts, a snapshot's
    /// defects).
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<serde_json::Value>,
}

impl ApiError {
    /// The stable code and the status it maps to.
    pub fn code_and_status(&self) -> (&'static str, StatusCode) {
        match self {
            ApiError::Feed(FeedError::InvalidLimit(_)) => {
                ("invalid_limit", StatusCode::BAD_REQUEST)
            }
            ApiError::Feed(FeedError::InvalidCursor) => ("invalid_cursor", StatusCode::BAD_REQUEST),
            ApiError::Feed(FeedError::InvalidUserId(_)) => {
                ("invalid_user_id", StatusCode::BAD_REQUEST)
            }
            ApiError::Feed(FeedError::InvalidWeights(_)) => {
                ("invalid_weights", StatusCode::BAD_REQUEST)
            }
            ApiError::Feed(FeedError::InvalidHashtagLimit(_)) => {
                ("invalid_limit", StatusCode::BAD_REQUEST)
            }
            ApiError::Feed(FeedError::InvalidLang(_)) => ("invalid_lang", StatusCode::BAD_REQUEST),
            ApiError::Feed(FeedError::UnknownUser(_)) => ("unknown_user", StatusCode::NOT_FOUND),
            ApiError::Feed(FeedError::UnknownPost(_)) => ("unknown_post", StatusCode::NOT_FOUND),
            // A model that fails to load never reaches a request; if one ever did, it is ours.
            ApiError::Feed(
                FeedError::Snapshot(_)
                | FeedError::Scoring(_)
                | FeedError::Policy(_)
                | FeedError::Index(_)
                | FeedError::InvalidOptions(_),
            ) => ("internal", StatusCode::INTERNAL_SERVER_ERROR),
            ApiError::InvalidQuery(_) => ("invalid_query", StatusCode::BAD_REQUEST),
            ApiError::InvalidPath(_) => ("invalid_path", StatusCode::BAD_REQUEST),
            ApiError::InvalidBody(_) => ("invalid_body", StatusCode::BAD_REQUEST),
            ApiError::PayloadTooLarge(_) => ("payload_too_large", StatusCode::PAYLOAD_TOO_LARGE),
            ApiError::Profile(e @ ProfileError::Invalid { .. }) => match e.field() {
                Some("langs") => ("invalid_langs", StatusCode::BAD_REQUEST),
                _ => ("invalid_follows", StatusCode::BAD_REQUEST),
            },
            ApiError::Profile(ProfileError::Full { .. }) => {
                ("profiles_full", StatusCode::SERVICE_UNAVAILABLE)
            }
            ApiError::UnknownUser(_) => ("unknown_user", StatusCode::NOT_FOUND),
            ApiError::UnknownPost(_) => ("unknown_post", StatusCode::NOT_FOUND),
            ApiError::Live(LiveError::TooManyEvents(_)) => {
                ("too_many_events", StatusCode::BAD_REQUEST)
            }
            ApiError::Live(LiveError::TooManyPosts(_)) => {
                ("too_many_posts", StatusCode::BAD_REQUEST)
            }
            ApiError::Live(LiveError::InvalidPosts(_)) => ("invalid_post", StatusCode::BAD_REQUEST),
            ApiError::Live(LiveError::PostsExist(_)) => ("post_exists", StatusCode::CONFLICT),
            // Only if retrying on the successor kept failing: a reload in a loop.
            ApiError::Live(LiveError::Retired) => ("reloading", StatusCode::SERVICE_UNAVAILABLE),
            ApiError::Live(LiveError::PublishedFull { .. }) => {
                ("published_full", StatusCode::SERVICE_UNAVAILABLE)
            }
            // The log could not be written: nothing of the batch was applied or acknowledged.
            ApiError::Live(
                LiveError::Wal(_) | LiveError::Record { .. } | LiveError::Profile(_),
            ) => ("log_unavailable", StatusCode::SERVICE_UNAVAILABLE),
            ApiError::LiveDisabled => ("live_disabled", StatusCode::SERVICE_UNAVAILABLE),
            ApiError::Internal(_) => ("internal", StatusCode::INTERNAL_SERVER_ERROR),
            ApiError::Unauthorized => ("unauthorized", StatusCode::UNAUTHORIZED),
            ApiError::NoCandidate => ("no_candidate", StatusCode::NOT_FOUND),
            ApiError::AdminDisabled => ("admin_disabled", StatusCode::FORBIDDEN),
            ApiError::Reload(ReloadError::Path(_)) => ("invalid_path", StatusCode::BAD_REQUEST),
            ApiError::Reload(ReloadError::Load { .. }) => {
                ("invalid_snapshot", StatusCode::UNPROCESSABLE_ENTITY)
            }
            ApiError::Reload(ReloadError::Live(_)) => {
                ("log_unavailable", StatusCode::SERVICE_UNAVAILABLE)
            }
            ApiError::Reload(ReloadError::NoPrevious) => ("no_previous", StatusCode::CONFLICT),
            ApiError::Reload(ReloadError::Busy) => ("reload_in_progress", StatusCode::CONFLICT),
            ApiError::NotReady => ("not_ready", StatusCode::SERVICE_UNAVAILABLE),
            ApiError::NotFound(_) => ("not_found", StatusCode::NOT_FOUND),
            ApiError::MethodNotAllowed(_) => ("method_not_allowed", StatusCode::METHOD_NOT_ALLOWED),
            ApiError::Timeout(_) => ("timeout", StatusCode::SERVICE_UNAVAILABLE),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, status) = self.code_and_status();
        if status == StatusCode::INTERNAL_SERVER_ERROR
            || matches!(
                self,
                ApiError::Timeout(_) | ApiError::Live(LiveError::Wal(_))
            )
        {
            tracing::warn!(code, error = %self, "request failed");
        }
        let errors = match &self {
            ApiError::Live(LiveError::InvalidPosts(list) | LiveError::PostsExist(list)) => {
                serde_json::to_value(list).ok()
            }
            ApiError::Reload(ReloadError::Load {
                error: FeedError::Snapshot(e),
                ..
            }) => Some(snapshot_issues(e.issues())),
            _ => None,
        };
        let body = ErrorBody {
            code,
            message: self.to_string(),
            errors,
        };
        let mut response = (status, Json(body)).into_response();
        if matches!(self, ApiError::Unauthorized) {
            response
                .headers_mut()
                .insert("www-authenticate", "Bearer".parse().expect("static header"));
        }
        if matches!(self, ApiError::NotReady) {
            response
                .headers_mut()
                .insert("retry-after", "1".parse().expect("static header"));
        }
        response
    }
}
