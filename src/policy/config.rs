//! The selector's knobs, their defaults and why.

use serde::{Deserialize, Serialize};

use super::PolicyError;

/// Knobs of the selector ([`super::arrange`]). The rules they drive are in the module docs of
/// `policy`; each field's docs give its default and the reasoning for it. Unknown keys are
/// errors, missing ones take their defaults, and [`PolicyConfig::validate`] checks ranges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Positions per policy page, over which every cap counts. Default 20: the feed's default
    /// request limit, so a default request sees exactly one policy page. It is a property of
    /// the arrangement, not of a request: a request for another limit cuts the same sequence
    /// differently, and the caps still hold per 20 positions.
    pub page_size: usize,
    /// An ad less similar to the user than this is never shown. Default 0.3: under cosine,
    /// unrelated embeddings agree by about `1/√dim` by chance (0.125 at 64 dimensions), so 0.3
    /// asks for a real topical match; an ad that is not about what the user reads costs their
    /// attention and earns little.
    pub ad_min_relevance: f32,
    /// No ad in the feed's first positions: ads may start once this many organic posts are
    /// placed. Default 3: the first screen opens with what the user came for.
    pub first_ad_position: usize,
    /// Organic posts required between consecutive ads (at least 1, so ads are never
    /// adjacent). Default 10: the promise of at most one ad per ten posts, over any stretch of
    /// the feed.
    pub organic_per_ad: usize,
    /// Sponsored posts (creators' brand endorsements) per page. Default 1: they are organic
    /// and may be good, but they are paid, and a low-ad feed should not fill up with them by
    /// the back door.
    pub max_sponsored_per_page: usize,
    /// Posts offered for exploration (new posts of small creators shown to their nearest
    /// users) per page. Default 1, 5% of a 20-post page: enough for a new creator to be seen
    /// and judged by real signals, little enough that the page stays the user's.
    pub max_exploring_per_page: usize,
    /// Posts of one author per page (at least 1). Default 2: a prolific author cannot take over
    /// a page, but one the user clearly prefers may appear twice.
    pub max_per_author_per_page: usize,
    /// Score factor, in (0, 1], for each earlier post of the same author on the page. Default
    /// 0.7: a second post by an author must be clearly (about 40%) better than the best post
    /// by someone else to come first.
    pub author_repeat_decay: f32,
    /// Two posts at least this similar are never on the same page. Default 0.95: reposts and
    /// near-copies embed almost identically, while distinct posts on one topic rarely come
    /// this close. Under cosine, a value above 1 turns the rule off.
    pub near_duplicate_similarity: f32,
    /// Score factor, in (0, 1], for each appearance on the page of one of the candidate's
    /// hashtags. Default 0.9: mild, since users often follow one topic closely; it spreads
    /// topics across a page without forbidding a second post on one.
    pub hashtag_repeat_decay: f32,
    /// Largest share of a page, in [0, 1], for posts in a language the user neither lists
    /// nor engages with (at least one post when above 0). Default 0.2, 4 posts in 20: enough
    /// for each community to discover the other's best posts, few enough that the page stays
    /// readable.
    pub foreign_language_share: f32,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            page_size: 20,
            ad_min_relevance: 0.3,
            first_ad_position: 3,
            organic_per_ad: 10,
            max_sponsored_per_page: 1,
            max_exploring_per_page: 1,
            max_per_author_per_page: 2,
            author_repeat_decay: 0.7,
            near_duplicate_similarity: 0.95,
            hashtag_repeat_decay: 0.9,
            foreign_language_share: 0.2,
        }
    }
}

impl PolicyConfig {
    /// The knobs' names, as written in configuration.
    pub const KEYS: [&'static str; 11] = [
        "page_size",
        "ad_min_relevance",
        "first_ad_position",
        "organic_per_ad",
        "max_sponsored_per_page",
        "max_exploring_per_page",
        "max_per_author_per_page",
        "author_repeat_decay",
        "near_duplicate_similarity",
        "hashtag_repeat_decay",
        "foreign_language_share",
    ];

    /// This configuration with `overrides` applied key by key, then validated. Every key must
    /// be one of [`PolicyConfig::KEYS`]; a value of the wrong type (a fraction for a count, a
    /// string) is an error naming its key.
    pub fn overridden(
        &self,
        overrides: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<PolicyConfig, PolicyError> {
        let mut merged = match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => unreachable!("PolicyConfig serialises to a JSON object"),
        };
        for (key, value) in overrides {
            let Some(&field) = Self::KEYS.iter().find(|&&k| k == key) else {
                return Err(PolicyError::Config {
                    field: "?",
                    message: format!("unknown key {key:?}"),
                });
            };
            // Each key on its own first, so a type error names its key.
            let mut single = merged.clone();
            single.insert(key.clone(), value.clone());
            if serde_json::from_value::<PolicyConfig>(single.into()).is_err() {
                let wanted = if value.is_number() {
                    "a whole number, at least 0"
                } else {
                    "a number"
                };
                return Err(PolicyError::Config {
                    field,
                    message: format!("must be {wanted}, got {value}"),
                });
            }
            merged.insert(key.clone(), value.clone());
        }
        let config: PolicyConfig =
            serde_json::from_value(merged.into()).expect("every key was checked on its own");
        config.validate()?;
        Ok(config)
    }

    /// Checks every knob's range; the error names the first field out of range.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let invalid =
            |field: &'static str, message: String| Err(PolicyError::Config { field, message });
        for (field, value) in [
            ("page_size", self.page_size),
            ("organic_per_ad", self.organic_per_ad),
            ("max_per_author_per_page", self.max_per_author_per_page),
        ] {
            if value == 0 {
                return invalid(field, "must be at least 1, got 0".into());
            }
        }
        for (field, value) in [
            ("ad_min_relevance", self.ad_min_relevance),
            ("near_duplicate_similarity", self.near_duplicate_similarity),
        ] {
            if !value.is_finite() {
                return invalid(field, format!("must be finite, got {value}"));
            }
        }
        for (field, value) in [
            ("author_repeat_decay", self.author_repeat_decay),
            ("hashtag_repeat_decay", self.hashtag_repeat_decay),
        ] {
            // Written so that NaN fails too.
            if !(value > 0.0 && value <= 1.0) {
                return invalid(
                    field,
                    format!("must be greater than 0 and at most 1, got {value}"),
                );
            }
        }
        let share = self.foreign_language_share;
        if !(0.0..=1.0).contains(&share) {
            return invalid(
                "foreign_language_share",
                format!("must be from 0 to 1, got {share}"),
            );
        }
        Ok(())
    }

    /// Positions a page gives to foreign-language posts: `⌊share · page_size⌋`, at least 1
    /// when the share is above 0 (see the module docs).
    pub fn foreign_cap(&self) -> usize {
        if self.foreign_language_share <= 0.0 {
            return 0;
        }
        // In f64 with a little slack, so that 0.2 · 20 is 4 and not 3.99...
        let share = f64::from(self.foreign_language_share) * self.page_size as f64;
        ((share + 1e-6).floor() as usize).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_serde_fills_missing_keys() {
        assert_eq!(PolicyConfig::default().validate(), Ok(()));
        let parsed: PolicyConfig = serde_json::from_str(r#"{"organic_per_ad": 12}"#).unwrap();
        assert_eq!(
            parsed,
            PolicyConfig {
                organic_per_ad: 12,
                ..PolicyConfig::default()
            }
        );
        let round_trip: PolicyConfig =
            serde_json::from_value(serde_json::to_value(PolicyConfig::default()).unwrap()).unwrap();
        assert_eq!(round_trip, PolicyConfig::default());
    }

    #[test]
    fn keys_are_the_serialised_field_names() {
        let value = serde_json::to_value(PolicyConfig::default()).unwrap();
        let mut names: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        let mut keys = PolicyConfig::KEYS.to_vec();
        names.sort_unstable();
        keys.sort_unstable();
        assert_eq!(names, keys);
    }

    #[test]
    fn overrides_apply_key_by_key_and_name_a_bad_key() {
        let map = |v: serde_json::Value| v.as_object().unwrap().clone();
        let base = PolicyConfig::default();
        let c = base
            .overridden(&map(
                serde_json::json!({"organic_per_ad": 15, "ad_min_relevance": 0.5}),
            ))
            .unwrap();
        assert_eq!((c.organic_per_ad, c.ad_min_relevance), (15, 0.5));
        assert_eq!(c.page_size, base.page_size);
        let field = |v: serde_json::Value| match base.overridden(&map(v)).unwrap_err() {
            PolicyError::Config { field, .. } => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(serde_json::json!({"page_size": 2.5})), "page_size");
        assert_eq!(field(serde_json::json!({"page_size": -1})), "page_size");
        assert_eq!(
            field(serde_json::json!({"organic_per_ad": 0})),
            "organic_per_ad"
        );
        assert_eq!(
            field(serde_json::json!({"foreign_language_share": "lots"})),
            "foreign_language_share"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = serde_json::from_str::<PolicyConfig>(r#"{"organic_per_add": 12}"#).unwrap_err();
        assert!(err.to_string().contains("organic_per_add"), "{err}");
        let err = toml::from_str::<PolicyConfig>("max_sponsored = 2").unwrap_err();
        assert!(err.to_string().contains("max_sponsored"), "{err}");
    }

    #[test]
    fn each_out_of_range_knob_is_named() {
        let cases: Vec<(&str, PolicyConfig)> = vec![
            (
                "page_size",
                PolicyConfig {
                    page_size: 0,
                    ..PolicyConfig::default()
                },
            ),
            (
                "organic_per_ad",
                PolicyConfig {
                    organic_per_ad: 0,
                    ..PolicyConfig::default()
                },
            ),
            (
                "max_per_author_per_page",
                PolicyConfig {
                    max_per_author_per_page: 0,
                    ..PolicyConfig::default()
                },
            ),
            (
                "ad_min_relevance",
                PolicyConfig {
                    ad_min_relevance: f32::NAN,
                    ..PolicyConfig::default()
                },
            ),
            (
                "near_duplicate_similarity",
                PolicyConfig {
                    near_duplicate_similarity: f32::INFINITY,
                    ..PolicyConfig::default()
                },
            ),
            (
                "author_repeat_decay",
                PolicyConfig {
                    author_repeat_decay: 0.0,
                    ..PolicyConfig::default()
                },
            ),
            (
                "author_repeat_decay",
                PolicyConfig {
                    author_repeat_decay: 1.5,
                    ..PolicyConfig::default()
                },
            ),
            (
                "hashtag_repeat_decay",
                PolicyConfig {
                    hashtag_repeat_decay: f32::NAN,
                    ..PolicyConfig::default()
                },
            ),
            (
                "foreign_language_share",
                PolicyConfig {
                    foreign_language_share: -0.1,
                    ..PolicyConfig::default()
                },
            ),
            (
                "foreign_language_share",
                PolicyConfig {
                    foreign_language_share: 1.01,
                    ..PolicyConfig::default()
                },
            ),
        ];
        for (field, config) in cases {
            match config.validate() {
                Err(PolicyError::Config { field: got, .. }) => assert_eq!(got, field),
                other => panic!("{field}: expected an error naming it, got {other:?}"),
            }
        }
        let err = PolicyConfig {
            page_size: 0,
            ..PolicyConfig::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "policy.page_size: must be at least 1, got 0"
        );
    }

    #[test]
    fn foreign_cap_is_the_share_of_a_page_rounded_down_but_at_least_one() {
        let cap = |share: f32, page_size: usize| {
            PolicyConfig {
                foreign_language_share: share,
                page_size,
                ..PolicyConfig::default()
            }
            .foreign_cap()
        };
        assert_eq!(cap(0.2, 20), 4);
        assert_eq!(cap(0.7, 10), 7);
        assert_eq!(cap(0.25, 10), 2);
        assert_eq!(cap(0.2, 3), 1);
        assert_eq!(cap(0.0, 20), 0);
        assert_eq!(cap(1.0, 7), 7);
    }
}
