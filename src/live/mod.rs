//! Live events: what users do between two snapshots, applied at once and never lost.
//!
//! `Live` holds, for the model it serves, each active user's signals (posts seen, hidden and
//! reported, languages engaged with) and their embedding as events moved it, and writes every
//! accepted batch, and every onboarding profile, to a write-ahead log (`wal`) before
//! acknowledging it. On start the log is
//! replayed onto the model, so the state after a crash is the state of the last acknowledged
//! batch (or later: a batch synced but not yet acknowledged when the process died is present
//! too).
//!
//! Effects of one event on post `p` by user `u`:
//!
//! | type | `u`'s signals | `p`'s stats | `u`'s embedding |
//! |---|---|---|---|
//! | `impression` | `p` seen | | |
//! | `view` | `p` seen | views + 1 | |
//! | `like` | | likes + 1 | toward `p`, step 0.05 |
//! | `save` | `p`'s language engaged | saves + 1 | toward `p`, step 0.2 |
//! | `comment` | `p`'s language engaged | comments + 1 | |
//! | `share` | `p`'s language engaged | shares + 1 | toward `p`, step 0.15 |
//! | `hide` | `p` hidden | hides + 1 | away from `p`, step 0.2 |
//! | `report` | `p` reported | reports + 1 (past the threshold: shown to nobody) | |
//!
//! The embedding update: `v ← |v| · unit(unit(v) + step · unit(p))` (minus for a hide): each
//! event turns the direction by at most `step` radians, and the length stays, so no burst of
//! events can run a vector away. A user the snapshot has no vector for gets `unit(p)` at their
//! first like, save or share.
//!
//! Events also feed the user index (`candidates::UserIndex`): saves, shares and likes are kept
//! per user (weights 1, 0.8 and 0.4) for the lookalike source of the users near them;
//! impressions and views count toward ending a new post's offer to its audience
//! (`feed::Audience`); and the users whose embedding moved in a batch are placed again once,
//! after the batch (a replay places each once, at its end).
//!
//! Bounds (`LiveOptions`): at most `max_users` users have live state; events for a new user
//! past it are refused per item (`users_full`), so a flood of unknown ids cannot exhaust memory
//! (concurrent batches may overshoot by what they carry). Per user, the last `max_seen`
//! impressions and the last `max_hidden` hides and reports are kept. Seen posts are left out of
//! a feed requested without a cursor; pages after the first keep their sequence (the posts seen
//! on earlier pages are behind the cursor anyway). Hidden and reported posts are left out of
//! every page.

mod state;

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, RwLock};

use serde::{Deserialize, Serialize};

use crate::candidates::UserSignals;
use crate::feed::Model;
use crate::profiles::{Profile, ProfileError, Profiles, Stored};
use crate::snapshot::{self, MAX_ID_BYTES, MAX_UNIX_SECONDS, NewPost, Post, Stats};
use crate::wal::{AppendReceipt, Wal, WalError, WalOptions};

pub use state::UserSummary;
use state::Users;

/// Most events in one batch.
pub const MAX_EVENTS_PER_BATCH: usize = 1_000;

/// Most posts in one publishing request.
pub const MAX_POSTS_PER_BATCH: usize = 100;

/// What users do, as `POST /v1/events` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    Impression,
    View,
    Like,
    Save,
    Comment,
    Share,
    Hide,
    Report,
}

/// One event, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    pub user_id: String,
    pub post_id: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    /// Unix seconds.
    pub ts: i64,
}

/// A record of the log. New kinds go at the end: the encoding numbers them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum LogRecord {
    /// An acknowledged batch: every effect applies.
    Events(Vec<Event>),
    /// Hides and reports carried over a compaction: only the user's signals apply (the new
    /// snapshot's stats already count them).
    Carried(Vec<Event>),
    /// The model the following records were applied to.
    Model { version: String },
    /// An onboarding (`PUT /v1/users/{id}`): carried over every compaction, the latest per user.
    Profile { user_id: String, profile: Profile },
    /// Posts published (`POST /v1/posts`), validated; vectors as the model holds them
    /// (normalised under cosine).
    Posts(Vec<LoggedPost>),
}

/// A published post as the log keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct LoggedPost {
    post: Post,
    vector: Vec<f32>,
}

/// Limits and learning rates. `[live]` in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiveOptions {
    /// Users with live state at most.
    pub max_users: usize,
    /// Impressions kept per user (the most recent).
    pub max_seen: usize,
    /// Hides, and separately reports, kept per user (the most recent).
    pub max_hidden: usize,
    /// fsync every batch before acknowledging it. Off only for throwaway runs.
    pub sync: bool,
    /// Posts published since the snapshot at most (each holds its record and two copies of
    /// its embedding until the next snapshot takes it in).
    pub max_published: usize,
}

impl Default for LiveOptions {
    fn default() -> Self {
        LiveOptions {
            max_users: 100_000,
            max_seen: 200,
            max_hidden: 1_000,
            sync: true,
            max_published: 200_000,
        }
    }
}

impl LiveOptions {
    /// Checks ranges: the error is the field and the problem.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for (name, value) in [
            ("live.max_users", self.max_users),
            ("live.max_seen", self.max_seen),
            ("live.max_hidden", self.max_hidden),
            ("live.max_published", self.max_published),
        ] {
            if value == 0 {
                return Err((name, "must be at least 1".into()));
            }
        }
        Ok(())
    }
}

/// Errors of the live layer.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("write-ahead log: {0}")]
    Wal(#[from] WalError),
    #[error("write-ahead log record {index}: {message}")]
    Record { index: usize, message: String },
    #[error("batch of {0} events: at most {MAX_EVENTS_PER_BATCH} per request")]
    TooManyEvents(usize),
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error("batch of {0} posts: at most {MAX_POSTS_PER_BATCH} per request")]
    TooManyPosts(usize),
    /// Posts that break the snapshot contract: nothing of the batch was published.
    #[error("{} invalid post field(s); first: {}", .0.len(), .0.first().map(|p| p.to_string()).unwrap_or_default())]
    InvalidPosts(Vec<PostProblem>),
    /// Posts whose id is taken: nothing of the batch was published.
    #[error("{} post id(s) already exist; first: {}", .0.len(), .0.first().map(|p| p.to_string()).unwrap_or_default())]
    PostsExist(Vec<PostProblem>),
    #[error("posts: at most {capacity} posts are held between snapshots; {held} are")]
    PublishedFull { capacity: usize, held: usize },
    /// A reload handed the log to a successor: retry there.
    #[error("this model's live state was replaced by a reload")]
    Retired,
}

/// What is wrong with one post of a publishing request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PostProblem {
    /// The post's position in `posts`.
    pub index: usize,
    /// The field at fault, e.g. `kind`, `hashtags[1]`, `embedding`.
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for PostProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "posts[{}].{}: {}", self.index, self.field, self.message)
    }
}

/// Why one item of a batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejected {
    pub index: usize,
    /// Stable: `invalid_event`, `invalid_user_id`, `unknown_post`, `invalid_ts`, `users_full`.
    pub code: &'static str,
    pub message: String,
}

/// The answer to a batch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatchOutcome {
    pub accepted: usize,
    pub rejected: Vec<Rejected>,
}

/// What start-up found in the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Replayed {
    pub batches: usize,
    pub events: usize,
    /// Published posts restored.
    pub posts: usize,
    /// Bytes dropped from a torn or corrupt tail, if any (the log says where and why).
    pub truncated_bytes: Option<u64>,
    /// Records dropped by compaction because the snapshot is newer than the log's model.
    pub compacted: Option<(usize, usize)>,
}

/// The live state of one model, and its log.
pub struct Live {
    model: Arc<Model>,
    /// The onboarded users' profiles, shared with whoever serves them (they outlive models).
    profiles: Arc<Profiles>,
    users: RwLock<Users>,
    /// Shared with the successor that takes the log over on a reload.
    wal: Arc<Wal>,
    options: LiveOptions,
    /// Held (read) by every write from its check to its apply; a reload holds it (write) to
    /// hand the log over, then marks this state retired.
    gate: RwLock<bool>,
    /// Sequence number of the next log record to apply: batches are applied in log order,
    /// so that a replay rebuilds exactly the state they built (embedding steps do not
    /// commute).
    next_to_apply: Mutex<u64>,
    turn: Condvar,
    /// Ids of posts being published (logged, not yet applied): a second publisher of one is
    /// refused as if it existed.
    publishing: Mutex<HashSet<String>>,
}

/// One user's live state as a request needs it.
pub struct Viewed {
    pub signals: UserSignals,
    pub vector: Option<Vec<f32>>,
}

impl Live {
    /// Opens (or creates) the log in `dir`, replays it onto `model`, and compacts it first if
    /// it was written for another model version: then only hides and reports are carried over
    /// (as signals), and other events newer than the snapshot's newest post.
    /// Profiles logged by `put_profile` are restored into `profiles`.
    pub fn open(
        model: Arc<Model>,
        dir: &Path,
        options: LiveOptions,
        profiles: Arc<Profiles>,
    ) -> Result<(Live, Replayed), LiveError> {
        let (wal, recovered) = Wal::open(dir, WalOptions { sync: options.sync })?;
        let truncated_bytes = recovered.truncated.as_ref().map(|t| t.dropped_bytes);
        let records = decode_all(&recovered.records)?;
        Live::from_log(
            model,
            Arc::new(wal),
            records,
            truncated_bytes,
            options,
            profiles,
        )
    }

    /// The live state of `model` taking over this one's log: writes to this one wait
    /// meanwhile, and once the successor is built (the log replayed onto `model`, compacted
    /// first if `model` is another version), `install` runs (to start serving it) and this
    /// one is retired: its writes answer [`LiveError::Retired`], to be retried on the
    /// successor. If building fails, nothing is installed and this one carries on.
    pub fn successor(
        &self,
        model: Arc<Model>,
        install: impl FnOnce(Arc<Live>),
    ) -> Result<(Arc<Live>, Replayed), LiveError> {
        let mut retired = self.gate.write().unwrap_or_else(|e| e.into_inner());
        if *retired {
            return Err(LiveError::Retired);
        }
        let records = decode_all(&self.wal.records()?)?;
        let (live, replayed) = Live::from_log(
            model,
            Arc::clone(&self.wal),
            records,
            None,
            self.options,
            Arc::clone(&self.profiles),
        )?;
        let live = Arc::new(live);
        install(Arc::clone(&live));
        *retired = true;
        Ok((live, replayed))
    }

    /// Builds the live state of `model` from `records`, the whole log: replays it, after
    /// compacting it first if it was written for another model version.
    fn from_log(
        model: Arc<Model>,
        wal: Arc<Wal>,
        mut records: Vec<LogRecord>,
        truncated_bytes: Option<u64>,
        options: LiveOptions,
        profiles: Arc<Profiles>,
    ) -> Result<(Live, Replayed), LiveError> {
        let version = model.model_version().to_string();
        // Records before the last model marker belong to an older model; they are dropped by
        // the compaction below, which may not have run if the process died right before it.
        let marker = records
            .iter()
            .rposition(|r| matches!(r, LogRecord::Model { .. }));
        let logged_version = marker.and_then(|m| match &records[m] {
            LogRecord::Model { version } => Some(version.clone()),
            _ => None,
        });
        let mut compacted = None;
        let old_len = records.len();
        if logged_version.as_deref() == Some(version.as_str()) {
            let m = marker.unwrap_or(0);
            records.drain(..m);
            if m > 0 {
                compact_before(&wal, m)?;
                compacted = Some((old_len, records.len()));
            }
        } else {
            // A new model: carry over what it cannot know, after a marker, then drop the rest.
            // Appending first and compacting second means a crash in between leaves a log
            // whose last marker already says what to replay.
            let carried = carry_over(records, &model);
            let mut appended = vec![encode(&LogRecord::Model {
                version: version.clone(),
            })];
            appended.extend(carried.iter().map(encode));
            wal.append(appended)?;
            if old_len > 0 {
                compact_before(&wal, old_len)?;
                compacted = Some((old_len, carried.len()));
            }
            if logged_version.is_some() {
                tracing::info!(
                    from = logged_version.as_deref().unwrap_or(""),
                    to = version,
                    records_before = old_len,
                    records_kept = carried.len(),
                    "write-ahead log compacted for a new model"
                );
            }
            records = carried;
        }
        let next_to_apply = Mutex::new(wal.stats().records);
        let live = Live {
            model,
            profiles,
            users: RwLock::new(Users::default()),
            wal,
            options,
            next_to_apply,
            turn: Condvar::new(),
            publishing: Mutex::new(HashSet::new()),
            gate: RwLock::new(false),
        };
        let (mut batches, mut events, mut posts) = (0, 0, 0);
        let mut replayed_profiles: std::collections::HashMap<String, Profile> =
            std::collections::HashMap::new();
        {
            let mut users = live.users.write().unwrap_or_else(|e| e.into_inner());
            // Placed once at the end: a replay need not place every intermediate step.
            let mut moved = HashSet::new();
            for record in records {
                let (batch, effects) = match record {
                    LogRecord::Events(batch) => (batch, true),
                    LogRecord::Carried(batch) => (batch, false),
                    LogRecord::Model { .. } => continue,
                    LogRecord::Profile { user_id, profile } => {
                        // What this model counted for the user so far: the replay's own.
                        if let Err(e) = live.profiles.put(&user_id, profile.clone()) {
                            tracing::warn!(user_id, error = %e, "logged profile not restored");
                            continue;
                        }
                        let before = replayed_profiles.get(&user_id);
                        live.model.record_onboarding(&user_id, before, &profile);
                        replayed_profiles.insert(user_id, profile);
                        continue;
                    }
                    LogRecord::Posts(logged) => {
                        posts += live.restore_posts(logged).len();
                        continue;
                    }
                };
                for event in &batch {
                    // Logged events were validated against a model: a post missing from this
                    // one (only after compaction, for a carried hide) has nothing to apply to.
                    if let Some(row) = live.model.post_row(&event.post_id)
                        && users.apply(&live.model, &live.options, event, row, effects)
                    {
                        moved.insert(event.user_id.clone());
                    }
                }
                batches += 1;
                events += batch.len();
            }
            users.place(&live.model, &moved);
        }
        Ok((
            live,
            Replayed {
                batches,
                events,
                posts,
                truncated_bytes,
                compacted,
            },
        ))
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// Stores `profile` for `user_id` once it is logged durably. A new user past the profiles'
    /// capacity is refused before anything is logged.
    pub fn put_profile(&self, user_id: &str, profile: Profile) -> Result<Stored, LiveError> {
        let _open = self.open_gate()?;
        if self.profiles.is_full_for(user_id) {
            return Err(ProfileError::Full {
                capacity: self.profiles.capacity(),
            }
            .into());
        }
        let record = LogRecord::Profile {
            user_id: user_id.to_string(),
            profile,
        };
        let receipt = self.wal.append(vec![encode(&record)])?;
        let LogRecord::Profile { profile, .. } = record else {
            unreachable!("built as a profile record");
        };
        Ok(self.in_turn(&receipt, || {
            let before = self.profiles.get(user_id);
            let stored = self.profiles.put(user_id, profile.clone())?;
            self.model
                .record_onboarding(user_id, before.as_deref(), &profile);
            Ok::<_, ProfileError>(stored)
        })?)
    }

    /// Publishes `items` (JSON values: a post's `posts.jsonl` fields and its `embedding`),
    /// all or none: every item is checked against the snapshot contract (the model's dimension
    /// and metric included) and no id may exist or repeat; then the batch is logged durably
    /// and the posts are added to the model (`Model::publish`). Blocking: call it off the
    /// async runtime.
    pub fn publish(&self, items: Vec<serde_json::Value>) -> Result<Vec<u32>, LiveError> {
        self.publish_from(&mut Some(items))
    }

    /// [`Live::publish`] taking the items out of `items` only once this state is sure to
    /// handle them: on [`LiveError::Retired`] they are left for the successor.
    pub fn publish_from(
        &self,
        items: &mut Option<Vec<serde_json::Value>>,
    ) -> Result<Vec<u32>, LiveError> {
        let _open = self.open_gate()?;
        let items = items.take().unwrap_or_default();
        if items.len() > MAX_POSTS_PER_BATCH {
            return Err(LiveError::TooManyPosts(items.len()));
        }
        let snapshot = self.model.snapshot();
        let (dim, metric) = (snapshot.dim(), snapshot.metric());
        let mut problems = Vec::new();
        let mut posts: Vec<NewPost> = Vec::with_capacity(items.len());
        for (index, item) in items.into_iter().enumerate() {
            match snapshot::parse_new_post(item, dim, metric) {
                Ok(post) => {
                    if let Some(first) = posts.iter().position(|p| p.post.id == post.post.id) {
                        problems.push(PostProblem {
                            index,
                            field: "id".into(),
                            message: format!(
                                "post {:?} is also posts[{first}] of this request",
                                post.post.id
                            ),
                        });
                    }
                    posts.push(post);
                }
                Err(found) => problems.extend(found.into_iter().map(|p| PostProblem {
                    index,
                    field: p.field,
                    message: p.message,
                })),
            }
        }
        if !problems.is_empty() {
            return Err(LiveError::InvalidPosts(problems));
        }
        if posts.is_empty() {
            return Ok(Vec::new());
        }
        // Reserve the ids, so that a concurrent request with one of them cannot pass this
        // check before this one is applied.
        let reserved = {
            let mut publishing = self.publishing.lock().unwrap_or_else(|e| e.into_inner());
            let exists: Vec<PostProblem> = posts
                .iter()
                .enumerate()
                .filter(|(_, p)| {
                    self.model.post_row(&p.post.id).is_some() || publishing.contains(&p.post.id)
                })
                .map(|(index, p)| PostProblem {
                    index,
                    field: "id".into(),
                    message: format!("a post {:?} exists already", p.post.id),
                })
                .collect();
            if !exists.is_empty() {
                return Err(LiveError::PostsExist(exists));
            }
            // Counted with the batches in flight, so concurrent ones cannot overshoot.
            let held = self.model.published().0 + publishing.len();
            if held + posts.len() > self.options.max_published {
                return Err(LiveError::PublishedFull {
                    capacity: self.options.max_published,
                    held,
                });
            }
            let ids: Vec<String> = posts.iter().map(|p| p.post.id.clone()).collect();
            publishing.extend(ids.iter().cloned());
            Reserved {
                ids,
                set: &self.publishing,
            }
        };
        let logged: Vec<LoggedPost> = posts
            .into_iter()
            .map(|NewPost { post, vector }| LoggedPost { post, vector })
            .collect();
        let record = LogRecord::Posts(logged);
        let receipt = self.wal.append(vec![encode(&record)])?;
        let LogRecord::Posts(logged) = record else {
            unreachable!("built as a posts record");
        };
        let rows = self.in_turn(&receipt, || self.restore_posts(logged));
        drop(reserved);
        Ok(rows)
    }

    /// Adds logged posts to the model and returns their rows; one that cannot be added (its
    /// id exists, or its embedding is of another dimension) is left out with a warning.
    fn restore_posts(&self, logged: Vec<LoggedPost>) -> Vec<u32> {
        let dim = self.model.snapshot().dim();
        let mut ids = Vec::with_capacity(logged.len());
        let posts: Vec<NewPost> = logged
            .into_iter()
            .filter(|p| {
                let fits = p.vector.len() == dim;
                if !fits {
                    tracing::warn!(
                        post_id = p.post.id,
                        dim = p.vector.len(),
                        model_dim = dim,
                        "logged post not restored: its embedding has another dimension"
                    );
                }
                fits
            })
            .map(|LoggedPost { post, vector }| {
                ids.push(post.id.clone());
                NewPost { post, vector }
            })
            .collect();
        let rows = self.model.publish(posts);
        for (id, row) in ids.iter().zip(&rows) {
            if row.is_none() {
                tracing::warn!(post_id = id, "logged post not restored: its id exists");
            }
        }
        rows.into_iter().flatten().collect()
    }

    /// Holds the write gate open for a write (a reload waits for it), or answers
    /// [`LiveError::Retired`] if a reload handed this state over.
    fn open_gate(&self) -> Result<std::sync::RwLockReadGuard<'_, bool>, LiveError> {
        let retired = self.gate.read().unwrap_or_else(|e| e.into_inner());
        if *retired {
            return Err(LiveError::Retired);
        }
        Ok(retired)
    }

    /// Runs `apply` for the records of `receipt` once every record logged before them has
    /// been applied, so that live state is built in log order, as a replay builds it.
    /// Records synced together are answered together, so the wait is only for the others of
    /// the same group.
    fn in_turn<T>(&self, receipt: &AppendReceipt, apply: impl FnOnce() -> T) -> T {
        let mut next = self.next_to_apply.lock().unwrap_or_else(|e| e.into_inner());
        while *next != receipt.first_seq {
            next = self.turn.wait(next).unwrap_or_else(|e| e.into_inner());
        }
        let result = apply();
        *next += receipt.count as u64;
        drop(next);
        self.turn.notify_all();
        result
    }

    pub fn options(&self) -> &LiveOptions {
        &self.options
    }

    /// Validates `items` (JSON values, so that one bad item does not spoil the batch), logs
    /// the valid ones durably, then applies them. Blocking: call it off the async runtime.
    pub fn ingest(&self, items: Vec<serde_json::Value>) -> Result<BatchOutcome, LiveError> {
        self.ingest_from(&mut Some(items))
    }

    /// [`Live::ingest`] taking the items out of `items` only once this state is sure to
    /// handle them: on [`LiveError::Retired`] they are left for the successor.
    pub fn ingest_from(
        &self,
        items: &mut Option<Vec<serde_json::Value>>,
    ) -> Result<BatchOutcome, LiveError> {
        let _open = self.open_gate()?;
        let items = items.take().unwrap_or_default();
        if items.len() > MAX_EVENTS_PER_BATCH {
            return Err(LiveError::TooManyEvents(items.len()));
        }
        let mut rejected = Vec::new();
        let mut valid: Vec<(Event, u32)> = Vec::with_capacity(items.len());
        {
            let users = self.users.read().unwrap_or_else(|e| e.into_inner());
            let mut new_users = std::collections::HashSet::new();
            for (index, item) in items.into_iter().enumerate() {
                match self.validate(item) {
                    Err((code, message)) => rejected.push(Rejected {
                        index,
                        code,
                        message,
                    }),
                    Ok((event, row)) => {
                        if !users.contains(&event.user_id)
                            && !new_users.contains(&event.user_id)
                            && users.len() + new_users.len() >= self.options.max_users
                        {
                            rejected.push(Rejected {
                                index,
                                code: "users_full",
                                message: format!(
                                    "user_id: live state is held for at most {} users",
                                    self.options.max_users
                                ),
                            });
                            continue;
                        }
                        if !users.contains(&event.user_id) {
                            new_users.insert(event.user_id.clone());
                        }
                        valid.push((event, row));
                    }
                }
            }
        }
        if valid.is_empty() {
            return Ok(BatchOutcome {
                accepted: 0,
                rejected,
            });
        }
        let events: Vec<Event> = valid.iter().map(|(e, _)| e.clone()).collect();
        let receipt = self.wal.append(vec![encode(&LogRecord::Events(events))])?;
        self.in_turn(&receipt, || {
            let mut users = self.users.write().unwrap_or_else(|e| e.into_inner());
            let mut moved = HashSet::new();
            for (event, row) in &valid {
                if users.apply(&self.model, &self.options, event, *row, true) {
                    moved.insert(event.user_id.clone());
                }
            }
            users.place(&self.model, &moved);
        });
        Ok(BatchOutcome {
            accepted: valid.len(),
            rejected,
        })
    }

    fn validate(&self, item: serde_json::Value) -> Result<(Event, u32), (&'static str, String)> {
        let event: Event = serde_path_to_error::deserialize(item).map_err(|e| {
            let path = e.path().to_string();
            let message = e.into_inner().to_string();
            if path == "." {
                ("invalid_event", format!("event: {message}"))
            } else {
                ("invalid_event", format!("{path}: {message}"))
            }
        })?;
        if event.user_id.is_empty() || event.user_id.len() > MAX_ID_BYTES {
            return Err((
                "invalid_user_id",
                format!("user_id: must be 1 to {MAX_ID_BYTES} bytes"),
            ));
        }
        if !(0..=MAX_UNIX_SECONDS).contains(&event.ts) {
            return Err((
                "invalid_ts",
                format!(
                    "ts: Unix seconds from 0 to {MAX_UNIX_SECONDS}, got {}",
                    event.ts
                ),
            ));
        }
        let row = self.model.post_row(&event.post_id).ok_or_else(|| {
            (
                "unknown_post",
                format!(
                    "post_id: no post {:?} in model {}",
                    event.post_id,
                    self.model.model_version()
                ),
            )
        })?;
        Ok((event, row))
    }

    /// `user_id`'s live state for a request, if they have any. `with_seen`: include the posts
    /// they have seen (for a feed's first page).
    pub fn viewed(&self, user_id: &str, with_seen: bool) -> Option<Viewed> {
        let users = self.users.read().unwrap_or_else(|e| e.into_inner());
        users.viewed(&self.model, user_id, with_seen)
    }

    /// `user_id`'s embedding as events moved it, if they did.
    pub fn vector(&self, user_id: &str) -> Option<Vec<f32>> {
        let users = self.users.read().unwrap_or_else(|e| e.into_inner());
        users.vector(user_id)
    }

    /// Counts of `user_id`'s live state.
    pub fn summary(&self, user_id: &str) -> Option<UserSummary> {
        let users = self.users.read().unwrap_or_else(|e| e.into_inner());
        users.summary(user_id)
    }

    /// Users with live state.
    pub fn users(&self) -> usize {
        self.users.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn wal_stats(&self) -> crate::wal::WalStats {
        self.wal.stats()
    }
}

/// Ids reserved for a publish in flight, released however it ends.
struct Reserved<'a> {
    ids: Vec<String>,
    set: &'a Mutex<HashSet<String>>,
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        let mut set = self.set.lock().unwrap_or_else(|e| e.into_inner());
        for id in &self.ids {
            set.remove(id);
        }
    }
}

/// Decodes every record of the log.
fn decode_all(raw: &[Vec<u8>]) -> Result<Vec<LogRecord>, LiveError> {
    raw.iter()
        .enumerate()
        .map(|(index, bytes)| {
            postcard::from_bytes(bytes).map_err(|e| LiveError::Record {
                index,
                message: format!("cannot decode: {e}"),
            })
        })
        .collect()
}

/// Drops the first `n` records of the log.
fn compact_before(wal: &Wal, n: usize) -> Result<(), LiveError> {
    let mut index = 0;
    wal.compact(|_| {
        index += 1;
        index > n
    })?;
    Ok(())
}

fn encode(record: &LogRecord) -> Vec<u8> {
    postcard::to_allocvec(record).expect("log records always encode")
}

/// Compaction for a new model: profiles are kept (the latest per user), hides and reports
/// too (as signals only: no snapshot carries a user's hidden posts), other events only if
/// newer than the snapshot's newest post, and published posts the snapshot does not hold, if
/// of its dimension (they stay until a snapshot takes them in). Published posts come before
/// the events, which may name them.
fn carry_over(records: Vec<LogRecord>, model: &Model) -> Vec<LogRecord> {
    let now = model.now();
    let dim = model.snapshot().dim();
    let mut carried = Vec::new();
    let mut newer = Vec::new();
    let mut posts: Vec<LoggedPost> = Vec::new();
    let mut dropped_posts = 0usize;
    let mut profiles: Vec<(String, Profile)> = Vec::new();
    for record in records {
        let (batch, effects) = match record {
            LogRecord::Events(batch) => (batch, true),
            LogRecord::Carried(batch) => (batch, false),
            LogRecord::Model { .. } => continue,
            LogRecord::Profile { user_id, profile } => {
                profiles.retain(|(u, _)| *u != user_id);
                profiles.push((user_id, profile));
                continue;
            }
            LogRecord::Posts(logged) => {
                for p in logged {
                    if p.vector.len() == dim && model.post_row(&p.post.id).is_none() {
                        posts.push(p);
                    } else {
                        dropped_posts += 1;
                    }
                }
                continue;
            }
        };
        for event in batch {
            if effects && event.ts > now {
                newer.push(event);
            } else if matches!(event.kind, EventType::Hide | EventType::Report) {
                carried.push(event);
            }
        }
    }
    if dropped_posts > 0 {
        tracing::info!(
            dropped = dropped_posts,
            kept = posts.len(),
            "published posts the new snapshot holds (or of another dimension) not carried over"
        );
    }
    let mut out: Vec<LogRecord> = profiles
        .into_iter()
        .map(|(user_id, profile)| LogRecord::Profile { user_id, profile })
        .collect();
    // One record per request's worth, so no record grows without bound.
    let mut posts = posts.into_iter().peekable();
    while posts.peek().is_some() {
        out.push(LogRecord::Posts(
            posts.by_ref().take(MAX_POSTS_PER_BATCH).collect(),
        ));
    }
    if !carried.is_empty() {
        out.push(LogRecord::Carried(carried));
    }
    if !newer.is_empty() {
        out.push(LogRecord::Events(newer));
    }
    out
}

/// What an event adds to its post's stats.
fn stats_delta(kind: EventType) -> Stats {
    let mut d = Stats::default();
    match kind {
        EventType::Impression => {}
        EventType::View => d.views = 1,
        EventType::Like => d.likes = 1,
        EventType::Save => d.saves = 1,
        EventType::Comment => d.comments = 1,
        EventType::Share => d.shares = 1,
        EventType::Hide => d.hides = 1,
        EventType::Report => d.reports = 1,
    }
    d
}

/// How far an event turns the user's embedding toward (positive) or away from its post.
fn vector_step(kind: EventType) -> f32 {
    match kind {
        EventType::Like => 0.05,
        EventType::Save => 0.2,
        EventType::Share => 0.15,
        EventType::Hide => -0.2,
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests;
