//! Candidate sources besides personal retrieval, and the merge of all sources into one set.
//!
//! Each source has its own quota, so that no source can crowd out the others:
//!
//! - **audience**: new posts of small creators whose nearest users include the viewer (see
//!   `feed::audience`): an exploration share the selector caps per page;
//! - **personal**: the organic posts nearest to the user's vector (the HNSW search);
//! - **lookalike**: posts the viewer's nearest users recently saved, shared or liked (the user
//!   index, `users.rs`), by the sum of the neighbours' similarity times the engagement's weight;
//! - **hashtag**: the best posts under the hashtags the user follows, taken in turns across
//!   the hashtags, so that one busy hashtag does not fill the quota;
//! - **trending**: posts of the recent window with the highest value per impression (saves,
//!   comments and shares per view, shrunk toward a prior; see `scoring::value_score`);
//! - **fresh**: recent posts with few views, not yet proven either way: a small exploration
//!   share, so that new posts can earn the signals the other sources rank by.
//!
//! The lists of the non-personal sources do not depend on the viewer and are computed once per
//! model ([`SourceLists::build`]). A post found by several sources is kept once, under the
//! first source in the order above.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::Candidate;

/// Where a candidate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A new post of a small creator, offered to its nearest users (exploration).
    Audience,
    Personal,
    /// Saved, shared or liked by the viewer's nearest users.
    Lookalike,
    Hashtag,
    Trending,
    Fresh,
    /// The non-personal ranking (value and freshness): the feed of a user the model does not
    /// know, and the top-up of a personal feed deeper than its candidates.
    Popular,
    /// The ad index: ads nearest the user, for the policy's ad slots.
    Ads,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Audience => "audience",
            Source::Personal => "personal",
            Source::Lookalike => "lookalike",
            Source::Hashtag => "hashtag",
            Source::Trending => "trending",
            Source::Fresh => "fresh",
            Source::Popular => "popular",
            Source::Ads => "ads",
        }
    }
}

/// How many candidates each source contributes at most, per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceQuotas {
    pub audience: usize,
    pub personal: usize,
    pub lookalike: usize,
    pub hashtag: usize,
    pub trending: usize,
    pub fresh: usize,
}

/// What a post needs for the viewer-independent lists: plain data, one entry per organic post.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PostFacts<'a> {
    pub row: u32,
    pub hashtags: &'a [String],
    pub created_at: i64,
    pub views: u64,
    /// The value score (`scoring::value_score`).
    pub value: f32,
    /// The viewer-independent part of the blend (value and freshness terms).
    pub prior: f32,
}

/// Windows and thresholds of the non-personal sources.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SourceWindows {
    /// The snapshot's "now" (unix seconds).
    pub now: i64,
    /// Trending ranks posts created at most this long ago.
    pub trending_window_secs: i64,
    /// Fresh takes posts created at most this long ago ...
    pub fresh_window_secs: i64,
    /// ... with fewer views than this.
    pub fresh_max_views: u64,
    /// Posts kept per hashtag (the deepest a hashtag source can reach).
    pub per_hashtag: usize,
    /// Posts kept in the trending and fresh lists.
    pub list_len: usize,
}

/// The viewer-independent candidate lists of one model, best first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceLists {
    by_hashtag: HashMap<String, Vec<u32>>,
    trending: Vec<u32>,
    fresh: Vec<u32>,
}

impl SourceLists {
    /// Ranks `posts` (the organic pool) for each source. Ties go to the smaller row, so the
    /// lists are the same for the same snapshot.
    pub fn build(posts: &[PostFacts<'_>], windows: &SourceWindows) -> SourceLists {
        // Indices into `posts` of those `keep` admits, by `key` descending.
        let best_first = |key: &dyn Fn(&PostFacts<'_>) -> f64,
                          keep: &dyn Fn(&PostFacts<'_>) -> bool| {
            let mut ranked: Vec<(f64, u32, usize)> = posts
                .iter()
                .enumerate()
                .filter(|(_, p)| keep(p))
                .map(|(i, p)| (key(p), p.row, i))
                .collect();
            ranked.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            ranked.into_iter().map(|(_, _, i)| i)
        };
        let age = |p: &PostFacts<'_>| windows.now.saturating_sub(p.created_at);

        let mut by_hashtag: HashMap<String, Vec<u32>> = HashMap::new();
        for i in best_first(&|p| f64::from(p.prior), &|p| !p.hashtags.is_empty()) {
            let post = &posts[i];
            for tag in post.hashtags {
                let list = by_hashtag.entry(tag.clone()).or_default();
                if list.len() < windows.per_hashtag {
                    list.push(post.row);
                }
            }
        }
        let trending = best_first(&|p| f64::from(p.value), &|p| {
            age(p) <= windows.trending_window_secs
        })
        .take(windows.list_len)
        .map(|i| posts[i].row)
        .collect();
        let fresh = best_first(&|p| p.created_at as f64, &|p| {
            age(p) <= windows.fresh_window_secs && p.views < windows.fresh_max_views
        })
        .take(windows.list_len)
        .map(|i| posts[i].row)
        .collect();
        SourceLists {
            by_hashtag,
            trending,
            fresh,
        }
    }

    /// The best posts under `tag`, best first (empty for an unknown hashtag).
    pub fn hashtag(&self, tag: &str) -> &[u32] {
        self.by_hashtag.get(tag).map_or(&[], Vec::as_slice)
    }

    pub fn trending(&self) -> &[u32] {
        &self.trending
    }

    pub fn fresh(&self) -> &[u32] {
        &self.fresh
    }
}

/// A candidate with its source; `similarity` is the personal search's, or `None` for the other
/// sources until hydration computes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sourced {
    pub row: u32,
    pub source: Source,
    pub similarity: Option<f32>,
}

/// What one request's sources found, each best first, before the merge.
pub struct SourceInputs<'a, F> {
    /// New posts of small creators whose audience includes the viewer.
    pub audience: &'a [u32],
    /// The search result.
    pub personal: &'a [Candidate],
    /// Rows the viewer's nearest users engaged with.
    pub lookalike: &'a [u32],
    /// The hashtags the user follows.
    pub follows: &'a [String],
    pub lists: &'a SourceLists,
    /// Posts published since the lists were built, newest first: offered to the fresh source
    /// before its list.
    pub fresh_first: F,
}

/// Merges the sources into one set without duplicates, each within its quota; posts for which
/// `excluded(row)` holds are skipped without using up quota (filters that need no viewer
/// state beyond a lookup run here, so that a filtered post does not cost a slot).
///
/// `personal` is the search result, best first; `follows` the hashtags the user follows.
pub fn gather(
    personal: &[Candidate],
    follows: &[String],
    lists: &SourceLists,
    quotas: &SourceQuotas,
    excluded: impl Fn(u32) -> bool,
) -> Vec<Sourced> {
    gather_sources(
        SourceInputs {
            audience: &[],
            personal,
            lookalike: &[],
            follows,
            lists,
            fresh_first: std::iter::empty(),
        },
        quotas,
        excluded,
    )
}

/// [`gather`] over every source, in the order of the module docs.
pub fn gather_sources(
    inputs: SourceInputs<'_, impl IntoIterator<Item = u32>>,
    quotas: &SourceQuotas,
    excluded: impl Fn(u32) -> bool,
) -> Vec<Sourced> {
    let SourceInputs {
        audience,
        personal,
        lookalike,
        follows,
        lists,
        fresh_first,
    } = inputs;
    let mut taken: HashSet<u32> = HashSet::with_capacity(
        quotas.audience
            + quotas.personal
            + quotas.lookalike
            + quotas.hashtag
            + quotas.trending
            + quotas.fresh,
    );
    let mut out = Vec::with_capacity(taken.capacity());
    let mut take = |row: u32, source: Source, similarity: Option<f32>, out: &mut Vec<Sourced>| {
        if excluded(row) || !taken.insert(row) {
            return false;
        }
        out.push(Sourced {
            row,
            source,
            similarity,
        });
        true
    };

    let mut quota = quotas.audience;
    for &row in audience {
        if quota == 0 {
            break;
        }
        if take(row, Source::Audience, None, &mut out) {
            quota -= 1;
        }
    }

    let mut quota = quotas.personal;
    for c in personal {
        if quota == 0 {
            break;
        }
        if take(c.row, Source::Personal, Some(c.similarity), &mut out) {
            quota -= 1;
        }
    }

    let mut quota = quotas.lookalike;
    for &row in lookalike {
        if quota == 0 {
            break;
        }
        if take(row, Source::Lookalike, None, &mut out) {
            quota -= 1;
        }
    }

    // Hashtags in turns: the best remaining post of each followed hashtag, round after round.
    let tag_lists: Vec<&[u32]> = follows.iter().map(|t| lists.hashtag(t)).collect();
    let mut positions = vec![0usize; tag_lists.len()];
    let mut quota = quotas.hashtag;
    while quota > 0 {
        let mut advanced = false;
        for (list, at) in tag_lists.iter().zip(positions.iter_mut()) {
            if quota == 0 {
                break;
            }
            // Skip this hashtag's posts already taken or excluded, then take one.
            while let Some(&row) = list.get(*at) {
                *at += 1;
                advanced = true;
                if take(row, Source::Hashtag, None, &mut out) {
                    quota -= 1;
                    break;
                }
            }
        }
        if !advanced {
            break;
        }
    }

    let mut quota = quotas.trending;
    for &row in lists.trending() {
        if quota == 0 {
            break;
        }
        if take(row, Source::Trending, None, &mut out) {
            quota -= 1;
        }
    }
    let mut quota = quotas.fresh;
    for row in fresh_first.into_iter().chain(lists.fresh().iter().copied()) {
        if quota == 0 {
            break;
        }
        if take(row, Source::Fresh, None, &mut out) {
            quota -= 1;
        }
    }
    out
}

#[cfg(test)]
mod tests;
