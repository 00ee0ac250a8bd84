//! Building the demo world. The model, and the reasons for its numbers, are in the parent
//! module's docs; this file only implements it.

use std::collections::BTreeMap;

use ndarray::Array2;
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use super::catalog::{self, NEWCOMER_TAGS, TOPICS, TagSpec};
use super::geometry::{Geometry, add, add_noise, random_unit, store};
use super::sampling::{
    WeightedPick, below, beta, binomial, chance, gaussian, shuffle, wave_time, weighted_sample,
    zipf_counts,
};
use super::{
    DAY, DEMO_NOW, DEMO_NOW_RFC3339, DemoConfig, DemoTopic, GroundTruth, Lang, Stream, WAVE_START,
    WINDOW_START, rng_for,
};
use crate::snapshot::{
    FORMAT_VERSION, Hashtag, Manifest, Metric, Post, PostKind, Snapshot, Stats, User,
};

/// Share of posts per language, indexed by `Lang as usize` (zh, en, mixed).
const POST_LANG_SHARE: [f64; 3] = [0.65, 0.25, 0.10];
/// Share of a creator's posts not in their own language.
const STRAY_LANG: f64 = 0.05;
const AD_SHARE: f64 = 0.05;
const SPONSORED_SHARE: f64 = 0.03;
/// Share of organic posts that are clickbait.
const CLICKBAIT_SHARE: f64 = 0.04;
const POSTS_PER_CREATOR: f64 = 12.0;
/// Posts per creator follow a Zipf–Mandelbrot law, weight `(rank + offset)^-1.3` with the
/// offset growing with the number of creators, so the shape does not depend on the world's
/// size: about 10% of creators post once, the median posts 4 times, the top 1% write about a
/// fifth of all posts (in the default world the busiest creator writes under 1%).
const CREATOR_ZIPF: f64 = 1.3;
const CREATOR_ZIPF_OFFSET_PER: f64 = 100.0;
/// Brands' ad budgets differ less.
const BRAND_ZIPF: f64 = 0.4;
const ADS_PER_BRAND: usize = 40;
/// English-language creators who joined in the wave (the rest are expats who were there).
const EN_CREATOR_NEWCOMER: f64 = 0.85;
const MIXED_CREATOR_NEWCOMER: f64 = 0.4;
const BAITY_CREATORS: f64 = 0.08;
const USER_EN_SHARE: f64 = 0.25;
const USER_BILINGUAL_SHARE: f64 = 0.05;

/// Embedding recipe (see the module docs). The language weight is below the topic's 1.0 so
/// topic dominates similarity.
const W_SUBTOPIC: f64 = 0.35;
const W_STYLE: f64 = 0.15;
const W_LANG_POST: f64 = 0.45;
const NOISE_POST: f64 = 0.4;
const W_LANG_USER: f64 = 0.3;
const NOISE_USER: f64 = 0.3;
const NOISE_TAG: f64 = 0.15;

pub(super) fn build(config: &DemoConfig) -> (Snapshot, GroundTruth) {
    let dim = config.dim;
    let specs = catalog::build_tags();
    let mut geo_rng = rng_for(config.seed, Stream::Geometry);
    let geometry = Geometry::new(&mut geo_rng, dim, specs.len());
    let hashtag_vectors = hashtag_vectors(&mut geo_rng, &geometry, &specs);
    let picks = Picks::new(&specs);

    let authors = make_authors(
        &mut rng_for(config.seed, Stream::Authors),
        config.posts,
        dim,
        &picks,
    );
    let posts = make_posts(
        &mut rng_for(config.seed, Stream::Posts),
        &authors,
        &geometry,
        &picks,
        &specs,
    );
    let users = make_users(
        &mut rng_for(config.seed, Stream::Users),
        config.users,
        &geometry,
        &picks,
        &specs,
    );

    let hashtags = specs
        .iter()
        .map(|s| Hashtag {
            tag: s.tag.clone(),
            display: BTreeMap::from([
                ("en".to_string(), s.display_en.clone()),
                ("zh".to_string(), s.display_zh.clone()),
            ]),
        })
        .collect();
    let snapshot = Snapshot {
        manifest: Manifest {
            format_version: FORMAT_VERSION,
            model_version: format!("demo-{}", config.seed),
            created_at: DEMO_NOW_RFC3339.to_string(),
            dim,
            metric: Metric::Cosine,
            files: BTreeMap::new(),
            scoring: serde_json::Map::new(),
        },
        posts: posts.posts,
        post_vectors: posts.vectors,
        users: users.users,
        user_vectors: users.vectors,
        hashtags,
        hashtag_vectors,
    };
    let truth = GroundTruth {
        topics: TOPICS
            .iter()
            .map(|t| DemoTopic {
                key: t.key,
                name_en: t.name_en,
                name_zh: t.name_zh,
            })
            .collect(),
        post_topic: posts.topic,
        post_quality: posts.quality,
        post_clickbait: posts.clickbait,
        user_topics: users.topics,
        hashtag_topic: specs.iter().map(|s| s.topic).collect(),
    };
    (snapshot, truth)
}

// ---------------------------------------------------------------------------------------------
// Hashtag vectors

fn hashtag_vectors(rng: &mut ChaCha8Rng, geo: &Geometry, specs: &[TagSpec]) -> Array2<f32> {
    let dim = geo.dim;
    let mut out = Array2::zeros((specs.len(), dim));
    let mut acc = vec![0.0; dim];
    let mut all_topics = vec![0.0; dim];
    for t in 0..TOPICS.len() {
        add(&mut all_topics, 1.0 / TOPICS.len() as f64, geo.centroid(t));
    }
    for (i, spec) in specs.iter().enumerate() {
        acc.fill(0.0);
        match (spec.topic, spec.newcomer) {
            (Some(t), _) => {
                add(&mut acc, 1.0, geo.centroid(t));
                add(&mut acc, W_SUBTOPIC, geo.tag_offset(i));
                // Chinese-script tags are mostly used in Chinese posts.
                if spec.cjk {
                    add(&mut acc, 0.2, geo.lang(Lang::Zh));
                } else {
                    add(&mut acc, 0.1, geo.lang(Lang::En));
                }
                add_noise(rng, &mut acc, NOISE_TAG);
            }
            (None, Some(n)) => {
                let nt = &NEWCOMER_TAGS[n];
                add(&mut acc, 0.8, geo.lang(nt.lang));
                if nt.related.is_empty() {
                    add(&mut acc, 1.0, &all_topics);
                } else {
                    for key in nt.related {
                        let w = 0.6 / nt.related.len() as f64;
                        add(&mut acc, w, geo.centroid(catalog::topic_index(key)));
                    }
                }
                add_noise(rng, &mut acc, 0.3);
            }
            (None, None) => unreachable!("every tag has a topic or is a newcomer tag"),
        }
        store(&mut out, i, &mut acc);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Weighted choices that do not change during generation.

struct Picks {
    /// Topic of a creator's work, per language.
    topic: [WeightedPick; 3],
    /// Topic of a brand's ads, per language.
    commercial: [WeightedPick; 3],
    /// Tags of a topic, per topic and post language (popular and same-script tags first).
    tag: Vec<[WeightedPick; 3]>,
    /// Newcomer tags, per topic and post language; items are tag indices.
    newcomer: Vec<[WeightedPick; 3]>,
    /// Tag index of `tiktokrefugee`.
    refugee_tag: usize,
}

fn lang_weight(lang: Lang, zh: f64, en: f64) -> f64 {
    match lang {
        Lang::Zh => zh,
        Lang::En => en,
        Lang::Mixed => (zh + en) / 2.0,
    }
}

impl Picks {
    fn new(specs: &[TagSpec]) -> Self {
        let topic = Lang::ALL.map(|l| {
            WeightedPick::new(
                TOPICS
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (i, lang_weight(l, t.weight_zh, t.weight_en))),
            )
        });
        let commercial = Lang::ALL.map(|l| {
            WeightedPick::new(TOPICS.iter().enumerate().map(|(i, t)| {
                let w = lang_weight(l, t.weight_zh, t.weight_en);
                (i, if t.commercial { w } else { 0.0 })
            }))
        });
        let tag = (0..TOPICS.len())
            .map(|t| {
                Lang::ALL.map(|l| {
                    let in_topic = specs.iter().enumerate().filter(|(_, s)| s.topic == Some(t));
                    WeightedPick::new(in_topic.map(|(i, s)| {
                        // Chinese posts mostly use Chinese tags (and popular English ones such
                        // as `ootd`); English posts almost never use Chinese tags.
                        let script = match (l, s.cjk) {
                            (Lang::Zh, true) => 1.5,
                            (Lang::Zh, false) => 0.6,
                            (Lang::En, true) => 0.05,
                            _ => 1.0,
                        };
                        (i, script * ((s.rank + 1) as f64).powf(-0.9))
                    }))
                })
            })
            .collect();
        let newcomer = (0..TOPICS.len())
            .map(|t| {
                Lang::ALL.map(|l| {
                    WeightedPick::new(specs.iter().enumerate().filter_map(|(i, s)| {
                        s.newcomer.map(|n| {
                            let nt = &NEWCOMER_TAGS[n];
                            let related =
                                nt.related.iter().any(|key| catalog::topic_index(key) == t);
                            let boost = if related { 6.0 } else { 1.0 };
                            (i, boost * lang_weight(l, nt.weight_zh, nt.weight_en))
                        })
                    }))
                })
            })
            .collect();
        let refugee_tag = specs
            .iter()
            .position(|s| s.tag == "tiktokrefugee")
            .expect("tiktokrefugee is a newcomer tag");
        Picks {
            topic,
            commercial,
            tag,
            newcomer,
            refugee_tag,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Authors

struct Author {
    id: String,
    lang: Lang,
    brand: bool,
    /// Joined in the wave; posts only since `join`.
    newcomer: bool,
    join: i64,
    primary: usize,
    secondary: Option<usize>,
    /// Mean hidden quality of the author's posts.
    quality: f64,
    /// Popularity multiplier of views.
    reach: f64,
    /// Prone to clickbait.
    baity: bool,
    posts: usize,
}

struct Authors {
    list: Vec<Author>,
    /// `[authors, dim]`, flat: each author's stylistic direction.
    styles: Vec<f64>,
}

/// Author-level language shares such that, after 5% of creators' posts stray (zh and en into
/// mixed, mixed into zh or en), the post-level shares are [`POST_LANG_SHARE`].
fn author_lang_targets() -> [f64; 3] {
    let d = STRAY_LANG;
    let [zh, en, mixed] = POST_LANG_SHARE;
    let m = (mixed - d) / (1.0 - 2.0 * d);
    [
        (zh - d / 2.0 * m) / (1.0 - d),
        (en - d / 2.0 * m) / (1.0 - d),
        m,
    ]
}

/// Languages such that the post-weighted shares hit the targets although post counts are
/// heavy-tailed: authors are taken largest first, each into a language with probability
/// proportional to how many posts that language still lacks.
fn assign_languages(rng: &mut ChaCha8Rng, counts: &[usize], total: usize) -> Vec<Lang> {
    let mut deficit = author_lang_targets().map(|share| share * total as f64);
    let mut order: Vec<usize> = (0..counts.len()).collect();
    order.sort_by(|&a, &b| counts[b].cmp(&counts[a]).then(a.cmp(&b)));
    let mut langs = vec![Lang::Zh; counts.len()];
    for i in order {
        let w = deficit.map(|d| d.max(0.0));
        let u = rng.random::<f64>() * (w[0] + w[1] + w[2]);
        let lang = if u < w[0] || w[0] + w[1] + w[2] <= 0.0 {
            Lang::Zh
        } else if u < w[0] + w[1] {
            Lang::En
        } else {
            Lang::Mixed
        };
        deficit[lang as usize] -= counts[i] as f64;
        langs[i] = lang;
    }
    langs
}

fn make_authors(rng: &mut ChaCha8Rng, posts: usize, dim: usize, picks: &Picks) -> Authors {
    let n_ads = (posts as f64 * AD_SHARE).round() as usize;
    let n_brands = n_ads.div_ceil(ADS_PER_BRAND);
    let creator_posts = posts - n_ads;
    let n_creators =
        ((creator_posts as f64 / POSTS_PER_CREATOR).round() as usize).clamp(1, creator_posts);
    let offset = (n_creators as f64 / CREATOR_ZIPF_OFFSET_PER).max(1.0);
    let mut counts = zipf_counts(rng, n_creators, creator_posts, CREATOR_ZIPF, offset);
    counts.extend(zipf_counts(rng, n_brands, n_ads, BRAND_ZIPF, 1.0));
    let langs = assign_languages(rng, &counts, posts);
    // Random id numbers, so neither brands nor big creators sit at predictable ids.
    let mut numbers: Vec<usize> = (1..=counts.len()).collect();
    shuffle(rng, &mut numbers);
    let mean_posts = creator_posts as f64 / n_creators as f64;

    let mut list = Vec::with_capacity(counts.len());
    let mut styles = vec![0.0; counts.len() * dim];
    for (i, (&count, &lang)) in counts.iter().zip(&langs).enumerate() {
        random_unit(rng, &mut styles[i * dim..(i + 1) * dim]);
        let id = format!("a_{:04}", numbers[i]);
        let l = lang as usize;
        let author = if i >= n_creators {
            Author {
                id,
                lang,
                brand: true,
                newcomer: false,
                join: WINDOW_START,
                primary: picks.commercial[l].sample(rng),
                secondary: None,
                quality: beta(rng, 3.0, 5.0),
                reach: 1.0,
                baity: false,
                posts: count,
            }
        } else {
            let newcomer = match lang {
                Lang::Zh => false,
                Lang::En => chance(rng, EN_CREATOR_NEWCOMER),
                Lang::Mixed => chance(rng, MIXED_CREATOR_NEWCOMER),
            };
            let join = if newcomer {
                wave_time(rng).min(DEMO_NOW - 3600)
            } else {
                WINDOW_START
            };
            let primary = picks.topic[l].sample(rng);
            let secondary = chance(rng, 0.55).then(|| {
                loop {
                    let t = picks.topic[l].sample(rng);
                    if t != primary {
                        break t;
                    }
                }
            });
            let baity = chance(rng, BAITY_CREATORS);
            let quality = beta(rng, 4.0, 4.0) * if baity { 0.6 } else { 1.0 };
            // Prolific authors tend to have more followers, with plenty of luck on top.
            let reach = (0.8 * gaussian(rng)).exp() * (count as f64 / mean_posts).powf(0.35);
            Author {
                id,
                lang,
                brand: false,
                newcomer,
                join,
                primary,
                secondary,
                quality,
                reach,
                baity,
                posts: count,
            }
        };
        list.push(author);
    }
    Authors { list, styles }
}

// ---------------------------------------------------------------------------------------------
// Posts

struct Draft {
    author: u32,
    lang: Lang,
    topic: u16,
    created_at: i64,
    kind: PostKind,
    clickbait: bool,
}

struct Posts {
    posts: Vec<Post>,
    vectors: Array2<f32>,
    topic: Vec<usize>,
    quality: Vec<f32>,
    clickbait: Vec<bool>,
}

fn make_drafts(rng: &mut ChaCha8Rng, authors: &Authors) -> Vec<Draft> {
    let total: usize = authors.list.iter().map(|a| a.posts).sum();
    let mut drafts = Vec::with_capacity(total);
    for (a, author) in authors.list.iter().enumerate() {
        for _ in 0..author.posts {
            let lang = if author.brand || !chance(rng, STRAY_LANG) {
                author.lang
            } else {
                match author.lang {
                    Lang::Zh | Lang::En => Lang::Mixed,
                    Lang::Mixed if chance(rng, 0.5) => Lang::Zh,
                    Lang::Mixed => Lang::En,
                }
            };
            let u = rng.random::<f64>();
            let topic = match author.secondary {
                _ if author.brand => author.primary,
                Some(_) if u < 0.70 => author.primary,
                Some(s) if u < 0.97 => s,
                None if u < 0.96 => author.primary,
                _ => below(rng, TOPICS.len()),
            };
            drafts.push(Draft {
                author: a as u32,
                lang,
                topic: topic as u16,
                created_at: rng.random_range(author.join..=DEMO_NOW),
                kind: if author.brand {
                    PostKind::Ad
                } else {
                    PostKind::Organic
                },
                clickbait: false,
            });
        }
    }
    // Ids follow time; the sort is stable, so ties keep generation order.
    drafts.sort_by_key(|d| d.created_at);

    let n = drafts.len();
    let sponsorable: Vec<usize> = (0..n)
        .filter(|&i| TOPICS[drafts[i].topic as usize].sponsorable)
        .filter(|&i| drafts[i].kind == PostKind::Organic)
        .collect();
    let k = ((n as f64 * SPONSORED_SHARE).round() as usize).min(sponsorable.len());
    // Brands pay creators with reach.
    let reach = |i: usize| authors.list[drafts[i].author as usize].reach;
    for i in weighted_sample(rng, &sponsorable, reach, k) {
        drafts[i].kind = PostKind::Sponsored;
    }

    let organic: Vec<usize> = (0..n)
        .filter(|&i| drafts[i].kind == PostKind::Organic)
        .collect();
    let k = (organic.len() as f64 * CLICKBAIT_SHARE).round() as usize;
    let baity = |i: usize| {
        if authors.list[drafts[i].author as usize].baity {
            10.0
        } else {
            1.0
        }
    };
    for i in weighted_sample(rng, &organic, baity, k) {
        drafts[i].clickbait = true;
    }
    drafts
}

/// Number of hashtags on a post: 0 to 4.
const TAG_COUNT_WEIGHTS: [f64; 5] = [0.05, 0.30, 0.35, 0.20, 0.10];

fn make_posts(
    rng: &mut ChaCha8Rng,
    authors: &Authors,
    geo: &Geometry,
    picks: &Picks,
    specs: &[TagSpec],
) -> Posts {
    let drafts = make_drafts(rng, authors);
    let n = drafts.len();
    let dim = geo.dim;
    let tag_count = WeightedPick::new(TAG_COUNT_WEIGHTS.iter().copied().enumerate());
    let mut out = Posts {
        posts: Vec::with_capacity(n),
        vectors: Array2::zeros((n, dim)),
        topic: Vec::with_capacity(n),
        quality: Vec::with_capacity(n),
        clickbait: Vec::with_capacity(n),
    };
    let mut acc = vec![0.0; dim];
    let mut chosen: Vec<usize> = Vec::with_capacity(8);
    for (i, d) in drafts.iter().enumerate() {
        let a = d.author as usize;
        let author = &authors.list[a];
        let t = d.topic as usize;
        let l = d.lang as usize;

        let m = author.quality.clamp(0.05, 0.95);
        let mut q = beta(rng, 8.0 * m, 8.0 * (1.0 - m));
        if d.kind == PostKind::Sponsored {
            q *= 0.9;
        }
        if d.clickbait {
            q *= 0.5;
        }
        let q = q.clamp(0.001, 0.999);

        // The main tag is the post's subtopic, even when the author lists no tags.
        let main_tag = picks.tag[t][l].sample(rng);
        let wanted = tag_count.sample(rng);
        chosen.clear();
        if wanted > 0 {
            chosen.push(main_tag);
        }
        for _ in 0..3 * wanted {
            if chosen.len() >= wanted {
                break;
            }
            let tag = picks.tag[t][l].sample(rng);
            if !chosen.contains(&tag) {
                chosen.push(tag);
            }
        }
        if d.created_at >= WAVE_START {
            let p = match (d.lang, author.newcomer) {
                (Lang::En, true) => 0.6,
                (Lang::En, false) => 0.2,
                (Lang::Mixed, _) => 0.4,
                (Lang::Zh, _) => 0.05,
            };
            if chance(rng, p) {
                let tag = picks.newcomer[t][l].sample(rng);
                if !chosen.contains(&tag) {
                    chosen.push(tag);
                }
            }
        }

        acc.fill(0.0);
        add(&mut acc, 1.0, geo.centroid(t));
        add(&mut acc, W_SUBTOPIC, geo.tag_offset(main_tag));
        add(&mut acc, W_STYLE, &authors.styles[a * dim..(a + 1) * dim]);
        add(&mut acc, W_LANG_POST, geo.lang(d.lang));
        add_noise(rng, &mut acc, NOISE_POST);
        store(&mut out.vectors, i, &mut acc);

        let stats = draw_stats(rng, d, author, q);
        out.posts.push(Post {
            id: format!("p_{:06}", i + 1),
            author: author.id.clone(),
            lang: d.lang.code().to_string(),
            hashtags: chosen.iter().map(|&k| specs[k].tag.clone()).collect(),
            kind: d.kind,
            created_at: d.created_at,
            stats,
        });
        out.topic.push(t);
        out.quality.push(q as f32);
        out.clickbait.push(d.clickbait);
    }
    out
}

/// Multipliers of per-view rates by kind of post.
struct RateMods {
    like: f64,
    save: f64,
    comment: f64,
    share: f64,
    hide: f64,
    report: f64,
}

const PLAIN: RateMods = RateMods {
    like: 1.0,
    save: 1.0,
    comment: 1.0,
    share: 1.0,
    hide: 1.0,
    report: 1.0,
};
const CLICKBAIT: RateMods = RateMods {
    like: 0.5,
    save: 0.15,
    comment: 0.35,
    share: 0.6,
    hide: 3.0,
    report: 2.0,
};
const AD: RateMods = RateMods {
    like: 0.35,
    save: 0.2,
    comment: 0.3,
    share: 0.3,
    hide: 3.0,
    report: 2.0,
};
const SPONSORED: RateMods = RateMods {
    like: 0.9,
    save: 0.6,
    comment: 1.0,
    share: 0.8,
    hide: 1.8,
    report: 1.3,
};

fn draw_stats(rng: &mut ChaCha8Rng, d: &Draft, author: &Author, q: f64) -> Stats {
    let topic = &TOPICS[d.topic as usize];
    let age_hours = (DEMO_NOW - d.created_at) as f64 / 3600.0;
    // A post gathers most of its views in its first day or two.
    let growth = 1.0 - (-(age_hours + 0.25) / 20.0).exp();
    let z = gaussian(rng);
    let views = if d.kind == PostKind::Ad {
        // Paid impressions: a budget, not virality.
        (4000f64.ln() + 0.5 * z).exp() * growth
    } else {
        let mut v = (600f64.ln() + z).exp() * author.reach * growth * (1.2 * (q - 0.5)).exp();
        if author.newcomer {
            v *= 1.3;
        }
        if d.kind == PostKind::Sponsored {
            v *= 1.2;
        }
        if d.clickbait {
            v *= rng.random_range(5.0..10.0);
        }
        v
    };
    let views = views.round().clamp(0.0, 5e7) as u64;

    let mods = match d.kind {
        PostKind::Ad => &AD,
        PostKind::Sponsored => &SPONSORED,
        PostKind::Organic if d.clickbait => &CLICKBAIT,
        PostKind::Organic => &PLAIN,
    };
    // Locals flocked to welcome the newcomers in the comments.
    let welcome = if author.newcomer { 1.5 } else { 1.0 };
    let bad = 1.0 - q;
    let like = topic.like * (0.025 + 0.06 * q) * mods.like;
    let save = topic.save * (0.003 + 0.06 * q * q) * mods.save;
    let comment = topic.comment * (0.003 + 0.012 * q) * mods.comment * welcome;
    let share = topic.share * (0.001 + 0.008 * q) * mods.share;
    let mut hide = (0.0015 + 0.02 * bad.powi(3)) * mods.hide;
    if d.kind == PostKind::Ad {
        hide += 0.005;
    }
    let report = (0.00005 + 0.002 * bad.powi(4)) * mods.report;
    Stats {
        views,
        likes: binomial(rng, views, like),
        saves: binomial(rng, views, save),
        comments: binomial(rng, views, comment),
        shares: binomial(rng, views, share),
        hides: binomial(rng, views, hide),
        reports: binomial(rng, views, report),
    }
}

// ---------------------------------------------------------------------------------------------
// Users

struct Users {
    users: Vec<User>,
    vectors: Array2<f32>,
    topics: Vec<Vec<usize>>,
}

fn make_users(
    rng: &mut ChaCha8Rng,
    n: usize,
    geo: &Geometry,
    picks: &Picks,
    specs: &[TagSpec],
) -> Users {
    let dim = geo.dim;
    let n_en = (n as f64 * USER_EN_SHARE).round() as usize;
    let n_bi = ((n as f64 * USER_BILINGUAL_SHARE).round() as usize).min(n - n_en);
    let n_zh = n - n_en - n_bi;
    // `Lang::Mixed` stands for bilingual users here.
    let mut joined: Vec<(i64, Lang)> = Vec::with_capacity(n);
    for i in 0..n {
        let lang = if i < n_zh {
            Lang::Zh
        } else if i < n_zh + n_en {
            Lang::En
        } else {
            Lang::Mixed
        };
        let old = || (DEMO_NOW - 4 * 365 * DAY)..=(WAVE_START - DAY);
        let created_at = match lang {
            Lang::Zh => rng.random_range(old()),
            Lang::En => wave_time(rng),
            Lang::Mixed if chance(rng, 0.3) => wave_time(rng),
            Lang::Mixed => rng.random_range(old()),
        };
        joined.push((created_at, lang));
    }
    // Ids follow joining order; the sort is stable.
    joined.sort_by_key(|&(t, _)| t);

    let mut out = Users {
        users: Vec::with_capacity(n),
        vectors: Array2::zeros((n, dim)),
        topics: Vec::with_capacity(n),
    };
    let mut acc = vec![0.0; dim];
    for (i, &(created_at, lang)) in joined.iter().enumerate() {
        let l = lang as usize;
        // 1, 2 or 3 preferred topics, with probabilities 30%, 40%, 30%.
        let k = match below(rng, 10) {
            0..=2 => 1,
            3..=6 => 2,
            _ => 3,
        };
        let mut prefs: Vec<(usize, f64)> = Vec::with_capacity(k);
        while prefs.len() < k {
            let t = picks.topic[l].sample(rng);
            if prefs.iter().all(|&(p, _)| p != t) {
                let boost = if prefs.is_empty() { 1.5 } else { 1.0 };
                prefs.push((t, boost * rng.random_range(0.5..1.5)));
            }
        }
        prefs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let total: f64 = prefs.iter().map(|p| p.1).sum();

        acc.fill(0.0);
        for &(t, w) in &prefs {
            add(&mut acc, w / total, geo.centroid(t));
        }
        add(&mut acc, W_LANG_USER, geo.lang(lang));
        add_noise(rng, &mut acc, NOISE_USER);
        store(&mut out.vectors, i, &mut acc);

        let mut follows: Vec<usize> = Vec::with_capacity(8);
        for (j, &(t, _)) in prefs.iter().enumerate() {
            let wanted = follows.len() + if j == 0 { 2 } else { 1 } + below(rng, 2);
            for _ in 0..6 {
                if follows.len() >= wanted {
                    break;
                }
                let tag = picks.tag[t][l].sample(rng);
                if !follows.contains(&tag) {
                    follows.push(tag);
                }
            }
        }
        let primary = prefs[0].0;
        let newcomer_tags = match lang {
            Lang::En => {
                if chance(rng, 0.7) {
                    follows.push(picks.refugee_tag);
                }
                usize::from(chance(rng, 0.35))
            }
            Lang::Zh => usize::from(chance(rng, 0.08)),
            _ => usize::from(chance(rng, 0.3)),
        };
        for _ in 0..newcomer_tags {
            let tag = picks.newcomer[primary][l].sample(rng);
            if !follows.contains(&tag) {
                follows.push(tag);
            }
        }

        let langs = match lang {
            Lang::Zh => vec!["zh".to_string()],
            Lang::En => vec!["en".to_string()],
            Lang::Mixed => vec!["zh".to_string(), "en".to_string()],
        };
        out.users.push(User {
            id: format!("u_{:04}", i + 1),
            langs,
            created_at,
            follows: follows.iter().map(|&k| specs[k].tag.clone()).collect(),
        });
        out.topics.push(prefs.iter().map(|p| p.0).collect());
    }
    out
}
