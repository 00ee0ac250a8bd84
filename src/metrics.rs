//! Service metrics, rendered in the Prometheus text exposition format (version 0.0.4).
//!
//! Plain data, no HTTP: `Metrics` is a registry of counters (`AtomicU64`) and fixed-bucket
//! histograms that the API's middleware and handlers record into, and that renders itself,
//! with gauges read from the serving state at scrape time ([`ServingGauges`]), as the body of
//! `GET /metrics`. Recording never takes a lock and never allocates (but the first request
//! of a route template, which interns the template once).
//!
//! Every label takes values from a small fixed set, so the number of series is bounded:
//! routes are the router's templates (`/v1/users/{user_id}/feed`, never a raw path), at most
//! [`ROUTE_SLOTS`] of them, and requests no route matched share [`UNMATCHED_ROUTE`]; methods
//! are the seven standard ones and `other`; statuses are codes the service answers with.
//!
//! The feed pipeline times its stages into [`FeedMetrics`], handed to it in the request's
//! context: a [`StageClock`] without a registry reads no clock, so library users and tests
//! that pass none pay nothing.

use std::borrow::Cow;
use std::fmt::{Display, Write as _};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Upper bounds (seconds) of `feedrank_http_request_duration_seconds`: sub-millisecond feeds
/// to publishing batches of seconds.
pub const HTTP_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Upper bounds (seconds) of `feedrank_feed_stage_seconds`: a stage takes microseconds to a
/// few hundred.
pub const STAGE_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1,
];

/// Upper bounds of `feedrank_feed_ads_per_page` (a page of 100 holds at most 9 ads under the
/// default policy).
pub const ADS_PER_PAGE_BUCKETS: &[f64] = &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0];

/// Route templates that get a label of their own; more (never expected: the router has a
/// dozen) are counted under [`OTHER_ROUTE`].
pub const ROUTE_SLOTS: usize = 64;

/// The route label of requests no route matched (404s of the fallback).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The route label past [`ROUTE_SLOTS`] templates.
pub const OTHER_ROUTE: &str = "other";

const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other",
];

/// Series of `feedrank_http_requests_total` the table holds (route × method × status seen).
const REQUEST_SERIES: usize = 1024;

/// A feed request's stages, in pipeline order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Candidate sources: the viewer, retrieval (the organic search), the followed hashtags,
    /// trending and fresh lists, merged within quotas with the filters applied. For a viewer
    /// without interests, the non-personal ranking, hydrated as it is taken.
    Sources = 0,
    /// Similarity of every organic candidate to the viewer, its terms and the blend (zero for
    /// a viewer without interests: counted under `sources`).
    Hydrate = 1,
    /// Waiting for the ad search (started before the sources, beside them) and hydrating the
    /// ads (zero for a viewer without interests, who is shown none).
    Ads = 2,
    /// The selector (`policy::arrange`), with the reserves when the candidates run short.
    Arrange = 3,
    /// Cutting the page, explanations, the next cursor.
    Page = 4,
}

impl Stage {
    pub const ALL: [Stage; 5] = [
        Stage::Sources,
        Stage::Hydrate,
        Stage::Ads,
        Stage::Arrange,
        Stage::Page,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Sources => "sources",
            Stage::Hydrate => "hydrate",
            Stage::Ads => "ads",
            Stage::Arrange => "arrange",
            Stage::Page => "page",
        }
    }
}

/// A histogram of fixed buckets. Observations are integers of a unit (nanoseconds for
/// durations, items for counts), so the sum is exact and one `fetch_add`; each observation
/// adds to one bucket, and the exposition accumulates them, so `+Inf` always equals `_count`.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// `bounds` in units.
    limits: Box<[u64]>,
    /// One per bound and one past the last (`+Inf`); not cumulative.
    buckets: Box<[AtomicU64]>,
    /// In units.
    sum: AtomicU64,
    /// Units in a value of 1 (1e9 for nanoseconds): the sum is divided by it, which gives
    /// the shortest decimal where multiplying by the unit would not (0.005845919, not
    /// 0.005845919000000001).
    units_per_one: f64,
}

/// A histogram as read at one moment: cumulative counts per bound.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound, observations at most that)`, the last bound `+∞`.
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    /// Observations in `unit`s (`1e-9` for durations in nanoseconds, `1` for counts; a unit
    /// is a whole fraction of 1).
    pub fn new(bounds: &'static [f64], unit: f64) -> Histogram {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "bounds increase");
        Histogram {
            bounds,
            limits: bounds.iter().map(|b| (b / unit).round() as u64).collect(),
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            units_per_one: (1.0 / unit).round(),
        }
    }

    /// A histogram of durations (seconds, recorded in nanoseconds).
    pub fn seconds(bounds: &'static [f64]) -> Histogram {
        Histogram::new(bounds, 1e-9)
    }

    /// A histogram of counts.
    pub fn counts(bounds: &'static [f64]) -> Histogram {
        Histogram::new(bounds, 1.0)
    }

    /// Records `units`.
    #[inline]
    pub fn observe(&self, units: u64) {
        // A dozen bounds: a scan beats a binary search.
        let i = self.limits.iter().take_while(|&&l| units > l).count();
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(units, Ordering::Relaxed);
    }

    /// Records a duration (for a histogram of [`Histogram::seconds`]).
    #[inline]
    pub fn observe_duration(&self, elapsed: Duration) {
        self.observe(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut total = 0;
        let mut buckets = Vec::with_capacity(self.buckets.len());
        for (i, bucket) in self.buckets.iter().enumerate() {
            total += bucket.load(Ordering::Relaxed);
            let bound = self.bounds.get(i).copied().unwrap_or(f64::INFINITY);
            buckets.push((bound, total));
        }
        HistogramSnapshot {
            buckets,
            sum: self.sum.load(Ordering::Relaxed) as f64 / self.units_per_one,
            count: total,
        }
    }
}

/// What the feed pipeline records: its stages' times and the composition of each page.
/// Handed to `Model::feed_with` in its `RequestContext`.
#[derive(Debug)]
pub struct FeedMetrics {
    stages: [Histogram; 5],
    ads_per_page: Histogram,
    /// Items served by kind: organic, sponsored, ad.
    items: [AtomicU64; 3],
}

/// Kinds of a served item, in the order of `FeedMetrics::items`.
const ITEM_KINDS: [&str; 3] = ["organic", "sponsored", "ad"];

impl Default for FeedMetrics {
    fn default() -> Self {
        FeedMetrics {
            stages: std::array::from_fn(|_| Histogram::seconds(STAGE_BUCKETS)),
            ads_per_page: Histogram::counts(ADS_PER_PAGE_BUCKETS),
            items: Default::default(),
        }
    }
}

impl FeedMetrics {
    /// Records one request's stage times (those the clock passed through).
    pub fn record_stages(&self, clock: &StageClock<'_>) {
        for stage in Stage::ALL {
            if clock.passed & (1 << stage as u8) != 0 {
                self.stages[stage as usize].observe_duration(clock.spent[stage as usize]);
            }
        }
    }

    /// Records a served page of `organic` organic posts, `sponsored` sponsored posts and
    /// `ads` ads.
    pub fn record_page(&self, organic: usize, sponsored: usize, ads: usize) {
        for (counter, n) in self.items.iter().zip([organic, sponsored, ads]) {
            if n > 0 {
                counter.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
        self.ads_per_page.observe(ads as u64);
    }

    pub fn stage(&self, stage: Stage) -> HistogramSnapshot {
        self.stages[stage as usize].snapshot()
    }
}

/// Times a feed request's stages for [`FeedMetrics`]: each [`StageClock::lap`] charges the
/// time since the previous one to a stage. Without a registry it never reads the clock.
#[derive(Debug)]
pub struct StageClock<'a> {
    sink: Option<&'a FeedMetrics>,
    last: Option<Instant>,
    spent: [Duration; 5],
    /// Bit per stage lapped (or skipped) at least once.
    passed: u8,
}

impl<'a> StageClock<'a> {
    /// Starts timing (only with a registry).
    #[inline]
    pub fn start(sink: Option<&'a FeedMetrics>) -> StageClock<'a> {
        StageClock {
            sink,
            last: sink.map(|_| Instant::now()),
            spent: [Duration::ZERO; 5],
            passed: 0,
        }
    }

    /// Charges the time since the previous lap (or the start) to `stage`.
    #[inline]
    pub fn lap(&mut self, stage: Stage) {
        if let Some(last) = &mut self.last {
            let now = Instant::now();
            self.spent[stage as usize] += now.duration_since(*last);
            *last = now;
            self.passed |= 1 << stage as u8;
        }
    }

    /// Notes that `stage` had nothing to do in this request (it is recorded as zero).
    #[inline]
    pub fn skip(&mut self, stage: Stage) {
        self.passed |= 1 << stage as u8;
    }

    /// Records the stages passed into the registry, if any.
    pub fn finish(self) {
        if let Some(sink) = self.sink {
            sink.record_stages(&self);
        }
    }
}

/// Requests per route, method and status, and their durations per route.
#[derive(Debug)]
struct HttpMetrics {
    /// Route templates by slot, filled in order and never changed.
    routes: [OnceLock<Box<str>>; ROUTE_SLOTS],
    /// Per route slot, then [`UNMATCHED_ROUTE`], then [`OTHER_ROUTE`].
    durations: Box<[Histogram]>,
    /// Open addressing over packed `(route, method, status)` keys (0: empty slot); a key,
    /// once written, never moves.
    keys: Box<[AtomicU64]>,
    counts: Box<[AtomicU64]>,
    /// Requests the full table could not count apart.
    overflow: AtomicU64,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        HttpMetrics {
            routes: std::array::from_fn(|_| OnceLock::new()),
            durations: (0..ROUTE_SLOTS + 2)
                .map(|_| Histogram::seconds(HTTP_BUCKETS))
                .collect(),
            keys: (0..REQUEST_SERIES).map(|_| AtomicU64::new(0)).collect(),
            counts: (0..REQUEST_SERIES).map(|_| AtomicU64::new(0)).collect(),
            overflow: AtomicU64::new(0),
        }
    }
}

impl HttpMetrics {
    /// The slot of `route` (a template), taking the first free one if it is new.
    fn route_slot(&self, route: Option<&str>) -> usize {
        let Some(route) = route else {
            return ROUTE_SLOTS;
        };
        for (i, slot) in self.routes.iter().enumerate() {
            // Slots fill in order and never change, so a template is in one slot only: a
            // thread that loses the race for a free slot finds the winner's template there.
            let name = match slot.get() {
                Some(name) => name,
                None => {
                    let _ = slot.set(route.into());
                    slot.get().expect("set")
                }
            };
            if &**name == route {
                return i;
            }
        }
        ROUTE_SLOTS + 1
    }

    fn route_label(&self, slot: usize) -> &str {
        match slot {
            ROUTE_SLOTS => UNMATCHED_ROUTE,
            s if s < ROUTE_SLOTS => self.routes[s].get().map_or(OTHER_ROUTE, |r| &**r),
            _ => OTHER_ROUTE,
        }
    }

    fn count(&self, route: usize, method: usize, status: u16) {
        let key = pack(route, method, status);
        let mut i = (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54) as usize % REQUEST_SERIES;
        for _ in 0..REQUEST_SERIES {
            let found =
                match self.keys[i].compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => key,
                    Err(current) => current,
                };
            if found == key {
                self.counts[i].fetch_add(1, Ordering::Relaxed);
                return;
            }
            i = (i + 1) % REQUEST_SERIES;
        }
        self.overflow.fetch_add(1, Ordering::Relaxed);
    }

    /// `(route slot, method, status, count)` of every series, by route label, method, status.
    fn series(&self) -> Vec<(usize, usize, u16, u64)> {
        let mut series: Vec<_> = self
            .keys
            .iter()
            .zip(self.counts.iter())
            .filter_map(|(key, count)| {
                let key = key.load(Ordering::Acquire);
                let count = count.load(Ordering::Relaxed);
                (key != 0).then(|| {
                    let (route, method, status) = unpack(key);
                    (route, method, status, count)
                })
            })
            .collect();
        series.sort_by(|a, b| {
            (self.route_label(a.0), a.1, a.2).cmp(&(self.route_label(b.0), b.1, b.2))
        });
        series
    }
}

/// A request series' key: never 0 (the empty slot).
fn pack(route: usize, method: usize, status: u16) -> u64 {
    1 << 40 | (route as u64) << 20 | (method as u64) << 16 | u64::from(status)
}

fn unpack(key: u64) -> (usize, usize, u16) {
    (
        ((key >> 20) & 0xF_FFFF) as usize,
        ((key >> 16) & 0xF) as usize,
        (key & 0xFFFF) as u16,
    )
}

fn method_index(method: &str) -> usize {
    METHODS[..7].iter().position(|m| *m == method).unwrap_or(7)
}

/// The service's metrics: what requests, the feed pipeline, events, publishing and reloads
/// recorded since start. One per `AppState`.
#[derive(Debug, Default)]
pub struct Metrics {
    http: HttpMetrics,
    feed: FeedMetrics,
    /// The same, for pages a candidate arm served.
    candidate_feed: FeedMetrics,
    /// Accepted, rejected.
    events: [AtomicU64; 2],
    posts_published: AtomicU64,
    /// Ok, failed.
    reloads: [AtomicU64; 2],
}

/// Rows of one index per segment (see `index::LiveIndex`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegmentRows {
    pub base: u64,
    /// All sealed graphs together.
    pub sealed: u64,
    pub delta: u64,
}

/// What the served model reports at scrape time.
#[derive(Debug, Clone, Copy)]
pub struct ModelGauges<'a> {
    pub model_version: &'a str,
    /// The experiment arm the model serves (`main`: the candidate's is `candidate`).
    pub arm: &'a str,
    pub organic_rows: SegmentRows,
    pub ad_rows: SegmentRows,
    /// The user index: the snapshot's users in the base, placements appended.
    pub user_rows: SegmentRows,
    /// Posts published since the snapshot.
    pub published_posts: u64,
    /// Users the user index met since the snapshot (onboarded newcomers, users known only by
    /// events).
    pub new_users: u64,
    /// Rows appended to the user index (moves and newcomers).
    pub user_placements: u64,
    /// Placements refused (moves and newcomers) because the model's `max_placements` was
    /// reached: those users wait for the next model.
    pub user_placements_refused: u64,
    /// Background rebuilds of the user index since the model loaded, and 1 while one runs.
    pub user_index_rebuilds: u64,
    pub user_index_rebuilding: u64,
    /// Published posts in the table of offers to a first audience (`Audience::offered`: an
    /// offer that ended stays until the next publish prunes the table).
    pub offered_posts: u64,
}

/// What the live state reports at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct LiveGauges {
    /// Users with live state.
    pub users: u64,
    /// The write-ahead log's current file.
    pub wal_bytes: u64,
    pub wal_records: u64,
}

/// Gauges read from the serving state when scraped; a part that is not there (no model yet,
/// no live events) is left out of the exposition.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServingGauges<'a> {
    pub model: Option<ModelGauges<'a>>,
    pub live: Option<LiveGauges>,
    /// The model version of the candidate arm on trial, if any.
    pub candidate: Option<&'a str>,
    /// Onboarded users' profiles.
    pub profiles: u64,
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// What the feed pipeline records into (give it to `RequestContext::metrics`).
    pub fn feed(&self) -> &FeedMetrics {
        &self.feed
    }

    /// What the feed pipeline records into for the `candidate` arm (or the main one).
    pub fn feed_of(&self, candidate: bool) -> &FeedMetrics {
        if candidate {
            &self.candidate_feed
        } else {
            &self.feed
        }
    }

    /// One HTTP request answered: `route` is the matched route's template (`None` when no
    /// route matched), `elapsed` the time to the response.
    pub fn record_request(
        &self,
        route: Option<&str>,
        method: &str,
        status: u16,
        elapsed: Duration,
    ) {
        let slot = self.http.route_slot(route);
        self.http.count(slot, method_index(method), status);
        self.http.durations[slot].observe_duration(elapsed);
    }

    /// A batch of events: items accepted (logged and applied) and rejected.
    pub fn record_events(&self, accepted: usize, rejected: usize) {
        self.events[0].fetch_add(accepted as u64, Ordering::Relaxed);
        self.events[1].fetch_add(rejected as u64, Ordering::Relaxed);
    }

    /// Posts published (logged and indexed).
    pub fn record_published(&self, posts: usize) {
        self.posts_published
            .fetch_add(posts as u64, Ordering::Relaxed);
    }

    /// A model reload finished, `ok` or failed.
    pub fn record_reload(&self, ok: bool) {
        self.reloads[usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition: every metric with `# HELP` and `# TYPE`, then the gauges of `serving`.
    pub fn render(&self, serving: &ServingGauges<'_>) -> String {
        let mut out = Exposition::default();

        out.family(
            "feedrank_http_requests_total",
            "HTTP requests answered, by route template, method and status.",
            "counter",
        );
        for (route, method, status, count) in self.http.series() {
            let status = status.to_string();
            out.sample(
                "feedrank_http_requests_total",
                &[
                    ("route", self.http.route_label(route)),
                    ("method", METHODS[method]),
                    ("status", &status),
                ],
                count,
            );
        }
        let overflow = self.http.overflow.load(Ordering::Relaxed);
        if overflow > 0 {
            out.sample(
                "feedrank_http_requests_total",
                &[
                    ("route", OTHER_ROUTE),
                    ("method", "other"),
                    ("status", "other"),
                ],
                overflow,
            );
        }

        out.family(
            "feedrank_http_request_duration_seconds",
            "Time from a request's arrival to its response, by route template.",
            "histogram",
        );
        let mut routes: Vec<usize> = (0..ROUTE_SLOTS)
            .take_while(|&s| self.http.routes[s].get().is_some())
            .collect();
        routes.sort_by_key(|&s| self.http.route_label(s));
        routes.extend([ROUTE_SLOTS, ROUTE_SLOTS + 1]);
        for slot in routes {
            let histogram = self.http.durations[slot].snapshot();
            if histogram.count > 0 || slot < ROUTE_SLOTS {
                out.histogram(
                    "feedrank_http_request_duration_seconds",
                    &[("route", self.http.route_label(slot))],
                    &histogram,
                );
            }
        }

        let arms = [("main", &self.feed), ("candidate", &self.candidate_feed)];
        out.family(
            "feedrank_feed_stage_seconds",
            "Time per feed request in each stage of the pipeline (sources, hydrate, ads, arrange, page), by arm.",
            "histogram",
        );
        for (arm, feed) in arms {
            for stage in Stage::ALL {
                out.histogram(
                    "feedrank_feed_stage_seconds",
                    &[("stage", stage.name()), ("arm", arm)],
                    &feed.stage(stage),
                );
            }
        }

        out.family(
            "feedrank_feed_ads_per_page",
            "Ads among the items of each served feed page, by arm.",
            "histogram",
        );
        for (arm, feed) in arms {
            out.histogram(
                "feedrank_feed_ads_per_page",
                &[("arm", arm)],
                &feed.ads_per_page.snapshot(),
            );
        }

        out.family(
            "feedrank_feed_items_total",
            "Feed items served, by kind and arm.",
            "counter",
        );
        for (arm, feed) in arms {
            for (kind, counter) in ITEM_KINDS.into_iter().zip(&feed.items) {
                out.sample(
                    "feedrank_feed_items_total",
                    &[("kind", kind), ("arm", arm)],
                    counter.load(Ordering::Relaxed),
                );
            }
        }

        out.family(
            "feedrank_events_total",
            "Events of POST /v1/events batches, accepted (logged and applied) or rejected.",
            "counter",
        );
        for (outcome, counter) in ["accepted", "rejected"].into_iter().zip(&self.events) {
            out.sample(
                "feedrank_events_total",
                &[("outcome", outcome)],
                counter.load(Ordering::Relaxed),
            );
        }

        out.family(
            "feedrank_posts_published_total",
            "Posts published through POST /v1/posts.",
            "counter",
        );
        out.sample(
            "feedrank_posts_published_total",
            &[],
            self.posts_published.load(Ordering::Relaxed),
        );

        out.family(
            "feedrank_reloads_total",
            "Model reloads, by result.",
            "counter",
        );
        for (result, counter) in ["ok", "failed"].into_iter().zip(&self.reloads) {
            out.sample(
                "feedrank_reloads_total",
                &[("result", result)],
                counter.load(Ordering::Relaxed),
            );
        }

        out.family(
            "feedrank_model_info",
            "The model being served (always 1).",
            "gauge",
        );
        if let Some(model) = &serving.model {
            out.sample(
                "feedrank_model_info",
                &[("model_version", model.model_version), ("arm", model.arm)],
                1,
            );
        }
        if let Some(version) = serving.candidate {
            out.sample(
                "feedrank_model_info",
                &[("model_version", version), ("arm", "candidate")],
                1,
            );
        }
        out.family(
            "feedrank_index_rows",
            "Rows of the served model's indexes (posts, ads, users), by index and segment.",
            "gauge",
        );
        if let Some(model) = &serving.model {
            for (index, rows) in [
                ("organic", model.organic_rows),
                ("ads", model.ad_rows),
                ("users", model.user_rows),
            ] {
                for (segment, n) in [
                    ("base", rows.base),
                    ("sealed", rows.sealed),
                    ("delta", rows.delta),
                ] {
                    out.sample(
                        "feedrank_index_rows",
                        &[("index", index), ("segment", segment)],
                        n,
                    );
                }
            }
        }
        for (name, help, value) in [
            (
                "feedrank_published_posts",
                "Posts published since the served model's snapshot.",
                serving.model.map(|m| m.published_posts),
            ),
            (
                "feedrank_new_users",
                "Users the served model's user index met since its snapshot.",
                serving.model.map(|m| m.new_users),
            ),
            (
                "feedrank_user_placements",
                "Rows appended to the served model's user index (moves and newcomers).",
                serving.model.map(|m| m.user_placements),
            ),
            (
                "feedrank_user_placements_refused",
                "Placements refused by the served model's user index (max_placements reached).",
                serving.model.map(|m| m.user_placements_refused),
            ),
            (
                "feedrank_user_index_rebuilds",
                "Background rebuilds of the served model's user index (appended rows past a tenth).",
                serving.model.map(|m| m.user_index_rebuilds),
            ),
            (
                "feedrank_user_index_rebuilding",
                "1 while the served model's user index is being rebuilt.",
                serving.model.map(|m| m.user_index_rebuilding),
            ),
            (
                "feedrank_offered_posts",
                "Small creators' published posts in the table of offers to a first audience (ended offers stay until the next publish prunes the table).",
                serving.model.map(|m| m.offered_posts),
            ),
        ] {
            out.family(name, help, "gauge");
            if let Some(value) = value {
                out.sample(name, &[], value);
            }
        }

        for (name, help, value) in [
            (
                "feedrank_live_users",
                "Users with live state (events) on the served model.",
                serving.live.map(|l| l.users),
            ),
            (
                "feedrank_wal_bytes",
                "Bytes in the write-ahead log's current file.",
                serving.live.map(|l| l.wal_bytes),
            ),
            (
                "feedrank_wal_records",
                "Records in the write-ahead log's current file.",
                serving.live.map(|l| l.wal_records),
            ),
        ] {
            out.family(name, help, "gauge");
            if let Some(value) = value {
                out.sample(name, &[], value);
            }
        }

        out.family(
            "feedrank_profiles",
            "Onboarded users' profiles held.",
            "gauge",
        );
        out.sample("feedrank_profiles", &[], serving.profiles);
        out.text
    }
}

/// The text being rendered.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, help: &str, kind: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{label}=\"{}\"", escape_label(value));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    /// `_bucket{le=...}` cumulative to `+Inf`, `_sum`, `_count`.
    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &HistogramSnapshot) {
        let bucket = format!("{name}_bucket");
        for &(bound, count) in &h.buckets {
            let le = if bound.is_infinite() {
                "+Inf".to_string()
            } else {
                bound.to_string()
            };
            let mut with_le = labels.to_vec();
            with_le.push(("le", le.as_str()));
            self.sample(&bucket, &with_le, count);
        }
        self.sample(&format!("{name}_sum"), labels, h.sum);
        self.sample(&format!("{name}_count"), labels, h.count);
    }
}

/// A label value as the text format writes it: `\`, `"` and newline escaped.
pub fn escape_label(value: &str) -> Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 2);
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests;
