//! A string written in place: short ones inline, longer ones on the heap.
//!
//! A log record's message ([`Text`], up to 118 bytes inline) is formatted on the thread that
//! writes it and freed on the export worker. With the system allocator, memory allocated on one
//! thread and freed on another makes both take the allocator's lock on every call
//! (`benches/benches/logs.rs` measured a `log::info!` at seven times the cost of formatting its
//! message, most of it in `malloc` and `free` waiting for each other); a message that fits inline
//! allocates nothing. A property's value ([`crate::record::Value`], up to 30 bytes inline) is
//! the same type, smaller.
//!
//! Home-made rather than `compact_str`'s `CompactString` (24 bytes, 24 inline), which the
//! property values used before: dropping one calls into that crate, which the compiler cannot
//! prove never unwinds, so every record's drop grew landing pads, and the stripped release
//! binary of `benches/compile-cost.sh` (500 `#[inproc]` functions, default features) grew by
//! 4,096 bytes over `String` values (821,200 against 817,104), to 2,736 more than the same
//! crate under `#[tracing::instrument]`; with `Text` values it is 818,256. Dropping a `Text`
//! frees a `String` or nothing.

use std::fmt;
use std::mem::MaybeUninit;

/// Bytes a log record's message keeps inline: the type is 120 bytes, a typical log line fits.
pub(crate) const MESSAGE: usize = 118;

/// Inline capacities above this are left unwritten when a text is made ([`Text::new`]).
const UNWRITTEN_ABOVE: usize = 32;

/// A string kept inline when it is at most `N` bytes, on the heap when it is longer. `N` is at
/// most 255.
#[derive(Clone)]
pub(crate) struct Text<const N: usize = MESSAGE>(Repr<N>);

#[derive(Clone)]
enum Repr<const N: usize> {
    /// The first `len` bytes of `bytes` are written, whole `&str`s one after the other; the
    /// others may not be ([`Text::new`]).
    Inline {
        len: u8,
        bytes: [MaybeUninit<u8>; N],
    },
    Heap(String),
}

/// The bytes an inline text holds.
fn written<const N: usize>(len: u8, bytes: &[MaybeUninit<u8>; N]) -> &str {
    let written = &bytes[..usize::from(len)];
    // SAFETY: the first `len` bytes are initialised (`Text::push_str` writes them before it
    // raises `len`), and `MaybeUninit<u8>` has the layout of `u8`.
    let written = unsafe { &*(std::ptr::from_ref(written) as *const [u8]) };
    // Only whole `&str`s are copied in, so they are UTF-8.
    std::str::from_utf8(written).unwrap_or_default()
}

impl<const N: usize> Text<N> {
    /// An empty text. A message's bytes are left unwritten: a log record's message is made in
    /// its ring slot, and zeroing its 118 bytes there, which the message then writes again,
    /// made a `log::info!` 57.4-59.3 ns where it is 53.1-53.7 without (alternating runs; 92-95
    /// against 84-86 ns pinned to one CPU). A property value's 30 are zeroed still: left
    /// unwritten, a span with a property measured no faster (89-108 against 82-92 ns).
    pub(crate) const fn new() -> Self {
        const { assert!(N <= u8::MAX as usize, "an inline length is a byte") };
        Text(Repr::Inline {
            len: 0,
            bytes: if N > UNWRITTEN_ABOVE {
                [MaybeUninit::uninit(); N]
            } else {
                [MaybeUninit::new(0); N]
            },
        })
    }

    /// `args` formatted: inline when it fits. A log record formats its message in place
    /// ([`Text::append`]).
    pub(crate) fn format(args: fmt::Arguments<'_>) -> Self {
        let mut text = Text::new();
        text.append(args);
        text
    }

    /// Writes `args` after what the text holds.
    pub(crate) fn append(&mut self, args: fmt::Arguments<'_>) {
        match args.as_str() {
            Some(literal) => self.push_str(literal),
            None => {
                let _ = fmt::write(self, args);
            }
        }
    }

    /// Whether it holds no memory of its own.
    pub(crate) fn is_inline(&self) -> bool {
        matches!(self.0, Repr::Inline { .. })
    }

    pub(crate) fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline { len, bytes } => written(*len, bytes),
            Repr::Heap(text) => text,
        }
    }

    /// The memory it holds of its own, in bytes.
    pub(crate) fn heap_bytes(&self) -> usize {
        match &self.0 {
            Repr::Inline { .. } => 0,
            Repr::Heap(text) => text.capacity(),
        }
    }

    /// The text as a `String`: the heap one itself, or an inline one copied.
    #[cfg(feature = "tracing")]
    pub(crate) fn into_string(self) -> String {
        match self.0 {
            Repr::Inline { .. } => self.as_str().to_owned(),
            Repr::Heap(text) => text,
        }
    }

    /// Writes `s` after what the text holds.
    #[inline]
    pub(crate) fn push_str(&mut self, s: &str) {
        if let Repr::Inline { len, bytes } = &mut self.0 {
            let at = usize::from(*len);
            if at + s.len() <= N {
                copy_short(&mut bytes[at..at + s.len()], s.as_bytes());
                *len = (at + s.len()) as u8;
                return;
            }
        }
        self.push_str_beyond(s);
    }

    /// [`Text::push_str`] where `s` does not fit inline: kept apart, so that the inline case,
    /// what a message's pieces almost always take, saves and restores no registers for it.
    #[cold]
    #[inline(never)]
    fn push_str_beyond(&mut self, s: &str) {
        match &mut self.0 {
            Repr::Inline { len, bytes } => {
                let at = usize::from(*len);
                let mut heap = String::with_capacity((at + s.len()).max(2 * N));
                heap.push_str(written(*len, bytes));
                heap.push_str(s);
                self.0 = Repr::Heap(heap);
            }
            Repr::Heap(text) => text.push_str(s),
        }
    }
}

/// Copies `from` into `to`, of the same length: what a message is made of (a format string's
/// pieces, a number) in two overlapping loads and stores where it is at most 16 bytes long,
/// with `memcpy` where it is longer. Through `memcpy` alone, each piece was a call.
#[inline(always)]
fn copy_short(to: &mut [MaybeUninit<u8>], from: &[u8]) {
    fn two<const W: usize>(to: &mut [MaybeUninit<u8>], from: &[u8]) {
        let n = from.len();
        let (head, tail): ([u8; W], [u8; W]) = (
            from[..W].try_into().unwrap_or([0; W]),
            from[n - W..].try_into().unwrap_or([0; W]),
        );
        to[..W].write_copy_of_slice(&head);
        to[n - W..].write_copy_of_slice(&tail);
    }
    debug_assert_eq!(to.len(), from.len());
    match from.len() {
        0 => {}
        1..4 => {
            let n = from.len();
            to[0].write(from[0]);
            to[n / 2].write(from[n / 2]);
            to[n - 1].write(from[n - 1]);
        }
        4..8 => two::<4>(to, from),
        8..=16 => two::<8>(to, from),
        _ => {
            to.write_copy_of_slice(from);
        }
    }
}

impl<const N: usize> std::ops::Deref for Text<N> {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl<const N: usize> From<&str> for Text<N> {
    fn from(s: &str) -> Self {
        let mut text = Text::new();
        text.push_str(s);
        text
    }
}

impl<const N: usize> From<String> for Text<N> {
    /// Inline when it fits, the `String` itself when it does not.
    fn from(s: String) -> Self {
        if s.len() <= N {
            Text::from(s.as_str())
        } else {
            Text(Repr::Heap(s))
        }
    }
}

impl<const N: usize> PartialEq<&str> for Text<N> {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl<const N: usize> fmt::Write for Text<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push_str(s);
        Ok(())
    }
}

impl<const N: usize> fmt::Display for Text<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<const N: usize> fmt::Debug for Text<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_stays_inline_and_long_text_moves_to_the_heap_whole() {
        let short: Text = Text::format(format_args!("order {} placed", 7));
        assert_eq!(short.as_str(), "order 7 placed");
        assert!(matches!(short.0, Repr::Inline { .. }));
        let long_part = "é".repeat(100);
        let long: Text = Text::format(format_args!("{long_part} and {}", 1));
        assert_eq!(long.as_str(), format!("{long_part} and 1"));
        assert!(matches!(long.0, Repr::Heap(_)));
        // A multi-byte character that would straddle the inline end moves whole.
        let edge: Text = Text::format(format_args!("{}{}", "a".repeat(MESSAGE - 1), "é"));
        assert_eq!(edge.as_str().chars().count(), MESSAGE);
        assert_eq!(std::mem::size_of::<Text>(), 120);
        assert_eq!(std::mem::size_of::<Text<30>>(), 32);
        // A `String` that fits is copied inline; one that does not is kept, not copied.
        let kept = "x".repeat(31);
        let at = kept.as_ptr();
        let value = Text::<30>::from(kept);
        assert!(!value.is_inline() && value.as_ptr() == at);
        assert!(Text::<30>::from("x".repeat(30)).is_inline());
    }

    /// Every length of piece, each short one copied by its own loads and stores, lands whole
    /// after what the text holds.
    #[test]
    fn pieces_of_every_length_are_copied_whole() {
        let source: String = ('a'..='z').chain('A'..='Z').chain('0'..='9').collect();
        for before in [0, 1, 7, 13] {
            for len in 0..=40 {
                let mut text: Text = Text::new();
                text.push_str(&source[..before]);
                text.push_str(&source[before..before + len]);
                text.push_str("|");
                let expected = format!("{}|", &source[..before + len]);
                assert_eq!(text.as_str(), expected, "{before} then {len} bytes");
            }
        }
    }
}
