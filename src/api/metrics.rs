//! `GET /metrics` and the middleware that counts and times every request (see
//! `crate::metrics` for the registry and the exposition).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::index::SegmentSizes;
use crate::metrics::{self, LiveGauges, Metrics, ModelGauges, SegmentRows, ServingGauges};

/// The main arm: the model `ModelGauges` describe.
const ARM: &str = "main";

/// Counts the request under its route template (`MatchedPath`, never the raw path; none for
/// the fallback), method and status, and times it to its response.
pub(super) async fn track(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = request.method().clone();
    let response = next.run(request).await;
    metrics.record_request(
        route.as_ref().map(MatchedPath::as_str),
        method.as_str(),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// The exposition, with the gauges of the serving state read now.
pub(super) async fn scrape(State(state): State<Arc<AppState>>) -> Response {
    let serving = state.serving();
    let model = state.model();
    let live = state.live();
    let candidate = serving.as_ref().and_then(|s| s.candidate.clone());
    let gauges = ServingGauges {
        model: model.as_deref().map(|model| {
            let retriever = model.retriever();
            let users = model.user_index().stats();
            ModelGauges {
                model_version: model.model_version(),
                arm: ARM,
                organic_rows: rows(&retriever.organic_segments()),
                ad_rows: rows(&retriever.ads_segments()),
                user_rows: rows(&model.user_index().segments()),
                published_posts: model.published().0 as u64,
                new_users: users.new_users as u64,
                user_placements: users.placements as u64,
                user_placements_refused: users.placements_refused,
                user_index_rebuilds: users.rebuilds,
                user_index_rebuilding: u64::from(users.rebuilding),
                offered_posts: model.audience().offered() as u64,
            }
        }),
        live: live.as_deref().map(|live| {
            let wal = live.wal_stats();
            LiveGauges {
                users: live.users() as u64,
                wal_bytes: wal.bytes,
                wal_records: wal.records,
            }
        }),
        candidate: candidate.as_ref().map(|c| c.model.model_version()),
        profiles: state.profiles.len() as u64,
    };
    let body = state.metrics.render(&gauges);
    ([(CONTENT_TYPE, metrics::CONTENT_TYPE)], body).into_response()
}

fn rows(sizes: &SegmentSizes) -> SegmentRows {
    SegmentRows {
        base: sizes.base as u64,
        sealed: sizes.sealed.iter().sum::<usize>() as u64,
        delta: sizes.delta as u64,
    }
}
