//! Per-user live state, bounded.

use std::collections::{HashMap, HashSet, VecDeque};

use serde::Serialize;

use super::{Event, EventType, LiveOptions, Viewed, stats_delta, vector_step};
use crate::candidates::UserSignals;
use crate::feed::Model;
use crate::index::dot;
use crate::snapshot::{MIXED_LANG, Metric};

/// Post rows in arrival order, each once, at most a given number (the oldest leave first).
#[derive(Debug, Default)]
struct RecentRows {
    order: VecDeque<u32>,
    set: HashSet<u32>,
}

impl RecentRows {
    fn push(&mut self, row: u32, max: usize) {
        if self.set.insert(row) {
            self.order.push_back(row);
            while self.order.len() > max {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }

    fn ids(&self, model: &Model) -> HashSet<String> {
        self.order
            .iter()
            .map(|&row| model.post(row).id.clone())
            .collect()
    }
}

#[derive(Debug, Default)]
struct UserState {
    seen: RecentRows,
    hidden: RecentRows,
    reported: RecentRows,
    engaged_langs: HashSet<String>,
    vector: Option<Vec<f32>>,
    events: u64,
}

/// Counts of one user's live state (`GET /v1/users/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserSummary {
    /// Events applied for this user since the snapshot.
    pub events: u64,
    pub seen: usize,
    pub hidden: usize,
    pub reported: usize,
    /// Likes, saves, shares or hides moved their embedding.
    pub vector_moved: bool,
}

#[derive(Debug, Default)]
pub(super) struct Users {
    map: HashMap<String, UserState>,
}

impl Users {
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn contains(&self, user_id: &str) -> bool {
        self.map.contains_key(user_id)
    }

    /// Applies one validated event on post `row`. `effects`: also the post's stats, the
    /// user's embedding and what the lookalike and audience sources count (not for hides and
    /// reports carried over a compaction). Returns whether the user's embedding moved (the
    /// caller places them in the user index, once per batch).
    pub fn apply(
        &mut self,
        model: &Model,
        options: &LiveOptions,
        event: &Event,
        row: u32,
        effects: bool,
    ) -> bool {
        let user = self.map.entry(event.user_id.clone()).or_default();
        user.events += 1;
        let post = model.post(row);
        match event.kind {
            EventType::Impression | EventType::View => user.seen.push(row, options.max_seen),
            EventType::Hide => user.hidden.push(row, options.max_hidden),
            EventType::Report => user.reported.push(row, options.max_hidden),
            EventType::Save | EventType::Comment | EventType::Share => {
                if post.lang != MIXED_LANG && !user.engaged_langs.contains(&post.lang) {
                    user.engaged_langs.insert(post.lang.clone());
                }
            }
            EventType::Like => {}
        }
        if !effects {
            return false;
        }
        match event.kind {
            EventType::Impression | EventType::View => model.record_impression(row),
            kind => {
                let weight = lookalike_weight(kind);
                if weight > 0.0 {
                    model.record_user_engagement(&event.user_id, row, weight);
                }
            }
        }
        let delta = stats_delta(event.kind);
        if delta != Default::default() {
            model.record_engagement(row, &delta);
        }
        let step = vector_step(event.kind);
        if step != 0.0 {
            let start = user
                .vector
                .take()
                .or_else(|| model.user_vector(&event.user_id).map(<[f32]>::to_vec));
            user.vector = moved(
                start,
                model.post_vector(row),
                step,
                model.snapshot().metric(),
            );
            return user.vector.is_some();
        }
        false
    }

    /// Places `moved` users (ids, each once) at their current embedding in the model's user
    /// index.
    pub fn place(&self, model: &Model, moved: &HashSet<String>) {
        if moved.is_empty() {
            return;
        }
        let mut ids: Vec<&String> = moved.iter().collect();
        // A fixed order, so that the index's rows are the same on every replay.
        ids.sort_unstable();
        let items: Vec<(&str, &[f32])> = ids
            .into_iter()
            .filter_map(|id| Some((id.as_str(), self.map.get(id)?.vector.as_deref()?)))
            .collect();
        model.place_users(&items);
    }

    pub fn viewed(&self, model: &Model, user_id: &str, with_seen: bool) -> Option<Viewed> {
        let user = self.map.get(user_id)?;
        let signals = UserSignals {
            seen: if with_seen {
                user.seen.ids(model)
            } else {
                HashSet::new()
            },
            hidden: user.hidden.ids(model),
            reported: user.reported.ids(model),
            blocked_authors: HashSet::new(),
            engaged_langs: user.engaged_langs.clone(),
        };
        Some(Viewed {
            signals,
            vector: user.vector.clone(),
        })
    }

    pub fn vector(&self, user_id: &str) -> Option<Vec<f32>> {
        self.map.get(user_id)?.vector.clone()
    }

    pub fn summary(&self, user_id: &str) -> Option<UserSummary> {
        let user = self.map.get(user_id)?;
        Some(UserSummary {
            events: user.events,
            seen: user.seen.order.len(),
            hidden: user.hidden.order.len(),
            reported: user.reported.order.len(),
            vector_moved: user.vector.is_some(),
        })
    }
}

/// What an engagement tells the lookalike source about a post: a save most (the platform's
/// sign of value), a share a little less, a like least.
fn lookalike_weight(kind: EventType) -> f32 {
    match kind {
        EventType::Save => 1.0,
        EventType::Share => 0.8,
        EventType::Like => 0.4,
        _ => 0.0,
    }
}

/// The embedding after one event: `|v| · unit(unit(v) + step · unit(p))`. Without a vector,
/// a positive event starts one at the post's direction (with the length of a unit vector, or
/// under `dot` the post's own length); a hide has nothing to turn.
pub(super) fn moved(
    v: Option<Vec<f32>>,
    post: &[f32],
    step: f32,
    metric: Metric,
) -> Option<Vec<f32>> {
    let post_norm = dot(post, post).sqrt();
    if post_norm == 0.0 || !post_norm.is_finite() {
        return v;
    }
    let Some(mut v) = v else {
        if step <= 0.0 {
            return None;
        }
        let scale = if metric == Metric::Cosine {
            1.0 / post_norm
        } else {
            1.0
        };
        return Some(post.iter().map(|x| x * scale).collect());
    };
    let norm = dot(&v, &v).sqrt();
    if norm == 0.0 || !norm.is_finite() {
        return Some(v);
    }
    // |step| < 1 keeps the sum away from zero: unit(v) and step·unit(p) cannot cancel.
    let turned: Vec<f32> = v
        .iter()
        .zip(post)
        .map(|(x, p)| x / norm + step * p / post_norm)
        .collect();
    let length = dot(&turned, &turned).sqrt();
    if length > 0.0 && length.is_finite() {
        v = turned.iter().map(|x| x * norm / length).collect();
    }
    Some(v)
}
