//! Parsing and validating JSONL records (posts, users, hashtags).

/// Longest `id` / `author` accepted, in bytes.
pub const MAX_ID_BYTES: usize = 64;
/// Longest hashtag accepted, in bytes.
pub const MAX_TAG_BYTES: usize = 128;

/// `true` for a language code (`en`, `zh`, `zh-hant`, ...) or `mixed`.
pub fn is_valid_lang(lang: &str) -> bool {
    let _ = lang;
    todo!()
}

/// `true` for a hashtag in normalised form: non-empty, lower case, no leading `#`, NFKC.
pub fn is_normalised_hashtag(tag: &str) -> bool {
    let _ = tag;
    todo!()
}
