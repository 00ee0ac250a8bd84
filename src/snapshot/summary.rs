//! The human summary printed by `feedrank snapshot check`.

use std::collections::HashMap;
use std::fmt;

use super::{Metric, PostKind, Snapshot};

/// How many hashtags [`Summary::top_hashtags`] lists.
pub const TOP_HASHTAGS: usize = 10;

/// Counts and spans describing a snapshot, for people (see the `Display` impl) and for code.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub model_version: String,
    pub format_version: u32,
    /// The manifest's `created_at`, as written.
    pub created_at: String,
    pub dim: usize,
    pub metric: Metric,
    pub posts: usize,
    pub users: usize,
    pub hashtags: usize,
    /// Posts per language code, most common first (ties in code order).
    pub posts_by_lang: Vec<(String, usize)>,
    /// Posts per kind, always all three, in the order organic, ad, sponsored.
    pub posts_by_kind: Vec<(PostKind, usize)>,
    /// The [`TOP_HASHTAGS`] hashtags carried by the most posts, most used first (ties in tag
    /// order).
    pub top_hashtags: Vec<(String, usize)>,
    /// Oldest and newest post `created_at`, in Unix seconds; `None` without posts.
    pub post_time_span: Option<(i64, i64)>,
}

impl Summary {
    pub fn of(snapshot: &Snapshot) -> Summary {
        let m = &snapshot.manifest;
        let mut by_lang: HashMap<&str, usize> = HashMap::new();
        let mut by_kind = [0usize; 3];
        let mut by_tag: HashMap<&str, usize> = HashMap::new();
        for post in &snapshot.posts {
            *by_lang.entry(&post.lang).or_default() += 1;
            by_kind[kind_index(post.kind)] += 1;
            for tag in &post.hashtags {
                *by_tag.entry(tag).or_default() += 1;
            }
        }
        let span = snapshot
            .posts
            .iter()
            .map(|p| p.created_at)
            .fold(None, |acc, t| match acc {
                None => Some((t, t)),
                Some((lo, hi)) => Some((t.min(lo), t.max(hi))),
            });
        let mut top_hashtags = most_common_first(by_tag);
        top_hashtags.truncate(TOP_HASHTAGS);
        Summary {
            model_version: m.model_version.clone(),
            format_version: m.format_version,
            created_at: m.created_at.clone(),
            dim: m.dim,
            metric: m.metric,
            posts: snapshot.posts.len(),
            users: snapshot.users.len(),
            hashtags: snapshot.hashtags.len(),
            posts_by_lang: most_common_first(by_lang),
            posts_by_kind: [PostKind::Organic, PostKind::Ad, PostKind::Sponsored]
                .into_iter()
                .map(|k| (k, by_kind[kind_index(k)]))
                .collect(),
            top_hashtags,
            post_time_span: span,
        }
    }
}

fn kind_index(kind: PostKind) -> usize {
    match kind {
        PostKind::Organic => 0,
        PostKind::Ad => 1,
        PostKind::Sponsored => 2,
    }
}

fn most_common_first(counts: HashMap<&str, usize>) -> Vec<(String, usize)> {
    let mut v: Vec<(String, usize)> = counts
        .into_iter()
        .map(|(k, n)| (k.to_string(), n))
        .collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let metric = match self.metric {
            Metric::Cosine => "cosine",
            Metric::Dot => "dot",
        };
        writeln!(f, "{:<18}{}", "model version", self.model_version)?;
        writeln!(f, "{:<18}{}", "format version", self.format_version)?;
        writeln!(f, "{:<18}{}", "created at", self.created_at)?;
        writeln!(f, "{:<18}{}-d, {metric}", "vectors", self.dim)?;
        writeln!(f, "{:<18}{}", "posts", thousands(self.posts))?;
        writeln!(f, "{:<18}{}", "users", thousands(self.users))?;
        writeln!(f, "{:<18}{}", "hashtags", thousands(self.hashtags))?;
        let pct = |n: usize| {
            if self.posts == 0 {
                0.0
            } else {
                100.0 * n as f64 / self.posts as f64
            }
        };
        writeln!(f, "posts by language")?;
        for (lang, n) in &self.posts_by_lang {
            writeln!(f, "  {lang:<16}{:>12} {:>6.1}%", thousands(*n), pct(*n))?;
        }
        writeln!(f, "posts by kind")?;
        for (kind, n) in &self.posts_by_kind {
            writeln!(
                f,
                "  {:<16}{:>12} {:>6.1}%",
                kind.as_str(),
                thousands(*n),
                pct(*n)
            )?;
        }
        writeln!(f, "top hashtags (posts)")?;
        for (tag, n) in &self.top_hashtags {
            writeln!(f, "  {tag:<16}{:>12}", thousands(*n))?;
        }
        match self.post_time_span {
            Some((oldest, newest)) => writeln!(
                f,
                "{:<18}{} to {} (UTC)",
                "posts created",
                utc_date(oldest),
                utc_date(newest)
            ),
            None => writeln!(f, "{:<18}-", "posts created"),
        }
    }
}

/// `1234567` → `1,234,567`.
pub(crate) fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The UTC calendar date of a Unix time, as `YYYY-MM-DD`.
fn utc_date(unix_seconds: i64) -> String {
    let (y, m, d) = civil_from_days(unix_seconds.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm,
/// "chrono-Compatible Low-Level Date Algorithms").
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, [0, 146096]
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365], from March 1st
    let mp = (5 * doy + 2) / 153; // month from March, [0, 11]
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(-1), "1969-12-31");
        assert_eq!(utc_date(1_737_244_800), "2025-01-19");
        assert_eq!(utc_date(951_782_400), "2000-02-29");
        assert_eq!(utc_date(253_402_300_799), "9999-12-31");
        assert_eq!(civil_from_days(-719_468), (0, 3, 1));
    }

    #[test]
    fn dates_agree_with_a_day_by_day_walk() {
        // Walks forward from 1970-01-01 one day at a time with plain month lengths.
        let (mut y, mut m, mut d) = (1970i64, 1u32, 1u32);
        for days in 0..(200 * 366) {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
            let len = match m {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            d += 1;
            if d > len {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
