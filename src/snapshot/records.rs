//! Parsing and validating JSONL records (posts, users, hashtags).
//!
//! Each line is parsed with typed serde structs (fast; a line that fails is parsed again with
//! `serde_path_to_error` to name the field at fault), then checked for what types cannot
//! express (lengths, language codes, hashtag normal form, uniqueness). Keys are strict everywhere: an unknown key, such as a
//! misspelt `"savs"` in `stats`, is an error rather than being ignored while the real field
//! silently takes its default.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, Visitor};
use unicode_normalization::{IsNormalized, UnicodeNormalization};

use super::error::Issues;
use super::{Hashtag, Post, PostKind, Stats, User};

/// Longest `id` / `author` accepted, in bytes.
pub const MAX_ID_BYTES: usize = 64;
/// Longest hashtag accepted, in bytes.
pub const MAX_TAG_BYTES: usize = 128;
/// Longest language code accepted, in bytes (the length RFC 5646 asks implementations to
/// support).
pub const MAX_LANG_BYTES: usize = 35;
/// Latest `created_at` accepted (9999-12-31T23:59:59Z). Larger values are almost always
/// milliseconds written where seconds were meant.
pub const MAX_UNIX_SECONDS: i64 = 253_402_300_799;

/// The language code of bilingual posts: a post may have it, a reader may not.
pub const MIXED_LANG: &str = "mixed";

/// `true` for a language code a user can read (`en`, `zh`, `zh-hant`, `pt-BR`, ...): valid
/// and not [`MIXED_LANG`], in any case.
pub fn is_reader_lang(lang: &str) -> bool {
    is_valid_lang(lang) && !lang.eq_ignore_ascii_case(MIXED_LANG)
}

/// `true` for a language code (`en`, `zh`, `zh-hant`, `pt-BR`, ...) or `mixed`, in any case:
/// 2–3 ASCII letters, then any number of `-` subtags of 1–8 ASCII letters or digits, at most
/// [`MAX_LANG_BYTES`] in all. The loader stores codes in lower case.
pub fn is_valid_lang(lang: &str) -> bool {
    if lang.len() > MAX_LANG_BYTES {
        return false;
    }
    if lang.eq_ignore_ascii_case(MIXED_LANG) {
        return true;
    }
    let mut parts = lang.split('-');
    let primary = parts.next().unwrap_or("");
    (2..=3).contains(&primary.len())
        && primary.bytes().all(|b| b.is_ascii_alphabetic())
        && parts.all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// `true` for a hashtag in normalised form: non-empty, at most [`MAX_TAG_BYTES`], lower case,
/// no leading `#`, Unicode NFKC, no whitespace or control characters. In other words,
/// [`normalise_hashtag`] leaves it unchanged.
pub fn is_normalised_hashtag(tag: &str) -> bool {
    hashtag_problem(tag).is_none()
}

/// The normalised form of a hashtag as a user might type it (`" #Cats"` → `"cats"`):
/// NFKC, surrounding whitespace and leading `#`s removed, lower case. The result may still be
/// unacceptable (empty, too long, inner whitespace); check it with [`is_normalised_hashtag`].
pub fn normalise_hashtag(tag: &str) -> String {
    // NFKC first so that full-width `＃` becomes `#` before it is stripped; NFKC again at the
    // end because lower-casing can leave a string that is not in NFKC.
    let nfkc: String = tag.nfkc().collect();
    let bare = nfkc.trim().trim_start_matches('#');
    bare.to_lowercase().nfkc().collect()
}

/// Why `tag` is not a normalised hashtag, or `None` if it is one.
fn hashtag_problem(tag: &str) -> Option<String> {
    if tag.is_empty() {
        return Some("empty hashtag".into());
    }
    if tag.len() > MAX_TAG_BYTES {
        return Some(format!(
            "hashtag is {} bytes, longer than the {MAX_TAG_BYTES}-byte limit",
            tag.len()
        ));
    }
    if tag.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some(format!(
            "hashtag {tag:?} contains whitespace or control characters"
        ));
    }
    if plainly_normalised(tag) {
        return None;
    }
    let normal = normalise_hashtag(tag);
    if normal != tag {
        return Some(format!(
            "hashtag `{tag}` is not in normalised form (lower case, no leading `#`, Unicode NFKC); \
             write `{normal}`"
        ));
    }
    None
}

/// A fast sufficient test for `normalise_hashtag(tag) == tag` (given no whitespace or control
/// characters), so that the common case allocates nothing: no leading `#`, every character
/// its own lower case, and NFKC (always so for ASCII).
fn plainly_normalised(tag: &str) -> bool {
    !tag.starts_with('#')
        && if tag.is_ascii() {
            !tag.bytes().any(|b| b.is_ascii_uppercase())
        } else {
            tag.chars().all(|c| {
                let mut lower = c.to_lowercase();
                lower.next() == Some(c) && lower.next().is_none()
            }) && unicode_normalization::is_nfkc_quick(tag.chars()) == IsNormalized::Yes
        }
}

fn id_problem(value: &str) -> Option<String> {
    if value.is_empty() {
        Some("must not be empty".into())
    } else if value.len() > MAX_ID_BYTES {
        Some(format!(
            "is {} bytes, longer than the {MAX_ID_BYTES}-byte limit",
            value.len()
        ))
    } else {
        None
    }
}

fn lang_problem(lang: &str) -> Option<String> {
    if is_valid_lang(lang) {
        return None;
    }
    let hint = if lang.contains('_') {
        " (use `-` between subtags, not `_`)"
    } else {
        ""
    };
    Some(format!(
        "invalid language code {lang:?}{hint}: expected a code such as `en`, `zh` or `pt-br` \
         (2-3 letters, optional `-` subtags of 1-8 letters or digits), or `mixed`"
    ))
}

/// The records of one JSONL file. `lines[i]` is the 1-based line `records[i]` came from
/// (lines that failed to parse have no record).
pub(crate) struct Parsed<T> {
    pub records: Vec<T>,
    pub lines: Vec<usize>,
    /// Number of lines in the file, blank and broken ones included: it must equal the number
    /// of rows in the matching `.npy`.
    pub line_count: usize,
}

/// Splits `bytes` into lines. A final newline ends the last line rather than starting an
/// empty one; any other empty line counts (and is reported as blank).
fn lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let empty = bytes.is_empty();
    body.split(|&b| b == b'\n').filter(move |_| !empty)
}

/// Files smaller than this are parsed on one thread.
const PARALLEL_MIN_BYTES: usize = 1 << 20;

/// Parses every line of `file` as `R`, turns it into `T` with `check`, and reports each defect.
/// Keeps going after a bad line so that one run lists as many problems as possible. Large
/// files are parsed in two halves on two threads; the result is the same as in one pass.
fn parse_jsonl<R, T>(
    file: &str,
    bytes: &[u8],
    issues: &mut Issues,
    check: impl Fn(R, &mut LineIssues<'_>) -> T + Sync,
) -> Parsed<T>
where
    R: DeserializeOwned,
    T: Send,
{
    // Asked only for a large file: the answer reads cgroup files, which would cost more than
    // parsing one line (a post being published).
    let parallel = bytes.len() >= PARALLEL_MIN_BYTES
        && std::thread::available_parallelism().map_or(1, |n| n.get()) > 1;
    let half = bytes.len() / 2;
    // Split just after a newline, so that both halves hold whole lines.
    let split = parallel
        .then(|| bytes[half..].iter().position(|&b| b == b'\n'))
        .flatten()
        .map(|i| half + i + 1);
    let Some(split) = split else {
        let capacity = count_newlines(bytes) + 1;
        return parse_chunk(file, bytes, 1, capacity, issues, &check);
    };
    let (head, tail) = bytes.split_at(split);
    let head_lines = count_newlines(head);
    let mut tail_issues = Issues::default();
    let (mut parsed, tail_parsed) = std::thread::scope(|s| {
        let tail = s.spawn(|| {
            let capacity = count_newlines(tail) + 1;
            parse_chunk(
                file,
                tail,
                head_lines + 1,
                capacity,
                &mut tail_issues,
                &check,
            )
        });
        // Room for the tail's records too (about as many: the split is at half the bytes),
        // so that appending them does not move the head's.
        let capacity = 2 * head_lines + 16;
        let head = parse_chunk(file, head, 1, capacity, issues, &check);
        let tail = tail
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (head, tail)
    });
    issues.extend(tail_issues);
    parsed.records.extend(tail_parsed.records);
    parsed.lines.extend(tail_parsed.lines);
    parsed.line_count = head_lines + tail_parsed.line_count;
    parsed
}

fn count_newlines(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'\n').count()
}

/// Parses the lines of `chunk`, the first of which is line `first_line` of `file`, into
/// vectors with room for `capacity` records.
fn parse_chunk<R, T>(
    file: &str,
    chunk: &[u8],
    first_line: usize,
    capacity: usize,
    issues: &mut Issues,
    check: &impl Fn(R, &mut LineIssues<'_>) -> T,
) -> Parsed<T>
where
    R: DeserializeOwned,
{
    let mut parsed = Parsed {
        records: Vec::with_capacity(capacity),
        lines: Vec::with_capacity(capacity),
        line_count: 0,
    };
    for (i, line) in lines(chunk).enumerate() {
        let line_no = first_line + i;
        parsed.line_count = i + 1;
        if issues.is_full() {
            // Keep counting lines (cheap) so the row-count check stays meaningful.
            continue;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            issues.add(
                file,
                Some(line_no),
                None,
                "blank line: every line must describe one row of the matching .npy",
            );
            continue;
        }
        match parse_line::<R>(line) {
            Ok(raw) => {
                let mut line_issues = LineIssues {
                    file,
                    line: line_no,
                    issues,
                };
                parsed.records.push(check(raw, &mut line_issues));
                parsed.lines.push(line_no);
            }
            Err((field, message)) => {
                let message = if line_no == 1 && line.starts_with(b"\xEF\xBB\xBF") {
                    "the file starts with a UTF-8 byte-order mark; write it without one".into()
                } else {
                    message
                };
                issues.add(file, Some(line_no), field.as_deref(), message);
            }
        }
    }
    parsed
}

/// Issues of one JSONL line.
struct LineIssues<'a> {
    file: &'a str,
    line: usize,
    issues: &'a mut Issues,
}

impl LineIssues<'_> {
    fn add(&mut self, field: &str, message: impl Into<String>) {
        self.issues
            .add(self.file, Some(self.line), Some(field), message);
    }

    fn check_id(&mut self, field: &str, value: &str) {
        if let Some(problem) = id_problem(value) {
            self.add(field, problem);
        }
    }

    fn check_lang(&mut self, field: &str, lang: &str) {
        if let Some(problem) = lang_problem(lang) {
            self.add(field, problem);
        }
    }

    /// Checks a list of hashtags: each normalised, none repeated.
    fn check_hashtags(&mut self, field: &str, tags: &[String]) {
        for (i, tag) in tags.iter().enumerate() {
            if let Some(problem) = hashtag_problem(tag) {
                self.add(&format!("{field}[{i}]"), problem);
            } else if let Some(first) = tags[..i].iter().position(|t| t == tag) {
                self.add(
                    &format!("{field}[{i}]"),
                    format!("duplicate hashtag `{tag}` (also at {field}[{first}])"),
                );
            }
        }
    }
}

/// Parses one line, returning the field at fault and a readable message on error.
fn parse_line<R: DeserializeOwned>(line: &[u8]) -> Result<R, (Option<String>, String)> {
    // Tracking the path costs time on every line; only a failed line is parsed again with it.
    let mut de = serde_json::Deserializer::from_slice(line);
    if let Ok(value) = R::deserialize(MapOnly(&mut de))
        && de.end().is_ok()
    {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(line);
    let value = serde_path_to_error::deserialize(MapOnly(&mut de)).map_err(|e| {
        let path = e.path().to_string();
        describe_json_error(&path, e.inner())
    })?;
    de.end().map_err(|e| describe_json_error(".", &e))?;
    Ok(value)
}

/// Turns a serde_json error at `path` into `(field, message)`, rewording serde's generic
/// messages for the common cases.
pub(crate) fn describe_json_error(path: &str, err: &serde_json::Error) -> (Option<String>, String) {
    let full = err.to_string();
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    let message = full.strip_suffix(&suffix).unwrap_or(&full);
    if err.is_syntax() || err.is_eof() {
        return (
            None,
            format!("malformed JSON: {message} (column {})", err.column()),
        );
    }
    let join = |key: &str| {
        if path == "." {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    let quoted = |prefix: &str| {
        message
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('`').next())
            .map(str::to_string)
    };
    if let Some(key) = quoted("missing field `") {
        return (Some(join(&key)), "required field is missing".into());
    }
    if let Some(key) = quoted("duplicate field `") {
        return (Some(join(&key)), "key appears more than once".into());
    }
    if let Some(key) = quoted("unknown field `") {
        let expected = message
            .split_once(", expected ")
            .map(|(_, e)| format!(", expected {}", e.replace('`', "")))
            .unwrap_or_default();
        // The tracked path may already end with the unknown key.
        let field = if path == key || path.ends_with(&format!(".{key}")) {
            path.to_string()
        } else {
            join(&key)
        };
        return (
            Some(field),
            format!(
                "unknown key `{key}`{expected} (keys are strict so that a typo cannot \
                 silently become a default)"
            ),
        );
    }
    let field = (path != ".").then(|| path.to_string());
    (field, message.to_string())
}

/// A counter in `stats`: a non-negative JSON integer.
#[derive(Debug, Default, Clone, Copy)]
struct Count(u64);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a non-negative integer")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Count, E> {
                Ok(Count(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Count, E> {
                u64::try_from(v)
                    .map(Count)
                    .map_err(|_| E::custom(format!("must be a non-negative integer, got {v}")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Count, E> {
                Err(E::custom(format!(
                    "must be a non-negative integer, got {v:?}"
                )))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Count, E> {
                Err(E::custom(format!(
                    "must be a non-negative integer, got the string {v:?}"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

/// `created_at` of records: integer Unix seconds in `0..=MAX_UNIX_SECONDS`.
#[derive(Debug, Clone, Copy)]
struct UnixSeconds(i64);

impl<'de> Deserialize<'de> for UnixSeconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        const EXPECTED: &str = "an integer number of Unix seconds";
        impl<'de> Visitor<'de> for V {
            type Value = UnixSeconds;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(EXPECTED)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<UnixSeconds, E> {
                match i64::try_from(v) {
                    Ok(v) => self.visit_i64(v),
                    Err(_) => Err(E::custom(format!("must be Unix seconds, got {v}"))),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<UnixSeconds, E> {
                if (0..=MAX_UNIX_SECONDS).contains(&v) {
                    return Ok(UnixSeconds(v));
                }
                let hint = if v > MAX_UNIX_SECONDS && v / 1000 <= MAX_UNIX_SECONDS {
                    " (this looks like milliseconds)"
                } else {
                    ""
                };
                Err(E::custom(format!(
                    "must be Unix seconds between 0 and {MAX_UNIX_SECONDS} \
                     (9999-12-31), got {v}{hint}"
                )))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<UnixSeconds, E> {
                Err(E::custom(format!("must be {EXPECTED}, got {v:?}")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<UnixSeconds, E> {
                Err(E::custom(format!(
                    "must be {EXPECTED}, got the string {v:?}"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for PostKindField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PostKindField;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("one of organic, ad, sponsored")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PostKindField, E> {
                match v {
                    "organic" => Ok(PostKindField(PostKind::Organic)),
                    "ad" => Ok(PostKindField(PostKind::Ad)),
                    "sponsored" => Ok(PostKindField(PostKind::Sponsored)),
                    _ => Err(E::custom(format!(
                        "unknown kind `{v}`, expected one of organic, ad, sponsored"
                    ))),
                }
            }
        }
        d.deserialize_str(V)
    }
}

/// `kind` of a post, with the contract's wording on error.
struct PostKindField(PostKind);

/// `display` of a hashtag: kept as a list of pairs so that repeated keys are caught.
#[derive(Default)]
struct DisplayField(Vec<(String, String)>);

impl<'de> Deserialize<'de> for DisplayField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = DisplayField;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object mapping language codes to display strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<DisplayField, A::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = map.next_entry::<String, String>()? {
                    pairs.push(pair);
                }
                Ok(DisplayField(pairs))
            }
        }
        d.deserialize_map(V)
    }
}

/// Presents a deserializer to derived structs as one that only holds a map: serde's derive
/// also accepts a JSON array of the fields in order, which would let positional data
/// through and defeat the strict-keys rule.
struct MapOnly<D>(D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for MapOnly<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// `stats` of a post: an object only (see [`MapOnly`]).
#[derive(Default)]
struct StatsField(RawStats);

impl<'de> Deserialize<'de> for StatsField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        RawStats::deserialize(MapOnly(d)).map(StatsField)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a JSON object of counters")]
struct RawStats {
    #[serde(default)]
    views: Count,
    #[serde(default)]
    likes: Count,
    #[serde(default)]
    saves: Count,
    #[serde(default)]
    comments: Count,
    #[serde(default)]
    shares: Count,
    #[serde(default)]
    hides: Count,
    #[serde(default)]
    reports: Count,
}

impl Default for RawStats {
    fn default() -> Self {
        RawStats {
            views: Count(0),
            likes: Count(0),
            saves: Count(0),
            comments: Count(0),
            shares: Count(0),
            hides: Count(0),
            reports: Count(0),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a JSON object describing a post")]
struct RawPost {
    id: String,
    author: String,
    lang: String,
    #[serde(default)]
    hashtags: Vec<String>,
    kind: PostKindField,
    created_at: UnixSeconds,
    #[serde(default)]
    stats: StatsField,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a JSON object describing a user")]
struct RawUser {
    id: String,
    #[serde(default)]
    langs: Vec<String>,
    created_at: UnixSeconds,
    #[serde(default)]
    follows: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a JSON object describing a hashtag")]
struct RawHashtag {
    tag: String,
    #[serde(default)]
    display: DisplayField,
}

/// Reports every repeated key; `key_of` gives the value to compare and `what` names it.
fn check_unique<T>(
    file: &str,
    parsed: &Parsed<T>,
    field: &str,
    what: &str,
    issues: &mut Issues,
    key_of: impl Fn(&T) -> &str,
) {
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(parsed.records.len());
    for (record, &line) in parsed.records.iter().zip(&parsed.lines) {
        let key = key_of(record);
        match seen.entry(key) {
            Entry::Vacant(e) => {
                e.insert(line);
            }
            Entry::Occupied(e) => issues.add(
                file,
                Some(line),
                Some(field),
                format!("duplicate {what} `{key}` (first on line {})", e.get()),
            ),
        }
    }
}

pub(crate) fn parse_posts(file: &str, bytes: &[u8], issues: &mut Issues) -> Parsed<Post> {
    let parsed = parse_jsonl(file, bytes, issues, |raw: RawPost, li| {
        li.check_id("id", &raw.id);
        li.check_id("author", &raw.author);
        li.check_lang("lang", &raw.lang);
        li.check_hashtags("hashtags", &raw.hashtags);
        let s = raw.stats.0;
        Post {
            id: raw.id,
            author: raw.author,
            lang: raw.lang.to_ascii_lowercase(),
            hashtags: raw.hashtags,
            kind: raw.kind.0,
            created_at: raw.created_at.0,
            stats: Stats {
                views: s.views.0,
                likes: s.likes.0,
                saves: s.saves.0,
                comments: s.comments.0,
                shares: s.shares.0,
                hides: s.hides.0,
                reports: s.reports.0,
            },
        }
    });
    check_unique(file, &parsed, "id", "post id", issues, |p| &p.id);
    parsed
}

pub(crate) fn parse_users(file: &str, bytes: &[u8], issues: &mut Issues) -> Parsed<User> {
    let parsed = parse_jsonl(file, bytes, issues, |raw: RawUser, li| {
        li.check_id("id", &raw.id);
        for (i, lang) in raw.langs.iter().enumerate() {
            li.check_lang(&format!("langs[{i}]"), lang);
        }
        li.check_hashtags("follows", &raw.follows);
        User {
            id: raw.id,
            langs: raw.langs.iter().map(|l| l.to_ascii_lowercase()).collect(),
            created_at: raw.created_at.0,
            follows: raw.follows,
        }
    });
    check_unique(file, &parsed, "id", "user id", issues, |u| &u.id);
    parsed
}

pub(crate) fn parse_hashtags(file: &str, bytes: &[u8], issues: &mut Issues) -> Parsed<Hashtag> {
    let parsed = parse_jsonl(file, bytes, issues, |raw: RawHashtag, li| {
        if let Some(problem) = hashtag_problem(&raw.tag) {
            li.add("tag", problem);
        }
        let mut display = BTreeMap::new();
        for (lang, text) in raw.display.0 {
            let field = format!("display.{lang}");
            if let Some(problem) = lang_problem(&lang) {
                li.add(&field, problem);
            } else if text.trim().is_empty() {
                li.add(&field, "display form must not be empty");
            } else if display.insert(lang.to_ascii_lowercase(), text).is_some() {
                li.add(
                    &field,
                    "language appears more than once (codes are compared in lower case)",
                );
            }
        }
        Hashtag {
            tag: raw.tag,
            display,
        }
    });
    check_unique(file, &parsed, "tag", "tag", issues, |h| &h.tag);
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_codes() {
        for ok in [
            "en",
            "zh",
            "ZH",
            "zh-hant",
            "pt-BR",
            "yue",
            "sr-Latn-RS",
            "mixed",
            "MIXED",
            "es-419",
        ] {
            assert!(is_valid_lang(ok), "{ok}");
        }
        for bad in [
            "",
            "e",
            "engl",
            "en-",
            "-en",
            "en_US",
            "en--us",
            "e1",
            "en-toolongsub",
            "en us",
            "mixed-en",
            "ελ",
        ] {
            assert!(!is_valid_lang(bad), "{bad}");
        }
        assert!(!is_valid_lang(&format!("en{}", "-abcdefgh".repeat(4))));
    }

    #[test]
    fn hashtag_normal_form() {
        for ok in ["cats", "猫", "c#", "tiktokrefugee", "ß", "café"] {
            assert!(is_normalised_hashtag(ok), "{ok}");
        }
        for bad in [
            "",
            "Cats",
            "#cats",
            "ｃａｔｓ",
            "cafe\u{301}",
            "new york",
            "tab\t",
            "ﬁ",
        ] {
            assert!(!is_normalised_hashtag(bad), "{bad}");
        }
        assert!(is_normalised_hashtag(&"a".repeat(MAX_TAG_BYTES)));
        assert!(!is_normalised_hashtag(&"a".repeat(MAX_TAG_BYTES + 1)));
        assert_eq!(normalise_hashtag(" ＃ＣＡＴＳ"), "cats");
        assert_eq!(normalise_hashtag("##Café"), "café");
    }

    #[test]
    fn lines_ignore_only_the_final_newline() {
        let count = |b: &[u8]| lines(b).count();
        assert_eq!(count(b""), 0);
        assert_eq!(count(b"a"), 1);
        assert_eq!(count(b"a\n"), 1);
        assert_eq!(count(b"a\nb"), 2);
        assert_eq!(count(b"a\n\n"), 2);
        assert_eq!(count(b"\n"), 1);
    }

    fn issues_of(bytes: &[u8]) -> Vec<crate::snapshot::Issue> {
        let mut issues = Issues::default();
        parse_posts("posts.jsonl", bytes, &mut issues);
        if issues.is_empty() {
            Vec::new()
        } else {
            issues.into_error().issues().to_vec()
        }
    }

    const GOOD: &str = r#"{"id":"p1","author":"a","lang":"en","hashtags":[],"kind":"ad","created_at":5,"stats":{}}"#;

    #[test]
    fn unknown_missing_and_duplicate_keys_name_the_field() {
        assert!(issues_of(GOOD.as_bytes()).is_empty());
        let cases = [
            (
                GOOD.replace("\"stats\":{}", "\"stats\":{\"savs\":1}"),
                "stats.savs",
                "unknown key `savs`",
            ),
            (
                GOOD.replace("\"kind\"", "\"knd\""),
                "knd",
                "unknown key `knd`",
            ),
            (
                GOOD.replace("\"author\":\"a\",", ""),
                "author",
                "required field is missing",
            ),
            (
                GOOD.replace("\"lang\"", "\"id\":\"x\",\"lang\""),
                "id",
                "more than once",
            ),
            (
                GOOD.replace("\"stats\":{}", "\"stats\":null"),
                "stats",
                "JSON object of counters",
            ),
            (
                GOOD.replace("\"created_at\":5", "\"created_at\":1737244800000"),
                "created_at",
                "milliseconds",
            ),
            (
                GOOD.replace("\"created_at\":5", "\"created_at\":-1"),
                "created_at",
                "Unix seconds",
            ),
            (
                GOOD.replace("\"stats\":{}", "\"stats\":{\"views\":1e3}"),
                "stats.views",
                "got 1000.0",
            ),
        ];
        for (line, field, phrase) in cases {
            let issues = issues_of(line.as_bytes());
            assert_eq!(issues.len(), 1, "{line}: {issues:?}");
            assert_eq!(
                issues[0].field.as_deref(),
                Some(field),
                "{line}: {issues:?}"
            );
            assert!(issues[0].message.contains(phrase), "{line}: {issues:?}");
        }
    }

    #[test]
    fn large_files_parse_in_halves_exactly_as_in_one_pass() {
        let mut text = String::new();
        let n = 2 * PARALLEL_MIN_BYTES / GOOD.len() + 100;
        for i in 1..=n {
            let line = match i {
                3 => "{broken".to_string(),
                7 => String::new(),
                _ if i == n / 2 || i == n / 2 + 1 => String::new(),
                _ if i == n - 5 => GOOD.replace("\"p1\"", "\"p_10\""),
                _ if i == n - 2 => GOOD.replace("\"ad\"", "\"promo\""),
                _ => GOOD.replace("\"p1\"", &format!("\"p_{i}\"")),
            };
            text.push_str(&line);
            text.push('\n');
        }
        assert!(text.len() > PARALLEL_MIN_BYTES);
        let mut split_issues = Issues::default();
        let split = parse_posts("posts.jsonl", text.as_bytes(), &mut split_issues);
        let mut one_issues = Issues::default();
        let one = parse_chunk(
            "posts.jsonl",
            text.as_bytes(),
            1,
            n,
            &mut one_issues,
            &|raw: RawPost, _: &mut LineIssues<'_>| raw.id,
        );
        check_unique(
            "posts.jsonl",
            &one,
            "id",
            "post id",
            &mut one_issues,
            |id| id,
        );
        assert_eq!(split.line_count, n);
        assert_eq!(split.lines, one.lines);
        let ids: Vec<&str> = split.records.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(
            ids,
            one.records.iter().map(String::as_str).collect::<Vec<_>>()
        );
        let lines_of = |issues: Issues| -> Vec<(Option<usize>, Option<String>)> {
            issues
                .into_error()
                .issues()
                .iter()
                .map(|i| (i.line, i.field.clone()))
                .collect()
        };
        let expected = vec![
            (Some(3), None),
            (Some(7), None),
            (Some(n / 2), None),
            (Some(n / 2 + 1), None),
            (Some(n - 2), Some("kind".to_string())),
            (Some(n - 5), Some("id".to_string())),
        ];
        assert_eq!(lines_of(split_issues), expected);
        assert_eq!(lines_of(one_issues), expected);
    }

    #[test]
    fn trailing_garbage_and_non_objects_are_malformed() {
        let issues = issues_of(format!("{GOOD} x").as_bytes());
        assert!(
            issues[0].message.starts_with("malformed JSON"),
            "{issues:?}"
        );
        // serde's derive would take an array as the fields in order: not here.
        let positional = br#"["p1", "a", "en", [], "ad", 5, {}]"#;
        let issues = issues_of(positional);
        assert!(
            issues[0].message.contains("describing a post"),
            "{issues:?}"
        );
        let issues = issues_of(GOOD.replace("\"stats\":{}", "\"stats\":[1]").as_bytes());
        assert_eq!(issues[0].field.as_deref(), Some("stats"), "{issues:?}");
        assert!(
            issues[0].message.contains("object of counters"),
            "{issues:?}"
        );
        let issues = issues_of(format!("\u{feff}{GOOD}").as_bytes());
        assert!(issues[0].message.contains("byte-order mark"), "{issues:?}");
    }
}

#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        // The fast path may only accept tags the full normalisation leaves unchanged.
        #[test]
        fn fast_path_agrees_with_normalisation(s in "\\PC{1,8}|[a-zA-Z#ÀÉİΣσςẞß\u{301}\u{0130}]{1,6}") {
            prop_assume!(!s.chars().any(|c| c.is_whitespace() || c.is_control()));
            if plainly_normalised(&s) {
                prop_assert_eq!(normalise_hashtag(&s), s);
            }
        }
    }
}
