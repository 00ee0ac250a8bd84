//! Per-post tables a request reads, built once per model: for each post one record with its
//! dense author and language ids, where its hashtag ids start, its scoring terms and whether
//! it is sponsored or shown to nobody (so a request compares integers, not strings, and
//! touches one cache line per candidate rather than one per table), and what cosine
//! similarity needs under the `dot` metric. Posts published after the snapshot get the same
//! record, in `Published`, with ids from the same dense spaces.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

use ndarray::Array2;

use super::published::{Published, PublishedPost};
use super::updates::PostFlags;
use crate::policy::Lang;
use crate::scoring::PostTerms;
use crate::snapshot::{MIXED_LANG, Metric, Post, PostKind, Snapshot};

/// What a request needs of one post, in one record.
#[derive(Debug, Clone, Copy)]
pub(super) struct PostMeta {
    /// A dense author id.
    pub author: u32,
    pub lang: Lang,
    pub sponsored: bool,
    /// Past the report threshold: shown to nobody.
    pub reported_out: bool,
    /// `tag_ids[tags.0..tags.1]` are a snapshot post's hashtag ids (a published post keeps
    /// its own).
    tags: (u32, u32),
    /// The viewer-independent terms under the model's weights.
    pub terms: PostTerms,
}

pub(super) struct PostTables {
    /// Per snapshot post row.
    meta: Vec<PostMeta>,
    tag_ids: Vec<u32>,
    /// Language code to id, over the snapshot's posts' and users' languages.
    lang_ids: HashMap<String, u16>,
    /// Languages first seen in published posts, with ids after the snapshot's.
    new_langs: RwLock<HashMap<String, u16>>,
    /// Under `dot`, 1/‖v‖ per post (0 for a zero vector), so the policy can compare posts and
    /// judge ads by cosine, as its thresholds assume. `None` under `cosine`: rows are unit.
    inv_norm: Option<Vec<f32>>,
    /// Author and hashtag ids, kept for the posts published later; their lock serialises
    /// publishing.
    ids: Mutex<DenseIds>,
    /// Rows after the snapshot's.
    published: Published,
}

/// Dense ids of authors and hashtags.
struct DenseIds {
    authors: HashMap<String, u32>,
    hashtags: HashMap<String, u32>,
}

impl DenseIds {
    fn author(&mut self, author: &str) -> u32 {
        dense_id(&mut self.authors, author)
    }

    fn hashtag(&mut self, tag: &str) -> u32 {
        dense_id(&mut self.hashtags, tag)
    }
}

fn dense_id(ids: &mut HashMap<String, u32>, key: &str) -> u32 {
    if let Some(&id) = ids.get(key) {
        return id;
    }
    let id = ids.len() as u32;
    ids.insert(key.to_string(), id);
    id
}

/// A post to add after the snapshot, validated.
pub(super) struct NewRow {
    pub post: Post,
    pub vector: Vec<f32>,
    pub terms: PostTerms,
    pub reported_out: bool,
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
        // The snapshot's hashtag table first, then the others as posts name them.
        let mut ids = DenseIds {
            authors: HashMap::new(),
            hashtags: HashMap::new(),
        };
        for h in &snapshot.hashtags {
            ids.hashtag(&h.tag);
        }
        let mut meta = Vec::with_capacity(snapshot.posts.len());
        let mut tag_ids = Vec::new();
        for (row, post) in snapshot.posts.iter().enumerate() {
            let start = tag_ids.len() as u32;
            tag_ids.extend(post.hashtags.iter().map(|tag| ids.hashtag(tag)));
            meta.push(PostMeta {
                author: ids.author(&post.author),
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
            published: Published::new(meta.len() as u32),
            meta,
            tag_ids,
            lang_ids,
            new_langs: RwLock::new(HashMap::new()),
            inv_norm,
            ids: Mutex::new(ids),
        }
    }

    /// Starts loading post `row`'s record, and with `tags` its hashtags (which needs the
    /// record: call it once the record is in cache).
    pub fn prefetch(&self, row: u32, tags: bool) {
        let Some(meta) = self.meta.get(row as usize) else {
            return;
        };
        if tags {
            if let Some(first) = self.tag_ids.get(meta.tags.0 as usize) {
                crate::index::prefetch(first);
            }
        } else {
            crate::index::prefetch(meta);
        }
    }

    /// Every published post, from the newest.
    pub fn published_newest_first(&self) -> impl Iterator<Item = (u32, &PublishedPost)> {
        self.published.newest_first()
    }

    /// Posts published since the snapshot, and the heap bytes they hold.
    pub fn published_count(&self) -> (usize, usize) {
        (self.published.len(), self.published.memory_bytes())
    }

    /// The row of published post `id`.
    pub fn published_row(&self, id: &str) -> Option<u32> {
        self.published.row_of(id)
    }

    fn published_post(&self, row: u32) -> &PublishedPost {
        self.published
            .get(row)
            .expect("rows come from the snapshot or the published posts")
    }

    /// Post `row`'s record.
    pub fn meta(&self, row: u32) -> &PostMeta {
        match self.meta.get(row as usize) {
            Some(meta) => meta,
            None => &self.published_post(row).meta,
        }
    }

    /// Post `row`'s hashtag ids.
    pub fn tags(&self, row: u32) -> &[u32] {
        match self.meta.get(row as usize) {
            Some(meta) => &self.tag_ids[meta.tags.0 as usize..meta.tags.1 as usize],
            None => &self.published_post(row).tag_ids,
        }
    }

    /// Post `row`'s record: the snapshot's (`posts`) or a published one.
    pub fn post<'a>(&'a self, posts: &'a [Post], row: u32) -> &'a Post {
        match posts.get(row as usize) {
            Some(post) => post,
            None => &self.published_post(row).post,
        }
    }

    /// The flags of a published post (the snapshot's are in `PostUpdates`).
    pub fn published_flags(&self, row: u32) -> &PostFlags {
        &self.published_post(row).flags
    }

    /// Post `row`'s embedding: a row of `vectors` (the snapshot's) or a published one.
    pub fn vector<'a>(&'a self, vectors: &'a Array2<f32>, row: u32) -> &'a [f32] {
        if (row as usize) < vectors.nrows() {
            self::row(vectors, row)
        } else {
            &self.published_post(row).vector
        }
    }

    fn inv_norm(&self, inv: &[f32], row: u32) -> f32 {
        match inv.get(row as usize) {
            Some(&v) => v,
            None => self.published_post(row).inv_norm,
        }
    }

    /// The language with this code, if any post or user has it (`mixed` always).
    pub fn lang_of(&self, code: &str) -> Option<Lang> {
        match code {
            MIXED_LANG => Some(Lang::Mixed),
            code => match self.lang_ids.get(code) {
                Some(&id) => Some(Lang::Id(id)),
                None => {
                    let new = self.new_langs.read().unwrap_or_else(|e| e.into_inner());
                    new.get(code).map(|&id| Lang::Id(id))
                }
            },
        }
    }

    /// Cosine similarity of posts `a` and `b`.
    pub fn cosine(&self, vectors: &Array2<f32>, a: u32, b: u32) -> f32 {
        let dot = crate::index::dot(self.vector(vectors, a), self.vector(vectors, b));
        match &self.inv_norm {
            None => dot,
            Some(inv) => dot * self.inv_norm(inv, a) * self.inv_norm(inv, b),
        }
    }

    /// Turns the metric's similarity between a query and post `row` into cosine, given the
    /// query's norm.
    pub fn to_cosine(&self, similarity: f32, row: u32, query_norm: f32) -> f32 {
        match &self.inv_norm {
            None => similarity,
            Some(inv) if query_norm > 0.0 => similarity * self.inv_norm(inv, row) / query_norm,
            Some(_) => 0.0,
        }
    }

    /// Adds published posts as the next rows, in order, and returns each one's row, or `None`
    /// for one whose id `exists` says is taken (checked under the publishing lock, so two
    /// publishers of one id cannot both succeed). `index` gets the new rows before the lock is
    /// released, once readers can see them.
    pub fn publish(
        &self,
        new: Vec<NewRow>,
        exists: impl Fn(&str) -> bool,
        index: impl FnOnce(&[u32]),
    ) -> Vec<Option<u32>> {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        let rows: Vec<Option<u32>> = new
            .into_iter()
            .map(|new| {
                // Also refuses a repeat within `new`: the first is visible by now.
                if exists(&new.post.id) {
                    return None;
                }
                Some(self.push(&mut ids, new))
            })
            .collect();
        let added: Vec<u32> = rows.iter().flatten().copied().collect();
        if !added.is_empty() {
            index(&added);
        }
        rows
    }

    /// Stores one published post as the next row (the publishing lock held: `ids`).
    fn push(&self, ids: &mut DenseIds, new: NewRow) -> u32 {
        let tag_ids: Box<[u32]> = new.post.hashtags.iter().map(|t| ids.hashtag(t)).collect();
        let lang = match self.lang_of(&new.post.lang) {
            Some(lang) => lang,
            None => {
                let mut langs = self.new_langs.write().unwrap_or_else(|e| e.into_inner());
                let next = self.lang_ids.len() + langs.len();
                let id = u16::try_from(next).unwrap_or(u16::MAX);
                langs.insert(new.post.lang.clone(), id);
                Lang::Id(id)
            }
        };
        let norm = crate::index::dot(&new.vector, &new.vector).sqrt();
        let meta = PostMeta {
            author: ids.author(&new.post.author),
            lang,
            sponsored: new.post.kind == PostKind::Sponsored,
            reported_out: new.reported_out,
            tags: (0, 0),
            terms: new.terms,
        };
        self.published.push(PublishedPost {
            post: new.post,
            meta,
            tag_ids,
            vector: new.vector.into_boxed_slice(),
            inv_norm: if norm > 0.0 { 1.0 / norm } else { 0.0 },
            flags: PostFlags::default(),
        })
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
