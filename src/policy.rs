//! Policy: turning scored candidates into an ordered feed. Pure functions over plain data.

use std::cmp::Ordering;

/// A candidate with its blended score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub row: u32,
    pub score: f32,
}

/// Best first; equal scores by row, so the same inputs always give the same page.
pub fn order_by_score(scored: &mut [Scored]) {
    scored.sort_unstable_by(|a, b| {
        b.score
            .partial_cmp(&a.score)
            .unwrap_or(Ordering::Equal)
            .then(a.row.cmp(&b.row))
    });
}

/// Interleaves a ranked list so that languages take turns: the best remaining post of each
/// language in round-robin, languages ordered by their best post. A feed for someone we know
/// nothing about then shows every language community instead of only the largest one.
/// `lang_of(row)` is a small dense id per language.
pub fn interleave_by_language(ranked: &[Scored], lang_of: impl Fn(u32) -> usize) -> Vec<Scored> {
    let mut queues: Vec<Vec<Scored>> = Vec::new();
    let mut order: Vec<usize> = Vec::new(); // languages by their best post
    for s in ranked {
        let lang = lang_of(s.row);
        if lang >= queues.len() {
            queues.resize_with(lang + 1, Vec::new);
        }
        if queues[lang].is_empty() && !order.contains(&lang) {
            order.push(lang);
        }
        queues[lang].push(*s);
    }
    let mut cursors = vec![0usize; queues.len()];
    let mut out = Vec::with_capacity(ranked.len());
    while out.len() < ranked.len() {
        for &lang in &order {
            if let Some(s) = queues[lang].get(cursors[lang]) {
                out.push(*s);
                cursors[lang] += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(row: u32, score: f32) -> Scored {
        Scored { row, score }
    }

    #[test]
    fn orders_best_first_with_row_tiebreak() {
        let mut v = vec![s(3, 0.5), s(1, 0.9), s(2, 0.5), s(0, 0.1)];
        order_by_score(&mut v);
        assert_eq!(
            v.iter().map(|x| x.row).collect::<Vec<_>>(),
            vec![1, 2, 3, 0]
        );
    }

    #[test]
    fn languages_take_turns() {
        // rows 0..6: langs 0,0,0,0,1,2 — the majority language does not take the whole top.
        let ranked = vec![s(0, 6.), s(1, 5.), s(2, 4.), s(4, 3.), s(3, 2.), s(5, 1.)];
        let lang = |row: u32| match row {
            4 => 1,
            5 => 2,
            _ => 0,
        };
        let rows: Vec<u32> = interleave_by_language(&ranked, lang)
            .iter()
            .map(|x| x.row)
            .collect();
        assert_eq!(rows, vec![0, 4, 5, 1, 2, 3]);
    }

    proptest! {
        /// Against a naive reference: the interleave is a permutation that keeps each
        /// language's internal order, and every prefix is balanced (counts differ by ≤ 1
        /// between languages that still have posts).
        #[test]
        fn interleave_is_a_balanced_order_preserving_permutation(
            langs in proptest::collection::vec(0usize..4, 0..60)
        ) {
            let ranked: Vec<Scored> =
                (0..langs.len()).map(|i| s(i as u32, -(i as f32))).collect();
            let out = interleave_by_language(&ranked, |row| langs[row as usize]);
            let mut rows: Vec<u32> = out.iter().map(|x| x.row).collect();
            for lang in 0..4 {
                let want: Vec<u32> =
                    (0..langs.len() as u32).filter(|&r| langs[r as usize] == lang).collect();
                let got: Vec<u32> =
                    rows.iter().copied().filter(|&r| langs[r as usize] == lang).collect();
                prop_assert_eq!(want, got);
            }
            for prefix in 1..=out.len() {
                let mut counts = [0usize; 4];
                for x in &out[..prefix] { counts[langs[x.row as usize]] += 1; }
                let totals: Vec<usize> = (0..4).map(|l| langs.iter().filter(|&&x| x == l).count()).collect();
                let open: Vec<usize> = (0..4).filter(|&l| counts[l] < totals[l]).map(|l| counts[l]).collect();
                if let (Some(min), Some(max)) = (open.iter().min(), (0..4).filter(|&l| totals[l] > 0).map(|l| counts[l]).max()) {
                    prop_assert!(max <= min + 1, "prefix {prefix}: {counts:?}");
                }
            }
            rows.sort_unstable();
            prop_assert_eq!(rows, (0..langs.len() as u32).collect::<Vec<_>>());
        }
    }
}
