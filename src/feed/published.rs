//! Posts published after the snapshot (`POST /v1/posts`): rows numbered after the snapshot's,
//! in an append-only store that requests read without locks.
//!
//! A request borrows post ids and records from the model for as long as it runs, so a
//! published post must never move: the store is a list of chunks that are allocated once and
//! never reallocated (chunk `k` holds `FIRST_CHUNK << k` slots), each slot set once. Writers
//! (one at a time: the model's publish lock) fill the next slot and then advance the length,
//! so a reader that sees the length sees every post below it.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::RwLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::tables::PostMeta;
use super::updates::PostFlags;
use crate::snapshot::Post;

/// Slots in the first chunk; each further chunk doubles.
const FIRST_CHUNK: usize = 1024;
/// Chunks enough for more rows than a `u32` numbers.
const CHUNKS: usize = 23;

/// A list whose items never move once pushed: `get` hands out references that live as long
/// as the list.
pub(super) struct AppendOnly<T> {
    chunks: [OnceLock<Box<[OnceLock<T>]>>; CHUNKS],
    len: AtomicUsize,
}

impl<T> AppendOnly<T> {
    pub fn new() -> Self {
        AppendOnly {
            chunks: std::array::from_fn(|_| OnceLock::new()),
            len: AtomicUsize::new(0),
        }
    }

    /// Items visible to readers.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Chunk and slot of item `i`.
    fn position(i: usize) -> (usize, usize) {
        // Chunk k starts at FIRST_CHUNK · (2^k − 1).
        let k = (i / FIRST_CHUNK + 1).ilog2() as usize;
        (k, i - FIRST_CHUNK * ((1 << k) - 1))
    }

    pub fn get(&self, i: usize) -> Option<&T> {
        if i >= self.len() {
            return None;
        }
        let (chunk, slot) = Self::position(i);
        self.chunks[chunk].get()?[slot].get()
    }

    /// Appends `item` and returns its index. Callers serialise pushes (one writer at a time);
    /// a push racing another would still never overwrite, but could publish out of order.
    pub fn push(&self, item: T) -> usize {
        let i = self.len.load(Ordering::Acquire);
        let (chunk, slot) = Self::position(i);
        let chunk = self.chunks[chunk]
            .get_or_init(|| (0..FIRST_CHUNK << chunk).map(|_| OnceLock::new()).collect());
        assert!(chunk[slot].set(item).is_ok(), "a slot is filled only once");
        self.len.store(i + 1, Ordering::Release);
        i
    }

    /// Items from the newest to the oldest.
    pub fn newest_first(&self) -> impl Iterator<Item = &T> {
        (0..self.len()).rev().filter_map(|i| self.get(i))
    }
}

/// One published post and what a request needs of it, as the snapshot's tables hold it for
/// the snapshot's posts.
pub(super) struct PublishedPost {
    pub post: Post,
    pub meta: PostMeta,
    pub tag_ids: Box<[u32]>,
    /// Normalised under cosine, like the snapshot's rows.
    pub vector: Box<[f32]>,
    /// 1/‖v‖ (0 for a zero vector), for cosine under the `dot` metric.
    pub inv_norm: f32,
    pub flags: PostFlags,
}

/// The posts published since the snapshot, from row `first_row` on.
pub(super) struct Published {
    first_row: u32,
    posts: AppendOnly<PublishedPost>,
    /// Post id to row.
    ids: RwLock<HashMap<String, u32>>,
}

impl Published {
    pub fn new(first_row: u32) -> Published {
        Published {
            first_row,
            posts: AppendOnly::new(),
            ids: RwLock::new(HashMap::new()),
        }
    }

    pub fn len(&self) -> usize {
        self.posts.len()
    }

    /// Post `row`, if it is a published one.
    pub fn get(&self, row: u32) -> Option<&PublishedPost> {
        let i = row.checked_sub(self.first_row)?;
        self.posts.get(i as usize)
    }

    pub fn row_of(&self, id: &str) -> Option<u32> {
        if self.posts.len() == 0 {
            return None;
        }
        let ids = self.ids.read().unwrap_or_else(|e| e.into_inner());
        ids.get(id).copied()
    }

    /// Adds `post` as the next row (callers serialise pushes).
    pub fn push(&self, post: PublishedPost) -> u32 {
        let id = post.post.id.clone();
        let row = self.first_row + self.posts.push(post) as u32;
        let mut ids = self.ids.write().unwrap_or_else(|e| e.into_inner());
        ids.insert(id, row);
        row
    }

    /// Rows and posts from the newest to the oldest.
    pub fn newest_first(&self) -> impl Iterator<Item = (u32, &PublishedPost)> {
        let first = self.first_row;
        let len = self.posts.len();
        (0..len)
            .rev()
            .filter_map(move |i| Some((first + i as u32, self.posts.get(i)?)))
    }

    /// Heap bytes held, roughly: records, vectors, ids.
    pub fn memory_bytes(&self) -> usize {
        self.posts
            .newest_first()
            .map(|p| {
                size_of::<PublishedPost>()
                    + p.post.id.len() * 2
                    + p.post.author.len()
                    + p.post.lang.len()
                    + p.post.hashtags.iter().map(|t| t.len() + 24).sum::<usize>()
                    + p.tag_ids.len() * 4
                    + p.vector.len() * 4
                    + 48
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_keep_their_address_and_order_across_chunks() {
        let list = AppendOnly::new();
        let n = FIRST_CHUNK * 7 + 5;
        let first: *const usize = list.get_or_push(0);
        for i in 1..n {
            assert_eq!(list.push(i), i);
        }
        assert_eq!(list.len(), n);
        assert!(std::ptr::eq(first, list.get(0).unwrap()));
        for i in 0..n {
            assert_eq!(*list.get(i).unwrap(), i);
        }
        assert!(list.get(n).is_none());
        assert!(list.newest_first().copied().eq((0..n).rev()));
        // Chunk boundaries: 1024, 1024 + 2048, ...
        assert_eq!(AppendOnly::<u8>::position(1023), (0, 1023));
        assert_eq!(AppendOnly::<u8>::position(1024), (1, 0));
        assert_eq!(AppendOnly::<u8>::position(3071), (1, 2047));
        assert_eq!(AppendOnly::<u8>::position(3072), (2, 0));
        let last = u32::MAX as usize;
        assert!(AppendOnly::<u8>::position(last).0 < CHUNKS);
    }

    impl AppendOnly<usize> {
        fn get_or_push(&self, v: usize) -> &usize {
            let i = self.push(v);
            self.get(i).unwrap()
        }
    }

    #[test]
    fn readers_see_every_item_below_the_length_while_a_writer_pushes() {
        let list = std::sync::Arc::new(AppendOnly::new());
        let writer = {
            let list = list.clone();
            std::thread::spawn(move || {
                for i in 0..20_000usize {
                    list.push(i * 3);
                }
            })
        };
        let mut checked = 0;
        while checked < 20_000 {
            let len = list.len();
            for i in checked..len {
                assert_eq!(*list.get(i).expect("below the length"), i * 3);
            }
            checked = len;
        }
        writer.join().unwrap();
    }
}
