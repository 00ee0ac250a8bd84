//! The selector: lays out one user's scored organic candidates and ads as the feed sequence,
//! page by page. The rules are in the module docs of `policy`.

use std::cmp::Ordering;
use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Serialize};

use super::{PolicyConfig, PolicyError};
use crate::snapshot::PostKind;

/// A post's language as the selector sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lang {
    /// Written in more than one language (`mixed` in a snapshot): readable by either
    /// community, so never foreign.
    Mixed,
    /// One language, as a small id the caller assigns (one id per language code).
    Id(u16),
}

/// What the selector knows of the user's languages. The default knows nothing: no language is
/// foreign to such a user.
#[derive(Debug, Clone, Copy, Default)]
pub struct UserLanguages<'a> {
    /// Languages the user lists. Empty means we do not know what they read, and the language
    /// cap does not apply.
    pub listed: &'a [Lang],
    /// Languages of posts the user engaged with; they add to the listed ones.
    pub engaged: &'a [Lang],
}

impl UserLanguages<'_> {
    /// A post in `lang` counts against the page's foreign-language cap.
    pub fn is_foreign(&self, lang: Lang) -> bool {
        lang != Lang::Mixed
            && !self.listed.is_empty()
            && !self.listed.contains(&lang)
            && !self.engaged.contains(&lang)
    }
}

/// One organic candidate (an organic or sponsored post). Its hashtags live in the
/// [`CandidateSet`] it is pushed into.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OrganicCandidate {
    pub row: u32,
    /// The blended score (similarity, value, freshness); higher is better.
    pub score: f32,
    /// Author, as any id that is equal for equal authors (e.g. a dense author number).
    pub author: u32,
    pub lang: Lang,
    /// A creator's brand endorsement: organic, but capped per page.
    pub sponsored: bool,
    /// Offered for exploration (a new post of a small creator, see `feed::audience`): capped
    /// per page by `max_exploring_per_page`.
    pub exploring: bool,
}

/// The organic candidates of one request. Hashtags of all candidates share one buffer, so
/// building a set allocates nothing per candidate, and a set can be cleared and reused.
#[derive(Debug, Clone, Default)]
pub struct CandidateSet {
    posts: Vec<OrganicCandidate>,
    /// Per candidate: a reserve candidate (see [`CandidateSet::push_reserve`]).
    reserve: Vec<bool>,
    /// `tags[spans[i].0..spans[i].1]` are the hashtags of `posts[i]`.
    spans: Vec<(u32, u32)>,
    tags: Vec<u32>,
}

impl CandidateSet {
    pub fn new() -> CandidateSet {
        CandidateSet::default()
    }

    /// Room for `posts` candidates with `hashtags` hashtags in all.
    pub fn with_capacity(posts: usize, hashtags: usize) -> CandidateSet {
        CandidateSet {
            posts: Vec::with_capacity(posts),
            reserve: Vec::with_capacity(posts),
            spans: Vec::with_capacity(posts),
            tags: Vec::with_capacity(hashtags),
        }
    }

    /// Adds a candidate with its hashtags, as ids equal for equal hashtags (e.g. rows of the
    /// snapshot's hashtag table).
    pub fn push(&mut self, post: OrganicCandidate, hashtags: &[u32]) {
        self.push_as(post, hashtags, false);
    }

    /// Adds a *reserve* candidate: one the selector considers for a position only when no
    /// other candidate can take it, not even by relaxing a soft rule. Reserves never displace
    /// other candidates, so an arrangement with reserves agrees with the one without them at
    /// every position the latter reaches; a caller can arrange without them first and add
    /// them only when that sequence ends too soon.
    pub fn push_reserve(&mut self, post: OrganicCandidate, hashtags: &[u32]) {
        self.push_as(post, hashtags, true);
    }

    fn push_as(&mut self, post: OrganicCandidate, hashtags: &[u32], reserve: bool) {
        let start = self.tags.len() as u32;
        self.tags.extend_from_slice(hashtags);
        self.posts.push(post);
        self.reserve.push(reserve);
        self.spans.push((start, self.tags.len() as u32));
    }

    pub fn len(&self) -> usize {
        self.posts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.posts.is_empty()
    }

    pub fn clear(&mut self) {
        self.posts.clear();
        self.reserve.clear();
        self.spans.clear();
        self.tags.clear();
    }

    /// The `i`-th candidate pushed, with its hashtags.
    pub fn get(&self, i: usize) -> (OrganicCandidate, &[u32]) {
        let (start, end) = self.spans[i];
        (self.posts[i], &self.tags[start as usize..end as usize])
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = (OrganicCandidate, &[u32])> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }
}

/// An ad that may take an ad slot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdCandidate {
    pub row: u32,
    /// Similarity to the user; below [`PolicyConfig::ad_min_relevance`] the ad is never shown.
    pub relevance: f32,
    /// Orders the relevant ads: the best takes the next slot.
    pub score: f32,
}

/// A rule the selector may relax to fill a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SoftRule {
    AuthorCap,
    LanguageCap,
}

/// One reason in a placed post's explanation. Serialised as an object whose `decision` field
/// names the variant in snake case, e.g. `{"decision": "author_repeat", "nth": 2, "factor": 0.7}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// The `nth` post of its author on this page (from 2); its score was scaled by `factor`.
    AuthorRepeat { nth: u32, factor: f32 },
    /// Its hashtags already appeared `repeats` times on this page; its score was scaled by
    /// `factor`.
    HashtagRepeat { repeats: u32, factor: f32 },
    /// In a language the user neither lists nor engages with: the `nth` such post on this
    /// page, of `cap` allowed.
    ForeignLanguage { nth: u32, cap: u32 },
    /// A sponsored post: the `nth` on this page, of `cap` allowed.
    Sponsored { nth: u32, cap: u32 },
    /// Offered for exploration: the `nth` such post on this page, of `cap` allowed.
    Exploring { nth: u32, cap: u32 },
    /// An ad in the feed's `nth` ad slot (from 0), with its relevance to the user.
    AdSlot { nth: u32, relevance: f32 },
    /// Placed although it breaks `rule`, because no candidate left kept it (see the module
    /// docs for the order in which rules give way).
    Relaxed { rule: SoftRule },
}

/// The most decisions one post can collect: an organic post may have every kind but
/// `AdSlot`, with `Relaxed` once per soft rule.
const MAX_DECISIONS: usize = 7;

/// A placed post's decisions, in a fixed order (author, hashtags, language, sponsored,
/// exploring, relaxations). Held inline, so placing a post allocates nothing; reads as a slice, and
/// serialises as a JSON array.
#[derive(Clone, Copy)]
pub struct Decisions {
    len: u8,
    items: [Decision; MAX_DECISIONS],
}

impl Decisions {
    fn new() -> Decisions {
        Decisions {
            len: 0,
            // Filler; never read past `len`.
            items: [Decision::Relaxed {
                rule: SoftRule::AuthorCap,
            }; MAX_DECISIONS],
        }
    }

    fn push(&mut self, decision: Decision) {
        self.items[usize::from(self.len)] = decision;
        self.len += 1;
    }
}

impl Default for Decisions {
    fn default() -> Decisions {
        Decisions::new()
    }
}

impl Deref for Decisions {
    type Target = [Decision];
    fn deref(&self) -> &[Decision] {
        &self.items[..usize::from(self.len)]
    }
}

impl PartialEq for Decisions {
    fn eq(&self, other: &Decisions) -> bool {
        **self == **other
    }
}

impl fmt::Debug for Decisions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Serialize for Decisions {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

/// One position of the feed sequence.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Placed {
    pub row: u32,
    /// `organic`, `sponsored` or `ad`.
    pub kind: PostKind,
    /// An organic post's score after its penalties; an ad's own score.
    pub score: f32,
    pub decisions: Decisions,
}

/// What became of one ad on one page.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum AdVerdict {
    /// Less relevant to the user than `threshold` (`ad_min_relevance`): never shown.
    BelowRelevance { threshold: f32 },
    /// Relevant, but no ad slot on this page was left for it.
    NoSlot,
    /// Shown at this position of the feed.
    Shown { position: u32 },
}

/// One ad considered on one page. Serialised flat: `{"page", "row", "relevance", "verdict",
/// ...the verdict's fields}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdReport {
    pub page: u32,
    pub row: u32,
    pub relevance: f32,
    #[serde(flatten)]
    pub verdict: AdVerdict,
}

/// The feed sequence for one user, and why each post and ad is where it is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Arrangement {
    /// The policy page size the sequence was arranged with.
    pub page_size: usize,
    /// The sequence, position 0 first.
    pub items: Vec<Placed>,
    /// Per page, in page order: every ad not shown on an earlier page, best first, with its
    /// verdict.
    pub ad_reports: Vec<AdReport>,
}

impl Arrangement {
    /// Pages holding at least one position (the last may be partly filled).
    pub fn page_count(&self) -> usize {
        self.items.len().div_ceil(self.page_size)
    }

    /// The positions of page `page` (empty past the end).
    pub fn page(&self, page: usize) -> &[Placed] {
        let start = (page.saturating_mul(self.page_size)).min(self.items.len());
        let end = (start + self.page_size).min(self.items.len());
        &self.items[start..end]
    }

    /// The ads considered on page `page`.
    pub fn ads_on_page(&self, page: usize) -> &[AdReport] {
        let start = self
            .ad_reports
            .partition_point(|r| (r.page as usize) < page);
        let end = self
            .ad_reports
            .partition_point(|r| (r.page as usize) <= page);
        &self.ad_reports[start..end]
    }
}

/// Arranges the feed sequence, up to `depth` positions (fewer when the candidates run out;
/// see the module docs), from organic candidates and ads for a user with the given languages.
/// `similarity(row_a, row_b)` compares two organic posts' embeddings, for the near-duplicate
/// rule; it is called only for candidates about to be placed, against posts already on their
/// page.
///
/// Errors: an invalid `config`, a non-finite score or relevance, or a row given twice.
pub fn arrange(
    organic: &CandidateSet,
    ads: &[AdCandidate],
    user: &UserLanguages<'_>,
    similarity: impl Fn(u32, u32) -> f32,
    config: &PolicyConfig,
    depth: usize,
) -> Result<Arrangement, PolicyError> {
    config.validate()?;
    check_candidates(organic, ads)?;
    let mut selector = Selector::new(organic, ads, user, config);
    let mut items = Vec::with_capacity(depth.min(organic.len() + ads.len()));
    while items.len() < depth {
        let position = items.len();
        selector.enter_page(position / config.page_size);
        let placed = match selector.take_ad() {
            Some(ad) => ad,
            None => match selector.take_organic(&similarity) {
                Some(post) => post,
                None => break,
            },
        };
        items.push(placed);
    }
    let ad_reports = selector.ad_reports(&items);
    Ok(Arrangement {
        page_size: config.page_size,
        items,
        ad_reports,
    })
}

fn check_candidates(organic: &CandidateSet, ads: &[AdCandidate]) -> Result<(), PolicyError> {
    let non_finite = |row: u32, field: &'static str, value: f32| {
        (!value.is_finite()).then_some(PolicyError::NonFinite { row, field, value })
    };
    for post in &organic.posts {
        if let Some(err) = non_finite(post.row, "score", post.score) {
            return Err(err);
        }
    }
    for ad in ads {
        for (field, value) in [("relevance", ad.relevance), ("score", ad.score)] {
            if let Some(err) = non_finite(ad.row, field, value) {
                return Err(err);
            }
        }
    }
    let mut rows: Vec<u32> = organic.posts.iter().map(|p| p.row).collect();
    rows.extend(ads.iter().map(|a| a.row));
    rows.sort_unstable();
    match rows.windows(2).find(|w| w[0] == w[1]) {
        Some(w) => Err(PolicyError::DuplicateRow { row: w[0] }),
        None => Ok(()),
    }
}

/// Best first: higher score, then lower row. Scores are finite (checked on entry).
fn best_first(score_a: f32, row_a: u32, score_b: f32, row_b: u32) -> Ordering {
    score_b
        .partial_cmp(&score_a)
        .unwrap_or(Ordering::Equal)
        .then(row_a.cmp(&row_b))
}

/// `score` lowered by a penalty factor in (0, 1]: `(1 − factor)·|score|` comes off, so the
/// result never exceeds `score`, whatever its sign.
fn penalised(score: f32, factor: f32) -> f32 {
    score - (1.0 - factor) * score.abs()
}

/// An organic candidate in the selector's working form, in best-first order of base score.
struct Slot {
    row: u32,
    score: f32,
    /// `score` after the page's repeat penalties, kept current as posts are placed (only the
    /// slots sharing the placed post's author or a hashtag change).
    penalised: f32,
    /// Dense author number within this request.
    author: u32,
    /// Range in `Selector::tags`.
    tags: (u32, u32),
    foreign: bool,
    sponsored: bool,
    exploring: bool,
    placed: bool,
    /// Near-duplicate checks are cached per page: `dup_checked` posts of page `dup_page` were
    /// compared with this one, and `dup_blocked` says whether one was too similar.
    dup_page: usize,
    dup_checked: usize,
    dup_blocked: bool,
}

/// The best candidate found so far for one relaxation stage.
#[derive(Clone, Copy)]
struct Best {
    slot: usize,
    score: f32,
    row: u32,
}

struct Selector<'c> {
    config: &'c PolicyConfig,
    foreign_cap: usize,
    author_decay: Powers,
    hashtag_decay: Powers,
    slots: Vec<Slot>,
    /// Dense hashtag numbers within this request, spans of `Slot::tags`.
    tags: Vec<u32>,
    /// Per tier (candidates, then reserves): slots of the tier before this one are all placed.
    first_open: [usize; 2],
    /// Per tier: the end of its slots (reserves follow the candidates).
    tier_end: [usize; 2],
    /// Ads best first, relevant or not; `next_ad` indexes the next relevant one to show.
    ads: Vec<AdCandidate>,
    next_ad: usize,
    ads_placed: usize,
    organic_placed: usize,
    // The current page.
    page: usize,
    page_slots: Vec<usize>,
    author_count: Vec<u32>,
    tag_count: Vec<u32>,
    /// Slots per dense author and per dense hashtag, to refresh penalised scores.
    by_author: Postings,
    by_tag: Postings,
    foreign_on_page: usize,
    sponsored_on_page: usize,
    exploring_on_page: usize,
}

impl<'c> Selector<'c> {
    fn new(
        organic: &CandidateSet,
        ads: &[AdCandidate],
        user: &UserLanguages<'_>,
        config: &'c PolicyConfig,
    ) -> Selector<'c> {
        // Candidates before reserves, each best first.
        let mut order: Vec<usize> = (0..organic.len()).collect();
        order.sort_unstable_by(|&a, &b| {
            let tier = organic.reserve[a].cmp(&organic.reserve[b]);
            let (a, b) = (&organic.posts[a], &organic.posts[b]);
            tier.then(best_first(a.score, a.row, b.score, b.row))
        });
        let reserve_start = organic.reserve.iter().filter(|&&r| !r).count();
        // Dense numbers for authors and hashtags, so page counts are plain arrays.
        let mut authors: Vec<u32> = organic.posts.iter().map(|p| p.author).collect();
        authors.sort_unstable();
        authors.dedup();
        let mut tag_ids: Vec<u32> = organic.tags.clone();
        tag_ids.sort_unstable();
        tag_ids.dedup();
        let dense = |ids: &[u32], id: u32| ids.binary_search(&id).expect("collected above") as u32;

        let mut tags = Vec::with_capacity(organic.tags.len());
        let slots = order
            .iter()
            .map(|&i| {
                let (post, hashtags) = organic.get(i);
                let start = tags.len() as u32;
                tags.extend(hashtags.iter().map(|&t| dense(&tag_ids, t)));
                Slot {
                    row: post.row,
                    score: post.score,
                    penalised: post.score,
                    author: dense(&authors, post.author),
                    tags: (start, tags.len() as u32),
                    foreign: user.is_foreign(post.lang),
                    sponsored: post.sponsored,
                    exploring: post.exploring,
                    placed: false,
                    dup_page: usize::MAX,
                    dup_checked: 0,
                    dup_blocked: false,
                }
            })
            .collect();
        let mut ads = ads.to_vec();
        ads.sort_unstable_by(|a, b| best_first(a.score, a.row, b.score, b.row));
        let mut selector = Selector {
            config,
            foreign_cap: config.foreign_cap(),
            author_decay: Powers::new(config.author_repeat_decay),
            hashtag_decay: Powers::new(config.hashtag_repeat_decay),
            slots,
            tags,
            first_open: [0, reserve_start],
            tier_end: [reserve_start, organic.len()],
            ads,
            next_ad: 0,
            ads_placed: 0,
            organic_placed: 0,
            page: 0,
            page_slots: Vec::with_capacity(config.page_size.min(organic.len())),
            author_count: vec![0; authors.len()],
            tag_count: vec![0; tag_ids.len()],
            by_author: Postings::default(),
            by_tag: Postings::default(),
            foreign_on_page: 0,
            sponsored_on_page: 0,
            exploring_on_page: 0,
        };
        selector.by_author = Postings::build(authors.len(), |push| {
            for (i, slot) in selector.slots.iter().enumerate() {
                push(slot.author, i as u32);
            }
        });
        selector.by_tag = Postings::build(tag_ids.len(), |push| {
            for (i, slot) in selector.slots.iter().enumerate() {
                for &t in &selector.tags[slot.tags.0 as usize..slot.tags.1 as usize] {
                    push(t, i as u32);
                }
            }
        });
        selector.skip_irrelevant_ads();
        selector
    }

    /// Starts page `page` if the sequence has just reached it.
    fn enter_page(&mut self, page: usize) {
        if page == self.page {
            return;
        }
        for &i in &self.page_slots {
            let slot = &self.slots[i];
            self.author_count[slot.author as usize] = 0;
            for &t in &self.tags[slot.tags.0 as usize..slot.tags.1 as usize] {
                self.tag_count[t as usize] = 0;
            }
        }
        self.page_slots.clear();
        self.foreign_on_page = 0;
        self.sponsored_on_page = 0;
        self.exploring_on_page = 0;
        self.page = page;
        for slot in &mut self.slots {
            slot.penalised = slot.score;
        }
    }

    fn postings(&self, group: Group) -> &Postings {
        match group {
            Group::Author => &self.by_author,
            Group::Hashtag => &self.by_tag,
        }
    }

    /// Recomputes the penalised score of the open slots of `group` under `key` (after a
    /// placement changed the page's counts for that author or hashtag).
    fn refresh(&mut self, group: Group, key: u32) {
        let (start, end) = self.postings(group).range(key);
        for k in start..end {
            let i = self.postings(group).items[k] as usize;
            if self.slots[i].placed {
                continue;
            }
            let factor = self.penalty_factor(&self.slots[i]);
            let slot = &mut self.slots[i];
            slot.penalised = penalised(slot.score, factor);
        }
    }

    fn skip_irrelevant_ads(&mut self) {
        while self
            .ads
            .get(self.next_ad)
            .is_some_and(|ad| ad.relevance < self.config.ad_min_relevance)
        {
            self.next_ad += 1;
        }
    }

    /// The best relevant ad left, if an ad slot is open at this position.
    fn take_ad(&mut self) -> Option<Placed> {
        let due = self
            .config
            .first_ad_position
            .saturating_add(self.ads_placed.saturating_mul(self.config.organic_per_ad));
        if self.organic_placed < due {
            return None;
        }
        let ad = *self.ads.get(self.next_ad)?;
        let mut decisions = Decisions::new();
        decisions.push(Decision::AdSlot {
            nth: self.ads_placed as u32,
            relevance: ad.relevance,
        });
        self.ads_placed += 1;
        self.next_ad += 1;
        self.skip_irrelevant_ads();
        Some(Placed {
            row: ad.row,
            kind: PostKind::Ad,
            score: ad.score,
            decisions,
        })
    }

    /// The best organic candidate the rules admit at this position, relaxing the soft rules
    /// in order if need be; `None` if even that leaves nothing.
    fn take_organic(&mut self, similarity: &impl Fn(u32, u32) -> f32) -> Option<Placed> {
        for tier in 0..2 {
            while self.first_open[tier] < self.tier_end[tier]
                && self.slots[self.first_open[tier]].placed
            {
                self.first_open[tier] += 1;
            }
        }
        // Near-duplicates are rare and comparing embeddings is the costliest check, so only
        // the winner is compared with the page; if it is too similar to a post there, it is
        // marked and the search runs again without it. Reserves only when no candidate can
        // take the position.
        loop {
            let chosen =
                (0..2).find_map(|tier| self.best_per_stage(tier).into_iter().flatten().next())?;
            if !self.near_duplicate(chosen.slot, similarity) {
                return Some(self.place(chosen));
            }
        }
    }

    /// For each relaxation stage, the best slot of `tier` (0: candidates, 1: reserves) not
    /// yet known to be a near-duplicate of a post on this page. Stage 0 keeps every rule;
    /// stage 1 breaks only the author cap; stage 2 breaks the language cap. Once stage 0 has a
    /// candidate, the others are left incomplete: they are not needed.
    fn best_per_stage(&self, tier: usize) -> [Option<Best>; 3] {
        let author_cap = self.config.max_per_author_per_page;
        let mut best: [Option<Best>; 3] = [None; 3];
        let slots = &self.slots[..self.tier_end[tier]];
        for (i, slot) in slots.iter().enumerate().skip(self.first_open[tier]) {
            // Penalties never raise a score, and later slots score no higher: none of them can
            // beat a candidate that keeps every rule.
            if best[0].is_some_and(|b| slot.score < b.score) {
                break;
            }
            if slot.placed || (slot.dup_page == self.page && slot.dup_blocked) {
                continue;
            }
            if slot.sponsored && self.sponsored_on_page >= self.config.max_sponsored_per_page {
                continue;
            }
            if slot.exploring && self.exploring_on_page >= self.config.max_exploring_per_page {
                continue;
            }
            let stage = if slot.foreign && self.foreign_on_page >= self.foreign_cap {
                2
            } else if self.author_count[slot.author as usize] as usize >= author_cap {
                1
            } else {
                0
            };
            let score = slot.penalised;
            if best[stage]
                .is_none_or(|b| best_first(score, slot.row, b.score, b.row) == Ordering::Less)
            {
                best[stage] = Some(Best {
                    slot: i,
                    score,
                    row: slot.row,
                });
            }
        }
        best
    }

    fn repeats(&self, slot: &Slot) -> u32 {
        self.tags[slot.tags.0 as usize..slot.tags.1 as usize]
            .iter()
            .map(|&t| self.tag_count[t as usize])
            .sum()
    }

    /// The factor for a candidate with `earlier` posts of its author and `repeats`
    /// appearances of its hashtags already on the page.
    fn penalty_factor(&self, slot: &Slot) -> f32 {
        let earlier = self.author_count[slot.author as usize];
        self.author_decay.get(earlier) * self.hashtag_decay.get(self.repeats(slot))
    }

    /// Whether slot `i` is too similar to an organic post already on this page. Compares it
    /// only with the page's posts it has not been compared with yet.
    fn near_duplicate(&mut self, i: usize, similarity: &impl Fn(u32, u32) -> f32) -> bool {
        let threshold = self.config.near_duplicate_similarity;
        let slot = &mut self.slots[i];
        if slot.dup_page != self.page {
            slot.dup_page = self.page;
            slot.dup_checked = 0;
            slot.dup_blocked = false;
        }
        let (row, mut checked, mut blocked) = (slot.row, slot.dup_checked, slot.dup_blocked);
        while !blocked && checked < self.page_slots.len() {
            let other = self.slots[self.page_slots[checked]].row;
            checked += 1;
            blocked = similarity(row, other) >= threshold;
        }
        let slot = &mut self.slots[i];
        slot.dup_checked = checked;
        slot.dup_blocked = blocked;
        blocked
    }

    fn place(&mut self, chosen: Best) -> Placed {
        let config = self.config;
        let slot = &self.slots[chosen.slot];
        let earlier = self.author_count[slot.author as usize];
        let repeats = self.repeats(slot);
        let over_author = earlier as usize >= config.max_per_author_per_page;
        let over_language = slot.foreign && self.foreign_on_page >= self.foreign_cap;
        let mut decisions = Decisions::new();
        if earlier > 0 {
            decisions.push(Decision::AuthorRepeat {
                nth: earlier + 1,
                factor: self.author_decay.get(earlier),
            });
        }
        if repeats > 0 {
            decisions.push(Decision::HashtagRepeat {
                repeats,
                factor: self.hashtag_decay.get(repeats),
            });
        }
        if slot.foreign {
            decisions.push(Decision::ForeignLanguage {
                nth: self.foreign_on_page as u32 + 1,
                cap: saturate(self.foreign_cap),
            });
        }
        if slot.sponsored {
            decisions.push(Decision::Sponsored {
                nth: self.sponsored_on_page as u32 + 1,
                cap: saturate(config.max_sponsored_per_page),
            });
        }
        if slot.exploring {
            decisions.push(Decision::Exploring {
                nth: self.exploring_on_page as u32 + 1,
                cap: saturate(config.max_exploring_per_page),
            });
        }
        if over_author {
            decisions.push(Decision::Relaxed {
                rule: SoftRule::AuthorCap,
            });
        }
        if over_language {
            decisions.push(Decision::Relaxed {
                rule: SoftRule::LanguageCap,
            });
        }
        let placed = Placed {
            row: slot.row,
            kind: if slot.sponsored {
                PostKind::Sponsored
            } else {
                PostKind::Organic
            },
            score: chosen.score,
            decisions,
        };

        let (author, tags) = (slot.author, slot.tags);
        self.author_count[author as usize] += 1;
        for &t in &self.tags[tags.0 as usize..tags.1 as usize] {
            self.tag_count[t as usize] += 1;
        }
        self.foreign_on_page += usize::from(slot.foreign);
        self.sponsored_on_page += usize::from(slot.sponsored);
        self.exploring_on_page += usize::from(slot.exploring);
        self.organic_placed += 1;
        self.page_slots.push(chosen.slot);
        self.slots[chosen.slot].placed = true;
        self.refresh(Group::Author, author);
        for k in tags.0..tags.1 {
            let t = self.tags[k as usize];
            self.refresh(Group::Hashtag, t);
        }
        placed
    }

    /// Per page, every ad not shown on an earlier page, best first, with its verdict.
    fn ad_reports(&self, items: &[Placed]) -> Vec<AdReport> {
        let page_size = self.config.page_size;
        // Where each ad was shown, by its index in `self.ads`.
        let mut shown_at: Vec<Option<usize>> = vec![None; self.ads.len()];
        for (position, item) in items.iter().enumerate() {
            if item.kind == PostKind::Ad {
                let i = self
                    .ads
                    .iter()
                    .position(|ad| ad.row == item.row)
                    .expect("placed ads come from the ad list");
                shown_at[i] = Some(position);
            }
        }
        let pages = items.len().div_ceil(page_size);
        let mut reports = Vec::new();
        for page in 0..pages {
            for (ad, shown) in self.ads.iter().zip(&shown_at) {
                let verdict = match *shown {
                    Some(position) if position / page_size < page => continue,
                    Some(position) if position / page_size == page => AdVerdict::Shown {
                        position: position as u32,
                    },
                    _ if ad.relevance < self.config.ad_min_relevance => AdVerdict::BelowRelevance {
                        threshold: self.config.ad_min_relevance,
                    },
                    _ => AdVerdict::NoSlot,
                };
                reports.push(AdReport {
                    page: page as u32,
                    row: ad.row,
                    relevance: ad.relevance,
                    verdict,
                });
            }
        }
        reports
    }
}

/// Which slots a placement may change the penalty of.
#[derive(Clone, Copy)]
enum Group {
    Author,
    Hashtag,
}

/// Items grouped by a small dense key, in compressed rows: `items[start[k]..start[k + 1]]`.
#[derive(Default)]
struct Postings {
    start: Vec<u32>,
    items: Vec<u32>,
}

impl Postings {
    /// Groups what `fill` pushes as `(key, item)`, keys below `keys`. `fill` runs twice
    /// (count, then place), so it must push the same pairs both times.
    fn build(keys: usize, fill: impl Fn(&mut dyn FnMut(u32, u32))) -> Postings {
        let mut start = vec![0u32; keys + 1];
        fill(&mut |key, _| start[key as usize + 1] += 1);
        for k in 0..keys {
            start[k + 1] += start[k];
        }
        let mut next = start.clone();
        let mut items = vec![0u32; start[keys] as usize];
        fill(&mut |key, item| {
            items[next[key as usize] as usize] = item;
            next[key as usize] += 1;
        });
        Postings { start, items }
    }

    fn range(&self, key: u32) -> (usize, usize) {
        (
            self.start[key as usize] as usize,
            self.start[key as usize + 1] as usize,
        )
    }
}

/// The powers of a decay factor, as `powi` computes them (so scores are the same either
/// way), looked up rather than computed while scanning candidates.
struct Powers {
    base: f32,
    table: Vec<f32>,
}

impl Powers {
    /// Page counts stay small; larger exponents fall back to `powi`.
    const TABLE_LEN: usize = 64;

    fn new(base: f32) -> Powers {
        let table = (0..Self::TABLE_LEN as i32).map(|k| base.powi(k)).collect();
        Powers { base, table }
    }

    fn get(&self, exponent: u32) -> f32 {
        match self.table.get(exponent as usize) {
            Some(&power) => power,
            None => self.base.powi(exponent as i32),
        }
    }
}

fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests;
