//! The selector against a naive re-implementation of its rules, its invariants on random
//! inputs, and scenarios.

use std::collections::HashSet;

use proptest::prelude::*;
use serde_json::json;

use super::*;

const EN: Lang = Lang::Id(0);
const ZH: Lang = Lang::Id(1);

/// An organic candidate as the tests hold it.
#[derive(Debug, Clone)]
struct Post {
    row: u32,
    score: f32,
    author: u32,
    lang: Lang,
    tags: Vec<u32>,
    sponsored: bool,
    /// Offered for exploration (capped per page).
    exploring: bool,
    /// Pushed as a reserve: considered only when no other candidate can take a position.
    reserve: bool,
}

fn post(row: u32, score: f32, author: u32, lang: Lang) -> Post {
    Post {
        row,
        score,
        author,
        lang,
        tags: Vec::new(),
        sponsored: false,
        exploring: false,
        reserve: false,
    }
}

/// One selector input.
#[derive(Debug, Clone)]
struct Case {
    posts: Vec<Post>,
    ads: Vec<AdCandidate>,
    listed: Vec<Lang>,
    engaged: Vec<Lang>,
    /// Pairs of rows (lower first) whose embeddings are near-copies.
    copies: Vec<(u32, u32)>,
    config: PolicyConfig,
    depth: usize,
}

impl Case {
    fn of(posts: Vec<Post>) -> Case {
        Case {
            posts,
            ads: Vec::new(),
            listed: Vec::new(),
            engaged: Vec::new(),
            copies: Vec::new(),
            config: PolicyConfig::default(),
            depth: 100,
        }
    }

    fn user(&self) -> UserLanguages<'_> {
        UserLanguages {
            listed: &self.listed,
            engaged: &self.engaged,
        }
    }

    /// 0.99 for the listed near-copies; any other pair of distinct rows gets a fixed
    /// pseudo-random value in [-0.5, 0.9).
    fn similarity(&self, a: u32, b: u32) -> f32 {
        if a == b {
            return 1.0;
        }
        let pair = (a.min(b), a.max(b));
        if self.copies.contains(&pair) {
            return 0.99;
        }
        let h = ((u64::from(pair.0) * 2_654_435_761) ^ (u64::from(pair.1) * 40_503)) % 1000;
        -0.5 + 1.4 * h as f32 / 1000.0
    }

    fn candidates(&self) -> CandidateSet {
        let mut set = CandidateSet::new();
        for p in &self.posts {
            let candidate = OrganicCandidate {
                row: p.row,
                score: p.score,
                author: p.author,
                lang: p.lang,
                sponsored: p.sponsored,
                exploring: p.exploring,
            };
            if p.reserve {
                set.push_reserve(candidate, &p.tags);
            } else {
                set.push(candidate, &p.tags);
            }
        }
        set
    }

    fn arrange_to(&self, depth: usize) -> Arrangement {
        arrange(
            &self.candidates(),
            &self.ads,
            &self.user(),
            |a, b| self.similarity(a, b),
            &self.config,
            depth,
        )
        .expect("a valid case")
    }

    fn arrange(&self) -> Arrangement {
        self.arrange_to(self.depth)
    }

    fn post(&self, row: u32) -> &Post {
        self.posts
            .iter()
            .find(|p| p.row == row)
            .expect("an input row")
    }

    fn ad(&self, row: u32) -> &AdCandidate {
        self.ads.iter().find(|a| a.row == row).expect("an input ad")
    }

    fn foreign(&self, post: &Post) -> bool {
        self.user().is_foreign(post.lang)
    }

    /// The organic posts placed in `items`.
    fn organic_in<'a>(&'a self, items: &[Placed]) -> Vec<&'a Post> {
        items
            .iter()
            .filter(|i| i.kind != PostKind::Ad)
            .map(|i| self.post(i.row))
            .collect()
    }

    /// How `post` stands with organic posts `page` already on its page: `None` if a hard rule
    /// excludes it, otherwise the relaxation stage it needs (0: keeps every rule, 1: breaks
    /// the author cap only, 2: breaks the language cap).
    fn stage(&self, page: &[&Post], post: &Post) -> Option<usize> {
        let c = &self.config;
        if post.sponsored && page.iter().filter(|p| p.sponsored).count() >= c.max_sponsored_per_page
        {
            return None;
        }
        if post.exploring && page.iter().filter(|p| p.exploring).count() >= c.max_exploring_per_page
        {
            return None;
        }
        if page
            .iter()
            .any(|p| self.similarity(p.row, post.row) >= c.near_duplicate_similarity)
        {
            return None;
        }
        if self.foreign(post) && page.iter().filter(|p| self.foreign(p)).count() >= c.foreign_cap()
        {
            return Some(2);
        }
        let same_author = page.iter().filter(|p| p.author == post.author).count();
        Some(usize::from(same_author >= c.max_per_author_per_page))
    }
}

/// Posts of `post`'s author on `page`, and appearances there of its hashtags.
fn repeats_on(page: &[&Post], post: &Post) -> (usize, usize) {
    let earlier = page.iter().filter(|p| p.author == post.author).count();
    let repeats = post
        .tags
        .iter()
        .map(|t| {
            page.iter()
                .flat_map(|p| &p.tags)
                .filter(|u| *u == t)
                .count()
        })
        .sum();
    (earlier, repeats)
}

/// The selector's rules, re-implemented as plainly as possible: at each position, recount the
/// page from the posts placed so far and score every remaining candidate from scratch.
fn reference(case: &Case) -> Arrangement {
    let c = &case.config;
    let page_size = c.page_size;
    let mut items: Vec<Placed> = Vec::new();
    while items.len() < case.depth {
        let position = items.len();
        let organic_before = items.iter().filter(|i| i.kind != PostKind::Ad).count();
        let ads_before = position - organic_before;
        if organic_before >= c.first_ad_position + ads_before * c.organic_per_ad {
            let mut best: Option<&AdCandidate> = None;
            for ad in &case.ads {
                if ad.relevance < c.ad_min_relevance || items.iter().any(|i| i.row == ad.row) {
                    continue;
                }
                if best
                    .is_none_or(|b| ad.score > b.score || (ad.score == b.score && ad.row < b.row))
                {
                    best = Some(ad);
                }
            }
            if let Some(ad) = best {
                let mut decisions = Decisions::new();
                decisions.push(Decision::AdSlot {
                    nth: ads_before as u32,
                    relevance: ad.relevance,
                });
                items.push(Placed {
                    row: ad.row,
                    kind: PostKind::Ad,
                    score: ad.score,
                    decisions,
                });
                continue;
            }
        }
        let page = case.organic_in(&items[position - position % page_size..]);
        let mut chosen: Option<((usize, usize), f32, &Post)> = None;
        for post in &case.posts {
            if items.iter().any(|i| i.row == post.row) {
                continue;
            }
            let Some(stage) = case.stage(&page, post) else {
                continue;
            };
            let (earlier, repeats) = repeats_on(&page, post);
            let factor = c.author_repeat_decay.powi(earlier as i32)
                * c.hashtag_repeat_decay.powi(repeats as i32);
            let score = post.score - (1.0 - factor) * post.score.abs();
            // Reserves rank after every other candidate, whatever its stage.
            let rank = (usize::from(post.reserve), stage);
            let better = chosen.is_none_or(|(r, best, p)| {
                rank < r || (rank == r && (score > best || (score == best && post.row < p.row)))
            });
            if better {
                chosen = Some((rank, score, post));
            }
        }
        let Some((_, score, post)) = chosen else {
            break;
        };
        let (earlier, repeats) = repeats_on(&page, post);
        let earlier = earlier as u32;
        let foreign_before = page.iter().filter(|p| case.foreign(p)).count();
        let sponsored_before = page.iter().filter(|p| p.sponsored).count();
        let exploring_before = page.iter().filter(|p| p.exploring).count();
        let mut decisions = Decisions::new();
        if earlier > 0 {
            decisions.push(Decision::AuthorRepeat {
                nth: earlier + 1,
                factor: c.author_repeat_decay.powi(earlier as i32),
            });
        }
        if repeats > 0 {
            decisions.push(Decision::HashtagRepeat {
                repeats: repeats as u32,
                factor: c.hashtag_repeat_decay.powi(repeats as i32),
            });
        }
        if case.foreign(post) {
            decisions.push(Decision::ForeignLanguage {
                nth: foreign_before as u32 + 1,
                cap: c.foreign_cap() as u32,
            });
        }
        if post.sponsored {
            decisions.push(Decision::Sponsored {
                nth: sponsored_before as u32 + 1,
                cap: c.max_sponsored_per_page as u32,
            });
        }
        if post.exploring {
            decisions.push(Decision::Exploring {
                nth: exploring_before as u32 + 1,
                cap: c.max_exploring_per_page as u32,
            });
        }
        if earlier as usize >= c.max_per_author_per_page {
            decisions.push(Decision::Relaxed {
                rule: SoftRule::AuthorCap,
            });
        }
        if case.foreign(post) && foreign_before >= c.foreign_cap() {
            decisions.push(Decision::Relaxed {
                rule: SoftRule::LanguageCap,
            });
        }
        items.push(Placed {
            row: post.row,
            kind: if post.sponsored {
                PostKind::Sponsored
            } else {
                PostKind::Organic
            },
            score,
            decisions,
        });
    }

    let mut ads = case.ads.clone();
    ads.sort_by(|a, b| {
        b.score
            .partial_cmp(&a.score)
            .unwrap()
            .then(a.row.cmp(&b.row))
    });
    let mut ad_reports = Vec::new();
    for page in 0..items.len().div_ceil(page_size) {
        for ad in &ads {
            let shown = items.iter().position(|i| i.row == ad.row);
            let verdict = match shown {
                Some(p) if p / page_size < page => continue,
                Some(p) if p / page_size == page => AdVerdict::Shown { position: p as u32 },
                _ if ad.relevance < c.ad_min_relevance => AdVerdict::BelowRelevance {
                    threshold: c.ad_min_relevance,
                },
                _ => AdVerdict::NoSlot,
            };
            ad_reports.push(AdReport {
                page: page as u32,
                row: ad.row,
                relevance: ad.relevance,
                verdict,
            });
        }
    }
    Arrangement {
        page_size,
        items,
        ad_reports,
    }
}

fn relaxed(item: &Placed, rule: SoftRule) -> bool {
    item.decisions.contains(&Decision::Relaxed { rule })
}

/// Every rule of the module docs, checked on the output alone.
fn check_invariants(case: &Case, out: &Arrangement) -> Result<(), TestCaseError> {
    let c = &case.config;
    let page_size = c.page_size;
    prop_assert_eq!(out.page_size, page_size);
    prop_assert!(out.items.len() <= case.depth);

    // Every row comes from the input, once, with its kind.
    let mut seen = HashSet::new();
    for item in &out.items {
        prop_assert!(seen.insert(item.row), "row {} placed twice", item.row);
        match item.kind {
            PostKind::Ad => {
                prop_assert!(case.ads.iter().any(|a| a.row == item.row));
            }
            kind => {
                let post = case.posts.iter().find(|p| p.row == item.row);
                prop_assert!(post.is_some(), "row {} is not a candidate", item.row);
                prop_assert_eq!(kind == PostKind::Sponsored, post.unwrap().sponsored);
            }
        }
    }

    // Ads: relevant, spaced, never in the first positions, never adjacent, and shown whenever
    // a slot is open and a relevant ad is left.
    let (mut organic_before, mut ads_before) = (0, 0);
    for (position, item) in out.items.iter().enumerate() {
        let slot_open = organic_before >= c.first_ad_position + ads_before * c.organic_per_ad;
        if item.kind == PostKind::Ad {
            prop_assert!(case.ad(item.row).relevance >= c.ad_min_relevance);
            prop_assert!(position >= c.first_ad_position);
            prop_assert!(slot_open, "ad {ads_before} at position {position}");
            if position > 0 {
                prop_assert_ne!(out.items[position - 1].kind, PostKind::Ad);
            }
            ads_before += 1;
        } else {
            let relevant_ad_left = case.ads.iter().any(|a| {
                a.relevance >= c.ad_min_relevance
                    && !out.items[..position].iter().any(|i| i.row == a.row)
            });
            prop_assert!(
                !(slot_open && relevant_ad_left),
                "position {position}: an ad slot was open"
            );
            organic_before += 1;
        }
    }

    for page in 0..out.page_count() {
        let items = out.page(page);
        let start = page * page_size;
        let organic: Vec<(&Placed, &Post)> = items
            .iter()
            .filter(|i| i.kind != PostKind::Ad)
            .map(|i| (i, case.post(i.row)))
            .collect();
        let sponsored = organic.iter().filter(|(_, p)| p.sponsored).count();
        prop_assert!(sponsored <= c.max_sponsored_per_page);
        let exploring = organic.iter().filter(|(_, p)| p.exploring).count();
        prop_assert!(exploring <= c.max_exploring_per_page);
        for (k, &(item, post)) in organic.iter().enumerate() {
            let earlier = &organic[..k];
            // Soft caps: broken exactly by the posts marked as relaxed.
            let nth_of_author = 1 + earlier
                .iter()
                .filter(|(_, p)| p.author == post.author)
                .count();
            prop_assert_eq!(
                nth_of_author > c.max_per_author_per_page,
                relaxed(item, SoftRule::AuthorCap),
                "page {}, row {}",
                page,
                post.row
            );
            let foreign_over = case.foreign(post)
                && earlier.iter().filter(|(_, p)| case.foreign(p)).count() >= c.foreign_cap();
            prop_assert_eq!(foreign_over, relaxed(item, SoftRule::LanguageCap));
            for (_, other) in earlier {
                prop_assert!(
                    case.similarity(other.row, post.row) < c.near_duplicate_similarity,
                    "near-duplicates {} and {} on page {}",
                    other.row,
                    post.row,
                    page
                );
            }
        }
        // A reserve was placed only when no other candidate left could take the position.
        for (offset, item) in items.iter().enumerate() {
            if item.kind == PostKind::Ad || !case.post(item.row).reserve {
                continue;
            }
            let position = start + offset;
            let before = case.organic_in(&items[..offset]);
            for post in case.posts.iter().filter(|p| !p.reserve) {
                if out.items[..position].iter().all(|i| i.row != post.row) {
                    prop_assert!(
                        case.stage(&before, post).is_none(),
                        "position {position}: reserve {} placed while row {} could be",
                        item.row,
                        post.row
                    );
                }
            }
        }
        // A relaxed post was placed only when no candidate of its tier left could keep more
        // rules.
        for (offset, item) in items.iter().enumerate() {
            let stage = if relaxed(item, SoftRule::LanguageCap) {
                2
            } else if relaxed(item, SoftRule::AuthorCap) {
                1
            } else {
                continue;
            };
            let position = start + offset;
            let before = case.organic_in(&items[..offset]);
            let tier = case.post(item.row).reserve;
            for post in case.posts.iter().filter(|p| p.reserve == tier) {
                if out.items[..position].iter().any(|i| i.row == post.row) {
                    continue;
                }
                if let Some(s) = case.stage(&before, post) {
                    prop_assert!(
                        s >= stage,
                        "position {position}: row {} relaxed a rule row {} keeps",
                        item.row,
                        post.row
                    );
                }
            }
        }
        // Ad reports: every ad not shown on an earlier page, best first, with the verdict
        // that matches the sequence.
        let reports = out.ads_on_page(page);
        let expected: Vec<&AdCandidate> = case
            .ads
            .iter()
            .filter(|a| !out.items[..start].iter().any(|i| i.row == a.row))
            .collect();
        prop_assert_eq!(reports.len(), expected.len());
        for pair in reports.windows(2) {
            let (a, b) = (case.ad(pair[0].row), case.ad(pair[1].row));
            prop_assert!(a.score > b.score || (a.score == b.score && a.row < b.row));
        }
        for report in reports {
            let ad = case.ad(report.row);
            prop_assert_eq!(report.page as usize, page);
            prop_assert_eq!(report.relevance, ad.relevance);
            let shown = items.iter().position(|i| i.row == ad.row);
            let verdict = match shown {
                Some(offset) => AdVerdict::Shown {
                    position: (start + offset) as u32,
                },
                None if ad.relevance < c.ad_min_relevance => AdVerdict::BelowRelevance {
                    threshold: c.ad_min_relevance,
                },
                None => AdVerdict::NoSlot,
            };
            prop_assert_eq!(report.verdict, verdict);
        }
    }
    Ok(())
}

fn lang() -> impl Strategy<Value = Lang> {
    prop_oneof![Just(Lang::Mixed), (0u16..3).prop_map(Lang::Id)]
}

/// Scores on a coarse grid (so ties happen) or anywhere, negative ones included.
fn score() -> impl Strategy<Value = f32> {
    prop_oneof![(-4i32..=8).prop_map(|k| k as f32 * 0.25), -2.0f32..3.0]
}

fn arb_config() -> impl Strategy<Value = PolicyConfig> {
    (
        (
            1usize..9,
            prop_oneof![Just(0.3f32), -0.2f32..0.8],
            0usize..6,
            1usize..6,
            0usize..3,
            0usize..3,
        ),
        (
            1usize..4,
            // Decays of 1 and 0.5 keep penalised scores on the score grid, so penalised and
            // unpenalised candidates tie.
            prop_oneof![Just(1.0f32), Just(0.5f32), 0.2f32..1.0],
            prop_oneof![Just(0.99f32), 0.9f32..1.0],
            prop_oneof![Just(1.0f32), Just(0.5f32), 0.5f32..1.0],
            prop_oneof![Just(0.0f32), Just(1.0f32), 0.0f32..1.0],
        ),
    )
        .prop_map(
            |(
                (
                    page_size,
                    ad_min_relevance,
                    first_ad_position,
                    organic_per_ad,
                    sponsored,
                    exploring,
                ),
                (per_author, author_decay, near_duplicate, hashtag_decay, foreign_share),
            )| PolicyConfig {
                page_size,
                ad_min_relevance,
                first_ad_position,
                organic_per_ad,
                max_sponsored_per_page: sponsored,
                max_exploring_per_page: exploring,
                max_per_author_per_page: per_author,
                author_repeat_decay: author_decay,
                near_duplicate_similarity: near_duplicate,
                hashtag_repeat_decay: hashtag_decay,
                foreign_language_share: foreign_share,
            },
        )
}

fn arb_case() -> impl Strategy<Value = Case> {
    let posts = proptest::collection::vec(
        (
            score(),
            0u32..6,
            lang(),
            proptest::collection::vec(0u32..6, 0..3),
            proptest::bool::weighted(0.2),
            proptest::bool::weighted(0.3),
        ),
        0..40,
    );
    let ads = proptest::collection::vec((-0.3f32..1.0, score()), 0..8);
    let langs = vec![Lang::Id(0), Lang::Id(1), Lang::Id(2)];
    (
        posts,
        ads,
        proptest::sample::subsequence(langs.clone(), 0..=3),
        proptest::sample::subsequence(langs, 0..=2),
        proptest::collection::vec((0usize..40, 0usize..40), 0..8),
        arb_config(),
        0usize..70,
    )
        .prop_map(|(posts, ads, listed, engaged, pairs, config, depth)| {
            // Rows are sparse and interleaved with ads', as in a snapshot.
            let posts: Vec<Post> = posts
                .into_iter()
                .enumerate()
                .map(
                    |(i, (score, author, lang, tags, sponsored, reserve))| Post {
                        row: 3 * i as u32 + 1,
                        score,
                        author,
                        lang,
                        tags,
                        sponsored,
                        // Every fourth post that is not sponsored: enough to hit the cap.
                        exploring: i % 4 == 3 && !sponsored,
                        reserve,
                    },
                )
                .collect();
            let ads = ads
                .into_iter()
                .enumerate()
                .map(|(i, (relevance, score))| AdCandidate {
                    row: 3 * i as u32 + 2,
                    relevance,
                    score,
                })
                .collect();
            let copies = pairs
                .into_iter()
                .filter(|&(a, b)| a != b && a.max(b) < posts.len())
                .map(|(a, b)| (posts[a.min(b)].row, posts[a.max(b)].row))
                .collect();
            Case {
                posts,
                ads,
                listed,
                engaged,
                copies,
                config,
                depth,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn agrees_with_the_naive_reference(case in arb_case()) {
        prop_assert_eq!(case.arrange(), reference(&case));
    }

    #[test]
    fn keeps_every_rule_on_every_page(case in arb_case()) {
        check_invariants(&case, &case.arrange())?;
    }

    /// Equal inputs give equal outputs whatever their order, and a shallower arrangement is a
    /// prefix of a deeper one (so paging never repeats or skips a post).
    #[test]
    fn is_deterministic_order_free_and_prefix_stable(case in arb_case()) {
        let out = case.arrange();
        prop_assert_eq!(&case.arrange(), &out);
        let mut reversed = case.clone();
        reversed.posts.reverse();
        reversed.ads.reverse();
        prop_assert_eq!(&reversed.arrange(), &out);
        for depth in [0, case.depth / 3, case.depth / 2, case.depth.saturating_sub(1)] {
            let shallow = case.arrange_to(depth);
            prop_assert_eq!(&shallow.items[..], &out.items[..shallow.items.len()]);
            prop_assert_eq!(shallow.items.len(), depth.min(out.items.len()));
        }
    }

    /// Without its reserves, a case arranges into a prefix of the sequence with them: the
    /// sequence goes on where the one without reserves stops.
    #[test]
    fn reserves_only_extend_the_sequence_without_them(case in arb_case()) {
        let with = case.arrange();
        let mut without = case.clone();
        without.posts.retain(|p| !p.reserve);
        let without = without.arrange();
        prop_assert_eq!(&without.items[..], &with.items[..without.items.len()]);
        if without.items.len() < case.depth
            && with.items.len() > without.items.len()
        {
            let next = &with.items[without.items.len()];
            prop_assert!(
                next.kind != PostKind::Ad && case.post(next.row).reserve,
                "the position where the sequence without reserves stops takes a reserve"
            );
        }
    }
}

#[test]
fn penalties_take_the_same_fraction_off_either_sign_and_never_raise_a_score() {
    assert_eq!(penalised(2.0, 0.5), 1.0);
    assert_eq!(penalised(-2.0, 0.5), -3.0);
    assert_eq!(penalised(0.0, 0.5), 0.0);
    for score in [-3.0f32, -0.1, 0.0, 0.1, 3.0] {
        assert_eq!(penalised(score, 1.0), score);
        for factor in [0.1f32, 0.7, 0.99] {
            assert!(penalised(score, factor) <= score, "{score} × {factor}");
        }
    }
}

#[test]
fn decay_powers_are_those_powi_computes_inside_the_table_and_beyond() {
    for base in [0.9f32, 0.7, 0.5, 1.0] {
        let powers = Powers::new(base);
        for k in 0..2 * Powers::TABLE_LEN as u32 {
            assert_eq!(powers.get(k), base.powi(k as i32), "{base}^{k}");
        }
    }
}

#[test]
fn a_candidate_set_keeps_each_posts_hashtags() {
    let mut set = CandidateSet::with_capacity(3, 4);
    let candidate = |row| OrganicCandidate {
        row,
        score: 1.0,
        author: 0,
        lang: EN,
        sponsored: false,
        exploring: false,
    };
    set.push(candidate(7), &[1, 2]);
    set.push(candidate(8), &[]);
    set.push(candidate(9), &[3]);
    assert_eq!(set.len(), 3);
    let tags: Vec<(u32, Vec<u32>)> = set.iter().map(|(c, t)| (c.row, t.to_vec())).collect();
    assert_eq!(tags, vec![(7, vec![1, 2]), (8, vec![]), (9, vec![3])]);
    set.clear();
    assert!(set.is_empty());
}

#[test]
fn a_language_is_foreign_only_to_a_user_who_lists_others_and_does_not_engage_with_it() {
    let unknown = UserLanguages::default();
    assert!(!unknown.is_foreign(EN) && !unknown.is_foreign(ZH));
    let zh = [ZH];
    let en = [EN];
    let zh_user = UserLanguages {
        listed: &zh,
        engaged: &[],
    };
    assert!(zh_user.is_foreign(EN));
    assert!(!zh_user.is_foreign(ZH));
    assert!(!zh_user.is_foreign(Lang::Mixed));
    let reads_english_too = UserLanguages {
        listed: &zh,
        engaged: &en,
    };
    assert!(!reads_english_too.is_foreign(EN));
}

fn rows(items: &[Placed]) -> Vec<u32> {
    items.iter().map(|i| i.row).collect()
}

/// `n` posts by distinct authors, scores from `top` down in steps of 0.01, rows from `first`.
fn posts(first: u32, n: u32, top: f32, lang: Lang) -> Vec<Post> {
    (0..n)
        .map(|i| post(first + i, top - 0.01 * i as f32, first + i, lang))
        .collect()
}

#[test]
fn an_irrelevant_ad_is_never_shown_and_a_relevant_one_takes_the_first_slot() {
    let mut case = Case::of(posts(0, 60, 1.0, EN));
    case.depth = 60;
    case.ads = vec![
        AdCandidate {
            row: 5000,
            relevance: 0.29,
            score: 100.0,
        },
        AdCandidate {
            row: 5001,
            relevance: 0.9,
            score: 1.0,
        },
    ];
    let out = case.arrange();
    let ads: Vec<(usize, &Placed)> = out
        .items
        .iter()
        .enumerate()
        .filter(|(_, i)| i.kind == PostKind::Ad)
        .collect();
    assert_eq!(ads.len(), 1);
    let (position, ad) = ads[0];
    assert_eq!((position, ad.row), (3, 5001));
    assert_eq!(
        &ad.decisions[..],
        &[Decision::AdSlot {
            nth: 0,
            relevance: 0.9
        }]
    );
    let below = AdVerdict::BelowRelevance { threshold: 0.3 };
    let verdicts = |page| -> Vec<(u32, AdVerdict)> {
        out.ads_on_page(page)
            .iter()
            .map(|r| (r.row, r.verdict))
            .collect()
    };
    assert_eq!(
        verdicts(0),
        vec![(5000, below), (5001, AdVerdict::Shown { position: 3 })]
    );
    assert_eq!(verdicts(1), vec![(5000, below)]);
    assert_eq!(verdicts(2), vec![(5000, below)]);

    // With only the irrelevant ad, no page has an ad.
    case.ads.truncate(1);
    let out = case.arrange();
    assert_eq!(out.items.len(), 60);
    assert!(out.items.iter().all(|i| i.kind != PostKind::Ad));
}

#[test]
fn with_the_defaults_ads_come_one_per_ten_organic_posts_from_position_three() {
    let mut case = Case::of(posts(0, 100, 1.0, EN));
    case.ads = (0..20)
        .map(|i| AdCandidate {
            row: 1000 + i,
            relevance: 0.5,
            score: 1.0,
        })
        .collect();
    let out = case.arrange();
    let positions: Vec<usize> = (0..out.items.len())
        .filter(|&p| out.items[p].kind == PostKind::Ad)
        .collect();
    assert_eq!(positions, vec![3, 14, 25, 36, 47, 58, 69, 80, 91]);
    // Equal scores: ads by row.
    let ad_rows: Vec<u32> = positions.iter().map(|&p| out.items[p].row).collect();
    assert_eq!(ad_rows, (1000..1009).collect::<Vec<_>>());
    // Page 1 (positions 20..40) considers the 18 ads not shown on page 0: two take its slots
    // at 25 and 36, and the others find none.
    let page1: Vec<AdVerdict> = out.ads_on_page(1).iter().map(|r| r.verdict).collect();
    assert_eq!(page1.len(), 18);
    assert_eq!(page1[0], AdVerdict::Shown { position: 25 });
    assert_eq!(page1[1], AdVerdict::Shown { position: 36 });
    assert!(page1[2..].iter().all(|&v| v == AdVerdict::NoSlot));
}

#[test]
fn a_chinese_speaking_user_sees_at_most_a_fifth_english_only_posts_and_mixed_ones_freely() {
    let mut all = posts(0, 30, 3.0, EN);
    all.extend(posts(100, 30, 2.0, Lang::Mixed));
    all.extend(posts(200, 30, 1.0, ZH));
    let mut case = Case::of(all);
    case.listed = vec![ZH];
    let out = case.arrange();
    assert_eq!(out.items.len(), 90);
    let count = |page: usize, lang: Lang| {
        out.page(page)
            .iter()
            .filter(|i| case.post(i.row).lang == lang)
            .count()
    };
    // English posts score highest, yet take 4 of 20 positions; mixed posts take the rest.
    assert_eq!((count(0, EN), count(0, Lang::Mixed)), (4, 16));
    for page in 0..3 {
        assert_eq!(count(page, EN), 4, "page {page}");
    }
    // Only once the Chinese and mixed posts have run out do English ones fill pages past the
    // cap.
    let last_readable = out
        .items
        .iter()
        .rposition(|i| case.post(i.row).lang != EN)
        .unwrap();
    assert_eq!(last_readable, 75);
    for (position, item) in out.items.iter().enumerate() {
        assert_eq!(
            relaxed(item, SoftRule::LanguageCap),
            position > last_readable && position % 20 >= 4,
            "position {position}"
        );
    }
    let first_english = out.items.iter().find(|i| i.row == 0).unwrap();
    assert_eq!(
        &first_english.decisions[..],
        &[Decision::ForeignLanguage { nth: 1, cap: 4 }]
    );

    // Engaging with English posts makes English no longer foreign to this user.
    case.engaged = vec![EN];
    let out = case.arrange();
    assert!(out.page(0).iter().all(|i| case.post(i.row).lang == EN));
}

#[test]
fn a_new_english_speaking_user_sees_english_and_mixed_first_and_some_chinese() {
    // The platform's Chinese posts are many and good; the user's own language scores a
    // little higher at the top.
    let mut all = posts(0, 20, 2.0, EN);
    all.extend(posts(100, 20, 1.95, Lang::Mixed));
    all.extend(posts(200, 40, 1.97, ZH));
    let mut case = Case::of(all);
    case.listed = vec![EN];
    let out = case.arrange();
    let lang_at = |p: usize| case.post(out.items[p].row).lang;
    assert_eq!(lang_at(0), EN);
    let chinese = |page: usize| {
        out.page(page)
            .iter()
            .filter(|i| case.post(i.row).lang == ZH)
            .count()
    };
    assert_eq!(chinese(0), 4, "some Chinese posts, capped at a fifth");
    assert_eq!(chinese(1), 4);
    assert!(
        out.items[..40]
            .iter()
            .all(|i| !relaxed(i, SoftRule::LanguageCap))
    );

    // Someone we know nothing about has no cap: the Chinese posts compete on score alone.
    case.listed.clear();
    let out = case.arrange();
    let chinese = out
        .page(0)
        .iter()
        .filter(|i| case.post(i.row).lang == ZH)
        .count();
    assert!(chinese > 4, "{chinese}");
}

#[test]
fn an_author_with_five_top_posts_gets_at_most_two_per_page() {
    let mut all: Vec<Post> = (0..5)
        .map(|i| post(900 + i, 10.0 - 0.1 * i as f32, 1000, EN))
        .collect();
    all.extend(posts(0, 60, 1.0, EN));
    let mut case = Case::of(all);
    case.depth = 60;
    let out = case.arrange();
    let by_author = |page: usize| -> Vec<usize> {
        (0..out.page(page).len())
            .filter(|&k| case.post(out.page(page)[k].row).author == 1000)
            .collect()
    };
    // The best two lead page 0 (the second at 9.9 × 0.7, still above everyone else); the
    // others lead the next pages.
    assert_eq!(by_author(0), vec![0, 1]);
    assert_eq!(by_author(1), vec![0, 1]);
    assert_eq!(by_author(2), vec![0]);
    let second = &out.items[1];
    assert_eq!(second.row, 901);
    assert_eq!(second.score, 9.9 - (1.0 - 0.7) * 9.9);
    assert_eq!(
        &second.decisions[..],
        &[Decision::AuthorRepeat {
            nth: 2,
            factor: 0.7
        }]
    );
    assert!(out.items.iter().all(|i| !relaxed(i, SoftRule::AuthorCap)));
}

#[test]
fn a_short_page_relaxes_the_author_cap_first_then_the_language_cap_then_ends() {
    // One English author with four posts, one Chinese author with three better ones, for an
    // English reader; pages of 5 allow one foreign post.
    let mut case = Case::of(vec![
        post(1, 5.0, 1, EN),
        post(2, 4.0, 1, EN),
        post(3, 3.0, 1, EN),
        post(4, 2.0, 1, EN),
        post(11, 10.0, 2, ZH),
        post(12, 9.0, 2, ZH),
        post(13, 8.0, 2, ZH),
    ]);
    case.listed = vec![EN];
    case.config.page_size = 5;
    case.depth = 10;
    let out = case.arrange();
    assert_eq!(rows(&out.items), vec![11, 1, 2, 3, 4, 12, 13]);
    let relaxations: Vec<Vec<SoftRule>> = out
        .items
        .iter()
        .map(|i| {
            [SoftRule::AuthorCap, SoftRule::LanguageCap]
                .into_iter()
                .filter(|&r| relaxed(i, r))
                .collect()
        })
        .collect();
    use SoftRule::{AuthorCap, LanguageCap};
    assert_eq!(
        relaxations,
        vec![
            vec![],
            vec![],
            vec![],
            vec![AuthorCap],
            vec![AuthorCap],
            vec![],
            vec![LanguageCap],
        ]
    );
    // The third post of author 1: decayed twice.
    assert_eq!(
        &out.items[3].decisions[..],
        &[
            Decision::AuthorRepeat {
                nth: 3,
                factor: 0.7f32.powi(2)
            },
            Decision::Relaxed { rule: AuthorCap }
        ]
    );
}

#[test]
fn near_duplicates_never_share_a_page() {
    let mut all = vec![post(500, 10.0, 1000, EN), post(501, 9.9, 1001, EN)];
    all.extend(posts(0, 60, 1.0, EN));
    let mut case = Case::of(all);
    case.copies = vec![(500, 501)];
    case.depth = 40;
    let out = case.arrange();
    assert_eq!(out.items[0].row, 500);
    assert!(!rows(out.page(0)).contains(&501));
    assert_eq!(out.items[20].row, 501, "the copy leads the next page");
}

#[test]
fn the_sequence_ends_when_only_hard_rules_exclude_what_is_left() {
    // Rows 2 and 3 are copies of row 1; nothing else is left once 4 and 5 are placed.
    let mut case = Case::of(vec![
        post(1, 10.0, 1, EN),
        post(2, 9.0, 2, EN),
        post(3, 8.0, 3, EN),
        post(4, 1.0, 4, EN),
        post(5, 0.5, 5, EN),
    ]);
    case.copies = vec![(1, 2), (1, 3), (2, 3)];
    case.config.page_size = 4;
    case.depth = 8;
    assert_eq!(rows(&case.arrange().items), vec![1, 4, 5]);

    // Sponsored posts over the page's cap are excluded the same way.
    let mut case = Case::of(
        (1..=3)
            .map(|row| Post {
                sponsored: true,
                ..post(row, row as f32, row, EN)
            })
            .collect(),
    );
    case.config.page_size = 4;
    let out = case.arrange();
    assert_eq!(rows(&out.items), vec![3]);
    assert_eq!(out.items[0].kind, PostKind::Sponsored);
    assert_eq!(
        &out.items[0].decisions[..],
        &[Decision::Sponsored { nth: 1, cap: 1 }]
    );
}

#[test]
fn sponsored_posts_are_capped_per_page() {
    let mut all: Vec<Post> = (0..3)
        .map(|i| Post {
            sponsored: true,
            ..post(900 + i, 10.0 - i as f32, 900 + i, EN)
        })
        .collect();
    all.extend(posts(0, 60, 1.0, EN));
    let mut case = Case::of(all);
    case.depth = 60;
    let out = case.arrange();
    for page in 0..3 {
        let sponsored: Vec<u32> = out
            .page(page)
            .iter()
            .filter(|i| i.kind == PostKind::Sponsored)
            .map(|i| i.row)
            .collect();
        assert_eq!(sponsored, vec![900 + page as u32], "page {page}");
    }
}

#[test]
fn posts_offered_for_exploration_are_capped_per_page_and_say_so() {
    // Three exploring posts score above everything: one leads each page, in score order.
    let mut all: Vec<Post> = (0..3)
        .map(|i| Post {
            exploring: true,
            ..post(900 + i, 10.0 - i as f32, 900 + i, EN)
        })
        .collect();
    all.extend(posts(0, 60, 1.0, EN));
    let mut case = Case::of(all);
    case.depth = 60;
    case.config.max_exploring_per_page = 1;
    let out = case.arrange();
    for page in 0..3 {
        let items = out.page(page);
        let exploring: Vec<u32> = items
            .iter()
            .map(|i| i.row)
            .filter(|&row| row >= 900)
            .collect();
        assert_eq!(exploring, vec![900 + page as u32], "page {page}");
        assert_eq!(
            &items[0].decisions[..],
            &[Decision::Exploring { nth: 1, cap: 1 }]
        );
    }
    // A cap of 0 turns exploration off.
    case.config.max_exploring_per_page = 0;
    let out = case.arrange();
    assert!(out.items.iter().all(|i| i.row < 900));
}

#[test]
fn a_repeated_hashtag_costs_a_little_score() {
    let tagged = |row, score, tag| Post {
        tags: vec![tag],
        ..post(row, score, row, EN)
    };
    let mut case = Case::of(vec![
        tagged(1, 1.0, 7),
        tagged(2, 0.95, 7),
        tagged(3, 0.9, 8),
    ]);
    case.config.page_size = 3;
    let out = case.arrange();
    // 0.95 × 0.9 = 0.855 falls behind 0.9.
    assert_eq!(rows(&out.items), vec![1, 3, 2]);
    assert_eq!(
        &out.items[2].decisions[..],
        &[Decision::HashtagRepeat {
            repeats: 1,
            factor: 0.9
        }]
    );
    assert_eq!(out.items[2].score, 0.95 - (1.0 - 0.9) * 0.95);
}

#[test]
fn bad_inputs_are_refused_with_the_row_and_field() {
    let case = Case::of(vec![post(1, 1.0, 1, EN), post(2, 0.5, 2, EN)]);
    let run = |case: &Case| {
        arrange(
            &case.candidates(),
            &case.ads,
            &case.user(),
            |_, _| 0.0,
            &case.config,
            10,
        )
    };
    let mut nan = case.clone();
    nan.posts[1].score = f32::NAN;
    assert!(matches!(
        run(&nan),
        Err(PolicyError::NonFinite {
            row: 2,
            field: "score",
            ..
        })
    ));
    let mut bad_ad = case.clone();
    bad_ad.ads.push(AdCandidate {
        row: 9,
        relevance: f32::INFINITY,
        score: 1.0,
    });
    assert!(matches!(
        run(&bad_ad),
        Err(PolicyError::NonFinite {
            row: 9,
            field: "relevance",
            ..
        })
    ));
    let mut twice = case.clone();
    twice.posts.push(post(2, 0.1, 3, EN));
    assert_eq!(run(&twice), Err(PolicyError::DuplicateRow { row: 2 }));
    let mut ad_and_post = case.clone();
    ad_and_post.ads.push(AdCandidate {
        row: 1,
        relevance: 1.0,
        score: 1.0,
    });
    assert_eq!(run(&ad_and_post), Err(PolicyError::DuplicateRow { row: 1 }));
    let mut bad_config = case.clone();
    bad_config.config.organic_per_ad = 0;
    assert!(matches!(
        run(&bad_config),
        Err(PolicyError::Config {
            field: "organic_per_ad",
            ..
        })
    ));
    assert!(run(&case).is_ok());
}

#[test]
fn explanations_serialise_as_snake_case_json() {
    let mut decisions = Decisions::new();
    decisions.push(Decision::AuthorRepeat {
        nth: 2,
        factor: 0.5,
    });
    decisions.push(Decision::Relaxed {
        rule: SoftRule::LanguageCap,
    });
    let placed = Placed {
        row: 4,
        kind: PostKind::Sponsored,
        score: 0.25,
        decisions,
    };
    assert_eq!(
        serde_json::to_value(placed).unwrap(),
        json!({
            "row": 4,
            "kind": "sponsored",
            "score": 0.25,
            "decisions": [
                {"decision": "author_repeat", "nth": 2, "factor": 0.5},
                {"decision": "relaxed", "rule": "language_cap"},
            ],
        })
    );
    let reports = [
        (
            AdVerdict::Shown { position: 3 },
            json!({"page": 0, "row": 9, "relevance": 0.5, "verdict": "shown", "position": 3}),
        ),
        (
            AdVerdict::NoSlot,
            json!({"page": 0, "row": 9, "relevance": 0.5, "verdict": "no_slot"}),
        ),
        (
            AdVerdict::BelowRelevance { threshold: 0.75 },
            json!({"page": 0, "row": 9, "relevance": 0.5, "verdict": "below_relevance", "threshold": 0.75}),
        ),
    ];
    for (verdict, expected) in reports {
        let report = AdReport {
            page: 0,
            row: 9,
            relevance: 0.5,
            verdict,
        };
        let value = serde_json::to_value(report).unwrap();
        assert_eq!(value, expected);
        assert_eq!(serde_json::from_value::<AdReport>(value).unwrap(), report);
    }
    for decision in [
        Decision::HashtagRepeat {
            repeats: 2,
            factor: 0.25,
        },
        Decision::ForeignLanguage { nth: 1, cap: 4 },
        Decision::Sponsored { nth: 1, cap: 1 },
        Decision::AdSlot {
            nth: 0,
            relevance: 0.5,
        },
    ] {
        let value = serde_json::to_value(decision).unwrap();
        assert_eq!(serde_json::from_value::<Decision>(value).unwrap(), decision);
    }
    assert_eq!(
        serde_json::to_value(Decision::AdSlot {
            nth: 1,
            relevance: 0.5
        })
        .unwrap(),
        json!({"decision": "ad_slot", "nth": 1, "relevance": 0.5})
    );
}
