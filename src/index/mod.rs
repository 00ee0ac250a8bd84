//! Nearest-neighbour search over embedding matrices.
//!
//! [`NeighborIndex`] is the one interface; [`ExactIndex`] (a vectorised scan, the reference and
//! the choice for small pools), [`HnswIndex`] (hnsw_rs graph) and [`FlatHnswIndex`] (the same
//! graph copied into flat arrays, searched without hnsw_rs) implement it, and so does
//! [`LiveIndex`]: a snapshot's flat graph plus the posts appended after it. [`store`] saves a
//! [`FlatHnswIndex`] to a file and loads it back; its [`StoredIndexError`] is this layer's
//! error type.

mod builder;
mod exact;
mod flat;
mod hnsw;
mod live;
pub mod store;
pub mod synthetic;

use ndarray::Array2;

use crate::snapshot::Metric;

pub use exact::ExactIndex;
pub use flat::FlatHnswIndex;
pub use hnsw::{HnswIndex, HnswParams};
pub use live::{Base, CHUNK_ROWS, LiveConfig, LiveError, LiveIndex, SegmentSizes};
pub use store::{IndexBinding, StoredIndexError};

/// The hnsw_rs release that builds `index = "hnsw_rs"` graphs.
pub const HNSW_RS_BUILDER: &str = "hnsw_rs 0.3.5";

/// Who built an HNSW graph. Recorded in stored indexes for information: both graphs serve the
/// same search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphBuilder {
    /// feedrank's own parallel builder.
    Native,
    /// hnsw_rs, copied into flat arrays.
    HnswRs,
}

impl GraphBuilder {
    pub fn name(self) -> &'static str {
        match self {
            GraphBuilder::Native => concat!("feedrank ", env!("CARGO_PKG_VERSION")),
            GraphBuilder::HnswRs => HNSW_RS_BUILDER,
        }
    }

    /// Reads a recorded name back: any version of either builder.
    pub fn from_name(name: &str) -> Option<GraphBuilder> {
        if name.starts_with("feedrank ") {
            Some(GraphBuilder::Native)
        } else if name.starts_with("hnsw_rs ") {
            Some(GraphBuilder::HnswRs)
        } else {
            None
        }
    }
}

/// A search hit: `row` is the row of the matrix the index was built from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbor {
    pub row: u32,
    /// Inner product with the (normalised, under cosine) query: higher is closer.
    pub similarity: f32,
}

/// Keeps only rows for which it returns `true`.
pub type RowFilter<'a> = &'a (dyn Fn(u32) -> bool + Sync);

pub trait NeighborIndex: Send + Sync {
    /// Number of indexed rows.
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Up to `k` rows most similar to `query`, best first, that pass `filter`. Equal
    /// similarities come smaller row first. A zero or non-finite query has no direction and
    /// matches nothing. Panics if `query` does not have the indexed dimension.
    fn search(&self, query: &[f32], k: usize, filter: Option<RowFilter<'_>>) -> Vec<Neighbor>;
}

/// Best-first order: higher similarity first, then the smaller row, so equal scores always come
/// back in the same order whatever the index or insertion order.
pub(crate) fn best_first(a: &Neighbor, b: &Neighbor) -> std::cmp::Ordering {
    // `+ 0.0` folds -0.0 into 0.0 so that equal values tie; `total_cmp` keeps the order total.
    (b.similarity + 0.0)
        .total_cmp(&(a.similarity + 0.0))
        .then(a.row.cmp(&b.row))
}

/// Asks the CPU to start loading `row` into cache: the graph search and builder call it for all
/// of a node's unvisited neighbours before scoring any of them, so the loads overlap.
#[inline]
pub(crate) fn prefetch_row(row: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // The first two cache lines: the hardware prefetcher follows on for longer rows.
        // SAFETY: prefetching is a hint that cannot fault; the addresses are inside `row`.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(row.as_ptr().cast());
            if row.len() > 16 {
                _mm_prefetch::<_MM_HINT_T0>(row.as_ptr().add(16).cast());
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = row;
}

/// Asks the CPU to start loading the cache line holding the start of `value`: for a batch of
/// records scattered over a large table, prefetching them all before reading any overlaps the
/// misses.
#[inline]
pub(crate) fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: prefetching is a hint that cannot fault; the address is that of `value`.
        unsafe { _mm_prefetch::<_MM_HINT_T0>((value as *const T).cast()) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// Inner product: the one kernel both indexes and every distance evaluation in the graph use.
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "vectors of different dimension");
    // Unoptimised builds do not inline the intrinsics, which makes the SIMD kernel four times
    // slower than the portable loop there; tests check the two agree.
    #[cfg(target_arch = "x86_64")]
    if !cfg!(debug_assertions) && simd::has_avx2_fma() {
        // SAFETY: the CPU supports the target features `dot_avx2` is compiled for.
        return unsafe { simd::dot_avx2(a, b) };
    }
    dot_portable(a, b)
}

/// `out[i] = query · row i` for the rows of the row-major `data`, `out.len()` rows of
/// `query.len()` values: one dispatch per block, and the kernel inlined into the loop.
pub(crate) fn dot_many(query: &[f32], data: &[f32], out: &mut [f32]) {
    let dim = query.len();
    assert_eq!(
        data.len(),
        dim * out.len(),
        "data does not hold out.len() rows"
    );
    #[cfg(target_arch = "x86_64")]
    if !cfg!(debug_assertions) && simd::has_avx2_fma() {
        // SAFETY: the CPU supports the target features; lengths checked above.
        unsafe { simd::dot_many_avx2(query, data, out) };
        return;
    }
    if dim == 0 {
        out.fill(0.0);
        return;
    }
    for (o, row) in out.iter_mut().zip(data.chunks_exact(dim)) {
        *o = dot_portable(query, row);
    }
}

/// Inner product without explicit SIMD: eight independent accumulators break the dependency
/// chain that a single running sum imposes on floating-point addition. Destructured fixed-size
/// chunks and plain `while` loops (no iterator adapters) make it ten times faster than the
/// iterator version in unoptimised builds, where the tests' graph builds spend much time here.
fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let (ca, ra) = a.as_chunks::<8>();
    let (cb, rb) = b.as_chunks::<8>();
    let [
        mut s0,
        mut s1,
        mut s2,
        mut s3,
        mut s4,
        mut s5,
        mut s6,
        mut s7,
    ] = [0.0f32; 8];
    let mut c = 0;
    while c < ca.len() {
        let [x0, x1, x2, x3, x4, x5, x6, x7] = ca[c];
        let [y0, y1, y2, y3, y4, y5, y6, y7] = cb[c];
        s0 += x0 * y0;
        s1 += x1 * y1;
        s2 += x2 * y2;
        s3 += x3 * y3;
        s4 += x4 * y4;
        s5 += x5 * y5;
        s6 += x6 * y6;
        s7 += x7 * y7;
        c += 1;
    }
    let mut j = 0;
    while j < ra.len() {
        s0 += ra[j] * rb[j];
        j += 1;
    }
    ((s0 + s4) + (s1 + s5)) + ((s2 + s6) + (s3 + s7))
}

/// Baseline x86-64 only guarantees SSE2, and LLVM does not turn the portable loop into vector
/// code. Explicit AVX2/FMA, chosen at run time, is about three times faster (6 ns at d = 64),
/// which keeps the exact scan close to memory speed.
#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;
    use std::sync::atomic::{AtomicU8, Ordering};

    /// 0 = not yet probed, 1 = absent, 2 = present.
    static AVX2_FMA: AtomicU8 = AtomicU8::new(0);

    #[inline]
    pub(super) fn has_avx2_fma() -> bool {
        match AVX2_FMA.load(Ordering::Relaxed) {
            0 => {
                let yes = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
                AVX2_FMA.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
                yes
            }
            v => v == 2,
        }
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA, and `data.len() == query.len() * out.len()`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_many_avx2(query: &[f32], data: &[f32], out: &mut [f32]) {
        let dim = query.len();
        if dim == 0 {
            out.fill(0.0);
            return;
        }
        for (o, row) in out.iter_mut().zip(data.chunks_exact(dim)) {
            // SAFETY: same features; each row has `dim` values.
            *o = unsafe { dot_avx2(query, row) };
        }
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA, and `a.len() == b.len()`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        // Four accumulators cover the latency of a fused multiply-add.
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            let mut j = 0;
            while j < 4 {
                // SAFETY: i + 8j + 8 <= n for both slices.
                let (x, y) = unsafe {
                    (
                        _mm256_loadu_ps(pa.add(i + 8 * j)),
                        _mm256_loadu_ps(pb.add(i + 8 * j)),
                    )
                };
                acc[j] = _mm256_fmadd_ps(x, y, acc[j]);
                j += 1;
            }
            i += 32;
        }
        while i + 8 <= n {
            // SAFETY: i + 8 <= n for both slices.
            let (x, y) = unsafe { (_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i))) };
            acc[0] = _mm256_fmadd_ps(x, y, acc[0]);
            i += 8;
        }
        let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let quad = _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps::<1>(sum));
        let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
        let mut total = _mm_cvtss_f32(_mm_add_ss(pair, _mm_shuffle_ps::<1>(pair, pair)));
        while i < n {
            total += a[i] * b[i];
            i += 1;
        }
        total
    }
}

/// Euclidean norm of `v`.
#[inline]
pub(crate) fn norm(v: &[f32]) -> f32 {
    dot(v, v).sqrt()
}

/// Euclidean norm of `query`; `None` when the query has no direction (zero) or is not finite,
/// in which case nothing is similar to it.
pub(crate) fn query_norm(query: &[f32]) -> Option<f32> {
    let n = norm(query);
    (n.is_finite() && n > 0.0).then_some(n)
}

/// Panics unless every row in `rows` exists in a matrix of `n_rows` rows.
fn check_rows(rows: &[u32], n_rows: usize) {
    if let Some(&bad) = rows.iter().find(|&&r| r as usize >= n_rows) {
        panic!("row {bad} out of range: the matrix has {n_rows} rows");
    }
}

/// Under cosine the snapshot loader normalises every row; catch a caller who skipped it.
fn debug_check_normalised(vectors: &Array2<f32>, rows: &[u32], metric: Metric) {
    if cfg!(debug_assertions) && metric == Metric::Cosine {
        for &r in rows {
            let n = vectors.row(r as usize).dot(&vectors.row(r as usize)).sqrt();
            debug_assert!(
                (n - 1.0).abs() < 1e-3 || n == 0.0,
                "row {r} has norm {n}: cosine indexes expect unit-normalised rows"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn exact(a: &[f32], b: &[f32]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum()
    }

    proptest! {
        /// Every kernel, at lengths that exercise the main loops and the tails.
        #[test]
        fn dot_kernels_agree_with_f64(
            pairs in proptest::collection::vec((-1.0f32..1.0, -1.0f32..1.0), 0..200)
        ) {
            let (a, b): (Vec<f32>, Vec<f32>) = pairs.into_iter().unzip();
            let want = exact(&a, &b);
            let tolerance = 1e-6 * (1.0 + a.len() as f64);
            prop_assert!((f64::from(dot(&a, &b)) - want).abs() < tolerance);
            prop_assert!((f64::from(dot_portable(&a, &b)) - want).abs() < tolerance);
            #[cfg(target_arch = "x86_64")]
            if simd::has_avx2_fma() {
                // SAFETY: feature checked; equal lengths.
                let got = unsafe { simd::dot_avx2(&a, &b) };
                prop_assert!((f64::from(got) - want).abs() < tolerance);
            }
            // Three rows against `a`, through every scan kernel.
            let data: Vec<f32> = [b.as_slice(), &a, &b].concat();
            let mut out = [0.0f32; 3];
            dot_many(&a, &data, &mut out);
            prop_assert!((f64::from(out[0]) - want).abs() < tolerance);
            prop_assert!((f64::from(out[1]) - exact(&a, &a)).abs() < tolerance);
            prop_assert_eq!(out[0], out[2]);
            #[cfg(target_arch = "x86_64")]
            if simd::has_avx2_fma() {
                // SAFETY: feature checked; data holds three rows of a.len().
                unsafe { simd::dot_many_avx2(&a, &data, &mut out) };
                prop_assert!((f64::from(out[0]) - want).abs() < tolerance);
                prop_assert!((f64::from(out[1]) - exact(&a, &a)).abs() < tolerance);
            }
        }
    }

    #[test]
    fn best_first_orders_by_similarity_then_row() {
        let n = |row, similarity| Neighbor { row, similarity };
        let mut hits = [n(3, 0.5), n(1, -0.0), n(2, 0.5), n(0, 0.0), n(9, 0.7)];
        hits.sort_by(best_first);
        let rows: Vec<u32> = hits.iter().map(|h| h.row).collect();
        // -0.0 and 0.0 are the same similarity, so the smaller row comes first.
        assert_eq!(rows, [9, 2, 3, 0, 1]);
    }

    #[test]
    fn query_norm_rejects_directionless_queries() {
        assert_eq!(query_norm(&[3.0, 4.0]), Some(5.0));
        assert_eq!(query_norm(&[0.0, 0.0]), None);
        assert_eq!(query_norm(&[]), None);
        assert_eq!(query_norm(&[f32::INFINITY, 0.0]), None);
        assert_eq!(query_norm(&[f32::NAN, 1.0]), None);
    }
}
