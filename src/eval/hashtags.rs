//! `feedrank eval hashtags`: how often the hashtag recommender names a hashtag a user goes on
//! to use, measured on a held-out split of real posts.
//!
//! The model is a snapshot of the training split (posts, users with their vectors, hashtags
//! with theirs); the held-out file holds the posts each user wrote *later*, one per line:
//! `text<TAB>user_id<TAB>tag<TAB>tag...`. For every held-out post, each method recommends `k`
//! hashtags for its author, and the post scores
//!
//! - hit@k: 1 if any of its hashtags is among the `k`, else 0;
//! - MRR@k: 1 / the rank of the first of its hashtags among the `k`, 0 if none is.
//!
//! Both are averaged over the held-out posts (a user with more posts weighs more, as they would
//! in traffic). The methods:
//!
//! - `popularity`: the baseline. The hashtags with the most training posts, the same for all.
//! - `cold`: the recommender for a newcomer known only by language (`en`): no user vector.
//! - `warm`: the recommender for the post's author as the service serves them: their
//!   vector blended in (for a user the model does not know, this is `cold`).
//! - `history`: a reference, not a recommender: the author's own most-used training hashtags,
//!   then popularity. A user's past hashtags are the strongest single clue to their next ones;
//!   the gap between it and `warm` is what the embeddings do not capture.
//!
//! Hashtags are normalised as in snapshots; unusable ones (empty, too long, inner whitespace)
//! are dropped, and a post left with none is not counted.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::EvalError;
use crate::feed::Model;
use crate::hashtags::HashtagQuery;
use crate::snapshot::{MAX_ID_BYTES, is_normalised_hashtag, normalise_hashtag};

/// The language of newcomers in the `cold` method.
pub const COLD_LANG: &str = "en";

/// Largest `k`: the service's own limit on hashtags per request.
pub const MAX_K: usize = 50;

/// One held-out post: who wrote it and the hashtags it carries (normalised, distinct).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldOutPost {
    pub user_id: String,
    pub tags: Vec<String>,
}

/// The held-out posts of a file, and how many lines were left out for having no usable tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldOut {
    pub posts: Vec<HeldOutPost>,
    pub skipped: usize,
}

/// Reads a held-out file (see the module docs). Errors name the file and line.
pub fn read_held_out(path: &Path) -> Result<HeldOut, EvalError> {
    let file = File::open(path).map_err(|e| EvalError::input(path, e.to_string()))?;
    parse_held_out(BufReader::new(file))
        .map_err(|(line, message)| EvalError::input(path, format!("line {line}: {message}")))
}

/// Parses held-out lines; an error is the line number and the problem.
pub fn parse_held_out(reader: impl BufRead) -> Result<HeldOut, (usize, String)> {
    let mut posts = Vec::new();
    let mut skipped = 0;
    for (i, line) in reader.lines().enumerate() {
        let number = i + 1;
        let line = line.map_err(|e| (number, e.to_string()))?;
        let line = line.trim_end_matches(['\r', '\n']);
        if line.trim().is_empty() {
            continue;
        }
        let mut fields = line.split('\t');
        let _text = fields.next();
        let user_id = fields.next().map(str::trim).ok_or((
            number,
            "expected `text<TAB>user_id<TAB>tag...`, found no tab".into(),
        ))?;
        if user_id.is_empty() || user_id.len() > MAX_ID_BYTES {
            return Err((
                number,
                format!("user id (second field) must be 1 to {MAX_ID_BYTES} bytes"),
            ));
        }
        let mut tags: Vec<String> = Vec::new();
        for raw in fields {
            let tag = normalise_hashtag(raw);
            if is_normalised_hashtag(&tag) && !tags.contains(&tag) {
                tags.push(tag);
            }
        }
        if tags.is_empty() {
            skipped += 1;
            continue;
        }
        posts.push(HeldOutPost {
            user_id: user_id.to_string(),
            tags,
        });
    }
    Ok(HeldOut { posts, skipped })
}

/// hit@k and reciprocal rank of one ranked list against the hashtags actually used.
pub fn judge(ranked: &[&str], used: &[String], k: usize) -> (f64, f64) {
    ranked
        .iter()
        .take(k)
        .position(|tag| used.iter().any(|u| u == tag))
        .map_or((0.0, 0.0), |rank| (1.0, 1.0 / (rank + 1) as f64))
}

/// Mean hit@k and MRR@k of one method.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Metrics {
    pub hit: f64,
    pub mrr: f64,
}

/// What `feedrank eval hashtags` reports.
#[derive(Debug, Clone, Serialize)]
pub struct HashtagEvalReport {
    pub model_version: String,
    pub k: usize,
    /// Held-out posts counted.
    pub posts: usize,
    /// Held-out lines left out for having no usable hashtag.
    pub skipped: usize,
    /// Distinct authors of the counted posts.
    pub users: usize,
    /// Of them, the ones the model has a vector for (`warm` is personal for these).
    pub users_in_model: usize,
    /// Hashtags the model knows, and those it may recommend.
    pub hashtags: usize,
    pub recommendable: usize,
    pub popularity: Metrics,
    pub cold: Metrics,
    pub warm: Metrics,
    pub history: Metrics,
    /// Mean time of one warm recommendation (`Model::recommend_hashtags`, one per user), in
    /// microseconds: a rough figure on the way, not a benchmark.
    pub warm_mean_micros: f64,
}

/// Checks the number of hashtags asked per user.
pub fn validate_k(k: usize) -> Result<(), EvalError> {
    if (1..=MAX_K).contains(&k) {
        Ok(())
    } else {
        Err(EvalError::parameter(
            "k",
            format!("must be from 1 to {MAX_K}, got {k}"),
        ))
    }
}

/// Runs every method on every held-out post (see the module docs).
pub fn run(model: &Model, held_out: &HeldOut, k: usize) -> Result<HashtagEvalReport, EvalError> {
    validate_k(k)?;
    let snapshot = model.snapshot();
    // Training posts per hashtag, and per author: both baselines come from the raw posts,
    // not from the recommender's statistics.
    let mut popular: HashMap<&str, u32> = HashMap::new();
    let mut used_by: HashMap<&str, HashMap<&str, u32>> = HashMap::new();
    for post in &snapshot.posts {
        let own = used_by.entry(post.author.as_str()).or_default();
        for tag in &post.hashtags {
            *popular.entry(tag).or_default() += 1;
            *own.entry(tag).or_default() += 1;
        }
    }
    let popularity = most_used(&popular, &[], k);
    let cold_picks = model.hashtags().recommend(&HashtagQuery {
        lang: Some(COLD_LANG),
        limit: k,
        ..HashtagQuery::default()
    });
    let cold: Vec<&str> = cold_picks.iter().map(|p| p.tag).collect();

    let mut warm_lists: HashMap<&str, Vec<String>> = HashMap::new();
    let mut history_lists: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut sums = [(0.0, 0.0); 4];
    let mut warm_time = Duration::ZERO;
    for post in &held_out.posts {
        let user = post.user_id.as_str();
        if !warm_lists.contains_key(user) {
            let started = Instant::now();
            let page = model
                .recommend_hashtags(user, None, None, Some(COLD_LANG), k)
                .map_err(|e| EvalError::parameter("user_id", e.to_string()))?;
            warm_time += started.elapsed();
            let tags = page.hashtags.iter().map(|p| p.tag.to_string()).collect();
            warm_lists.insert(user, tags);
            let own = used_by
                .get(user)
                .map_or(Vec::new(), |own| most_used(own, &[], k));
            let history = most_used(&popular, &own, k);
            history_lists.insert(user, history);
        }
        let warm: Vec<&str> = warm_lists[user].iter().map(String::as_str).collect();
        let lists = [&popularity, &cold, &warm, &history_lists[user]];
        for (sum, list) in sums.iter_mut().zip(lists) {
            let (hit, rr) = judge(list, &post.tags, k);
            sum.0 += hit;
            sum.1 += rr;
        }
    }
    let n = held_out.posts.len().max(1) as f64;
    let mean = |(hit, rr): (f64, f64)| Metrics {
        hit: hit / n,
        mrr: rr / n,
    };
    Ok(HashtagEvalReport {
        model_version: model.model_version().to_string(),
        k,
        posts: held_out.posts.len(),
        skipped: held_out.skipped,
        users: warm_lists.len(),
        users_in_model: warm_lists
            .keys()
            .filter(|u| model.user_vector(u).is_some())
            .count(),
        hashtags: model.hashtags().len(),
        recommendable: model.hashtags().eligible(),
        popularity: mean(sums[0]),
        cold: mean(sums[1]),
        warm: mean(sums[2]),
        history: mean(sums[3]),
        warm_mean_micros: warm_time.as_secs_f64() * 1e6 / warm_lists.len().max(1) as f64,
    })
}

/// `first`, then the most counted tags not in it (ties by tag), `k` in all.
fn most_used<'a>(counts: &HashMap<&'a str, u32>, first: &[&'a str], k: usize) -> Vec<&'a str> {
    let mut ranked: Vec<(&str, u32)> = counts
        .iter()
        .filter(|(tag, _)| !first.contains(tag))
        .map(|(&tag, &n)| (tag, n))
        .collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    first
        .iter()
        .copied()
        .chain(ranked.into_iter().map(|(tag, _)| tag))
        .take(k)
        .collect()
}

impl fmt::Display for HashtagEvalReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "model {}: {} held-out posts by {} users ({} in the model), {} lines without a usable hashtag",
            self.model_version, self.posts, self.users, self.users_in_model, self.skipped
        )?;
        writeln!(
            f,
            "{:<11} {:>8} {:>8}",
            "method",
            format!("hit@{}", self.k),
            format!("MRR@{}", self.k)
        )?;
        let rows = [
            ("popularity", self.popularity),
            ("cold", self.cold),
            ("warm", self.warm),
            ("history", self.history),
        ];
        for (name, m) in rows {
            writeln!(f, "{name:<11} {:>8.4} {:>8.4}", m.hit, m.mrr)?;
        }
        writeln!(
            f,
            "warm recommendation: {:.0} µs each on average ({} hashtags, {} recommendable)",
            self.warm_mean_micros, self.hashtags, self.recommendable
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judge_counts_the_first_used_tag_within_k() {
        let used = vec!["b".to_string(), "d".to_string()];
        assert_eq!(judge(&["a", "b", "c", "d"], &used, 4), (1.0, 0.5));
        assert_eq!(judge(&["d", "b"], &used, 4), (1.0, 1.0));
        assert_eq!(judge(&["a", "c", "b"], &used, 2), (0.0, 0.0));
        assert_eq!(judge(&[], &used, 10), (0.0, 0.0));
    }

    #[test]
    fn parse_normalises_tags_and_skips_posts_without_one() {
        let text = "some text\tu1\t#Cats\tcats\tTravel\n\
                    \n\
                    no tags\tu2\n\
                    bad tags\tu3\t   \tin ner\n\
                    more\tu1\tfood\r\n";
        let held = parse_held_out(text.as_bytes()).unwrap();
        assert_eq!(held.skipped, 2);
        assert_eq!(
            held.posts,
            vec![
                HeldOutPost {
                    user_id: "u1".into(),
                    tags: vec!["cats".into(), "travel".into()],
                },
                HeldOutPost {
                    user_id: "u1".into(),
                    tags: vec!["food".into()],
                },
            ]
        );
    }

    #[test]
    fn parse_names_the_line_of_a_malformed_one() {
        let err = parse_held_out("ok\tu1\ta\nno tab here\n".as_bytes()).unwrap_err();
        assert_eq!(err.0, 2);
        assert!(err.1.contains("no tab"), "{}", err.1);
        let err = parse_held_out("text\t\ta\n".as_bytes()).unwrap_err();
        assert_eq!(err.0, 1);
        assert!(err.1.contains("user id"), "{}", err.1);
    }

    #[test]
    fn most_used_puts_the_given_first_then_counts_then_names() {
        let counts: HashMap<&str, u32> = [("a", 1), ("b", 5), ("c", 5), ("d", 2)].into();
        assert_eq!(most_used(&counts, &[], 3), vec!["b", "c", "d"]);
        assert_eq!(most_used(&counts, &["d", "z"], 4), vec!["d", "z", "b", "c"]);
    }
}
