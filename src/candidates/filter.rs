//! Filters that depend on the viewer: what they have already been shown, what they hid or
//! reported, and whose posts they blocked.
//!
//! Post-level filters that do not depend on the viewer (posts reported by many) are decided
//! once per model, by the feed, from the scoring layer's threshold.

use std::collections::HashSet;

use serde::Serialize;

use crate::snapshot::Post;

/// What one viewer has been shown and has told us, by post and author id (ids outlive any one
/// snapshot's row numbers). The live-events pipeline fills it; until then, callers of the
/// library do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserSignals {
    /// Posts already served to this viewer.
    pub seen: HashSet<String>,
    /// Posts the viewer hid ("show me less like this" on one post).
    pub hidden: HashSet<String>,
    /// Posts the viewer reported.
    pub reported: HashSet<String>,
    /// Authors the viewer blocked.
    pub blocked_authors: HashSet<String>,
    /// Languages of posts the viewer engaged with (saved, commented on, shared). Not a
    /// filter: the policy does not count posts in these languages as foreign to the viewer,
    /// even if their profile does not list them.
    pub engaged_langs: HashSet<String>,
}

/// Why a filter dropped a post (for explanations and counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dropped {
    Seen,
    Hidden,
    Reported,
    BlockedAuthor,
    /// Reported by many viewers: past the snapshot's report threshold.
    ReportThreshold,
}

impl UserSignals {
    pub fn is_empty(&self) -> bool {
        self.filters_nothing() && self.engaged_langs.is_empty()
    }

    /// Whether [`UserSignals::drops`] drops nothing (so filtering can be skipped).
    pub fn filters_nothing(&self) -> bool {
        self.seen.is_empty()
            && self.hidden.is_empty()
            && self.reported.is_empty()
            && self.blocked_authors.is_empty()
    }

    /// Why this viewer must not be shown `post`, if they must not. Hiding and reporting come
    /// before "seen": the stronger signal is the one worth reporting.
    pub fn drops(&self, post: &Post) -> Option<Dropped> {
        if self.reported.contains(post.id.as_str()) {
            Some(Dropped::Reported)
        } else if self.hidden.contains(post.id.as_str()) {
            Some(Dropped::Hidden)
        } else if self.blocked_authors.contains(post.author.as_str()) {
            Some(Dropped::BlockedAuthor)
        } else if self.seen.contains(post.id.as_str()) {
            Some(Dropped::Seen)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{PostKind, Stats};

    fn post(id: &str, author: &str) -> Post {
        Post {
            id: id.into(),
            author: author.into(),
            lang: "en".into(),
            hashtags: Vec::new(),
            kind: PostKind::Organic,
            created_at: 0,
            stats: Stats::default(),
        }
    }

    fn set(ids: &[&str]) -> HashSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn each_signal_drops_its_posts_and_nothing_else() {
        let signals = UserSignals {
            seen: set(&["p_seen", "p_both"]),
            hidden: set(&["p_hidden"]),
            reported: set(&["p_reported", "p_both"]),
            blocked_authors: set(&["a_blocked"]),
            engaged_langs: set(&["zh"]),
        };
        assert_eq!(signals.drops(&post("p_seen", "a")), Some(Dropped::Seen));
        assert_eq!(signals.drops(&post("p_hidden", "a")), Some(Dropped::Hidden));
        assert_eq!(
            signals.drops(&post("p_reported", "a")),
            Some(Dropped::Reported)
        );
        assert_eq!(signals.drops(&post("p_both", "a")), Some(Dropped::Reported));
        assert_eq!(
            signals.drops(&post("p_x", "a_blocked")),
            Some(Dropped::BlockedAuthor)
        );
        assert_eq!(signals.drops(&post("p_x", "a")), None);
        assert!(!signals.is_empty());
        assert!(UserSignals::default().is_empty());
        assert_eq!(
            UserSignals::default().drops(&post("p_seen", "a_blocked")),
            None
        );
    }
}
