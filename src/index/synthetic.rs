//! Clustered synthetic embeddings for tests, benchmarks and load scripts.
//!
//! Real embeddings are clustered; isotropic random vectors are the worst case for graph indexes
//! and would misstate their recall. Each point here is a random unit "centre" (one of `clusters`)
//! plus Gaussian noise, normalised. The centres depend only on `(dim, clusters, seed)`, so
//! [`clustered`] and [`queries`] with the same arguments draw from the same mixture, from
//! independent random streams.

use ndarray::{Array2, ArrayViewMut1};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// Random streams of one seed: one per purpose, so that e.g. asking for more points does not
/// change the centres or the queries.
const CENTRES: u64 = 0;
const POINTS: u64 = 1;
const QUERIES: u64 = 2;

/// `n` unit vectors of dimension `dim` around `clusters` random unit centres.
///
/// `spread` is the expected norm of the noise added to a centre before normalising, independent
/// of `dim`: 0 puts every point on its centre; 0.5 keeps points within about 27° of it; at 1 the
/// noise is as large as the centre. Deterministic in all arguments. Panics if `dim` or
/// `clusters` is zero or `spread` is negative or not finite.
pub fn clustered(n: usize, dim: usize, clusters: usize, spread: f32, seed: u64) -> Array2<f32> {
    draw(n, dim, clusters, spread, seed, POINTS)
}

/// `n` query vectors from the same mixture as [`clustered`] with the same `dim`, `clusters`,
/// `spread` and `seed`, but independent of its points.
pub fn queries(n: usize, dim: usize, clusters: usize, spread: f32, seed: u64) -> Array2<f32> {
    draw(n, dim, clusters, spread, seed, QUERIES)
}

fn draw(n: usize, dim: usize, clusters: usize, spread: f32, seed: u64, stream: u64) -> Array2<f32> {
    assert!(dim > 0 && clusters > 0, "dim and clusters must be positive");
    assert!(
        spread.is_finite() && spread >= 0.0,
        "spread must be finite and non-negative"
    );
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(CENTRES);
    let mut centres = Array2::zeros((clusters, dim));
    for centre in centres.rows_mut() {
        fill_unit(centre, &mut rng);
    }

    rng.set_stream(stream);
    let sigma = spread / (dim as f32).sqrt();
    let mut points = Array2::zeros((n, dim));
    for mut point in points.rows_mut() {
        let c = rng.random_range(0..clusters);
        loop {
            for (p, &m) in point.iter_mut().zip(centres.row(c)) {
                let noise: f32 = rng.sample(StandardNormal);
                *p = m + sigma * noise;
            }
            // Normalising fails only for a (vanishingly unlikely) zero vector: draw again.
            if normalise(point.view_mut()) {
                break;
            }
        }
    }
    points
}

/// A uniformly random direction: a standard normal vector, normalised.
fn fill_unit(mut v: ArrayViewMut1<f32>, rng: &mut ChaCha8Rng) {
    loop {
        v.iter_mut().for_each(|x| *x = rng.sample(StandardNormal));
        if normalise(v.view_mut()) {
            return;
        }
    }
}

/// Scales `v` to unit norm; `false` if it has none.
fn normalise(mut v: ArrayViewMut1<f32>) -> bool {
    let n = v.dot(&v).sqrt();
    if !(n.is_finite() && n > 0.0) {
        return false;
    }
    v.mapv_inplace(|x| x / n);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_unit_and_deterministic() {
        let a = clustered(300, 24, 7, 0.5, 11);
        assert_eq!(a.dim(), (300, 24));
        for row in a.rows() {
            assert!((row.dot(&row) - 1.0).abs() < 1e-5);
        }
        assert_eq!(a, clustered(300, 24, 7, 0.5, 11));
        assert_ne!(a, clustered(300, 24, 7, 0.5, 12));
        // More points extend the same sequence.
        assert_eq!(
            a,
            clustered(500, 24, 7, 0.5, 11).slice(ndarray::s![..300, ..])
        );
    }

    #[test]
    fn points_gather_around_shared_centres() {
        // Zero spread puts every point and query exactly on one of the centres.
        let points = clustered(200, 16, 3, 0.0, 5);
        let qs = queries(50, 16, 3, 0.0, 5);
        let distinct = |m: &Array2<f32>| {
            let mut rows: Vec<Vec<u32>> = m
                .rows()
                .into_iter()
                .map(|r| r.iter().map(|x| x.to_bits()).collect())
                .collect();
            rows.sort();
            rows.dedup();
            rows
        };
        assert_eq!(distinct(&points).len(), 3);
        assert_eq!(distinct(&points), distinct(&qs));
        // With noise, queries differ from points but stay close to some point.
        let points = clustered(200, 16, 3, 0.3, 5);
        let qs = queries(20, 16, 3, 0.3, 5);
        for q in qs.rows() {
            let best = points
                .rows()
                .into_iter()
                .map(|p| p.dot(&q))
                .fold(-1.0, f32::max);
            assert!(best > 0.8 && best < 1.0 - 1e-6, "best similarity {best}");
        }
    }
}
