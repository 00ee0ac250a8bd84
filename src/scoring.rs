//! Scoring: pure functions from a post's plain data to numbers the policy ranks by.
//!
//! The blend, for a candidate post `p` and a user `u`:
//!
//! ```text
//! score = similarity_weight · sim(u, p) + value_weight · value(p) + freshness_weight · fresh(p)
//!       − clickbait_weight · clickbait(p)
//!
//! value(p)     = tanh(rate / value_scale)                                in (-1, 1)
//! rate         = (engaged + prior_rate · prior_views) / (views + prior_views)
//! engaged      = save_weight·saves + share_weight·shares + comment_weight·comments
//!              + like_weight·likes − hide_weight·hides − report_weight·reports
//! fresh(p)     = 0.5 ^ (age_hours / freshness_half_life_hours)           in (0, 1]
//! clickbait(p) = max(0, 1 − keep_rate / clickbait_keep_rate)
//!              · views / (views + clickbait_views)                       in [0, 1)
//! keep_rate    = (saves + comments) / views
//! ```
//!
//! `rate` is value per view shrunk toward a prior: a post with ten views and two saves is not
//! trusted like one with ten thousand views and two thousand saves. Saves, shares and comments
//! weigh far more than likes, and views only enter as the denominator, so a post that many saw
//! and few kept (clickbait) scores low. Hides and reports are strongly negative, on the scale
//! real systems use (X's published weights put a report at hundreds of times a like).
//!
//! `clickbait` is the explicit penalty on top: a post kept (saved or commented on) by fewer
//! than `clickbait_keep_rate` of its viewers, in proportion to the shortfall, and only once
//! enough people saw it for the rate to mean something (half weight at `clickbait_views`
//! views). Likes do not count as keeping: they are what a catchy cover earns. Value already
//! ranks such a post low; the penalty makes the demotion visible in explanations and lets it
//! be tuned on its own.
//!
//! Defaults live in [`ScoringConfig::default`]; a snapshot's `manifest.scoring` overrides them
//! key by key ([`ScoringConfig::with_overrides`]), and unknown keys are an error.

use serde::{Deserialize, Serialize};

use crate::snapshot::Stats;

/// Weights and knobs of the scoring blend. See the module docs for the formula.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScoringConfig {
    pub similarity_weight: f32,
    pub value_weight: f32,
    pub freshness_weight: f32,
    pub freshness_half_life_hours: f32,
    pub save_weight: f32,
    pub share_weight: f32,
    pub comment_weight: f32,
    pub like_weight: f32,
    pub hide_weight: f32,
    pub report_weight: f32,
    /// Pseudo-views of the prior: how many views it takes before a post's own rate dominates.
    pub prior_views: f32,
    /// Value per view assumed for a post with no views yet.
    pub prior_rate: f32,
    /// The rate at which `value` reaches tanh(1) ≈ 0.76; above it, more value adds little.
    pub value_scale: f32,
    /// A post with at least this many reports ...
    pub report_filter_min: f32,
    /// ... and at least this many reports per view is shown to nobody.
    pub report_filter_rate: f32,
    /// Weight of the clickbait penalty (subtracted).
    pub clickbait_weight: f32,
    /// Saves plus comments per view below which a post counts as clickbait, in proportion.
    pub clickbait_keep_rate: f32,
    /// Views at which the clickbait penalty reaches half its weight: below, the keep rate is
    /// too noisy to judge.
    pub clickbait_views: f32,
}

impl Default for ScoringConfig {
    fn default() -> Self {
        ScoringConfig {
            // Similarity leads (relevance first); value can lift a good post over a slightly
            // closer mediocre one; freshness only breaks near-ties.
            similarity_weight: 1.0,
            value_weight: 0.35,
            freshness_weight: 0.1,
            freshness_half_life_hours: 72.0,
            save_weight: 4.0,
            share_weight: 3.0,
            comment_weight: 2.0,
            like_weight: 0.5,
            hide_weight: 20.0,
            report_weight: 100.0,
            prior_views: 200.0,
            prior_rate: 0.05,
            value_scale: 0.25,
            // Both conditions: a handful of reports on a post seen by a million is noise, and
            // one report on a post seen by ten is one person.
            report_filter_min: 5.0,
            report_filter_rate: 0.01,
            // One save or comment per hundred views is a modest bar for a post worth its
            // place; a post far below it, seen by thousands, loses up to 0.15 (as much as a
            // value of about 0.4 adds).
            clickbait_weight: 0.15,
            clickbait_keep_rate: 0.01,
            clickbait_views: 1000.0,
        }
    }
}

/// A scoring override that is not allowed, naming the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scoring.{field}: {message}")]
pub struct ScoringError {
    pub field: String,
    pub message: String,
}

impl ScoringConfig {
    /// The defaults with `overrides` applied key by key. Unknown keys, non-numbers and values
    /// out of range are errors naming the key.
    pub fn with_overrides(
        overrides: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<ScoringConfig, ScoringError> {
        ScoringConfig::default().overridden(overrides)
    }

    /// This configuration with `overrides` applied key by key, under the rules of
    /// [`ScoringConfig::with_overrides`].
    pub fn overridden(
        &self,
        overrides: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<ScoringConfig, ScoringError> {
        let mut merged = match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => unreachable!("ScoringConfig serialises to a JSON object"),
        };
        for (key, value) in overrides {
            if !merged.contains_key(key) {
                let known: Vec<&str> = merged.keys().map(String::as_str).collect();
                return Err(ScoringError {
                    field: key.clone(),
                    message: format!("unknown key; known keys are {}", known.join(", ")),
                });
            }
            if !value.is_number() {
                return Err(ScoringError {
                    field: key.clone(),
                    message: format!("must be a number, got {value}"),
                });
            }
            merged.insert(key.clone(), value.clone());
        }
        let config: ScoringConfig = serde_json::from_value(serde_json::Value::Object(merged))
            .map_err(|e| ScoringError {
                field: "?".into(),
                message: e.to_string(),
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges: every knob finite, weights of penalties and signals non-negative, and
    /// the half-life, prior and scale strictly positive where they divide.
    pub fn validate(&self) -> Result<(), ScoringError> {
        let knobs: [(&str, f32, f32); 18] = [
            ("similarity_weight", self.similarity_weight, f32::MIN),
            ("value_weight", self.value_weight, f32::MIN),
            ("freshness_weight", self.freshness_weight, f32::MIN),
            (
                "freshness_half_life_hours",
                self.freshness_half_life_hours,
                f32::MIN_POSITIVE,
            ),
            ("save_weight", self.save_weight, 0.0),
            ("share_weight", self.share_weight, 0.0),
            ("comment_weight", self.comment_weight, 0.0),
            ("like_weight", self.like_weight, 0.0),
            ("hide_weight", self.hide_weight, 0.0),
            ("report_weight", self.report_weight, 0.0),
            ("prior_views", self.prior_views, f32::MIN_POSITIVE),
            ("prior_rate", self.prior_rate, 0.0),
            ("value_scale", self.value_scale, f32::MIN_POSITIVE),
            ("report_filter_min", self.report_filter_min, 0.0),
            ("report_filter_rate", self.report_filter_rate, 0.0),
            ("clickbait_weight", self.clickbait_weight, 0.0),
            (
                "clickbait_keep_rate",
                self.clickbait_keep_rate,
                f32::MIN_POSITIVE,
            ),
            ("clickbait_views", self.clickbait_views, f32::MIN_POSITIVE),
        ];
        for (field, value, min) in knobs {
            if !value.is_finite() {
                return Err(ScoringError {
                    field: field.into(),
                    message: "must be finite".into(),
                });
            }
            if value < min {
                let bound = if min > 0.0 {
                    "greater than 0"
                } else {
                    "at least 0"
                };
                return Err(ScoringError {
                    field: field.into(),
                    message: format!("must be {bound}, got {value}"),
                });
            }
        }
        Ok(())
    }
}

/// Parses a request's weight overrides, `key:value` pairs separated by commas (for instance
/// `value_weight:0.6,freshness_weight:0`), into the map [`ScoringConfig::overridden`] takes.
/// Keys and values are checked there; here, only the syntax (and repeated keys).
pub fn parse_overrides(
    text: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, ScoringError> {
    let mut map = serde_json::Map::new();
    for pair in text.split(',').filter(|p| !p.trim().is_empty()) {
        let Some((key, value)) = pair.split_once(':') else {
            return Err(ScoringError {
                field: pair.trim().into(),
                message: "expected key:value".into(),
            });
        };
        let key = key.trim();
        let value = value.trim();
        // Integers stay integers, so counts (policy knobs such as `page_size`) accept them.
        let number: serde_json::Value = match value.parse::<i64>() {
            Ok(integer) => integer.into(),
            Err(_) => {
                let float: f64 = value.parse().map_err(|_| ScoringError {
                    field: key.into(),
                    message: format!("must be a number, got {value:?}"),
                })?;
                serde_json::Number::from_f64(float)
                    .ok_or_else(|| ScoringError {
                        field: key.into(),
                        message: "must be finite".into(),
                    })?
                    .into()
            }
        };
        if map.insert(key.into(), number).is_some() {
            return Err(ScoringError {
                field: key.into(),
                message: "given twice".into(),
            });
        }
    }
    Ok(map)
}

/// How much a post is worth to the people who saw it, in (-1, 1). Independent of the viewer,
/// so it is computed once per post when a model loads.
pub fn value_score(stats: &Stats, config: &ScoringConfig) -> f32 {
    let engaged = config.save_weight * stats.saves as f32
        + config.share_weight * stats.shares as f32
        + config.comment_weight * stats.comments as f32
        + config.like_weight * stats.likes as f32
        - config.hide_weight * stats.hides as f32
        - config.report_weight * stats.reports as f32;
    let rate = (engaged + config.prior_rate * config.prior_views)
        / (stats.views as f32 + config.prior_views);
    (rate / config.value_scale).tanh()
}

/// Whether so many viewers reported the post that nobody should be shown it: at least
/// `report_filter_min` reports and at least `report_filter_rate` reports per view.
pub fn reported_past_threshold(stats: &Stats, config: &ScoringConfig) -> bool {
    let reports = stats.reports as f32;
    reports >= config.report_filter_min.max(1.0)
        && reports >= config.report_filter_rate * stats.views as f32
}

/// Freshness in (0, 1]: 1 for a post published at `now` (or later), halving every half-life.
pub fn freshness(created_at: i64, now: i64, config: &ScoringConfig) -> f32 {
    let age_hours = (now - created_at).max(0) as f32 / 3600.0;
    0.5f32.powf(age_hours / config.freshness_half_life_hours)
}

/// How strongly a post looks like clickbait, in [0, 1): how far its keep rate (saves and
/// comments per view) falls short of `clickbait_keep_rate`, times the confidence that many
/// views give. 0 for a post nobody saw yet.
pub fn clickbait(stats: &Stats, config: &ScoringConfig) -> f32 {
    if stats.views == 0 {
        return 0.0;
    }
    let views = stats.views as f32;
    let keep_rate = (stats.saves + stats.comments) as f32 / views;
    let shortfall = (1.0 - keep_rate / config.clickbait_keep_rate).max(0.0);
    shortfall * views / (views + config.clickbait_views)
}

/// The viewer-independent terms of a post's blend.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PostTerms {
    pub value: f32,
    pub freshness: f32,
    pub clickbait: f32,
}

impl PostTerms {
    /// The terms of a post with these stats, published at `created_at`, seen from `now`.
    pub fn of(stats: &Stats, created_at: i64, now: i64, config: &ScoringConfig) -> PostTerms {
        PostTerms {
            value: value_score(stats, config),
            freshness: freshness(created_at, now, config),
            clickbait: clickbait(stats, config),
        }
    }
}

/// The blended score of one candidate (the formula in the module docs). `similarity` is 0 for
/// the viewer-independent part alone.
#[inline]
pub fn blend(similarity: f32, terms: &PostTerms, config: &ScoringConfig) -> f32 {
    config.similarity_weight * similarity
        + config.value_weight * terms.value
        + config.freshness_weight * terms.freshness
        - config.clickbait_weight * terms.clickbait
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(views: u64, saves: u64, hides: u64) -> Stats {
        Stats {
            views,
            saves,
            hides,
            ..Stats::default()
        }
    }

    #[test]
    fn saves_are_worth_more_than_likes() {
        let c = ScoringConfig::default();
        let saved = Stats {
            views: 1000,
            saves: 50,
            ..Stats::default()
        };
        let liked = Stats {
            views: 1000,
            likes: 50,
            ..Stats::default()
        };
        assert!(value_score(&saved, &c) > value_score(&liked, &c));
    }

    #[test]
    fn clickbait_scores_below_a_post_people_keep() {
        let c = ScoringConfig::default();
        let clickbait = Stats {
            views: 50_000,
            likes: 2_000,
            saves: 50,
            ..Stats::default()
        };
        let kept = Stats {
            views: 2_000,
            likes: 100,
            saves: 200,
            comments: 40,
            ..Stats::default()
        };
        assert!(value_score(&kept, &c) > value_score(&clickbait, &c));
    }

    #[test]
    fn few_views_are_shrunk_toward_the_prior() {
        let c = ScoringConfig::default();
        let lucky = stats(3, 3, 0);
        let proven = stats(10_000, 3_000, 0);
        let unseen = stats(0, 0, 0);
        assert!(value_score(&proven, &c) > value_score(&lucky, &c));
        let prior = (c.prior_rate / c.value_scale).tanh();
        assert!((value_score(&unseen, &c) - prior).abs() < 1e-6);
    }

    #[test]
    fn hides_and_reports_push_value_negative() {
        let c = ScoringConfig::default();
        assert!(value_score(&stats(1000, 10, 50), &c) < 0.0);
        let reported = Stats {
            views: 1000,
            saves: 30,
            reports: 5,
            ..Stats::default()
        };
        let clean = Stats {
            views: 1000,
            saves: 30,
            ..Stats::default()
        };
        assert!(value_score(&reported, &c) < value_score(&clean, &c));
    }

    #[test]
    fn value_stays_in_range() {
        let c = ScoringConfig::default();
        for s in [
            stats(0, 0, 0),
            stats(1, 1_000_000, 0),
            stats(1, 0, 1_000_000),
        ] {
            let v = value_score(&s, &c);
            assert!((-1.0..=1.0).contains(&v), "{v}");
        }
    }

    #[test]
    fn many_reports_per_view_filter_a_post_and_a_few_do_not() {
        let c = ScoringConfig::default();
        let reported = |views, reports| Stats {
            views,
            reports,
            ..Stats::default()
        };
        assert!(reported_past_threshold(&reported(100, 5), &c));
        assert!(
            !reported_past_threshold(&reported(100, 4), &c),
            "too few reports"
        );
        assert!(
            !reported_past_threshold(&reported(1_000_000, 50), &c),
            "too few per view"
        );
        assert!(reported_past_threshold(&reported(1_000, 10), &c));
        assert!(!reported_past_threshold(&reported(0, 0), &c));
    }

    #[test]
    fn request_overrides_parse_and_apply_over_a_base() {
        let base = ScoringConfig {
            value_weight: 0.9,
            ..ScoringConfig::default()
        };
        let map = parse_overrides("freshness_weight: 0.5 ,similarity_weight:2").unwrap();
        let c = base.overridden(&map).unwrap();
        assert_eq!(
            (c.value_weight, c.freshness_weight, c.similarity_weight),
            (0.9, 0.5, 2.0)
        );
        assert_eq!(parse_overrides("").unwrap().len(), 0);
        // Integers stay integers, so that the policy's counts can be set; fractions are
        // floats; a weight takes either.
        let counts = parse_overrides("page_size:20,value_weight:0.5").unwrap();
        assert!(counts["page_size"].is_u64(), "{counts:?}");
        assert!(counts["value_weight"].is_f64(), "{counts:?}");
        let integral = parse_overrides("similarity_weight:2").unwrap();
        assert_eq!(base.overridden(&integral).unwrap().similarity_weight, 2.0);
        let field = |text: &str| match parse_overrides(text) {
            Ok(map) => base.overridden(&map).unwrap_err().field,
            Err(e) => e.field,
        };
        assert_eq!(field("value_weight"), "value_weight");
        assert_eq!(field("value_weight:high"), "value_weight");
        assert_eq!(field("value_weight:1,value_weight:2"), "value_weight");
        assert_eq!(field("popularity:1"), "popularity");
        assert_eq!(field("save_weight:-1"), "save_weight");
        assert_eq!(field("value_weight:inf"), "value_weight");
    }

    #[test]
    fn freshness_halves_every_half_life() {
        let c = ScoringConfig::default();
        let now = 1_000_000;
        let half_life = (c.freshness_half_life_hours * 3600.0) as i64;
        assert_eq!(freshness(now, now, &c), 1.0);
        assert!((freshness(now - half_life, now, &c) - 0.5).abs() < 1e-4);
        assert!((freshness(now - 2 * half_life, now, &c) - 0.25).abs() < 1e-4);
        // Clock skew: a post "from the future" is just fresh.
        assert_eq!(freshness(now + 100, now, &c), 1.0);
    }

    #[test]
    fn overrides_apply_key_by_key() {
        let overrides = serde_json::json!({"value_weight": 0.9, "hide_weight": 5});
        let c = ScoringConfig::with_overrides(overrides.as_object().unwrap()).unwrap();
        assert_eq!(c.value_weight, 0.9);
        assert_eq!(c.hide_weight, 5.0);
        assert_eq!(c.save_weight, ScoringConfig::default().save_weight);
    }

    #[test]
    fn unknown_override_key_is_an_error_naming_it() {
        let overrides = serde_json::json!({"save_wieght": 1.0});
        let err = ScoringConfig::with_overrides(overrides.as_object().unwrap()).unwrap_err();
        assert_eq!(err.field, "save_wieght");
        assert!(err.message.contains("unknown key"), "{err}");
    }

    #[test]
    fn out_of_range_and_non_numeric_overrides_are_errors() {
        for (body, field) in [
            (
                serde_json::json!({"freshness_half_life_hours": 0}),
                "freshness_half_life_hours",
            ),
            (serde_json::json!({"hide_weight": -1}), "hide_weight"),
            (serde_json::json!({"value_scale": "big"}), "value_scale"),
        ] {
            let err = ScoringConfig::with_overrides(body.as_object().unwrap()).unwrap_err();
            assert_eq!(err.field, field, "{err}");
        }
    }

    #[test]
    fn blend_is_linear_in_its_weights() {
        let c = ScoringConfig::default();
        let terms = PostTerms {
            value: 0.5,
            freshness: 1.0,
            clickbait: 0.4,
        };
        let expected = c.similarity_weight * 0.8 + c.value_weight * 0.5 + c.freshness_weight
            - c.clickbait_weight * 0.4;
        assert!((blend(0.8, &terms, &c) - expected).abs() < 1e-6);
    }

    #[test]
    fn clickbait_needs_both_a_low_keep_rate_and_many_views() {
        let c = ScoringConfig::default();
        let post = |views, saves, comments, likes| Stats {
            views,
            saves,
            comments,
            likes,
            ..Stats::default()
        };
        // Many views, few kept despite many likes: most of the penalty.
        let bait = clickbait(&post(100_000, 20, 10, 5_000), &c);
        assert!(bait > 0.9, "{bait}");
        // Kept at the bar or above: none.
        assert_eq!(clickbait(&post(100_000, 800, 200, 0), &c), 0.0);
        // Too few views to judge: little.
        assert!(clickbait(&post(20, 0, 0, 0), &c) < 0.03);
        assert_eq!(clickbait(&post(0, 0, 0, 0), &c), 0.0);
        // Monotone in the shortfall.
        assert!(clickbait(&post(10_000, 10, 0, 0), &c) > clickbait(&post(10_000, 50, 0, 0), &c));
    }
}
