//! HNSW construction straight into flat arrays, in parallel.
//!
//! hnsw_rs builds through the same allocating, lock-per-neighbour-list paths it searches with:
//! about 1,500 insertions a second on two cores at M = 16, ef_construction = 200, 64-d, so a
//! million posts take over ten minutes and gigabytes. This builder follows the same algorithm
//! (Malkov & Yashunin: random levels, greedy descent, a beam of `ef_construction` per layer, the
//! neighbour-selection heuristic, bidirectional links pruned by the same heuristic) over the
//! padded rows the flat index keeps anyway, with per-thread visited stamps, a lock per node held
//! only to copy or rewrite its links, and prefetching of the rows a beam step is about to score.
//!
//! Similarity is the inner product (rows are unit vectors under cosine), so "closer" means a
//! higher dot product throughout, as in the flat search.

use std::collections::BinaryHeap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::dot;
use super::flat::{Candidate, Worst};

/// Layers above this are never used: with M = 2 (the smallest) a level above 16 needs 2^16
/// times more nodes than fit in `u32`.
const MAX_LEVEL: usize = 16;

/// Insertions a worker claims at a time: small enough to balance the threads, large enough
/// that the shared counter is not contended.
const CLAIM: usize = 64;

/// The graph as built: per node (position), its neighbour lists from layer 0 up to its level,
/// and the node every search enters by.
pub(super) struct BuiltGraph {
    pub links: Vec<Vec<Vec<u32>>>,
    pub entry: Option<u32>,
}

/// Shape of the graph: links per node on upper layers (`m`; layer 0 keeps `2m`) and the beam
/// used while inserting.
#[derive(Debug, Clone, Copy)]
pub(super) struct Shape {
    pub m: usize,
    pub ef_construction: usize,
    pub threads: usize,
}

/// Builds the graph over `n` rows of `stride` floats each in `data`.
pub(super) fn build(data: &[f32], stride: usize, n: usize, shape: Shape) -> BuiltGraph {
    assert!(
        shape.m >= 2,
        "an HNSW graph needs at least 2 links per node"
    );
    assert_eq!(data.len(), n * stride, "data does not hold n rows");
    if n == 0 {
        return BuiltGraph {
            links: Vec::new(),
            entry: None,
        };
    }
    let levels: Vec<u8> = (0..n).map(|p| level_of(p as u64, shape.m)).collect();
    let builder = Builder {
        data,
        stride,
        m: shape.m,
        m0: 2 * shape.m,
        ef: shape.ef_construction.max(1),
        nodes: levels
            .iter()
            .map(|&l| Mutex::new(vec![Vec::new(); usize::from(l) + 1]))
            .collect(),
        levels,
        top: Mutex::new(Top { entry: 0, level: 0 }),
    };
    // Node 0 enters an empty graph: it only becomes the entry point.
    *builder.top.lock().expect("not poisoned") = Top {
        entry: 0,
        level: usize::from(builder.levels[0]),
    };

    let next = AtomicUsize::new(1);
    let threads = shape.threads.clamp(1, n.div_ceil(CLAIM).max(1));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let mut scratch = BuildScratch::default();
                loop {
                    let start = next.fetch_add(CLAIM, Ordering::Relaxed);
                    if start >= n {
                        break;
                    }
                    for p in start..(start + CLAIM).min(n) {
                        builder.insert(p as u32, &mut scratch);
                    }
                }
            });
        }
    });

    let entry = builder.top.into_inner().expect("not poisoned").entry;
    let mut links: Vec<Vec<Vec<u32>>> = builder
        .nodes
        .into_iter()
        .map(|node| node.into_inner().expect("not poisoned"))
        .collect();
    connect_unreachable(&mut links, entry);
    BuiltGraph {
        links,
        entry: Some(entry),
    }
}

/// Pruning can leave a node with no in-links on layer 0 (most often among near-duplicates), and
/// then no search ever finds it. Links every such node from the first of its own neighbours
/// (which the walk reaches), one past that neighbour's limit if need be, until the whole layer
/// is reachable from the entry point.
fn connect_unreachable(links: &mut [Vec<Vec<u32>>], entry: u32) {
    let n = links.len();
    let mut reached = vec![false; n];
    let mut stack = vec![entry];
    reached[entry as usize] = true;
    let walk = |stack: &mut Vec<u32>, reached: &mut [bool], links: &[Vec<Vec<u32>>]| {
        while let Some(p) = stack.pop() {
            for &q in &links[p as usize][0] {
                if !reached[q as usize] {
                    reached[q as usize] = true;
                    stack.push(q);
                }
            }
        }
    };
    walk(&mut stack, &mut reached, links);
    for p in 0..n {
        if reached[p] {
            continue;
        }
        // Any reached node will do as a parent; its own nearest neighbour is the natural one.
        let parent = links[p][0]
            .iter()
            .copied()
            .find(|&q| reached[q as usize])
            .unwrap_or(entry);
        links[parent as usize][0].push(p as u32);
        reached[p] = true;
        stack.push(p as u32);
        walk(&mut stack, &mut reached, links);
    }
}

/// Level of node `p`: geometric with ratio `1/m`, from a hash of the position, so that the
/// layer structure does not depend on the order threads insert in.
fn level_of(p: u64, m: usize) -> u8 {
    // splitmix64: a full-period mix of the position into 64 uniform bits.
    let mut z = p.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    // Uniform in (0, 1]: never 0, whose logarithm is infinite.
    let u = ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    let level = (-u.ln() / (m as f64).ln()).floor();
    level.min(MAX_LEVEL as f64) as u8
}

struct Top {
    entry: u32,
    level: usize,
}

struct Builder<'a> {
    data: &'a [f32],
    stride: usize,
    m: usize,
    m0: usize,
    ef: usize,
    levels: Vec<u8>,
    /// Per node, its neighbour lists from layer 0 to its level. Each lock is held only to copy
    /// or rewrite the lists, never across a distance computation on another node.
    nodes: Vec<Mutex<Vec<Vec<u32>>>>,
    /// The entry point and top level. An insertion that raises the top level holds this lock
    /// until it is linked in, so that no other insertion enters through a half-linked node.
    top: Mutex<Top>,
}

#[derive(Default)]
struct BuildScratch {
    stamps: Vec<u32>,
    generation: u32,
    candidates: BinaryHeap<Candidate>,
    results: BinaryHeap<Worst>,
    links: Vec<u32>,
}

impl Builder<'_> {
    #[inline]
    fn row(&self, p: u32) -> &[f32] {
        let start = p as usize * self.stride;
        &self.data[start..start + self.stride]
    }

    #[inline]
    fn prefetch(&self, p: u32) {
        super::prefetch_row(self.row(p));
    }

    /// Copies node `p`'s neighbours on `layer` into `out`.
    fn copy_links(&self, p: u32, layer: usize, out: &mut Vec<u32>) {
        out.clear();
        let node = self.nodes[p as usize].lock().expect("not poisoned");
        if let Some(list) = node.get(layer) {
            out.extend_from_slice(list);
        }
    }

    fn max_links(&self, layer: usize) -> usize {
        if layer == 0 { self.m0 } else { self.m }
    }

    fn insert(&self, p: u32, scratch: &mut BuildScratch) {
        let level = usize::from(self.levels[p as usize]);
        let top = self.top.lock().expect("not poisoned");
        let (entry, top_level) = (top.entry, top.level);
        let mut raising = (level > top_level).then_some(top);
        let query = self.row(p);

        // Greedy descent through the layers above the new node's.
        let mut current = Candidate {
            similarity: dot(query, self.row(entry)),
            position: entry,
        };
        for layer in (level + 1..=top_level).rev() {
            loop {
                let mut best = current;
                self.copy_links(current.position, layer, &mut scratch.links);
                for &q in &scratch.links {
                    let similarity = dot(query, self.row(q));
                    if similarity > best.similarity {
                        best = Candidate {
                            similarity,
                            position: q,
                        };
                    }
                }
                if best.position == current.position {
                    break;
                }
                current = best;
            }
        }

        // Every layer's neighbours are chosen before any other node links to the new one: once
        // linked, it is visible to concurrent insertions, and one that descended through it to
        // a layer whose list was still empty would link only to it, and lose even that link
        // when the list was then written, leaving a node no search finds.
        let mut chosen_per_layer = Vec::with_capacity(level.min(top_level) + 1);
        for layer in (0..=level.min(top_level)).rev() {
            let found = self.search_layer(query, current, layer, scratch);
            current = found[0];
            chosen_per_layer.push((layer, self.select(&found, self.max_links(layer))));
        }
        {
            let mut node = self.nodes[p as usize].lock().expect("not poisoned");
            for (layer, chosen) in &chosen_per_layer {
                debug_assert!(
                    node[*layer].is_empty(),
                    "node {p} was linked before insertion"
                );
                node[*layer] = chosen.iter().map(|c| c.position).collect();
            }
        }
        for (layer, chosen) in &chosen_per_layer {
            for c in chosen {
                self.link(c.position, p, c.similarity, *layer);
            }
        }

        if let Some(top) = raising.as_mut() {
            top.entry = p;
            top.level = level;
        }
    }

    /// The beam search of the insertion algorithm on one layer: up to `ef` nodes nearest to
    /// `query`, best first.
    fn search_layer(
        &self,
        query: &[f32],
        entry: Candidate,
        layer: usize,
        scratch: &mut BuildScratch,
    ) -> Vec<Candidate> {
        let n = self.levels.len();
        if scratch.stamps.len() < n {
            scratch.stamps.resize(n, 0);
        }
        scratch.generation = scratch.generation.wrapping_add(1);
        if scratch.generation == 0 {
            scratch.stamps.fill(0);
            scratch.generation = 1;
        }
        let generation = scratch.generation;
        let BuildScratch {
            stamps,
            candidates,
            results,
            links,
            ..
        } = scratch;
        candidates.clear();
        results.clear();
        stamps[entry.position as usize] = generation;
        candidates.push(entry);
        results.push(Worst(entry));
        while let Some(candidate) = candidates.pop() {
            if results.len() >= self.ef
                && results
                    .peek()
                    .is_some_and(|w| candidate.similarity < w.similarity)
            {
                break;
            }
            self.copy_links(candidate.position, layer, links);
            links.retain(|&q| stamps[q as usize] != generation);
            for &q in links.iter() {
                self.prefetch(q);
            }
            for &q in links.iter() {
                stamps[q as usize] = generation;
                let similarity = dot(query, self.row(q));
                let full = results.len() >= self.ef;
                if full && results.peek().is_some_and(|w| similarity <= w.similarity) {
                    continue;
                }
                let next = Candidate {
                    similarity,
                    position: q,
                };
                candidates.push(next);
                results.push(Worst(next));
                if full {
                    results.pop();
                }
            }
        }
        let mut found: Vec<Candidate> = results.drain().map(|w| w.0).collect();
        found.sort_unstable_by(Candidate::better_first);
        found
    }

    /// The neighbour-selection heuristic: walking candidates best first, keep one if it is
    /// closer to the base node than to every neighbour already kept, which spreads links across
    /// directions instead of spending them all inside one tight cluster. Free slots are then
    /// filled with the best of the candidates passed over: a node whose in-links were all
    /// passed over would otherwise become unreachable.
    fn select(&self, sorted: &[Candidate], keep: usize) -> Vec<Candidate> {
        if sorted.len() <= keep {
            return sorted.to_vec();
        }
        let mut chosen: Vec<Candidate> = Vec::with_capacity(keep);
        let mut passed: Vec<Candidate> = Vec::new();
        for c in sorted {
            if chosen.len() >= keep {
                break;
            }
            let row = self.row(c.position);
            if chosen
                .iter()
                .all(|s| dot(row, self.row(s.position)) <= c.similarity)
            {
                chosen.push(*c);
            } else {
                passed.push(*c);
            }
        }
        let free = keep - chosen.len();
        chosen.extend(passed.into_iter().take(free));
        chosen
    }

    /// Adds `new` (at `similarity` to `to`) to `to`'s neighbours on `layer`, re-selecting them
    /// with the heuristic when the list is full.
    fn link(&self, to: u32, new: u32, similarity: f32, layer: usize) {
        let limit = self.max_links(layer);
        let mut node = self.nodes[to as usize].lock().expect("not poisoned");
        let Some(list) = node.get_mut(layer) else {
            return;
        };
        if list.contains(&new) {
            return;
        }
        if list.len() < limit {
            list.push(new);
            return;
        }
        let base = self.row(to);
        let mut pool: Vec<Candidate> = list
            .iter()
            .map(|&q| Candidate {
                similarity: dot(base, self.row(q)),
                position: q,
            })
            .collect();
        pool.push(Candidate {
            similarity,
            position: new,
        });
        pool.sort_unstable_by(Candidate::better_first);
        let chosen = self.select(&pool, limit);
        list.clear();
        list.extend(chosen.iter().map(|c| c.position));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_geometric_with_ratio_one_over_m() {
        let n = 200_000u64;
        let at_least = |l: u8| (0..n).filter(|&p| level_of(p, 16) >= l).count() as f64;
        let base = n as f64;
        // Expected: n / 16 on layer 1 and n / 256 on layer 2, within sampling noise.
        assert!((at_least(1) / base - 1.0 / 16.0).abs() < 0.003);
        assert!((at_least(2) / base - 1.0 / 256.0).abs() < 0.001);
        assert!((0..n).all(|p| usize::from(level_of(p, 2)) <= MAX_LEVEL));
    }

    #[test]
    fn every_link_points_to_a_node_on_that_layer() {
        let dim = 16;
        let n = 3_000;
        let vectors = crate::index::synthetic::clustered(n, dim, 20, 0.5, 3);
        let data: Vec<f32> = vectors.iter().copied().collect();
        let graph = build(
            &data,
            dim,
            n,
            Shape {
                m: 8,
                ef_construction: 64,
                threads: 2,
            },
        );
        let levels: Vec<usize> = graph.links.iter().map(|l| l.len() - 1).collect();
        let entry = graph.entry.unwrap() as usize;
        assert_eq!(levels[entry], *levels.iter().max().unwrap());
        for (p, layers) in graph.links.iter().enumerate() {
            for (layer, list) in layers.iter().enumerate() {
                // Layer 0 may exceed 2M by the links that make every node reachable.
                assert!(layer == 0 || list.len() <= 8);
                assert!(!list.contains(&(p as u32)), "node {p} links to itself");
                let mut sorted = list.clone();
                sorted.sort_unstable();
                sorted.dedup();
                assert_eq!(sorted.len(), list.len(), "node {p} has a duplicate link");
                for &q in list {
                    assert!(levels[q as usize] >= layer);
                }
            }
            if n > 1 {
                assert!(!layers[0].is_empty(), "node {p} has no links on layer 0");
            }
        }
        // Every node is reachable on layer 0 from the entry point.
        let mut reached = vec![false; n];
        let mut stack = vec![entry as u32];
        reached[entry] = true;
        while let Some(p) = stack.pop() {
            for &q in &graph.links[p as usize][0] {
                if !reached[q as usize] {
                    reached[q as usize] = true;
                    stack.push(q);
                }
            }
        }
        assert!(reached.iter().all(|&r| r), "a node is unreachable");
    }
}
