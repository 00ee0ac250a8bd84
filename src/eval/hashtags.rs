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
//! - `onboarded`: the author as a newcomer who picked their first `picks` hashtags (3 by
//!   default) and nothing else: interests from the picked hashtags' vectors, the picks left
//!   out of the page. Counted for the authors the snapshot knows with at least one hashtag.
//! - `onboarded+neighbours`: the same newcomer placed as onboarding places them, at the
//!   centroid of the snapshot users who follow the picks (`followers_centroid`, the author's
//!   own row left out), with the neighbour term of their `[feed.users] neighbours` nearest
//!   users (the author left out) at `[feed.hashtags] neighbour_weight`, whether or not
//!   `newcomer_neighbours` is on: the evaluation measures what turning it on would do.
//! - `warm+neighbours`: `warm` with the neighbour term of the author's nearest users.
//!
//! What a snapshot user follows, for the last three: their follows, then the hashtags of their
//! training posts (oldest first, distinct): the tags they follow or engage with
//! ([`user_tags`]). A snapshot whose users follow nothing (the hashtag-prefs export writes no
//! follows: see `scripts/hashtag_prefs_snapshot.py`) is measured by the hashtags its users
//! wrote, standing in for what they would follow. The service's neighbour term reads
//! snapshot follows only.
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
use crate::candidates::{UserNeighbor, followers_centroid};
use crate::feed::Model;
use crate::hashtags::{HashtagNeighbour, HashtagQuery};
use crate::snapshot::{MAX_ID_BYTES, Snapshot, is_normalised_hashtag, normalise_hashtag};

/// The language of newcomers in the `cold` method.
pub const COLD_LANG: &str = "en";

/// Largest `k`: the service's own limit on hashtags per request.
pub const MAX_K: usize = 50;

/// Hashtags an `onboarded` newcomer picks, by default.
pub const DEFAULT_PICKS: usize = 3;

/// Most hashtags an `onboarded` newcomer may pick: what a profile may follow.
pub const MAX_PICKS: usize = 50;

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
    /// `warm` with the neighbour term (over every held-out post, like `warm`).
    pub warm_neighbours: Metrics,
    /// Hashtags each `onboarded` newcomer picked (at most).
    pub picks: usize,
    /// Nearest users read per newcomer (`[feed.users] neighbours`), and the neighbour term's
    /// weight (`[feed.hashtags] neighbour_weight`).
    pub neighbours: usize,
    pub neighbour_weight: f32,
    /// Held-out posts counted for `onboarded` (by authors the snapshot knows with a hashtag to
    /// pick), and of them those whose newcomer was placed (another user follows a pick).
    pub onboarded_posts: usize,
    pub onboarded_placed_posts: usize,
    /// The newcomer's interests from the picked hashtags only.
    pub onboarded: Metrics,
    /// The same, placed among the users who follow the picks, with the neighbour term.
    pub onboarded_neighbours: Metrics,
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

/// Checks the number of hashtags an `onboarded` newcomer picks.
pub fn validate_picks(picks: usize) -> Result<(), EvalError> {
    if (1..=MAX_PICKS).contains(&picks) {
        Ok(())
    } else {
        Err(EvalError::parameter(
            "picks",
            format!("must be from 1 to {MAX_PICKS}, got {picks}"),
        ))
    }
}

/// What each snapshot user (by row) follows, as the neighbour methods count it: their
/// follows, then the hashtags of their posts, oldest post first (ties in file order), each
/// tag once.
pub fn user_tags(snapshot: &Snapshot) -> Vec<Vec<String>> {
    let rows: HashMap<&str, usize> = snapshot
        .users
        .iter()
        .enumerate()
        .map(|(row, u)| (u.id.as_str(), row))
        .collect();
    let mut tags: Vec<Vec<String>> = snapshot.users.iter().map(|u| u.follows.clone()).collect();
    let mut posts: Vec<usize> = (0..snapshot.posts.len()).collect();
    posts.sort_by_key(|&i| snapshot.posts[i].created_at);
    for i in posts {
        let post = &snapshot.posts[i];
        let Some(&row) = rows.get(post.author.as_str()) else {
            continue;
        };
        for tag in &post.hashtags {
            if !tags[row].contains(tag) {
                tags[row].push(tag.clone());
            }
        }
    }
    for list in &mut tags {
        let mut seen = std::collections::HashSet::new();
        list.retain(|t| seen.insert(t.clone()));
    }
    tags
}

/// The snapshot rows following each tag, by [`user_tags`]: what `followers_centroid` reads.
pub fn followers(user_tags: &[Vec<String>]) -> HashMap<String, Vec<u32>> {
    let mut followers: HashMap<String, Vec<u32>> = HashMap::new();
    for (row, tags) in user_tags.iter().enumerate() {
        for tag in tags {
            followers.entry(tag.clone()).or_default().push(row as u32);
        }
    }
    followers
}

/// The neighbour term's input: each neighbour's similarity and what it follows (neighbours
/// outside the snapshot's users are left out).
pub fn with_tags<'t>(
    neighbours: &[UserNeighbor],
    user_tags: &'t [Vec<String>],
) -> Vec<HashtagNeighbour<'t>> {
    neighbours
        .iter()
        .filter_map(|n| {
            Some(HashtagNeighbour {
                similarity: n.similarity,
                follows: user_tags.get(n.slot as usize)?,
            })
        })
        .collect()
}

/// Ranked lists of the methods that depend on the author: warm, warm with neighbours,
/// history, and for an author with a hashtag to pick the onboarded newcomer's, without and
/// with neighbours (and whether they were placed).
struct AuthorLists<'a> {
    warm: Vec<String>,
    warm_neighbours: Vec<String>,
    history: Vec<&'a str>,
    onboarded: Option<(Vec<String>, Vec<String>, bool)>,
}

/// Runs every method on every held-out post (see the module docs); `picks` hashtags per
/// onboarded newcomer.
pub fn run(
    model: &Model,
    held_out: &HeldOut,
    k: usize,
    picks: usize,
) -> Result<HashtagEvalReport, EvalError> {
    validate_k(k)?;
    validate_picks(picks)?;
    let snapshot = model.snapshot();
    let hashtags = model.hashtags();
    let neighbours_k = model.options().users.neighbours;
    let user_tags = user_tags(snapshot);
    let followers = followers(&user_tags);
    let tags_of = |list: Vec<crate::hashtags::HashtagPick<'_>>| -> Vec<String> {
        list.iter().map(|p| p.tag.to_string()).collect()
    };
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

    let mut lists: HashMap<&str, AuthorLists<'_>> = HashMap::new();
    let mut sums = [(0.0, 0.0); 5];
    let mut onboarded_sums = [(0.0, 0.0); 2];
    let (mut onboarded_posts, mut placed_posts) = (0, 0);
    let mut warm_time = Duration::ZERO;
    for post in &held_out.posts {
        let user = post.user_id.as_str();
        if !lists.contains_key(user) {
            let started = Instant::now();
            let page = model
                .recommend_hashtags(user, None, None, Some(COLD_LANG), k)
                .map_err(|e| EvalError::parameter("user_id", e.to_string()))?;
            warm_time += started.elapsed();
            let warm = tags_of(page.hashtags);
            let own = used_by
                .get(user)
                .map_or(Vec::new(), |own| most_used(own, &[], k));
            let history = most_used(&popular, &own, k);
            let row = model.user_index().snapshot_row(user);
            let (warm_neighbours, onboarded) = match (row, model.user_vector(user)) {
                (Some(row), Some(vector)) => {
                    let follows = &snapshot.users[row as usize].follows;
                    let near = model.user_index().nearest(vector, neighbours_k, Some(row));
                    let warm_neighbours = tags_of(hashtags.recommend(&HashtagQuery {
                        lang: Some(COLD_LANG),
                        interests: &[vector],
                        exclude: follows,
                        neighbours: &with_tags(&near, &user_tags),
                        limit: k,
                    }));
                    let picked: Vec<String> = user_tags[row as usize]
                        .iter()
                        .take(picks)
                        .cloned()
                        .collect();
                    let onboarded = (!picked.is_empty()).then(|| {
                        let interests = hashtags.interests(&picked);
                        let interests: Vec<&[f32]> = interests.iter().map(Vec::as_slice).collect();
                        let query = HashtagQuery {
                            lang: Some(COLD_LANG),
                            interests: &interests,
                            exclude: &picked,
                            neighbours: &[],
                            limit: k,
                        };
                        let alone = tags_of(hashtags.recommend(&query));
                        let placed = followers_centroid(
                            &followers,
                            &picked,
                            &snapshot.user_vectors,
                            Some(row),
                        );
                        let near = placed.as_deref().map_or(Vec::new(), |v| {
                            model.user_index().nearest(v, neighbours_k, Some(row))
                        });
                        let with = tags_of(hashtags.recommend(&HashtagQuery {
                            neighbours: &with_tags(&near, &user_tags),
                            ..query
                        }));
                        (alone, with, placed.is_some())
                    });
                    (warm_neighbours, onboarded)
                }
                _ => (warm.clone(), None),
            };
            lists.insert(
                user,
                AuthorLists {
                    warm,
                    warm_neighbours,
                    history,
                    onboarded,
                },
            );
        }
        let author = &lists[user];
        let warm = strs(&author.warm);
        let warm_neighbours = strs(&author.warm_neighbours);
        let ranked = [&popularity, &cold, &warm, &author.history, &warm_neighbours];
        for (sum, list) in sums.iter_mut().zip(ranked) {
            let (hit, rr) = judge(list, &post.tags, k);
            sum.0 += hit;
            sum.1 += rr;
        }
        if let Some((alone, with, placed)) = &author.onboarded {
            onboarded_posts += 1;
            placed_posts += usize::from(*placed);
            for (sum, list) in onboarded_sums.iter_mut().zip([alone, with]) {
                let (hit, rr) = judge(&strs(list), &post.tags, k);
                sum.0 += hit;
                sum.1 += rr;
            }
        }
    }
    let mean_over = |n: usize| {
        let n = n.max(1) as f64;
        move |(hit, rr): (f64, f64)| Metrics {
            hit: hit / n,
            mrr: rr / n,
        }
    };
    let mean = mean_over(held_out.posts.len());
    let onboarded_mean = mean_over(onboarded_posts);
    Ok(HashtagEvalReport {
        model_version: model.model_version().to_string(),
        k,
        posts: held_out.posts.len(),
        skipped: held_out.skipped,
        users: lists.len(),
        users_in_model: lists
            .keys()
            .filter(|u| model.user_vector(u).is_some())
            .count(),
        hashtags: hashtags.len(),
        recommendable: hashtags.eligible(),
        popularity: mean(sums[0]),
        cold: mean(sums[1]),
        warm: mean(sums[2]),
        history: mean(sums[3]),
        warm_neighbours: mean(sums[4]),
        picks,
        neighbours: neighbours_k,
        neighbour_weight: hashtags.options().neighbour_weight,
        onboarded_posts,
        onboarded_placed_posts: placed_posts,
        onboarded: onboarded_mean(onboarded_sums[0]),
        onboarded_neighbours: onboarded_mean(onboarded_sums[1]),
        warm_mean_micros: warm_time.as_secs_f64() * 1e6 / lists.len().max(1) as f64,
    })
}

fn strs(list: &[String]) -> Vec<&str> {
    list.iter().map(String::as_str).collect()
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
            "{:<21} {:>8} {:>8}",
            "method",
            format!("hit@{}", self.k),
            format!("MRR@{}", self.k)
        )?;
        let rows = [
            ("popularity", self.popularity),
            ("cold", self.cold),
            ("warm", self.warm),
            ("history", self.history),
            ("warm+neighbours", self.warm_neighbours),
        ];
        for (name, m) in rows {
            writeln!(f, "{name:<21} {:>8.4} {:>8.4}", m.hit, m.mrr)?;
        }
        writeln!(
            f,
            "onboarded with their first {} hashtags: {} posts (their newcomer placed for {}):",
            self.picks, self.onboarded_posts, self.onboarded_placed_posts
        )?;
        let rows = [
            ("onboarded", self.onboarded),
            ("onboarded+neighbours", self.onboarded_neighbours),
        ];
        for (name, m) in rows {
            writeln!(f, "{name:<21} {:>8.4} {:>8.4}", m.hit, m.mrr)?;
        }
        writeln!(
            f,
            "neighbours: the {} nearest users, weight {}",
            self.neighbours, self.neighbour_weight
        )?;
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

    fn snapshot(users: &[(&str, &[&str])], posts: &[(&str, i64, &[&str])]) -> Snapshot {
        use crate::snapshot::{FORMAT_VERSION, Manifest, Metric, Post, PostKind, Stats, User};
        use ndarray::Array2;
        let strings = |tags: &[&str]| tags.iter().map(|t| t.to_string()).collect();
        Snapshot {
            manifest: Manifest {
                format_version: FORMAT_VERSION,
                model_version: "test".into(),
                created_at: "2026-01-01T00:00:00Z".into(),
                dim: 2,
                metric: Metric::Cosine,
                files: Default::default(),
                scoring: Default::default(),
            },
            posts: posts
                .iter()
                .enumerate()
                .map(|(i, (author, created_at, tags))| Post {
                    id: format!("p{i}"),
                    author: author.to_string(),
                    lang: "en".into(),
                    hashtags: strings(tags),
                    kind: PostKind::Organic,
                    created_at: *created_at,
                    stats: Stats::default(),
                })
                .collect(),
            post_vectors: Array2::zeros((posts.len(), 2)),
            users: users
                .iter()
                .map(|(id, follows)| User {
                    id: id.to_string(),
                    langs: vec!["en".into()],
                    created_at: 0,
                    follows: strings(follows),
                })
                .collect(),
            user_vectors: Array2::zeros((users.len(), 2)),
            hashtags: Vec::new(),
            hashtag_vectors: Array2::zeros((0, 2)),
        }
    }

    #[test]
    fn user_tags_are_follows_then_the_tags_of_their_posts_oldest_first() {
        let s = snapshot(
            &[("u0", &["cats", "cats"]), ("u1", &[]), ("u2", &[])],
            &[
                ("u0", 30, &["food", "cats"]),
                ("u1", 20, &["b", "a"]),
                ("u1", 10, &["c", "b"]),
                ("stranger", 5, &["x"]),
                ("u0", 5, &["travel"]),
            ],
        );
        let tags = user_tags(&s);
        assert_eq!(
            tags,
            vec![
                vec!["cats", "travel", "food"],
                vec!["c", "b", "a"],
                Vec::<&str>::new(),
            ]
        );
        let followers = followers(&tags);
        assert_eq!(followers["cats"], vec![0]);
        assert_eq!(followers["b"], vec![1]);
        assert!(!followers.contains_key("x"));
    }

    #[test]
    fn neighbours_take_their_users_tags_and_outsiders_are_left_out() {
        let tags = vec![
            vec!["a".to_string()],
            vec!["b".to_string(), "c".to_string()],
        ];
        let near = [
            UserNeighbor {
                slot: 1,
                similarity: 0.9,
            },
            UserNeighbor {
                slot: 7,
                similarity: 0.8,
            },
            UserNeighbor {
                slot: 0,
                similarity: -0.1,
            },
        ];
        let given = with_tags(&near, &tags);
        let seen: Vec<(f32, &[String])> = given.iter().map(|n| (n.similarity, n.follows)).collect();
        assert_eq!(seen, vec![(0.9, &tags[1][..]), (-0.1, &tags[0][..])]);
    }

    #[test]
    fn picks_are_checked() {
        assert!(validate_picks(1).is_ok() && validate_picks(MAX_PICKS).is_ok());
        for bad in [0, MAX_PICKS + 1] {
            let err = validate_picks(bad).unwrap_err().to_string();
            assert!(err.starts_with("picks: must be from 1 to 50"), "{err}");
        }
    }

    #[test]
    fn most_used_puts_the_given_first_then_counts_then_names() {
        let counts: HashMap<&str, u32> = [("a", 1), ("b", 5), ("c", 5), ("d", 2)].into();
        assert_eq!(most_used(&counts, &[], 3), vec!["b", "c", "d"]);
        assert_eq!(most_used(&counts, &["d", "z"], 4), vec!["d", "z", "b", "c"]);
    }
}
