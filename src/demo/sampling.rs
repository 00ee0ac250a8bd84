//! Sampling helpers over [`ChaCha8Rng`]. Indices are drawn as `u64` so the stream does not
//! depend on the width of `usize`.

use rand::RngExt;
use rand::distr::Open01;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Beta, Binomial, Distribution, StandardNormal};

use super::{DAY, DEMO_NOW, WAVE_START};

pub(super) fn below(rng: &mut ChaCha8Rng, n: usize) -> usize {
    rng.random_range(0..n as u64) as usize
}

pub(super) fn chance(rng: &mut ChaCha8Rng, p: f64) -> bool {
    rng.random::<f64>() < p
}

pub(super) fn gaussian(rng: &mut ChaCha8Rng) -> f64 {
    rng.sample(StandardNormal)
}

pub(super) fn beta(rng: &mut ChaCha8Rng, a: f64, b: f64) -> f64 {
    Beta::new(a, b)
        .expect("beta parameters are positive")
        .sample(rng)
}

pub(super) fn binomial(rng: &mut ChaCha8Rng, n: u64, p: f64) -> u64 {
    Binomial::new(n, p.clamp(0.0, 1.0))
        .expect("probability clamped to [0, 1]")
        .sample(rng)
}

pub(super) fn shuffle<T>(rng: &mut ChaCha8Rng, items: &mut [T]) {
    for i in (1..items.len()).rev() {
        items.swap(i, below(rng, i + 1));
    }
}

/// Draws items with probability proportional to their weight.
pub(super) struct WeightedPick {
    items: Vec<usize>,
    cumulative: Vec<f64>,
}

impl WeightedPick {
    pub(super) fn new(weighted: impl IntoIterator<Item = (usize, f64)>) -> Self {
        let mut items = Vec::new();
        let mut cumulative = Vec::new();
        let mut total = 0.0;
        for (item, w) in weighted {
            if w > 0.0 {
                total += w;
                items.push(item);
                cumulative.push(total);
            }
        }
        assert!(!items.is_empty(), "a weighted pick needs a positive weight");
        WeightedPick { items, cumulative }
    }

    pub(super) fn sample(&self, rng: &mut ChaCha8Rng) -> usize {
        let total = *self.cumulative.last().expect("non-empty");
        let u = rng.random::<f64>() * total;
        let i = self.cumulative.partition_point(|&c| c <= u);
        self.items[i.min(self.items.len() - 1)]
    }
}

/// `k` distinct candidates, each drawn with probability proportional to its weight
/// (Efraimidis–Spirakis keys; the sort is a total order, so the result is exact).
pub(super) fn weighted_sample(
    rng: &mut ChaCha8Rng,
    candidates: &[usize],
    weight: impl Fn(usize) -> f64,
    k: usize,
) -> Vec<usize> {
    let mut keyed: Vec<(f64, usize)> = candidates
        .iter()
        .map(|&c| {
            let u: f64 = rng.sample(Open01);
            (u.ln() / weight(c), c)
        })
        .collect();
    keyed.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    keyed.truncate(k);
    keyed.into_iter().map(|(_, c)| c).collect()
}

/// `total` items over `n` owners, each owner at least one, the rest with weight
/// `(rank + offset)^-exponent` for a random rank.
pub(super) fn zipf_counts(
    rng: &mut ChaCha8Rng,
    n: usize,
    total: usize,
    exponent: f64,
    offset: f64,
) -> Vec<usize> {
    if n == 0 {
        return Vec::new();
    }
    let mut ranks: Vec<usize> = (0..n).collect();
    shuffle(rng, &mut ranks);
    let pick = WeightedPick::new((0..n).map(|i| (i, (ranks[i] as f64 + offset).powf(-exponent))));
    let mut counts = vec![1; n];
    for _ in n..total {
        counts[pick.sample(rng)] += 1;
    }
    counts
}

/// A time in the wave, front-loaded: most newcomers arrived in its first days.
pub(super) fn wave_time(rng: &mut ChaCha8Rng) -> i64 {
    let offset = (7 * DAY) as f64 * beta(rng, 1.2, 2.0);
    (WAVE_START + offset as i64).min(DEMO_NOW)
}
