//! Onboarded users: the languages and hashtags a user picked (`PUT /v1/users/{id}`), kept
//! apart from any model so that they outlive model reloads.
//!
//! A profile holds only what the user said. What a model makes of it (interest vectors from
//! the picked hashtags, language ids) is derived per request by the feed layer, which costs
//! a few dot products and stays right when the model changes.
//!
//! Profiles live in memory, bounded by a capacity: past it, new users are refused (existing
//! ones can still be updated) rather than old ones evicted, since an eviction would lose what
//! a user was told had been saved.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::snapshot::{MAX_TAG_BYTES, is_reader_lang, normalise_hashtag};

/// Most languages a profile may list.
pub const MAX_LANGS: usize = 8;
/// Most hashtags a profile may follow.
pub const MAX_FOLLOWS: usize = 50;

/// A bad profile: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProfileError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("the service holds {capacity} onboarded users, its limit; no new user can be added")]
    Full { capacity: usize },
}

impl ProfileError {
    fn invalid(field: impl Into<String>, message: impl Into<String>) -> ProfileError {
        ProfileError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The top-level field at fault (`langs`, `follows`), for `Invalid`.
    pub fn field(&self) -> Option<&str> {
        match self {
            ProfileError::Invalid { field, .. } => Some(field.split('[').next().unwrap_or(field)),
            ProfileError::Full { .. } => None,
        }
    }
}

/// A `PUT /v1/users/{id}` body, as sent.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileInput {
    pub langs: Vec<String>,
    #[serde(default)]
    pub follows: Vec<String>,
}

/// What an onboarded user told us, validated and normalised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// Language codes, lower case, without repeats, in the order given.
    pub langs: Vec<String>,
    /// Hashtags in normal form (as in snapshots), without repeats, in the order given.
    pub follows: Vec<String>,
}

impl Profile {
    /// Validates and normalises `input`: 1 to [`MAX_LANGS`] language codes (`en`, `zh`,
    /// `pt-br`: not `mixed`, which only posts can be), at most [`MAX_FOLLOWS`] hashtags, each
    /// non-empty and at most `MAX_TAG_BYTES` once normalised (`#Cats` is `cats`). Repeats are
    /// dropped.
    pub fn from_input(input: ProfileInput) -> Result<Profile, ProfileError> {
        if input.langs.is_empty() {
            return Err(ProfileError::invalid(
                "langs",
                "must list at least one language code, e.g. [\"en\"]",
            ));
        }
        if input.langs.len() > MAX_LANGS {
            return Err(ProfileError::invalid(
                "langs",
                format!("at most {MAX_LANGS} languages, got {}", input.langs.len()),
            ));
        }
        let mut langs: Vec<String> = Vec::with_capacity(input.langs.len());
        for (i, code) in input.langs.iter().enumerate() {
            if !is_reader_lang(code) {
                return Err(ProfileError::invalid(
                    format!("langs[{i}]"),
                    format!(
                        "not a language code: {code:?} (2-3 letters, then optional -subtags, e.g. \"en\", \"zh\", \"pt-br\")"
                    ),
                ));
            }
            let code = code.to_ascii_lowercase();
            if !langs.contains(&code) {
                langs.push(code);
            }
        }
        if input.follows.len() > MAX_FOLLOWS {
            return Err(ProfileError::invalid(
                "follows",
                format!(
                    "at most {MAX_FOLLOWS} hashtags, got {}",
                    input.follows.len()
                ),
            ));
        }
        let mut follows: Vec<String> = Vec::with_capacity(input.follows.len());
        for (i, raw) in input.follows.iter().enumerate() {
            let tag = normalise_hashtag(raw);
            let problem = if tag.is_empty() {
                Some("empty hashtag".to_string())
            } else if tag.len() > MAX_TAG_BYTES {
                Some(format!(
                    "hashtag is {} bytes, longer than the {MAX_TAG_BYTES}-byte limit",
                    tag.len()
                ))
            } else if tag.chars().any(|c| c.is_whitespace() || c.is_control()) {
                Some(format!(
                    "hashtag {raw:?} contains whitespace or control characters"
                ))
            } else {
                None
            };
            if let Some(message) = problem {
                return Err(ProfileError::invalid(format!("follows[{i}]"), message));
            }
            if !follows.contains(&tag) {
                follows.push(tag);
            }
        }
        Ok(Profile { langs, follows })
    }
}

/// Whether a `put` added a user or replaced one's profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    Created,
    Updated,
}

/// Every onboarded user's profile, shared by all requests.
pub struct Profiles {
    by_user: RwLock<HashMap<String, Arc<Profile>>>,
    capacity: usize,
}

impl Profiles {
    pub fn new(capacity: usize) -> Profiles {
        Profiles {
            by_user: RwLock::new(HashMap::new()),
            capacity,
        }
    }

    pub fn get(&self, user_id: &str) -> Option<Arc<Profile>> {
        self.read().get(user_id).cloned()
    }

    /// Stores `profile` for `user_id`, replacing any previous one. A new user past the
    /// capacity is refused, and nothing changes.
    pub fn put(&self, user_id: &str, profile: Profile) -> Result<Stored, ProfileError> {
        let mut map = self.by_user.write().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = map.get_mut(user_id) {
            *slot = Arc::new(profile);
            return Ok(Stored::Updated);
        }
        if map.len() >= self.capacity {
            return Err(ProfileError::Full {
                capacity: self.capacity,
            });
        }
        map.insert(user_id.to_string(), Arc::new(profile));
        Ok(Stored::Created)
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether `put` for `user_id` would be refused for capacity now.
    pub fn is_full_for(&self, user_id: &str) -> bool {
        let map = self.read();
        !map.contains_key(user_id) && map.len() >= self.capacity
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Profile>>> {
        // A writer that panicked left the map whole (each write is one insert or assignment).
        self.by_user.read().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(langs: &[&str], follows: &[&str]) -> ProfileInput {
        ProfileInput {
            langs: langs.iter().map(|s| s.to_string()).collect(),
            follows: follows.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn field_of(result: Result<Profile, ProfileError>) -> String {
        match result {
            Err(ProfileError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn a_profile_is_normalised_and_keeps_the_order_given() {
        let p = Profile::from_input(input(&["EN", "zh", "en"], &["#Cats", "travel", "ＣＡＴＳ"]))
            .unwrap();
        assert_eq!(p.langs, ["en", "zh"]);
        assert_eq!(p.follows, ["cats", "travel"]);
    }

    #[test]
    fn each_bad_field_is_named() {
        assert_eq!(field_of(Profile::from_input(input(&[], &[]))), "langs");
        assert_eq!(
            field_of(Profile::from_input(input(&["en", "english"], &[]))),
            "langs[1]"
        );
        assert_eq!(
            field_of(Profile::from_input(input(&["mixed"], &[]))),
            "langs[0]"
        );
        assert_eq!(
            field_of(Profile::from_input(input(&["en"; MAX_LANGS + 1], &[]))),
            "langs"
        );
        assert_eq!(
            field_of(Profile::from_input(input(&["en"], &["cats", " # "]))),
            "follows[1]"
        );
        let long = "a".repeat(MAX_TAG_BYTES + 1);
        assert_eq!(
            field_of(Profile::from_input(input(&["en"], &[&long]))),
            "follows[0]"
        );
        assert_eq!(
            field_of(Profile::from_input(input(&["en"], &["new york"]))),
            "follows[0]"
        );
        assert_eq!(
            field_of(Profile::from_input(input(&["en"], &["x"; MAX_FOLLOWS + 1]))),
            "follows"
        );
        // The longest tag accepted is exactly the limit.
        let longest = "a".repeat(MAX_TAG_BYTES);
        assert!(Profile::from_input(input(&["en"], &[&longest])).is_ok());
    }

    #[test]
    fn the_store_refuses_new_users_past_its_capacity_but_updates_existing_ones() {
        let profiles = Profiles::new(2);
        let p = |tag: &str| Profile::from_input(input(&["en"], &[tag])).unwrap();
        assert_eq!(profiles.put("a", p("cats")), Ok(Stored::Created));
        assert_eq!(profiles.put("b", p("cats")), Ok(Stored::Created));
        assert_eq!(
            profiles.put("c", p("cats")),
            Err(ProfileError::Full { capacity: 2 })
        );
        assert_eq!(profiles.put("a", p("travel")), Ok(Stored::Updated));
        assert_eq!(profiles.get("a").unwrap().follows, ["travel"]);
        assert!(profiles.get("c").is_none());
        assert_eq!(profiles.len(), 2);
    }
}
