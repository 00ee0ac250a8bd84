//! Explanations (`explain=true`): for each item, where it came from, the terms of its score,
//! the penalties it took and the policy's decisions that placed it; for the page, every ad
//! the policy considered and what became of it.

use serde::Serialize;

use crate::candidates::Source;
use crate::policy::{AdVerdict, Decision, Decisions};

/// Why one item of a page is there. All scores are in the blend's units (`scoring`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Explanation {
    /// The candidate source that proposed the post.
    pub source: Source,
    /// Cosine similarity to the viewer (`null` when the feed is not personal); for an ad, its
    /// relevance.
    pub similarity: Option<f32>,
    /// Value from the post's stats, in (-1, 1).
    pub value: f32,
    /// Freshness, in (0, 1].
    pub freshness: f32,
    pub penalties: Penalties,
    /// The blended score: the weighted terms, less the clickbait penalty.
    pub blend: f32,
    /// The score the post competed with for its position, less `penalties.repeats`. In a
    /// personal feed that score is `blend`; in the non-personal feed it is the rank score
    /// `1 − i/n` of the post's place in the non-personal ranking, whose order the selector
    /// keeps. A post on offer to its audience (source `audience`) competed with at least the
    /// score of the viewer's `[feed.audience] rank`-th best other candidate.
    pub placed_score: f32,
    /// The policy's decisions for this post (empty when no rule touched it).
    pub decisions: Decisions,
}

/// Score points taken off a post.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Penalties {
    /// `clickbait_weight · clickbait`: many views, little kept.
    pub clickbait: f32,
    /// Taken off the score the post competed with (see `placed_score`) for earlier posts of
    /// the same author or hashtags on the page (the `author_repeat` and `hashtag_repeat`
    /// decisions give the factors).
    pub repeats: f32,
}

impl Penalties {
    /// The penalties of a post that competed with score `competed`, with this clickbait
    /// penalty and these policy decisions.
    pub fn of(competed: f32, clickbait: f32, decisions: &[Decision]) -> Penalties {
        let factor: f32 = decisions
            .iter()
            .map(|d| match *d {
                Decision::AuthorRepeat { factor, .. } | Decision::HashtagRepeat { factor, .. } => {
                    factor
                }
                _ => 1.0,
            })
            .product();
        Penalties {
            clickbait,
            repeats: (1.0 - factor) * competed.abs(),
        }
    }
}

/// One ad considered for a policy page that the returned page overlaps.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdConsidered<'m> {
    pub post_id: &'m str,
    /// The policy page (positions `page · page_size ..`) it was considered for.
    pub page: u32,
    /// Cosine similarity to the viewer.
    pub relevance: f32,
    /// `below_relevance` (with the threshold), `no_slot`, or `shown` (with the position).
    #[serde(flatten)]
    pub verdict: AdVerdict,
}
