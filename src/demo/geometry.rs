//! Directions of the embedding space: topic centroids, language directions and hashtag
//! (subtopic) offsets, plus the vector arithmetic the generator uses.

use ndarray::Array2;
use rand_chacha::ChaCha8Rng;

use super::Lang;
use super::catalog::TOPICS;
use super::sampling::gaussian;

/// Flat row-major `[rows, dim]` matrices of directions.
pub(super) struct Geometry {
    pub(super) dim: usize,
    centroids: Vec<f64>,
    lang_dirs: Vec<f64>,
    tag_offsets: Vec<f64>,
}

impl Geometry {
    pub(super) fn new(rng: &mut ChaCha8Rng, dim: usize, n_tags: usize) -> Self {
        let mut centroids = vec![0.0; TOPICS.len() * dim];
        for row in centroids.chunks_exact_mut(dim) {
            random_unit(rng, row);
        }
        let mut lang_dirs = vec![0.0; 3 * dim];
        random_unit(rng, &mut lang_dirs[..dim]);
        random_unit(rng, &mut lang_dirs[dim..2 * dim]);
        let (known, mixed) = lang_dirs.split_at_mut(2 * dim);
        for j in 0..dim {
            mixed[j] = known[j] + known[dim + j];
        }
        normalise(mixed);
        let mut tag_offsets = vec![0.0; n_tags * dim];
        for row in tag_offsets.chunks_exact_mut(dim) {
            random_unit(rng, row);
        }
        Geometry {
            dim,
            centroids,
            lang_dirs,
            tag_offsets,
        }
    }

    pub(super) fn centroid(&self, topic: usize) -> &[f64] {
        &self.centroids[topic * self.dim..(topic + 1) * self.dim]
    }

    pub(super) fn lang(&self, lang: Lang) -> &[f64] {
        let i = lang as usize;
        &self.lang_dirs[i * self.dim..(i + 1) * self.dim]
    }

    pub(super) fn tag_offset(&self, tag: usize) -> &[f64] {
        &self.tag_offsets[tag * self.dim..(tag + 1) * self.dim]
    }
}

pub(super) fn random_unit(rng: &mut ChaCha8Rng, out: &mut [f64]) {
    for x in out.iter_mut() {
        *x = gaussian(rng);
    }
    normalise(out);
}

pub(super) fn normalise(v: &mut [f64]) {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    } else {
        // Measure-zero case; a zero vector would be rejected under cosine.
        v[0] = 1.0;
    }
}

/// Adds `weight · dir` to `acc`.
pub(super) fn add(acc: &mut [f64], weight: f64, dir: &[f64]) {
    for (a, d) in acc.iter_mut().zip(dir) {
        *a += weight * d;
    }
}

/// Adds isotropic noise of expected norm `scale` to `acc`.
pub(super) fn add_noise(rng: &mut ChaCha8Rng, acc: &mut [f64], scale: f64) {
    let sigma = scale / (acc.len() as f64).sqrt();
    for a in acc.iter_mut() {
        *a += sigma * gaussian(rng);
    }
}

/// Normalises `acc` into row `row` of `out`.
pub(super) fn store(out: &mut Array2<f32>, row: usize, acc: &mut [f64]) {
    normalise(acc);
    for (dst, src) in out.row_mut(row).iter_mut().zip(acc.iter()) {
        *dst = *src as f32;
    }
}
