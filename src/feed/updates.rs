//! Engagement recorded since the snapshot: the current stats of the posts that changed, and
//! which posts reports have taken out for everyone.
//!
//! The rest of a `Model` is immutable; this is the one part that live events write. A request
//! reads one flag per candidate (an atomic load) and takes the lock only for posts that
//! changed, so a model without events ranks exactly as before.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::scoring::{self, ScoringConfig};
use crate::snapshot::Stats;

/// Whether a post's stats changed since the snapshot, and whether reports took it out.
#[derive(Debug, Default)]
pub(super) struct PostFlags {
    changed: AtomicBool,
    suppressed: AtomicBool,
}

/// The flags of the snapshot's posts (published posts carry their own), and the changed stats
/// of every post.
pub(super) struct PostUpdates {
    flags: Vec<PostFlags>,
    stats: RwLock<HashMap<u32, Stats>>,
}

impl PostUpdates {
    pub fn new(posts: usize) -> PostUpdates {
        PostUpdates {
            flags: (0..posts).map(|_| PostFlags::default()).collect(),
            stats: RwLock::new(HashMap::new()),
        }
    }

    /// The flags of snapshot post `row`.
    pub fn flags(&self, row: u32) -> Option<&PostFlags> {
        self.flags.get(row as usize)
    }

    /// Adds `delta` to post `row`'s stats (`base` being the ones it started with) and returns
    /// the new stats; marks the post suppressed once its reports pass the threshold.
    pub fn add(
        &self,
        row: u32,
        flags: &PostFlags,
        base: &Stats,
        delta: &Stats,
        scoring: &ScoringConfig,
    ) -> Stats {
        let mut map = self.stats.write().unwrap_or_else(|e| e.into_inner());
        let stats = map.entry(row).or_insert(*base);
        stats.views += delta.views;
        stats.likes += delta.likes;
        stats.saves += delta.saves;
        stats.comments += delta.comments;
        stats.shares += delta.shares;
        stats.hides += delta.hides;
        stats.reports += delta.reports;
        let stats = *stats;
        // Published after the map holds the stats, so a reader that sees the flag finds them.
        flags.changed.store(true, Ordering::Release);
        if scoring::reported_past_threshold(&stats, scoring) {
            flags.suppressed.store(true, Ordering::Release);
        }
        stats
    }

    /// The current stats of post `row` if events changed them.
    pub fn stats(&self, row: u32, flags: &PostFlags) -> Option<Stats> {
        if !flags.changed.load(Ordering::Acquire) {
            return None;
        }
        let map = self.stats.read().unwrap_or_else(|e| e.into_inner());
        map.get(&row).copied()
    }
}

impl PostFlags {
    /// Whether reports recorded since the snapshot took the post out for everyone.
    pub fn suppressed(&self) -> bool {
        self.suppressed.load(Ordering::Acquire)
    }
}
