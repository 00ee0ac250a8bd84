//! Per-post tables a request reads, built once per model: for each post one record with its
//! dense author and language ids, where its hashtag ids start, its scoring terms and whether
//! it is sponsored or shown to nobody (so a request compares integers, not strings, and
//! touches one cache line per candidate rather than one per table), and what cosine
//! similarity needs under the `dot` metric.

use std::collections::HashMap;

use ndarray::Array2;

use crate::policy::Lang;
use crate::scoring::PostTerms;
use crate::snapshot::{MIXED_LANG, Metric, PostKind, Snapshot};

/// What a request needs of one post, in one record.
#[derive(Debug, Clone, Copy)]
pub(super) struct PostMeta {
    /// A dense author id.
    pub author: u32,
    pub lang: Lang,
    pub sponsored: bool,
    /// Past the report threshold: shown to nobody.
    pub reported_out: bool,
    /// `tag_ids[tags.0..tags.1]` are the post's hashtag ids.
    tags: (u32, u32),
    /// The viewer-independent terms under the model's weights.
    pub terms: PostTerms,
}

pub(super) struct PostTables {
    /// Per post row.
    pub meta: Vec<PostMeta>,
    tag_ids: Vec<u32>,
    /// Language code to id, over posts' and users' languages.
    lang_ids: HashMap<String, u16>,
    /// Under `dot`, 1/‖v‖ per post (0 for a zero vector), so the policy can compare posts and
    /// judge ads by cosine, as its thresholds assume. `None` under `cosine`: rows are unit.
    inv_norm: Option<Vec<f32>>,
}

impl PostTables {
    /// The tables of `snapshot`, with each post's `terms` and whether it is `reported_out`.
    pub fn build(snapshot: &Snapshot, terms: &[PostTerms], reported_out: &[bool]) -> PostTables {
        // Past 65,535 languages the last id is shared: caps would merge, nothing breaks.
        let lang_ids: HashMap<String, u16> = snapshot
            .languages()
            .into_iter()
            .enumerate()
            .map(|(i, code)| (code.to_string(), u16::try_from(i).unwrap_or(u16::MAX)))
            .collect();
        let lang_of = |code: &str| match code {
            MIXED_LANG => Lang::Mixed,
            code => Lang::Id(lang_ids[code]),
        };
        let mut author_ids: HashMap<&str, u32> = HashMap::new();

        let hashtag_ids: HashMap<&str, u32> = snapshot
            .hashtags
            .iter()
            .enumerate()
            .map(|(i, h)| (h.tag.as_str(), i as u32))
            .collect();
        // Hashtags outside the snapshot's table get ids after it.
        let mut extra: HashMap<&str, u32> = HashMap::new();
        let mut meta = Vec::with_capacity(snapshot.posts.len());
        let mut tag_ids = Vec::new();
        for (row, post) in snapshot.posts.iter().enumerate() {
            let start = tag_ids.len() as u32;
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
            let next_author = author_ids.len() as u32;
            meta.push(PostMeta {
                author: *author_ids
                    .entry(post.author.as_str())
                    .or_insert(next_author),
                lang: lang_of(&post.lang),
                sponsored: post.kind == PostKind::Sponsored,
                reported_out: reported_out[row],
                tags: (start, tag_ids.len() as u32),
                terms: terms[row],
            });
        }

        let inv_norm =
            (snapshot.metric() == Metric::Dot).then(|| inverse_norms(&snapshot.post_vectors));
        PostTables {
            meta,
            tag_ids,
            lang_ids,
            inv_norm,
        }
    }

    /// The hashtag ids of a post.
    /// Starts loading post `row`'s record, and with `tags` its hashtags (which needs the
    /// record: call it once the record is in cache).
    pub fn prefetch(&self, row: u32, tags: bool) {
        let meta = &self.meta[row as usize];
        if tags {
            if let Some(first) = self.tag_ids.get(meta.tags.0 as usize) {
                crate::index::prefetch(first);
            }
        } else {
            crate::index::prefetch(meta);
        }
    }

    pub fn tags(&self, meta: &PostMeta) -> &[u32] {
        &self.tag_ids[meta.tags.0 as usize..meta.tags.1 as usize]
    }

    /// The language with this code, if any post or user has it (`mixed` always).
    pub fn lang_of(&self, code: &str) -> Option<Lang> {
        match code {
            MIXED_LANG => Some(Lang::Mixed),
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
