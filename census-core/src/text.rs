//! A string written in place: up to a hundred-odd bytes inline, longer ones on the heap.
//!
//! A log record's message is formatted on the thread that writes it and freed on the export
//! worker. With the system allocator, memory allocated on one thread and freed on another makes
//! both take the allocator's lock on every call (`benches/benches/logs.rs` measured a
//! `log::info!` at seven times the cost of formatting its message, most of it in `malloc` and
//! `free` waiting for each other); a message that fits inline allocates nothing.

use std::fmt;

/// Bytes kept inline: the type is 120 bytes, a typical log line fits.
const INLINE: usize = 118;

/// A string kept inline when it is short, on the heap when it is not.
#[derive(Clone)]
pub(crate) struct Text(Repr);

#[derive(Clone)]
enum Repr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(String),
}

impl Text {
    /// An empty text.
    #[cfg_attr(
        not(any(feature = "log", feature = "tracing")),
        allow(
            dead_code,
            reason = "log records come from the log and tracing bridges"
        )
    )]
    pub(crate) const fn new() -> Self {
        Text(Repr::Inline {
            len: 0,
            bytes: [0; INLINE],
        })
    }

    /// `args` formatted: inline when it fits. Records format in place ([`Text::append`]).
    #[cfg(test)]
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
            Repr::Inline { len, bytes } => {
                // Only whole `&str`s are copied in, so the first `len` bytes are UTF-8.
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            Repr::Heap(text) => text,
        }
    }

    fn push_str(&mut self, s: &str) {
        match &mut self.0 {
            Repr::Inline { len, bytes } => {
                let at = usize::from(*len);
                if at + s.len() <= INLINE {
                    bytes[at..at + s.len()].copy_from_slice(s.as_bytes());
                    *len = (at + s.len()) as u8;
                } else {
                    let mut heap = String::with_capacity((at + s.len()).max(2 * INLINE));
                    heap.push_str(std::str::from_utf8(&bytes[..at]).unwrap_or_default());
                    heap.push_str(s);
                    self.0 = Repr::Heap(heap);
                }
            }
            Repr::Heap(text) => text.push_str(s),
        }
    }
}

impl fmt::Write for Text {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push_str(s);
        Ok(())
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_stays_inline_and_long_text_moves_to_the_heap_whole() {
        let short = Text::format(format_args!("order {} placed", 7));
        assert_eq!(short.as_str(), "order 7 placed");
        assert!(matches!(short.0, Repr::Inline { .. }));
        let long_part = "é".repeat(100);
        let long = Text::format(format_args!("{long_part} and {}", 1));
        assert_eq!(long.as_str(), format!("{long_part} and 1"));
        assert!(matches!(long.0, Repr::Heap(_)));
        // A multi-byte character that would straddle the inline end moves whole.
        let edge = Text::format(format_args!("{}{}", "a".repeat(INLINE - 1), "é"));
        assert_eq!(edge.as_str().chars().count(), INLINE);
        assert_eq!(std::mem::size_of::<Text>(), 120);
    }
}
