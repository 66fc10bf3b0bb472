//! The lengths ingestion accepts, cutting values to them, and the fields it requires never empty.
//!
//! Ingestion rejects an item whose field is longer than the schema allows (a per-item 400 inside
//! a 206: "Field 'data' on type 'RemoteDependencyData' is too long. Expected: 8192 characters,
//! Actual: ..."), and the item is lost. Every string the envelope writer takes from a record goes
//! through [`cut`] first. The service counts characters as .NET does, in UTF-16 code units: a
//! character outside the Basic Multilingual Plane (most emoji) counts two. A value is cut at a
//! character boundary, never inside a UTF-8 sequence nor between the two halves of a surrogate
//! pair.
//!
//! A value within its limit costs one comparison: a string's UTF-16 length is never more than its
//! UTF-8 length, so a value of at most `limit` bytes fits without being looked at.

use std::borrow::Cow;

/// `name` of a Request or a RemoteDependency.
pub(crate) const NAME: usize = 1024;
/// `name` of an Event.
pub(crate) const EVENT_NAME: usize = 512;
/// RemoteDependency `data`: the command (SQL text, URL).
pub(crate) const DATA: usize = 8192;
/// Request `url`.
pub(crate) const URL: usize = 2048;
/// `resultCode`, `responseCode`, `type`, `target`, `source`.
pub(crate) const CODE: usize = 1024;
/// A custom property's (or measurement's) key.
pub(crate) const PROPERTY_KEY: usize = 150;
/// A custom property's value.
pub(crate) const PROPERTY_VALUE: usize = 8192;
/// Message `message`, Exception `message` and `stack`.
pub(crate) const MESSAGE: usize = 32768;
/// The most `parsedStack` frames of one exception.
pub(crate) const STACK_FRAMES: usize = 100;
/// An exception's `typeName`, a stack frame's `method` and `fileName`.
pub(crate) const TYPE_NAME: usize = 1024;

/// What a field the schema requires is sent as when a record leaves it empty (or blank): an
/// empty message, an event or a span named `""`, an error whose `Display` writes nothing.
/// Ingestion drops such an item ("109: Field 'message' on type 'MessageData' is required but
/// missing or empty"); the Application Insights SDKs and the Azure Monitor exporters send `n/a`
/// in its place, and so does census.
pub(crate) const NOT_GIVEN: &str = "n/a";

/// `value`, or [`NOT_GIVEN`] when it is empty or blank: for the fields the schema requires
/// (Message `message`, Event, Request, RemoteDependency and metric `name`, Request
/// `responseCode`, an exception's `typeName` and `message`, a stack frame's `method`).
#[inline]
pub(crate) fn required(value: &str) -> &str {
    if blank(value) { NOT_GIVEN } else { value }
}

/// Whether `value` is empty or white space only: what a required field, a property key or a
/// user's id may not be.
#[inline]
pub(crate) fn blank(value: &str) -> bool {
    // Most values start with a character that is not white space: one comparison.
    if value
        .as_bytes()
        .first()
        .is_some_and(|&first| first.is_ascii() && !char::from(first).is_whitespace())
    {
        return false;
    }
    value.trim().is_empty()
}

/// The limit of a context tag, by key (the Application Insights `ContextTagKeys`).
pub(crate) fn tag(key: &str) -> usize {
    match key {
        "ai.cloud.role"
        | "ai.cloud.roleInstance"
        | "ai.device.osVersion"
        | "ai.device.model"
        | "ai.device.oemName" => 256,
        "ai.device.locale" | "ai.device.type" | "ai.internal.sdkVersion" => 64,
        "ai.operation.id" | "ai.operation.parentId" | "ai.user.id" => 128,
        "ai.location.ip" => 46,
        // ai.operation.name, ai.application.ver, ai.user.authUserId and the rest.
        _ => 1024,
    }
}

/// `value`, cut to at most `limit` UTF-16 code units at a character boundary.
#[inline]
pub(crate) fn cut(value: &str, limit: usize) -> &str {
    if value.len() <= limit {
        value
    } else {
        cut_long(value, limit)
    }
}

#[cold]
fn cut_long(value: &str, limit: usize) -> &str {
    let mut units = 0;
    for (at, c) in value.char_indices() {
        units += c.len_utf16();
        if units > limit {
            return &value[..at];
        }
    }
    value
}

/// How many UTF-16 code units `value` has: the length the service checks.
pub(crate) fn utf16_len(value: &str) -> usize {
    value.chars().map(char::len_utf16).sum()
}

/// The keys of a property map as written: each cut to [`PROPERTY_KEY`], an empty or blank key
/// written as [`NOT_GIVEN`] (the Application Insights SDKs never send an empty key either), and
/// such a key that would repeat another numbered (`…001`, `…002`) so that no pair is lost.
/// `None` when every key fits, as almost always: then they are written as they are. `keys` is
/// asked again only when one does not.
pub(crate) fn property_keys<'a, I>(keys: impl Fn() -> I) -> Option<Vec<Cow<'a, str>>>
where
    I: Iterator<Item = &'a str>,
{
    let fits = |key: &str| !blank(key) && utf16_len(key) <= PROPERTY_KEY;
    if keys().all(|key| key.len() <= PROPERTY_KEY && !blank(key)) {
        return None;
    }
    let fitting: std::collections::HashSet<&str> = keys().filter(|key| fits(key)).collect();
    let mut taken: std::collections::HashSet<Cow<'a, str>> = std::collections::HashSet::new();
    let mut out = Vec::new();
    for key in keys() {
        if fitting.contains(key) {
            taken.insert(Cow::Borrowed(key));
            out.push(Cow::Borrowed(key));
            continue;
        }
        let key = required(key);
        let short = cut(key, PROPERTY_KEY);
        let unique = if !fitting.contains(short) && !taken.contains(short) {
            Cow::Borrowed(short)
        } else {
            // The number takes three digits (more past 999) from the key's end.
            let mut candidate = String::with_capacity(short.len());
            let mut n = 1u32;
            loop {
                let digits = format!("{n:03}");
                candidate.clear();
                candidate.push_str(cut(key, PROPERTY_KEY - digits.len()));
                candidate.push_str(&digits);
                if !fitting.contains(candidate.as_str()) && !taken.contains(candidate.as_str()) {
                    break;
                }
                n += 1;
            }
            Cow::Owned(candidate)
        };
        taken.insert(unique.clone());
        out.push(unique);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Text whose characters are 1, 2, 3 and 4 bytes long in UTF-8 (the last two UTF-16 units).
    const MIXED: [&str; 6] = ["a", "é", "€", "😀", "\u{10FFFF}", "\u{FFFF}"];

    /// Every way of building a string from the mixed characters, cut at every limit around its
    /// length: never a panic, always a prefix at a character boundary, never over the limit, and
    /// as long as the limit allows.
    #[test]
    fn cutting_is_a_longest_fitting_prefix_at_every_length_and_limit() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for len in 0..300 {
            let text: String = (0..len)
                .map(|_| MIXED[(next() % MIXED.len() as u64) as usize])
                .collect();
            let units = utf16_len(&text);
            assert_eq!(units, text.encode_utf16().count());
            for limit in 0..=units + 2 {
                let cut = cut(&text, limit);
                assert!(text.starts_with(cut));
                assert!(text.is_char_boundary(cut.len()));
                let cut_units = utf16_len(cut);
                assert!(cut_units <= limit, "{cut_units} > {limit}");
                if cut.len() < text.len() {
                    // The next character would not have fitted.
                    let next_char = text[cut.len()..].chars().next().unwrap();
                    assert!(cut_units + next_char.len_utf16() > limit);
                } else {
                    assert!(units <= limit);
                }
            }
        }
    }

    #[test]
    fn a_surrogate_pair_is_never_split() {
        let text = "a😀b";
        assert_eq!(cut(text, 1), "a");
        assert_eq!(cut(text, 2), "a");
        assert_eq!(cut(text, 3), "a😀");
        assert_eq!(cut(text, 4), "a😀b");
        // 4096 emoji are 16384 bytes and 8192 UTF-16 units: exactly at the data limit.
        let emoji = "😀".repeat(4096);
        assert_eq!(cut(&emoji, DATA).len(), emoji.len());
        let more = format!("{emoji}x");
        assert_eq!(cut(&more, DATA), emoji);
    }

    #[test]
    fn values_within_limits_are_the_same_slice() {
        let value = "SELECT 1";
        assert!(std::ptr::eq(cut(value, DATA), value));
        // Multi-byte text longer in bytes than the limit but within it in UTF-16 units.
        let accents = "é".repeat(100);
        assert_eq!(cut(&accents, 150), accents);
    }

    #[test]
    fn keys_that_fit_are_written_as_they_are() {
        let c = "c".repeat(150);
        assert!(property_keys(|| ["a", "b", c.as_str()].into_iter()).is_none());
    }

    #[test]
    fn long_keys_are_cut_and_numbered_when_they_collide() {
        let long_a = format!("{}-first", "k".repeat(150));
        let long_b = format!("{}-second", "k".repeat(150));
        let long_c = format!("{}-third", "k".repeat(150));
        let keys = ["short", long_a.as_str(), long_b.as_str(), long_c.as_str()];
        let out = property_keys(|| keys.into_iter()).unwrap();
        assert_eq!(out[0], "short");
        assert_eq!(out[1], "k".repeat(150));
        assert_eq!(out[2], format!("{}001", "k".repeat(147)));
        assert_eq!(out[3], format!("{}002", "k".repeat(147)));
        let unique: std::collections::HashSet<_> = out.iter().collect();
        assert_eq!(unique.len(), 4);
        assert!(out.iter().all(|k| utf16_len(k) <= PROPERTY_KEY));
    }

    #[test]
    fn a_numbered_key_does_not_take_a_key_already_there() {
        let stem = "k".repeat(147);
        let taken = format!("{stem}001");
        let full = "k".repeat(150);
        let long = format!("{full}-more");
        let keys = [full.as_str(), taken.as_str(), long.as_str()];
        let out = property_keys(|| keys.into_iter()).unwrap();
        assert_eq!(out[2], format!("{stem}002"));
    }

    #[test]
    fn keys_of_multi_byte_text_at_every_length_stay_unique_and_within_the_limit() {
        for unit in MIXED {
            for len in 140..160 {
                let base = unit.repeat(len);
                let keys: Vec<String> = (0..12).map(|i| format!("{base}{i}")).collect();
                let out = property_keys(|| keys.iter().map(String::as_str));
                let out: Vec<Cow<'_, str>> =
                    out.unwrap_or_else(|| keys.iter().map(|k| Cow::Borrowed(k.as_str())).collect());
                let unique: std::collections::HashSet<_> = out.iter().collect();
                assert_eq!(unique.len(), keys.len(), "{unit} x {len}");
                assert!(out.iter().all(|k| utf16_len(k) <= PROPERTY_KEY));
            }
        }
    }

    #[test]
    fn over_a_thousand_colliding_keys_stay_unique() {
        let keys: Vec<String> = (0..1100)
            .map(|i| format!("{}{i}", "k".repeat(150)))
            .collect();
        let out = property_keys(|| keys.iter().map(String::as_str)).unwrap();
        let unique: std::collections::HashSet<_> = out.iter().collect();
        assert_eq!(unique.len(), keys.len());
        assert!(out.iter().all(|k| utf16_len(k) <= PROPERTY_KEY));
    }
}
