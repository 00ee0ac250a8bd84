//! Per-post tables the selector reads, built once per model: dense author, language and
//! hashtag ids (so a request compares integers, not strings), and what cosine similarity
//! needs under the `dot` metric.

use std::collections::HashMap;

use ndarray::Array2;

use crate::policy::Lang;
use crate::snapshot::{Metric, Snapshot};

/// The language code of bilingual posts.
const MIXED: &str = "mixed";

pub(super) struct PostTables {
    /// Per post row: a dense author id.
    pub author: Vec<u32>,
    /// Per post row: its language.
    pub lang: Vec<Lang>,
    /// `tag_ids[tag_start[row]..tag_start[row + 1]]` are the hashtags of post `row`.
    tag_start: Vec<u32>,
    tag_ids: Vec<u32>,
    /// Language code to id, over posts' and users' languages.
    lang_ids: HashMap<String, u16>,
    /// Under `dot`, 1/‖v‖ per post (0 for a zero vector), so the policy can compare posts and
    /// judge ads by cosine, as its thresholds assume. `None` under `cosine`: rows are unit.
    inv_norm: Option<Vec<f32>>,
}

impl PostTables {
    pub fn build(snapshot: &Snapshot) -> PostTables {
        let mut lang_ids: HashMap<String, u16> = HashMap::new();
        let codes = snapshot.posts.iter().map(|p| p.lang.as_str()).chain(
            snapshot
                .users
                .iter()
                .flat_map(|u| u.langs.iter().map(String::as_str)),
        );
        for code in codes {
            if code != MIXED && !lang_ids.contains_key(code) {
                // Past 65,535 languages the last id is shared: caps would merge, nothing breaks.
                let id = u16::try_from(lang_ids.len()).unwrap_or(u16::MAX);
                lang_ids.insert(code.to_string(), id);
            }
        }
        let lang_of = |code: &str| match code {
            MIXED => Lang::Mixed,
            code => Lang::Id(lang_ids[code]),
        };
        let lang = snapshot.posts.iter().map(|p| lang_of(&p.lang)).collect();

        let mut author_ids: HashMap<&str, u32> = HashMap::new();
        let author = snapshot
            .posts
            .iter()
            .map(|p| {
                let next = author_ids.len() as u32;
                *author_ids.entry(p.author.as_str()).or_insert(next)
            })
            .collect();

        let hashtag_ids: HashMap<&str, u32> = snapshot
            .hashtags
            .iter()
            .enumerate()
            .map(|(i, h)| (h.tag.as_str(), i as u32))
            .collect();
        // Hashtags outside the snapshot's table get ids after it.
        let mut extra: HashMap<&str, u32> = HashMap::new();
        let mut tag_start = Vec::with_capacity(snapshot.posts.len() + 1);
        let mut tag_ids = Vec::new();
        tag_start.push(0);
        for post in &snapshot.posts {
            for tag in &post.hashtags {
                let id = match hashtag_ids.get(tag.as_str()) {
                    Some(&id) => id,
                    None => {
                        let next = (hashtag_ids.len() + extra.len()) as u32;
                        *extra.entry(tag.as_str()).or_insert(next)
                    }
                };
                tag_ids.push(id);
            }
            tag_start.push(tag_ids.len() as u32);
        }

        let inv_norm =
            (snapshot.metric() == Metric::Dot).then(|| inverse_norms(&snapshot.post_vectors));
        PostTables {
            author,
            lang,
            tag_start,
            tag_ids,
            lang_ids,
            inv_norm,
        }
    }

    /// The hashtag ids of post `row`.
    pub fn tags(&self, row: u32) -> &[u32] {
        let row = row as usize;
        &self.tag_ids[self.tag_start[row] as usize..self.tag_start[row + 1] as usize]
    }

    /// The language with this code, if any post or user has it (`mixed` always).
    pub fn lang_of(&self, code: &str) -> Option<Lang> {
        match code {
            MIXED => Some(Lang::Mixed),
            code => self.lang_ids.get(code).map(|&id| Lang::Id(id)),
        }
    }

    /// Cosine similarity of posts `a` and `b`.
    pub fn cosine(&self, vectors: &Array2<f32>, a: u32, b: u32) -> f32 {
        let dot = crate::index::dot(row(vectors, a), row(vectors, b));
        match &self.inv_norm {
            None => dot,
            Some(inv) => dot * inv[a as usize] * inv[b as usize],
        }
    }

    /// Turns the metric's similarity between a query and post `row` into cosine, given the
    /// query's norm.
    pub fn to_cosine(&self, similarity: f32, row: u32, query_norm: f32) -> f32 {
        match &self.inv_norm {
            None => similarity,
            Some(inv) if query_norm > 0.0 => similarity * inv[row as usize] / query_norm,
            Some(_) => 0.0,
        }
    }
}

pub(super) fn row(vectors: &Array2<f32>, row: u32) -> &[f32] {
    vectors
        .row(row as usize)
        .to_slice()
        .expect("snapshot matrices are contiguous")
}

fn inverse_norms(vectors: &Array2<f32>) -> Vec<f32> {
    vectors
        .rows()
        .into_iter()
        .map(|v| {
            let norm = v.dot(&v).sqrt();
            if norm > 0.0 { 1.0 / norm } else { 0.0 }
        })
        .collect()
}
