//! Hashtag recommendations: which hashtags to offer a user to follow, newcomers above all.
//!
//! A user we know nothing about cannot be matched by embedding, so for them a hashtag is
//! judged by what the platform knows of it, per language community:
//!
//! - **trending**: recent activity among users of the viewer's language (posts in that
//!   language, bilingual posts at half weight, and new followers who read it), blended with
//!   its all-time activity there, so a tag rising this week outranks one that was big last
//!   year (velocity, not only totals);
//! - **value**: the mean value score of its organic posts (saves, comments and shares per
//!   view, `scoring::value_score`), shrunk toward zero for tags with few posts;
//! - **bridge**: how evenly it is used across language communities (or by bilingual posts):
//!   the tags through which newcomers and incumbents meet;
//! - **affinity** (only for a viewer with interests): cosine between the viewer's interest
//!   vectors and the tag's vector;
//! - **neighbours** (only when the query gives the viewer's nearest users): the
//!   similarity-weighted share of those users who follow the tag. Similarities are floored
//!   at 0, and a neighbour who follows nothing counts as following none of the tags, so a
//!   tag followed by every close neighbour scores 1 and one followed by a single distant
//!   neighbour little. This is how a newcomer placed among existing users
//!   (`Model::record_onboarding`) is offered what those users follow, tags the picked
//!   hashtags' own vectors may not rank.
//!
//! Each term is scaled to [0, 1] over the eligible tags and weighed (`HashtagOptions`); the
//! affinity (a cosine) and the neighbour share are in [0, 1] as they are. The
//! reason given with a tag is the weighed term that lifts it furthest above the mean of the
//! candidates: on a platform where most tags are used in both languages, a high bridge term
//! is no reason to pick one of them, but it is for a tag that few others match.
//!
//! The page is chosen greedily for variety: a tag's score is reduced by its similarity to the
//! tags already chosen, and a near-copy of a chosen tag (cosine at or above `near_duplicate`)
//! is taken only if nothing else is left.
//! The first `bridge_slots` places (2 of a page by default) go to bridge tags, the best by
//! score times bridge term among those bridging at least `min_bridge`: tags shared across
//! language communities are where newcomers and incumbents meet, and the largest tags of one
//! community would otherwise crowd them out. The page is then shown best first, and a tag in a
//! bridge slot gives `bridge` as its reason.
//!
//! A tag is eligible if it has at least `min_posts` organic posts, paid posts (ads, sponsored)
//! are at most `max_paid_share` of its posts, and posts past the report threshold at most
//! `max_reported_share`: a tag carried by ads or by reported posts would lead to a feed of
//! them. Tags the viewer already follows are left out.
//!
//! Statistics and vectors are derived once per model (`Hashtags::build`). Live writes then
//! move them, from the next recommendation on: events move posts' value scores and report
//! counts (`Hashtags::record_post_change`: mean value, eligibility), published posts add to
//! their tags' activity and post counts (`Hashtags::record_published`: trending, bridge,
//! eligibility), and onboarding follows add followers (`Hashtags::record_follows`). Tags no
//! snapshot knows are not recommended before a snapshot has them (they have no statistics to
//! be judged by). A tag's vector is its row of `hashtags.npy` when the snapshot has one, else
//! the mean of its organic posts' vectors.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};

use crate::index::dot;
use crate::scoring::{self, ScoringConfig};
use crate::snapshot::{PostKind, Snapshot};

/// Posts of weight zero added to a tag's mean value: a tag with three great posts should not
/// outrank one with three hundred good ones.
const VALUE_PRIOR_POSTS: f32 = 5.0;

/// Tags scored in full per request: the best by score before the variety pass. Bounds the
/// pass's cost (it compares vectors) on models with very many tags.
const POOL_PER_PICK: usize = 20;

/// Most interest vectors made from picked hashtags (`Hashtags::interests`).
pub const MAX_INTERESTS: usize = 4;

/// How tags are judged. `[feed.hashtags]` in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HashtagOptions {
    /// Activity in this window counts as recent (the velocity part of `trending`).
    pub velocity_window_hours: u32,
    /// Share of `trending` that comes from recent activity (the rest from all-time activity).
    pub velocity_share: f32,
    pub trending_weight: f32,
    pub value_weight: f32,
    pub bridge_weight: f32,
    /// Weight of the viewer's affinity; it counts only for viewers with interest vectors.
    pub affinity_weight: f32,
    /// Weight of the neighbour term (the similarity-weighted share of the viewer's nearest
    /// users following a tag); it counts only for queries that give neighbours, which the
    /// service does for newcomers while `[feed.users] newcomer_neighbours` is on.
    ///
    /// 0.5 by default, from the hashtag-prefs data set (`bash scripts/eval_hashtags.sh
    /// DATA_DIR`, with `--config` files setting this weight; 6,221 held-out posts, hit@10 /
    /// MRR@10): a newcomer who picked the author's first 3 hashtags scores 0.1244 / 0.0780 on
    /// the picks alone, and with the neighbour term of their 20 nearest users 0.1288 / 0.0808
    /// at 0.25, **0.1307 / 0.0813 at 0.5**, 0.1299 / 0.0794 at 1 and 0.1273 / 0.0727 at 2. The
    /// hit@10 gain at 0.5 (+0.0063, 5%) holds under a bootstrap over users (95% interval
    /// +0.0022 to +0.0107); the MRR gain does not (−0.0006 to +0.0073). With 1 pick it is
    /// neutral (0.1429 / 0.0957 against 0.1432 / 0.0971), with 5 slightly positive
    /// (0.1059 / 0.0622 against 0.1032 / 0.0622). For users with an embedding the same term
    /// costs (warm 0.2045 / 0.1548, with it 0.1979 / 0.1444), so the service gives it to
    /// newcomers only. The weight was picked on the split it is reported on.
    pub neighbour_weight: f32,
    /// Score taken off per unit of cosine to the most similar tag already chosen.
    pub diversity_weight: f32,
    /// A tag at least this similar (cosine) to a chosen one is taken only if nothing else is.
    pub near_duplicate: f32,
    /// Places of a page kept for bridge tags (see `min_bridge`), filled first.
    pub bridge_slots: u32,
    /// Least bridge term (0 to 1) of a tag in a bridge slot.
    pub min_bridge: f32,
    /// Fewest organic posts a tag needs to be recommended.
    pub min_posts: u32,
    /// Largest share of a tag's posts that may be ads or sponsored.
    pub max_paid_share: f32,
    /// Largest share of a tag's posts that may be past the report threshold.
    pub max_reported_share: f32,
}

impl Default for HashtagOptions {
    fn default() -> Self {
        HashtagOptions {
            velocity_window_hours: 72,
            velocity_share: 0.7,
            trending_weight: 0.45,
            value_weight: 0.25,
            bridge_weight: 0.3,
            affinity_weight: 1.0,
            neighbour_weight: 0.5,
            diversity_weight: 0.3,
            near_duplicate: 0.9,
            bridge_slots: 2,
            min_bridge: 0.5,
            min_posts: 3,
            max_paid_share: 0.5,
            max_reported_share: 0.2,
        }
    }
}

impl HashtagOptions {
    /// Checks ranges; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        let unit = [
            ("velocity_share", self.velocity_share),
            ("min_bridge", self.min_bridge),
            ("max_paid_share", self.max_paid_share),
            ("max_reported_share", self.max_reported_share),
        ];
        for (name, value) in unit {
            if !(0.0..=1.0).contains(&value) {
                return Err(format!("hashtags.{name}: must be from 0 to 1, got {value}"));
            }
        }
        let weights = [
            ("trending_weight", self.trending_weight),
            ("value_weight", self.value_weight),
            ("bridge_weight", self.bridge_weight),
            ("affinity_weight", self.affinity_weight),
            ("neighbour_weight", self.neighbour_weight),
            ("diversity_weight", self.diversity_weight),
        ];
        for (name, value) in weights {
            if !(value.is_finite() && value >= 0.0) {
                return Err(format!(
                    "hashtags.{name}: must be a finite number, at least 0, got {value}"
                ));
            }
        }
        if !(self.near_duplicate > 0.0 && self.near_duplicate <= 1.0) {
            return Err(format!(
                "hashtags.near_duplicate: must be above 0 and at most 1, got {}",
                self.near_duplicate
            ));
        }
        if self.velocity_window_hours == 0 {
            return Err("hashtags.velocity_window_hours: must be at least 1".into());
        }
        Ok(())
    }
}

/// Why a tag is recommended: the weighed term that lifts it furthest above the typical
/// candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Active among users of the viewer's language, recently above all.
    Trending,
    /// Used across language communities.
    Bridge,
    /// Its posts are saved, commented and shared.
    HighValue,
    /// Close to the viewer's interests, or followed by the users nearest them.
    ForYou,
}

/// Activity of a tag within one language community.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Activity {
    posts: u32,
    recent_posts: u32,
    followers: u32,
    recent_followers: u32,
}

impl Activity {
    fn total(&self) -> f32 {
        (self.posts + self.followers) as f32
    }

    fn recent(&self) -> f32 {
        (self.recent_posts + self.recent_followers) as f32
    }
}

/// What is known of one tag.
#[derive(Debug, Clone)]
struct TagEntry {
    tag: String,
    /// Display form per language code, from `hashtags.jsonl`.
    display: Vec<(String, String)>,
    /// Per language id (`Hashtags::langs`); bilingual posts in `mixed`.
    by_lang: Vec<Activity>,
    mixed: Activity,
    /// Every post carrying it, of any kind, reported or not.
    all_posts: u32,
    /// Organic posts not past the report threshold.
    organic_posts: u32,
    paid_posts: u32,
    reported_posts: u32,
    /// Sum of the value scores of its organic posts (the mean is shrunk: see
    /// [`VALUE_PRIOR_POSTS`]).
    value_sum: f32,
    /// 0 (one community) to 1 (even across communities, or bilingual).
    bridge: f32,
}

/// What live writes changed in a tag's counts since the snapshot.
#[derive(Debug, Clone, Default)]
struct TagChange {
    organic_posts: i32,
    reported_posts: i32,
    value_sum: f32,
    all_posts: i32,
    paid_posts: i32,
    /// Activity added per community: `(language id, or `langs.len()` for bilingual posts,
    /// added activity)`.
    activity: Vec<(usize, ActivityChange)>,
}

#[derive(Debug, Clone, Copy, Default)]
struct ActivityChange {
    posts: i32,
    recent_posts: i32,
    followers: i32,
    recent_followers: i32,
}

impl Activity {
    fn changed(&self, change: &ActivityChange) -> Activity {
        let add = |n: u32, d: i32| (i64::from(n) + i64::from(d)).max(0) as u32;
        Activity {
            posts: add(self.posts, change.posts),
            recent_posts: add(self.recent_posts, change.recent_posts),
            followers: add(self.followers, change.followers),
            recent_followers: add(self.recent_followers, change.recent_followers),
        }
    }
}

/// A tag's activity with live changes applied.
#[derive(Debug, Clone)]
struct LiveActivity {
    by_lang: Vec<Activity>,
    mixed: Activity,
    bridge: f32,
}

/// What follows from the counts, for every tag: recomputed after live changes.
#[derive(Debug)]
struct Derived {
    eligible: Vec<bool>,
    /// Mean value scaled to [0, 1] over eligible tags.
    value_scaled: Vec<f32>,
    /// Activity of the tags live writes added to (the others' is the snapshot's).
    activity: HashMap<u32, LiveActivity>,
}

/// Hashtag statistics and vectors of one model, and the recommender over them.
pub struct Hashtags {
    tags: Vec<TagEntry>,
    ids: HashMap<String, u32>,
    /// Language codes with an id (every language of posts and users but `mixed`).
    langs: Vec<String>,
    dim: usize,
    /// Unit vectors, `dim` per tag, zeros for a tag without one (`has_vector` false).
    vectors: Vec<f32>,
    has_vector: Vec<bool>,
    options: HashtagOptions,
    /// The instant recent activity is counted back from.
    now: i64,
    /// Changes live events made to tags' counts (`Hashtags::record_post_change`).
    changes: Mutex<HashMap<u32, TagChange>>,
    /// Set by a change, cleared when `derived` is recomputed.
    stale: AtomicBool,
    derived: RwLock<Arc<Derived>>,
}

/// What a recommendation is for.
#[derive(Debug, Clone, Copy, Default)]
pub struct HashtagQuery<'a> {
    /// The language whose community's activity counts as trending, and of the display forms.
    /// `None` (or a language no post or user has): activity in every language.
    pub lang: Option<&'a str>,
    /// The viewer's interest vectors (empty for a viewer we know nothing about).
    pub interests: &'a [&'a [f32]],
    /// Tags the viewer follows: never recommended.
    pub exclude: &'a [String],
    /// The viewer's nearest users with what they follow (empty: no neighbour term).
    pub neighbours: &'a [HashtagNeighbour<'a>],
    pub limit: usize,
}

/// One of the viewer's nearest users, for the neighbour term.
#[derive(Debug, Clone, Copy)]
pub struct HashtagNeighbour<'a> {
    /// Similarity to the viewer (inner product of unit vectors, under cosine); floored at 0.
    pub similarity: f32,
    /// The hashtags this user follows (a tag listed twice counts once).
    pub follows: &'a [String],
}

/// One recommended tag.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HashtagPick<'h> {
    pub tag: &'h str,
    /// The display form in the query's language, else English, else `#tag`.
    pub display: String,
    pub score: f32,
    pub reason: Reason,
}

/// The scaled terms of one tag for one query.
#[derive(Debug, Clone, Copy)]
struct Terms {
    trending: f32,
    value: f32,
    bridge: f32,
    affinity: f32,
    neighbours: f32,
}

/// Which personal terms a query has: affinity (interest vectors), neighbours (nearest users
/// with a positive similarity who follow a tag the model knows).
#[derive(Debug, Clone, Copy)]
struct Personal {
    affinity: bool,
    neighbours: bool,
}

impl Terms {
    /// The mean of each term (zeros for none).
    fn mean<'t>(all: impl Iterator<Item = &'t Terms>) -> Terms {
        let mut sum = Terms {
            trending: 0.0,
            value: 0.0,
            bridge: 0.0,
            affinity: 0.0,
            neighbours: 0.0,
        };
        let mut n = 0usize;
        for t in all {
            sum.trending += t.trending;
            sum.value += t.value;
            sum.bridge += t.bridge;
            sum.affinity += t.affinity;
            sum.neighbours += t.neighbours;
            n += 1;
        }
        let n = n.max(1) as f32;
        Terms {
            trending: sum.trending / n,
            value: sum.value / n,
            bridge: sum.bridge / n,
            affinity: sum.affinity / n,
            neighbours: sum.neighbours / n,
        }
    }
}

impl Hashtags {
    /// Derives every hashtag's statistics from the snapshot's posts and users, `now` being
    /// the instant recent activity is counted back from (the newest post, for a snapshot).
    pub fn build(
        snapshot: &Snapshot,
        scoring: &ScoringConfig,
        now: i64,
        options: HashtagOptions,
    ) -> Hashtags {
        let codes = snapshot.languages();
        let lang_ids: HashMap<&str, usize> =
            codes.iter().enumerate().map(|(i, &c)| (c, i)).collect();
        let langs: Vec<String> = codes.iter().map(|c| c.to_string()).collect();
        let window = i64::from(options.velocity_window_hours) * 3600;
        let recent = |t: i64| now.saturating_sub(t) <= window;

        let mut tags: Vec<TagEntry> = Vec::new();
        let mut ids: HashMap<String, u32> = HashMap::new();
        let entry = |tag: &str, tags: &mut Vec<TagEntry>, ids: &mut HashMap<String, u32>| {
            *ids.entry(tag.to_string()).or_insert_with(|| {
                tags.push(TagEntry {
                    tag: tag.to_string(),
                    display: Vec::new(),
                    by_lang: vec![Activity::default(); langs.len()],
                    mixed: Activity::default(),
                    all_posts: 0,
                    organic_posts: 0,
                    paid_posts: 0,
                    reported_posts: 0,
                    value_sum: 0.0,
                    bridge: 0.0,
                });
                (tags.len() - 1) as u32
            }) as usize
        };
        for h in &snapshot.hashtags {
            let id = entry(&h.tag, &mut tags, &mut ids);
            tags[id].display = h
                .display
                .iter()
                .map(|(l, d)| (l.clone(), d.clone()))
                .collect();
        }

        let dim = snapshot.dim();
        // Centroids of organic posts, for tags `hashtags.npy` does not give a vector.
        let mut sums: Vec<f32> = Vec::new();
        for (row, post) in snapshot.posts.iter().enumerate() {
            let reported = scoring::reported_past_threshold(&post.stats, scoring);
            let value = scoring::value_score(&post.stats, scoring);
            let organic = post.kind != PostKind::Ad;
            let paid = post.kind != PostKind::Organic;
            for tag in &post.hashtags {
                let id = entry(tag, &mut tags, &mut ids);
                let t = &mut tags[id];
                t.all_posts += 1;
                if paid {
                    t.paid_posts += 1;
                }
                if reported {
                    t.reported_posts += 1;
                }
                if post.kind == PostKind::Organic && !reported {
                    t.organic_posts += 1;
                    t.value_sum += value;
                }
                if organic && !reported {
                    let activity = match lang_ids.get(post.lang.as_str()) {
                        Some(&l) => &mut t.by_lang[l],
                        None => &mut t.mixed,
                    };
                    activity.posts += 1;
                    if recent(post.created_at) {
                        activity.recent_posts += 1;
                    }
                    if sums.len() < tags.len() * dim {
                        sums.resize(tags.len() * dim, 0.0);
                    }
                    let vector = snapshot.post_vectors.row(row);
                    for (s, v) in sums[id * dim..(id + 1) * dim].iter_mut().zip(vector) {
                        *s += v;
                    }
                }
            }
        }
        for user in &snapshot.users {
            let user_langs: Vec<usize> = user
                .langs
                .iter()
                .filter_map(|l| lang_ids.get(l.as_str()).copied())
                .collect();
            for tag in &user.follows {
                let id = entry(tag, &mut tags, &mut ids);
                for &l in &user_langs {
                    let a = &mut tags[id].by_lang[l];
                    a.followers += 1;
                    if recent(user.created_at) {
                        a.recent_followers += 1;
                    }
                }
            }
        }
        sums.resize(tags.len() * dim, 0.0);

        let snapshot_rows: HashMap<&str, usize> = snapshot
            .hashtags
            .iter()
            .enumerate()
            .map(|(i, h)| (h.tag.as_str(), i))
            .collect();
        let mut vectors = vec![0.0f32; tags.len() * dim];
        let mut has_vector = vec![false; tags.len()];
        for (id, t) in tags.iter_mut().enumerate() {
            let out = &mut vectors[id * dim..(id + 1) * dim];
            match snapshot_rows.get(t.tag.as_str()) {
                Some(&row) => {
                    for (o, v) in out.iter_mut().zip(snapshot.hashtag_vectors.row(row)) {
                        *o = *v;
                    }
                }
                None => out.copy_from_slice(&sums[id * dim..(id + 1) * dim]),
            }
            has_vector[id] = normalise(out);

            t.bridge = bridge(&t.by_lang, &t.mixed);
        }
        let derived = derive(&tags, &HashMap::new(), &options);
        Hashtags {
            tags,
            ids,
            langs,
            dim,
            vectors,
            has_vector,
            options,
            now,
            changes: Mutex::new(HashMap::new()),
            stale: AtomicBool::new(false),
            derived: RwLock::new(Arc::new(derived)),
        }
    }

    /// Records that live events changed a post carrying `tags`: whether it counted as an
    /// organic post (organic and not past the report threshold) and its value score, before
    /// and after, and whether reports have now passed the threshold. The next recommendation
    /// sees the tags' new mean value and eligibility.
    pub fn record_post_change(&self, tags: &[String], before: PostCount, after: PostCount) {
        if before == after {
            return;
        }
        let mut changes = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        for tag in tags {
            let Some(&id) = self.ids.get(tag.as_str()) else {
                continue;
            };
            let change = changes.entry(id).or_default();
            for (count, sign) in [(before, -1), (after, 1)] {
                if count.organic {
                    change.organic_posts += sign;
                    change.value_sum += sign as f32 * count.value;
                }
                if count.reported {
                    change.reported_posts += sign;
                }
            }
        }
        self.stale.store(true, Ordering::Release);
    }

    /// Records a post published after the snapshot: one more post under each of its known
    /// `tags`, paid unless organic, and unless it is an ad or reported, activity in its
    /// language's community (`lang`; `mixed` for bilingual), recent if created within the
    /// velocity window. `count` is as for [`Hashtags::record_post_change`].
    pub fn record_published(
        &self,
        tags: &[String],
        lang: &str,
        kind: PostKind,
        created_at: i64,
        count: PostCount,
    ) {
        let slot = self.community(lang);
        let recent = self.is_recent(created_at);
        self.change(tags, |change| {
            change.all_posts += 1;
            if kind != PostKind::Organic {
                change.paid_posts += 1;
            }
            if count.organic {
                change.organic_posts += 1;
                change.value_sum += count.value;
            }
            if count.reported {
                change.reported_posts += 1;
            }
            if kind != PostKind::Ad && !count.reported {
                let a = activity_slot(change, slot);
                a.posts += 1;
                a.recent_posts += i32::from(recent);
            }
        });
    }

    /// Records followers: `sign` +1 for a user who now follows `tags` reading `langs`, −1 for
    /// one who no longer does; recent if they started following within the velocity window
    /// (an onboarding is now).
    pub fn record_follows(&self, tags: &[String], langs: &[String], sign: i32, recent: bool) {
        let slots: Vec<usize> = langs
            .iter()
            .filter_map(|l| self.langs.iter().position(|c| c == l))
            .collect();
        if slots.is_empty() {
            return;
        }
        self.change(tags, |change| {
            for &slot in &slots {
                let a = activity_slot(change, slot);
                a.followers += sign;
                if recent {
                    a.recent_followers += sign;
                }
            }
        });
    }

    /// Whether activity at `time` counts as recent.
    pub fn is_recent(&self, time: i64) -> bool {
        let window = i64::from(self.options.velocity_window_hours) * 3600;
        self.now.saturating_sub(time) <= window
    }

    /// The community slot of a post in `lang`: its language id, or the bilingual slot for
    /// `mixed` and for a language no snapshot post or user has.
    fn community(&self, lang: &str) -> usize {
        self.langs
            .iter()
            .position(|c| c == lang)
            .unwrap_or(self.langs.len())
    }

    /// Applies `f` to the change of every known tag of `tags`, and marks the derived values
    /// stale.
    fn change(&self, tags: &[String], mut f: impl FnMut(&mut TagChange)) {
        let mut changes = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        for tag in tags {
            if let Some(&id) = self.ids.get(tag.as_str()) {
                f(changes.entry(id).or_default());
            }
        }
        self.stale.store(true, Ordering::Release);
    }

    /// Eligibility and scaled values, recomputed first if live events changed counts.
    fn derived(&self) -> Arc<Derived> {
        if self.stale.swap(false, Ordering::AcqRel) {
            let changes = self.changes.lock().unwrap_or_else(|e| e.into_inner());
            let fresh = Arc::new(derive(&self.tags, &changes, &self.options));
            *self.derived.write().unwrap_or_else(|e| e.into_inner()) = fresh.clone();
            return fresh;
        }
        self.derived
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Tags known to the model (from posts, follows or `hashtags.jsonl`).
    pub fn len(&self) -> usize {
        self.tags.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }

    /// Tags that can be recommended.
    pub fn eligible(&self) -> usize {
        self.derived().eligible.iter().filter(|&&e| e).count()
    }

    pub fn options(&self) -> &HashtagOptions {
        &self.options
    }

    /// The unit vector of `tag`, if the model has one.
    pub fn vector(&self, tag: &str) -> Option<&[f32]> {
        let id = *self.ids.get(tag)? as usize;
        self.has_vector[id].then(|| self.row(id))
    }

    fn row(&self, id: usize) -> &[f32] {
        &self.vectors[id * self.dim..(id + 1) * self.dim]
    }

    /// Organic posts under `tag` that count for its statistics (not past the report threshold),
    /// published posts and live reports included.
    pub fn organic_posts(&self, tag: &str) -> u32 {
        let Some(&id) = self.ids.get(tag) else {
            return 0;
        };
        let changes = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        let change = changes.get(&id).map_or(0, |c| c.organic_posts);
        (i64::from(self.tags[id as usize].organic_posts) + i64::from(change)).max(0) as u32
    }

    /// Interest vectors for someone who picked `tags` (unknown tags and tags without a vector
    /// are skipped): one per tag up to [`MAX_INTERESTS`]; beyond that, each further tag joins
    /// the interest it is closest to. Unit vectors. Searching per interest keeps a feed about
    /// *each* pick, where one mean vector could land between topics, near neither.
    pub fn interests(&self, tags: &[String]) -> Vec<Vec<f32>> {
        let mut sums: Vec<Vec<f32>> = Vec::new();
        for tag in tags {
            let Some(v) = self.vector(tag) else { continue };
            if sums.len() < MAX_INTERESTS {
                sums.push(v.to_vec());
                continue;
            }
            let nearest = sums
                .iter()
                .enumerate()
                .map(|(i, s)| (i, dot(s, v) / dot(s, s).sqrt().max(f32::MIN_POSITIVE)))
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map_or(0, |(i, _)| i);
            for (s, x) in sums[nearest].iter_mut().zip(v) {
                *s += x;
            }
        }
        sums.retain_mut(|s| normalise(s));
        sums
    }

    /// The display form of `tag` in `lang`, else in English, else `#tag`.
    pub fn display(&self, tag: &str, lang: Option<&str>) -> String {
        let Some(&id) = self.ids.get(tag) else {
            return format!("#{tag}");
        };
        let display = &self.tags[id as usize].display;
        let find = |code: &str| display.iter().find(|(l, _)| l == code).map(|(_, d)| d);
        lang.and_then(find)
            .or_else(|| find("en"))
            .cloned()
            .unwrap_or_else(|| format!("#{tag}"))
    }

    /// Up to `query.limit` tags for the viewer, best first, varied (see the module docs).
    pub fn recommend(&self, query: &HashtagQuery<'_>) -> Vec<HashtagPick<'_>> {
        let options = &self.options;
        let lang = query
            .lang
            .and_then(|code| self.langs.iter().position(|l| l == code));
        let derived = self.derived();
        // A tag's activity per community and bridge term: live ones if writes changed them.
        let live = |id: usize| -> (&[Activity], &Activity, f32) {
            let t = &self.tags[id];
            match derived.activity.get(&(id as u32)) {
                Some(a) => (&a.by_lang, &a.mixed, a.bridge),
                None => (&t.by_lang, &t.mixed, t.bridge),
            }
        };
        let activity = |id: usize| -> (f32, f32) {
            let (by_lang, mixed, _) = live(id);
            let (recent, total) = match lang {
                Some(l) => (
                    by_lang[l].recent() + 0.5 * mixed.recent(),
                    by_lang[l].total() + 0.5 * mixed.total(),
                ),
                None => by_lang
                    .iter()
                    .chain([mixed])
                    .fold((0.0, 0.0), |(r, a), x| (r + x.recent(), a + x.total())),
            };
            (recent.ln_1p(), total.ln_1p())
        };
        let excluded = |tag: &str| query.exclude.iter().any(|e| e == tag);
        let candidates: Vec<usize> = (0..self.tags.len())
            .filter(|&id| derived.eligible[id] && !excluded(&self.tags[id].tag))
            .collect();
        let (max_recent, max_total) = candidates.iter().fold((0.0f32, 0.0f32), |(r, a), &id| {
            let (recent, total) = activity(id);
            (r.max(recent), a.max(total))
        });
        let ratio = |x: f32, max: f32| if max > 0.0 { x / max } else { 0.0 };
        let shares = self.neighbour_shares(query.neighbours);
        let personal = Personal {
            affinity: !query.interests.is_empty(),
            neighbours: shares.is_some(),
        };
        let terms_of = |id: usize| {
            let (recent, total) = activity(id);
            let affinity = if personal.affinity && self.has_vector[id] {
                let v = self.row(id);
                query
                    .interests
                    .iter()
                    .map(|i| dot(i, v))
                    .fold(0.0f32, f32::max)
            } else {
                0.0
            };
            Terms {
                trending: options.velocity_share * ratio(recent, max_recent)
                    + (1.0 - options.velocity_share) * ratio(total, max_total),
                value: derived.value_scaled[id],
                bridge: live(id).2,
                affinity,
                neighbours: shares
                    .as_ref()
                    .and_then(|s| s.get(&(id as u32)).copied())
                    .unwrap_or(0.0),
            }
        };
        let mut scored: Vec<(usize, Terms, f32)> = candidates
            .into_iter()
            .map(|id| {
                let terms = terms_of(id);
                (id, terms, self.weighed(&terms, personal))
            })
            .collect();
        let mean = Terms::mean(scored.iter().map(|s| &s.1));
        // Best first, ties by tag for determinism; the variety pass looks at a bounded pool.
        let by_score = |a: &(usize, Terms, f32), b: &(usize, Terms, f32)| {
            b.2.total_cmp(&a.2)
                .then_with(|| self.tags[a.0].tag.cmp(&self.tags[b.0].tag))
        };
        let pool = query.limit.saturating_mul(POOL_PER_PICK).max(query.limit);
        if scored.len() > pool {
            scored.select_nth_unstable_by(pool - 1, by_score);
            scored.truncate(pool);
        }
        scored.sort_by(by_score);

        let picks = self.varied(&scored, query.limit);
        picks
            .into_iter()
            .map(|(i, score, bridge_slot)| {
                let (id, terms, _) = scored[i];
                let reason = if bridge_slot {
                    Reason::Bridge
                } else {
                    self.reason(&terms, &mean, personal)
                };
                HashtagPick {
                    tag: &self.tags[id].tag,
                    display: self.display(&self.tags[id].tag, query.lang),
                    score,
                    reason,
                }
            })
            .collect()
    }

    /// Per tag id, the similarity-weighted share of `neighbours` following it (similarities
    /// floored at 0; tags the model does not know left out). `None`, and no neighbour term,
    /// when no neighbour with a positive similarity follows a tag the model knows.
    fn neighbour_shares(&self, neighbours: &[HashtagNeighbour<'_>]) -> Option<HashMap<u32, f32>> {
        let total: f32 = neighbours.iter().map(|n| n.similarity.max(0.0)).sum();
        if !(total > 0.0 && total.is_finite()) {
            return None;
        }
        // Per tag: the weight so far and the last neighbour counted (a repeat counts once).
        let mut weights: HashMap<u32, (f32, usize)> = HashMap::new();
        for (i, n) in neighbours.iter().enumerate() {
            let similarity = n.similarity.max(0.0);
            if similarity == 0.0 {
                continue;
            }
            for tag in n.follows {
                let Some(&id) = self.ids.get(tag) else {
                    continue;
                };
                let entry = weights.entry(id).or_insert((0.0, usize::MAX));
                if entry.1 != i {
                    *entry = (entry.0 + similarity, i);
                }
            }
        }
        (!weights.is_empty()).then(|| {
            weights
                .into_iter()
                .map(|(id, (w, _))| (id, (w / total).min(1.0)))
                .collect()
        })
    }

    /// The weighed terms of a tag, the personal ones (`ForYou`) first, each only if the query
    /// has it.
    fn parts(&self, terms: &Terms, personal: Personal) -> impl Iterator<Item = (f32, Reason)> {
        let o = &self.options;
        let affinity = personal
            .affinity
            .then_some((o.affinity_weight * terms.affinity, Reason::ForYou));
        let neighbours = personal
            .neighbours
            .then_some((o.neighbour_weight * terms.neighbours, Reason::ForYou));
        affinity.into_iter().chain(neighbours).chain([
            (o.trending_weight * terms.trending, Reason::Trending),
            (o.bridge_weight * terms.bridge, Reason::Bridge),
            (o.value_weight * terms.value, Reason::HighValue),
        ])
    }

    /// The weighed sum of a tag's terms.
    fn weighed(&self, terms: &Terms, personal: Personal) -> f32 {
        self.parts(terms, personal).map(|p| p.0).sum()
    }

    /// The weighed term that lifts a tag furthest above the typical candidate (`mean`): a
    /// term every tag scores well on explains nothing. Ties go to the earlier term.
    fn reason(&self, terms: &Terms, mean: &Terms, personal: Personal) -> Reason {
        let above = self
            .parts(terms, personal)
            .zip(self.parts(mean, personal))
            .map(|((part, reason), (typical, _))| (part - typical, reason));
        let mut best = (f32::NEG_INFINITY, Reason::Trending);
        for (lift, reason) in above {
            if lift > best.0 {
                best = (lift, reason);
            }
        }
        best.1
    }

    /// Greedy variety over `scored` (best first): positions into it, their final scores, and
    /// whether each filled a bridge slot; best first. The bridge slots are filled first, by the
    /// varied score times the bridge term, among tags bridging at least `min_bridge` and not
    /// near copies of a chosen tag; the other places by the varied score alone.
    fn varied(&self, scored: &[(usize, Terms, f32)], limit: usize) -> Vec<(usize, f32, bool)> {
        let o = &self.options;
        // Highest cosine of each remaining tag to the chosen ones.
        let mut closest = vec![0.0f32; scored.len()];
        let mut taken = vec![false; scored.len()];
        let mut picks: Vec<(usize, f32, bool)> = Vec::with_capacity(limit.min(scored.len()));
        let mut bridge_slots = (o.bridge_slots as usize).min(limit);
        while picks.len() < limit {
            let bridge_slot = bridge_slots > 0;
            let varied = |i: usize| scored[i].2 - o.diversity_weight * closest[i].max(0.0);
            let best = |allow_near: bool| {
                (0..scored.len())
                    .filter(|&i| !taken[i] && (allow_near || closest[i] < o.near_duplicate))
                    .filter(|&i| !bridge_slot || scored[i].1.bridge >= o.min_bridge)
                    .map(|i| {
                        let bridge = if bridge_slot { scored[i].1.bridge } else { 1.0 };
                        (i, varied(i) * bridge)
                    })
                    .max_by(|a, b| a.1.total_cmp(&b.1).then_with(|| b.0.cmp(&a.0)))
            };
            let found = if bridge_slot {
                best(false)
            } else {
                best(false).or_else(|| best(true))
            };
            let Some((i, _)) = found else {
                if bridge_slot {
                    // Too few bridge tags: the remaining slots become ordinary places.
                    bridge_slots = 0;
                    continue;
                }
                break;
            };
            picks.push((i, varied(i), bridge_slot));
            bridge_slots = bridge_slots.saturating_sub(1);
            taken[i] = true;
            let id = scored[i].0;
            if self.has_vector[id] {
                let v = self.row(id);
                for (j, c) in closest.iter_mut().enumerate() {
                    let other = scored[j].0;
                    if !taken[j] && self.has_vector[other] {
                        *c = c.max(dot(v, self.row(other)));
                    }
                }
            }
        }
        // Stable: equal scores keep the order they were chosen in.
        picks.sort_by(|a, b| b.1.total_cmp(&a.1));
        picks
    }
}

/// Whether a post counts for its tags' statistics, and its value: one side of
/// `Hashtags::record_post_change`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PostCount {
    /// Organic and not past the report threshold.
    pub organic: bool,
    /// Past the report threshold.
    pub reported: bool,
    pub value: f32,
}

/// Eligibility and scaled mean values of every tag, with live `changes` applied.
fn derive(
    tags: &[TagEntry],
    changes: &HashMap<u32, TagChange>,
    options: &HashtagOptions,
) -> Derived {
    let mut eligible = Vec::with_capacity(tags.len());
    let mut values = Vec::with_capacity(tags.len());
    let mut activity = HashMap::new();
    for (id, t) in tags.iter().enumerate() {
        let change = changes.get(&(id as u32)).cloned().unwrap_or_default();
        let count = |n: u32, d: i32| (i64::from(n) + i64::from(d)).max(0) as f32;
        let organic = count(t.organic_posts, change.organic_posts);
        let reported = count(t.reported_posts, change.reported_posts);
        let all = count(t.all_posts, change.all_posts);
        let paid = count(t.paid_posts, change.paid_posts);
        eligible.push(
            organic >= options.min_posts.max(1) as f32
                && paid <= options.max_paid_share * all
                && reported <= options.max_reported_share * all,
        );
        if !change.activity.is_empty() {
            let mut by_lang = t.by_lang.clone();
            let mut mixed = t.mixed;
            for (slot, added) in &change.activity {
                let a = by_lang.get_mut(*slot).unwrap_or(&mut mixed);
                *a = a.changed(added);
            }
            let bridge = bridge(&by_lang, &mixed);
            activity.insert(
                id as u32,
                LiveActivity {
                    by_lang,
                    mixed,
                    bridge,
                },
            );
        }
        values.push((t.value_sum + change.value_sum) / (organic + VALUE_PRIOR_POSTS));
    }
    let value_scaled = scaled(eligible.iter().copied().zip(values.iter().copied()));
    Derived {
        eligible,
        value_scaled,
        activity,
    }
}

/// The activity change of community `slot` in `change`.
fn activity_slot(change: &mut TagChange, slot: usize) -> &mut ActivityChange {
    let i = match change.activity.iter().position(|(s, _)| *s == slot) {
        Some(i) => i,
        None => {
            change.activity.push((slot, ActivityChange::default()));
            change.activity.len() - 1
        }
    };
    &mut change.activity[i].1
}

/// Scales the values of eligible entries to [0, 1] (0 for the others, and for all if they are
/// equal).
fn scaled(values: impl Iterator<Item = (bool, f32)> + Clone) -> Vec<f32> {
    let (min, max) = values
        .clone()
        .filter(|v| v.0)
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), (_, v)| {
            (lo.min(v), hi.max(v))
        });
    values
        .map(|(eligible, v)| {
            if eligible && max > min {
                (v - min) / (max - min)
            } else {
                0.0
            }
        })
        .collect()
}

/// How much a tag bridges language communities: the larger of the share of its posts that
/// are bilingual and the evenness of its use across languages (Gini–Simpson over the
/// communities, 1 when split evenly between two or more).
fn bridge(by_lang: &[Activity], mixed: &Activity) -> f32 {
    let counts: Vec<f32> = by_lang.iter().map(Activity::total).collect();
    let monolingual: f32 = counts.iter().sum();
    let all = monolingual + mixed.total();
    if all == 0.0 {
        return 0.0;
    }
    let bilingual = mixed.total() / all;
    let used = counts.iter().filter(|&&c| c > 0.0).count();
    let evenness = if used >= 2 {
        let simpson = 1.0
            - counts
                .iter()
                .map(|c| (c / monolingual).powi(2))
                .sum::<f32>();
        // The largest Gini–Simpson index for two communities is 0.5: more is not needed to
        // bridge.
        (simpson / 0.5).min(1.0)
    } else {
        0.0
    };
    bilingual.max(evenness)
}

/// Scales `v` to unit length; `false` (and `v` unchanged) if it is zero or not finite.
fn normalise(v: &mut [f32]) -> bool {
    let norm = dot(v, v).sqrt();
    if norm > 0.0 && norm.is_finite() {
        v.iter_mut().for_each(|x| *x /= norm);
        true
    } else {
        false
    }
}

#[cfg(test)]
mod tests;
