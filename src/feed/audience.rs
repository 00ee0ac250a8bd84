//! A first audience for new posts of small creators.
//!
//! A post published after the snapshot whose author is *small* gets offered to the users
//! nearest to it, instead of waiting for signals that only an audience can give it:
//!
//! - **Small creator**: the views of all the author's posts in the snapshot add up to fewer
//!   than `small_creator_max_views` (an author the snapshot does not know has none). The
//!   contract carries no follower graph, so past impressions are the measure.
//! - **Audience**: the `audience_size` users nearest to the post in the user index when it is
//!   published; the similarity of the last of them is the post's *radius*. A viewer is in the
//!   audience when their interest is at least that similar to the post.
//! - **Offer**: such posts enter the viewer's candidates as the `audience` source (at most
//!   `candidates` a request, the closest first), compete as the viewer's `rank`-th best
//!   candidate (or their own blend if higher), and take at most `max_exploring_per_page`
//!   positions of a page (a policy knob, 1 by default).
//! - **Stop**: once the post has `max_impressions` impressions (impression events, or its views
//!   if those are more), or is `window_hours` older than the newest post published, it is
//!   judged like any other post by its own value signals.
//!
//! Only organic posts are offered (sponsored posts and ads have their own rules). At most
//! `max_offered` posts are tracked at once, the oldest leaving first.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// `[feed.audience]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AudienceOptions {
    /// Offered posts a request may take as candidates (0 turns the offer off).
    pub candidates: usize,
    /// An author is small below this many views over all their snapshot posts.
    pub small_creator_max_views: u64,
    /// Users a post is offered to: its nearest in the user index.
    pub audience_size: usize,
    /// The offer stops once the post has this many impressions.
    pub max_impressions: u64,
    /// ... or once it is this much older than the newest published post.
    pub window_hours: u32,
    /// An offered post competes as the viewer's `rank`-th best candidate (from 1).
    pub rank: usize,
    /// Posts on offer at once (the oldest leave first).
    pub max_offered: usize,
}

impl Default for AudienceOptions {
    fn default() -> Self {
        AudienceOptions {
            candidates: 10,
            small_creator_max_views: 5_000,
            // As many users as impressions judge a post: each of them sees it once.
            audience_size: 200,
            max_impressions: 200,
            window_hours: 48,
            rank: 3,
            max_offered: 2_000,
        }
    }
}

impl AudienceOptions {
    /// Checks the ranges; `Err((field, problem))`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.audience_size == 0 || self.audience_size > 100_000 {
            return Err(("audience_size", "must be 1 to 100000".into()));
        }
        if self.rank == 0 {
            return Err(("rank", "must be at least 1".into()));
        }
        if self.max_offered == 0 || self.max_offered > 100_000 {
            return Err(("max_offered", "must be 1 to 100000".into()));
        }
        if self.candidates > 100 {
            return Err(("candidates", "must be at most 100".into()));
        }
        Ok(())
    }
}

/// One post on offer.
#[derive(Debug)]
struct Offered {
    row: u32,
    created_at: i64,
    /// Similarity of the last user of its audience when it was published.
    radius: f32,
    impressions: AtomicU64,
}

/// Where a post stands with the offer (`GET /v1/posts/{id}/audience`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OfferStatus {
    /// Still offered.
    pub active: bool,
    pub impressions: u64,
    /// The similarity a viewer needs to be in the audience.
    pub radius: f32,
}

/// The posts on offer, and the authors' past views. `Send + Sync`.
pub struct Audience {
    options: AudienceOptions,
    /// Views of each author's snapshot posts, summed.
    author_views: HashMap<String, u64>,
    /// By row, ascending (rows are published in order).
    offered: RwLock<Vec<Offered>>,
    /// The newest `created_at` of a post published (the window's "now").
    newest: AtomicI64,
}

impl Audience {
    pub fn new<'a>(
        options: AudienceOptions,
        posts: impl Iterator<Item = (&'a str, u64)>,
    ) -> Audience {
        let mut author_views: HashMap<String, u64> = HashMap::new();
        for (author, views) in posts {
            let total = author_views.entry(author.to_owned()).or_insert(0);
            *total = total.saturating_add(views);
        }
        Audience {
            options,
            author_views,
            offered: RwLock::new(Vec::new()),
            newest: AtomicI64::new(i64::MIN),
        }
    }

    pub fn options(&self) -> &AudienceOptions {
        &self.options
    }

    /// The rule for a small creator (see the module docs).
    pub fn is_small_creator(&self, author: &str) -> bool {
        self.author_views.get(author).copied().unwrap_or(0) < self.options.small_creator_max_views
    }

    /// Notes a published post's time (every published post moves the window's "now").
    pub fn published_at(&self, created_at: i64) {
        self.newest.fetch_max(created_at, Ordering::Relaxed);
    }

    /// Puts each `(row, created_at, radius)` on offer to the users at least `radius`
    /// similar to it. Offers that ended by their impressions or their age leave first, so the
    /// table a request scans holds few dead entries (an offer ended by views alone waits for
    /// `max_offered`); past `max_offered`, the oldest leave.
    pub fn offer(&self, posts: &[(u32, i64, f32)]) {
        let mut offered = self.write();
        offered.retain(|o| self.active(o, o.impressions.load(Ordering::Relaxed)));
        for &(row, created_at, radius) in posts {
            let at = offered.partition_point(|o| o.row < row);
            if offered.get(at).is_some_and(|o| o.row == row) {
                continue;
            }
            offered.insert(
                at,
                Offered {
                    row,
                    created_at,
                    radius,
                    impressions: AtomicU64::new(0),
                },
            );
        }
        let excess = offered.len().saturating_sub(self.options.max_offered);
        if excess > 0 {
            // The oldest by time leave; the table stays sorted by row.
            let mut by_age: Vec<(i64, u32)> =
                offered.iter().map(|o| (o.created_at, o.row)).collect();
            by_age.sort_unstable();
            let leaving: std::collections::HashSet<u32> =
                by_age[..excess].iter().map(|&(_, row)| row).collect();
            offered.retain(|o| !leaving.contains(&o.row));
        }
    }

    /// Counts an impression of post `row` if it is on offer (cheap otherwise: one lookup).
    pub fn record_impression(&self, row: u32) {
        let offered = self.read();
        if let Ok(at) = offered.binary_search_by_key(&row, |o| o.row) {
            offered[at].impressions.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Where post `row` stands, `views` being its views now; `None` if it was never offered
    /// (or left the table).
    pub fn status(&self, row: u32, views: u64) -> Option<OfferStatus> {
        let offered = self.read();
        let at = offered.binary_search_by_key(&row, |o| o.row).ok()?;
        let o = &offered[at];
        let impressions = o.impressions.load(Ordering::Relaxed).max(views);
        Some(OfferStatus {
            active: self.active(o, impressions),
            impressions,
            radius: o.radius,
        })
    }

    /// The posts on offer to a viewer: each still active, with `similarity(row)` at least its
    /// radius and `excluded(row)` false, the most similar first (ties: smaller row), at most
    /// `candidates`. `views(row)` gives a post's views now.
    pub fn for_viewer(
        &self,
        similarity: impl Fn(u32) -> f32,
        views: impl Fn(u32) -> u64,
        excluded: impl Fn(u32) -> bool,
    ) -> Vec<(u32, f32)> {
        if self.options.candidates == 0 {
            return Vec::new();
        }
        let offered = self.read();
        // The cheap tests first: the counter and the age, then the similarity, then the
        // post's views and the viewer's filters.
        let mut found: Vec<(u32, f32)> = offered
            .iter()
            .filter(|o| self.active(o, o.impressions.load(Ordering::Relaxed)))
            .filter_map(|o| {
                let s = similarity(o.row);
                (s >= o.radius).then_some((o, s))
            })
            .filter(|(o, _)| {
                let impressions = o.impressions.load(Ordering::Relaxed).max(views(o.row));
                self.active(o, impressions) && !excluded(o.row)
            })
            .map(|(o, s)| (o.row, s))
            .collect();
        found.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        found.truncate(self.options.candidates);
        found
    }

    /// Posts in the offer table: on offer, or ended since the last publish pruned it.
    pub fn offered(&self) -> usize {
        self.read().len()
    }

    fn active(&self, o: &Offered, impressions: u64) -> bool {
        let window = i64::from(self.options.window_hours) * 3600;
        impressions < self.options.max_impressions
            && self
                .newest
                .load(Ordering::Relaxed)
                .saturating_sub(o.created_at)
                <= window
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Offered>> {
        self.offered.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Offered>> {
        self.offered.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audience(options: AudienceOptions) -> Audience {
        Audience::new(options, [("big", 9_000u64), ("small", 10)].into_iter())
    }

    #[test]
    fn small_creators_are_those_with_few_past_views() {
        let a = audience(AudienceOptions::default());
        assert!(a.is_small_creator("small"));
        assert!(a.is_small_creator("never_seen"));
        assert!(!a.is_small_creator("big"));
    }

    #[test]
    fn a_viewer_within_the_radius_is_offered_the_post_until_its_impressions_or_age() {
        let options = AudienceOptions {
            max_impressions: 3,
            window_hours: 1,
            candidates: 2,
            ..AudienceOptions::default()
        };
        let a = audience(options);
        a.published_at(1_000);
        a.offer(&[(7, 1_000, 0.5), (9, 1_000, 0.2), (8, 1_000, 0.9)]);
        let similarity = |row: u32| match row {
            7 => 0.6,
            8 => 0.8,
            _ => 0.3,
        };
        // Post 8's radius (0.9) leaves this viewer out; 7 and 9 closest first.
        let found = a.for_viewer(similarity, |_| 0, |_| false);
        assert_eq!(found, vec![(7, 0.6), (9, 0.3)]);
        // A viewer's filters drop a post.
        assert_eq!(
            a.for_viewer(similarity, |_| 0, |row| row == 7),
            vec![(9, 0.3)]
        );
        // Three impressions end 7's offer; views past the bar end 9's.
        for _ in 0..3 {
            a.record_impression(7);
        }
        a.record_impression(42); // not on offer: nothing
        let status = a.status(7, 0).unwrap();
        assert_eq!((status.active, status.impressions), (false, 3));
        assert_eq!(
            a.for_viewer(similarity, |row| u64::from(row == 9) * 5, |_| false),
            vec![]
        );
        // A newer post an hour and a second later ends every offer by age.
        a.published_at(1_000 + 3_601);
        assert!(!a.status(9, 0).unwrap().active);
        assert!(a.status(5, 0).is_none(), "never offered");
    }

    #[test]
    fn the_table_keeps_the_newest_offers_and_prunes_ended_ones() {
        let options = AudienceOptions {
            max_offered: 3,
            max_impressions: 1,
            ..AudienceOptions::default()
        };
        let a = audience(options);
        a.published_at(500);
        a.offer(&[(1, 100, 0.0), (2, 400, 0.0), (3, 300, 0.0), (4, 200, 0.0)]);
        // The oldest (row 1, created at 100) left.
        assert_eq!(a.offered(), 3);
        assert!(a.status(1, 0).is_none());
        // An offer ended by an impression leaves at the next publish.
        a.record_impression(2);
        a.offer(&[(5, 500, 0.0)]);
        assert!(a.status(2, 0).is_none());
        assert_eq!(a.offered(), 3);
    }
}
