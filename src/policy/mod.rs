//! Policy: turning scored candidates into the feed. Pure functions over plain data: no I/O,
//! no clocks, no globals.
//!
//! Two plain orderings, [`order_by_score`] and [`interleave_by_language`], and the
//! **selector**, [`arrange`]: the last stage of a personal feed, which lays out organic
//! candidates and ads for one user under the low-ad, diversity and language rules, and records
//! why each post took its place (for `explain`).
//!
//! # The selector's rules
//!
//! The feed is one sequence; policy page `p` is positions `[p·page_size, (p+1)·page_size)`
//! ([`PolicyConfig::page_size`]). Every per-page cap counts within such a page. The sequence is
//! filled one position at a time, greedily:
//!
//! 1. **Ad slot.** The `i`-th ad of the feed (from 0) may take a position once at least
//!    `first_ad_position + i · organic_per_ad` organic posts precede it. When that holds and an
//!    ad with relevance ≥ `ad_min_relevance` is left, the best such ad (by score, then row)
//!    takes the position. So no ad appears before `first_ad_position`, two ads are never
//!    adjacent, ads never exceed one per `organic_per_ad` organic posts, and a page with no
//!    relevant ad has no ad. Ads are never relaxed.
//! 2. **Organic post.** Otherwise, the organic candidate with the best *effective score* among
//!    those the rules admit (equal scores: the lower row).
//!
//! *Hard rules*, never relaxed: at most `max_sponsored_per_page` sponsored posts per page; at
//! most `max_exploring_per_page` posts offered for exploration per page; no two posts on a page
//! whose embeddings are at least `near_duplicate_similarity` alike.
//!
//! *Soft rules*, relaxed only to fill a position nothing else may take:
//! - **author cap**: at most `max_per_author_per_page` posts of one author per page;
//! - **language cap**: posts in a *foreign* language (one the user neither lists nor engages
//!   with) fill at most `max(1, ⌊foreign_language_share · page_size⌋)` positions of a page, or
//!   none when the share is 0. The floor of 1 keeps small pages from silencing the other
//!   community altogether. `mixed` (bilingual) posts are never foreign, and a user who lists no
//!   language has no cap: we do not know what they read.
//!
//! *Penalties*, applied before candidates compete: the `n`-th post of an author on a page is
//! scaled by `author_repeat_decay^(n−1)`, and a candidate by `hashtag_repeat_decay` once for
//! every time one of its hashtags already appears on the page (so topics spread without being
//! forbidden). A factor `f` takes `(1 − f)·|s|` off a score `s`: a plain product would *raise*
//! a negative score.
//!
//! *Relaxation.* When no candidate keeps every rule, the position goes to the best candidate
//! that breaks only the author cap; failing that, to the best that breaks the language cap
//! (and perhaps the author cap). The author cap gives way first because another post by the
//! same author is at least in a language the user reads. A post placed so carries
//! [`Decision::Relaxed`] for each rule it breaks. When even that leaves nothing (candidates
//! exhausted, or every one left is a near-duplicate or a sponsored post over the cap), the
//! sequence ends there, shorter than asked.
//!
//! *Reserves* ([`CandidateSet::push_reserve`]) are a second tier: a reserve takes a position
//! only when no other candidate can, even relaxed; among reserves the same rules choose.
//!
//! *Determinism and paging.* The output depends only on the inputs' values, not their order
//! (ties go to the lower row). Each rule looks only at earlier positions and every cap derives
//! from `page_size`, so arranging to a greater depth extends the sequence without changing any
//! earlier position: paging through it never repeats or skips a post, and ad spacing holds
//! across page boundaries.
//!
//! The defaults, and the reasoning for each, are on [`PolicyConfig`].

mod config;
mod selector;

pub use config::PolicyConfig;
pub use selector::{
    AdCandidate, AdReport, AdVerdict, Arrangement, CandidateSet, Decision, Decisions, Lang,
    OrganicCandidate, Placed, SoftRule, UserLanguages, arrange,
};

/// Why the selector refused its inputs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    /// A configuration knob out of range, named as it is written in configuration.
    #[error("policy.{field}: {message}")]
    Config {
        field: &'static str,
        message: String,
    },
    #[error("candidate row {row}: {field} must be finite, got {value}")]
    NonFinite {
        row: u32,
        field: &'static str,
        value: f32,
    },
    /// The same row among the organic candidates twice, or both organic and an ad.
    #[error("candidate row {row} is given more than once")]
    DuplicateRow { row: u32 },
}

use std::cmp::Ordering;

/// A candidate with its blended score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub row: u32,
    pub score: f32,
}

/// Best first; equal scores by row, so the same inputs always give the same page.
pub fn order_by_score(scored: &mut [Scored]) {
    scored.sort_unstable_by(|a, b| {
        b.score
            .partial_cmp(&a.score)
            .unwrap_or(Ordering::Equal)
            .then(a.row.cmp(&b.row))
    });
}

/// Interleaves a ranked list so that languages take turns: the best remaining post of each
/// language in round-robin, languages ordered by their best post. A feed for someone we know
/// nothing about then shows every language community instead of only the largest one.
/// `lang_of(row)` is a small dense id per language.
pub fn interleave_by_language(ranked: &[Scored], lang_of: impl Fn(u32) -> usize) -> Vec<Scored> {
    let mut queues: Vec<Vec<Scored>> = Vec::new();
    let mut order: Vec<usize> = Vec::new(); // languages by their best post
    for s in ranked {
        let lang = lang_of(s.row);
        if lang >= queues.len() {
            queues.resize_with(lang + 1, Vec::new);
        }
        if queues[lang].is_empty() && !order.contains(&lang) {
            order.push(lang);
        }
        queues[lang].push(*s);
    }
    let mut cursors = vec![0usize; queues.len()];
    let mut out = Vec::with_capacity(ranked.len());
    while out.len() < ranked.len() {
        for &lang in &order {
            if let Some(s) = queues[lang].get(cursors[lang]) {
                out.push(*s);
                cursors[lang] += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(row: u32, score: f32) -> Scored {
        Scored { row, score }
    }

    #[test]
    fn orders_best_first_with_row_tiebreak() {
        let mut v = vec![s(3, 0.5), s(1, 0.9), s(2, 0.5), s(0, 0.1)];
        order_by_score(&mut v);
        assert_eq!(
            v.iter().map(|x| x.row).collect::<Vec<_>>(),
            vec![1, 2, 3, 0]
        );
    }

    #[test]
    fn languages_take_turns() {
        // rows 0..6: langs 0,0,0,0,1,2 — the majority language does not take the whole top.
        let ranked = vec![s(0, 6.), s(1, 5.), s(2, 4.), s(4, 3.), s(3, 2.), s(5, 1.)];
        let lang = |row: u32| match row {
            4 => 1,
            5 => 2,
            _ => 0,
        };
        let rows: Vec<u32> = interleave_by_language(&ranked, lang)
            .iter()
            .map(|x| x.row)
            .collect();
        assert_eq!(rows, vec![0, 4, 5, 1, 2, 3]);
    }

    proptest! {
        /// Against a naive reference: the interleave is a permutation that keeps each
        /// language's internal order, and every prefix is balanced (counts differ by ≤ 1
        /// between languages that still have posts).
        #[test]
        fn interleave_is_a_balanced_order_preserving_permutation(
            langs in proptest::collection::vec(0usize..4, 0..60)
        ) {
            let ranked: Vec<Scored> =
                (0..langs.len()).map(|i| s(i as u32, -(i as f32))).collect();
            let out = interleave_by_language(&ranked, |row| langs[row as usize]);
            let mut rows: Vec<u32> = out.iter().map(|x| x.row).collect();
            for lang in 0..4 {
                let want: Vec<u32> =
                    (0..langs.len() as u32).filter(|&r| langs[r as usize] == lang).collect();
                let got: Vec<u32> =
                    rows.iter().copied().filter(|&r| langs[r as usize] == lang).collect();
                prop_assert_eq!(want, got);
            }
            for prefix in 1..=out.len() {
                let mut counts = [0usize; 4];
                for x in &out[..prefix] { counts[langs[x.row as usize]] += 1; }
                let totals: Vec<usize> = (0..4).map(|l| langs.iter().filter(|&&x| x == l).count()).collect();
                let open: Vec<usize> = (0..4).filter(|&l| counts[l] < totals[l]).map(|l| counts[l]).collect();
                if let (Some(min), Some(max)) = (open.iter().min(), (0..4).filter(|&l| totals[l] > 0).map(|l| counts[l]).max()) {
                    prop_assert!(max <= min + 1, "prefix {prefix}: {counts:?}");
                }
            }
            rows.sort_unstable();
            prop_assert_eq!(rows, (0..langs.len() as u32).collect::<Vec<_>>());
        }
    }
}
