//! The demo world: a deterministic, synthetic model snapshot shaped like RedNote (Xiaohongshu)
//! in the week of January 2025 when many English-speaking "TikTok refugees" joined it.
//!
//! [`generate`] builds a [`Snapshot`] in memory from a [`DemoConfig`]; write it with
//! [`Snapshot::write_to`]. The same config always gives the same snapshot: every random draw
//! comes from [`ChaCha8Rng`] streams derived from the seed, and nothing iterates a hash map.
//! Posts, authors and users draw from separate streams, so changing the number of users does
//! not change the posts. (Floating-point `ln`/`exp` come from the platform's maths library, so
//! bit-identical vectors are promised on one platform, not across all of them.)
//!
//! # The world
//!
//! Everything is anchored at a fixed "now", 2025-01-19T12:00:00Z. Posts span the 30 days before
//! it; the newcomer wave is the last 7 days.
//!
//! - **20 topics** (pets & cats, travel in China, food, skincare & beauty, study help, language
//!   exchange, fitness, personal finance, healthcare costs, memes, fashion, photography,
//!   tech & gadgets, cooking & recipes, music, books, gaming, parenting, home & decor,
//!   city life & housing) and **300 hashtags**: about 8 curated tags per topic (English and
//!   Chinese ones, e.g. `cats` and `猫咪`, each with an English and a Chinese display form),
//!   10 cross-topic newcomer tags (`tiktokrefugee`, `newhere`, `hellofromusa`, `cattax`,
//!   `中美网友对账`, ...; used only in the wave), and filler tags made from a topic stem and a
//!   suffix (`cattips`, `#猫咪小技巧`) to reach 300. The list is the same for every seed.
//! - **Posts**: 65% `zh`, 25% `en`, 10% `mixed`. About `posts / 12` creators with a Zipf-like
//!   number of posts each; a creator writes in one language (5% of posts stray, mostly into
//!   `mixed`), mostly about one topic, often a second, rarely anything else. 85% of
//!   English-language creators are newcomers who joined in the wave and post only since.
//!   Ids: posts `p_000001` (in time order), authors `a_0001`.
//! - **Kinds**: exactly 5% (rounded) `ad`, from brand accounts in commercial topics (skincare,
//!   fashion, tech, finance, travel, food); 3% `sponsored`, creators' endorsements in topics
//!   where brand deals happen, favouring creators with more reach; the rest `organic`, of which
//!   4% are clickbait.
//! - **Users**: 70% existing Chinese speakers (`["zh"]`, joined in the four years before the
//!   wave), 25% English-speaking newcomers (`["en"]`, joined in the last 7 days), 5% bilingual
//!   (`["zh","en"]`). Each prefers 1–3 topics and follows a few of their tags; most newcomers
//!   also follow `tiktokrefugee`. Ids `u_0001`, in order of joining.
//!
//! # Embeddings
//!
//! Random unit centroids per topic and a random unit direction per language (`mixed` is
//! halfway between `en` and `zh`). A post is
//! `normalise(topic + 0.35·subtopic + 0.15·author style + 0.45·language + noise)`, where the
//! subtopic is the direction of its main hashtag and the noise has norm about 0.4, so posts
//! cluster by topic first, then hashtag and language. A hashtag sits near its topic centroid;
//! a newcomer tag sits near its community's language direction, between the topics it leans to.
//! A user is `normalise(weighted mix of their topics + 0.3·language + noise)`.
//! All vectors have unit norm; the metric is `cosine`.
//!
//! # Hidden variables and the signals that reveal them
//!
//! Hidden (returned only by [`generate_with_truth`], never written to the snapshot): each
//! post's topic and quality `q` in (0, 1) (Beta-distributed around its author's mean), whether
//! it is clickbait, and each user's preferred topics.
//!
//! - **views** are mostly reach and luck: lognormal (median about 600) scaled by the author's
//!   popularity (heavy-tailed, larger for prolific authors), the post's age (a post gathers
//!   views over its first day or two) and only mildly by `q`. Clickbait gets 5–10× the views;
//!   ads get paid impressions with a thin tail. Views alone are a poor and gameable signal.
//! - **saves** per view carry most of the information: the rate grows with `q²`, scaled by how
//!   much the topic is "value content" (travel advice, study tips, recipes: high; memes, music:
//!   low). Clickbait and ads are rarely saved.
//! - **likes**, **comments** and **shares** per view rise with `q` more weakly, with topic
//!   flavours (memes are shared, language exchange is commented on); newcomers' posts draw
//!   extra comments from welcoming locals.
//! - **hides** and **reports** per view rise steeply as `q` falls, and are higher for
//!   clickbait, ads and (less) sponsored posts.
//!
//! Every counter is a binomial draw from the views, so `likes ≤ views` and so on always hold.

mod catalog;
mod geometry;
mod sampling;
mod world;

#[cfg(test)]
mod tests;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use thiserror::Error;

use crate::snapshot::Snapshot;

pub use catalog::NUM_HASHTAGS;

/// The fixed "now" of the demo world: 2025-01-19T12:00:00Z, in Unix seconds.
pub const DEMO_NOW: i64 = 1_737_288_000;
/// [`DEMO_NOW`] as written in the manifest.
pub const DEMO_NOW_RFC3339: &str = "2025-01-19T12:00:00Z";
/// Start of the newcomer wave: 7 days before [`DEMO_NOW`].
pub const WAVE_START: i64 = DEMO_NOW - 7 * DAY;
/// Start of the post window: 30 days before [`DEMO_NOW`].
pub const WINDOW_START: i64 = DEMO_NOW - 30 * DAY;

const DAY: i64 = 86_400;

/// Caps that keep a typo from allocating the machine away.
const MAX_POSTS: usize = 10_000_000;
const MAX_USERS: usize = 10_000_000;
const MAX_DIM: usize = 4096;
/// At most 2^30 floats (4 GiB) across the post and user matrices.
const MAX_FLOATS: usize = 1 << 30;
const MIN_DIM: usize = 8;

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoConfig {
    /// Number of posts (at least 1).
    pub posts: usize,
    /// Number of users (may be 0: the snapshot then has no `users.*` files).
    pub users: usize,
    /// Seed of every random draw; `model_version` is `demo-<seed>`.
    pub seed: u64,
    /// Embedding dimension (at least 8).
    pub dim: usize,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            posts: 50_000,
            users: 5_000,
            seed: 42,
            dim: 64,
        }
    }
}

/// Why a [`DemoConfig`] was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DemoError {
    #[error("invalid demo config: `{field}` {requirement} (got {value})")]
    InvalidConfig {
        /// The offending field of [`DemoConfig`].
        field: &'static str,
        requirement: String,
        value: usize,
    },
}

impl DemoConfig {
    /// Checks the bounds documented on each field.
    pub fn validate(&self) -> Result<(), DemoError> {
        let invalid = |field, requirement: String, value| {
            Err(DemoError::InvalidConfig {
                field,
                requirement,
                value,
            })
        };
        if self.posts < 1 {
            return invalid("posts", "must be at least 1".into(), self.posts);
        }
        if self.posts > MAX_POSTS {
            return invalid("posts", format!("must be at most {MAX_POSTS}"), self.posts);
        }
        if self.users > MAX_USERS {
            return invalid("users", format!("must be at most {MAX_USERS}"), self.users);
        }
        if self.dim < MIN_DIM {
            return invalid("dim", format!("must be at least {MIN_DIM}"), self.dim);
        }
        if self.dim > MAX_DIM {
            return invalid("dim", format!("must be at most {MAX_DIM}"), self.dim);
        }
        if (self.posts + self.users).saturating_mul(self.dim) > MAX_FLOATS {
            return invalid(
                "dim",
                format!(
                    "times (posts + users) must be at most {MAX_FLOATS} floats \
                     (posts = {}, users = {})",
                    self.posts, self.users
                ),
                self.dim,
            );
        }
        Ok(())
    }
}

/// The hidden side of a demo world, row-aligned with the snapshot it came with. For tests and
/// offline evaluation only: none of it is in the snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct GroundTruth {
    /// The topics; the topic indices below refer to this list.
    pub topics: Vec<DemoTopic>,
    /// Topic of each post.
    pub post_topic: Vec<usize>,
    /// Hidden quality of each post, in (0, 1).
    pub post_quality: Vec<f32>,
    /// Whether each post is clickbait (always `false` for ads and sponsored posts).
    pub post_clickbait: Vec<bool>,
    /// Preferred topics of each user, most preferred first.
    pub user_topics: Vec<Vec<usize>>,
    /// Topic of each hashtag; `None` for the cross-topic newcomer tags.
    pub hashtag_topic: Vec<Option<usize>>,
}

/// A topic of the demo world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoTopic {
    /// Stable identifier, e.g. `travel_china`.
    pub key: &'static str,
    /// Human-readable names, e.g. "Travel in China" and "中国旅行".
    pub name_en: &'static str,
    pub name_zh: &'static str,
}

/// Generates the demo world described in the module docs.
pub fn generate(config: &DemoConfig) -> Result<Snapshot, DemoError> {
    generate_with_truth(config).map(|(snapshot, _)| snapshot)
}

/// [`generate`], plus the hidden variables behind the snapshot.
pub fn generate_with_truth(config: &DemoConfig) -> Result<(Snapshot, GroundTruth), DemoError> {
    config.validate()?;
    Ok(world::build(config))
}

/// Post, author and user languages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lang {
    Zh = 0,
    En = 1,
    Mixed = 2,
}

impl Lang {
    const ALL: [Lang; 3] = [Lang::Zh, Lang::En, Lang::Mixed];

    fn code(self) -> &'static str {
        match self {
            Lang::Zh => "zh",
            Lang::En => "en",
            Lang::Mixed => "mixed",
        }
    }
}

/// Independent random streams, one per part of the world.
#[derive(Clone, Copy)]
enum Stream {
    Geometry = 1,
    Authors = 2,
    Posts = 3,
    Users = 4,
}

fn rng_for(seed: u64, stream: Stream) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream as u64);
    rng
}
