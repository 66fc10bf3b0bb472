//! Trace and span ids, the context that identifies a span to other code and other services, and
//! the random numbers they are drawn from. Depends on nothing else in the crate but `hot.rs`,
//! where the generator's state lives.

use std::fmt;
use std::num::NonZero;

use crate::hot;

/// A 128-bit trace id: the `operation_Id` that ties together everything one operation did.
///
/// Shown as 32 lowercase hex digits, as Application Insights and W3C Trace Context write it.
///
/// ```
/// # use census_runtime::TraceId;
/// let id = TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap();
/// assert_eq!(id.to_string(), "0af7651916cd43dd8448eb211c80319c");
/// assert!(TraceId::from_hex("00000000000000000000000000000000").is_none());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId(NonZero<u128>);

/// A 64-bit span id: the `id` of one telemetry item, shown as 16 lowercase hex digits.
///
/// ```
/// # use census_runtime::SpanId;
/// let id = SpanId::from_hex("b7ad6b7169203331").unwrap();
/// assert_eq!(format!("{id}"), "b7ad6b7169203331");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanId(NonZero<u64>);

macro_rules! hex_id {
    ($ty:ident, $int:ty, $digits:expr, $example:literal) => {
        impl $ty {
            /// Builds an id from its integer value; zero is not a valid id.
            ///
            #[doc = concat!("```\nuse census_runtime::", stringify!($ty), ";\n\n")]
            #[doc = concat!("assert_eq!(", stringify!($ty), "::new(7).map(", stringify!($ty), "::to_int), Some(7));")]
            #[doc = concat!("assert!(", stringify!($ty), "::new(0).is_none());\n```")]
            pub const fn new(value: $int) -> Option<Self> {
                match NonZero::new(value) {
                    Some(value) => Some($ty(value)),
                    None => None,
                }
            }

            /// The integer value.
            ///
            #[doc = concat!("```\nuse census_runtime::", stringify!($ty), ";\n\n")]
            #[doc = concat!("let id = ", stringify!($ty), "::from_hex(\"", $example, "\").unwrap();")]
            #[doc = concat!("assert_eq!(id.to_int(), 0x", $example, ");\n```")]
            pub const fn to_int(self) -> $int {
                self.0.get()
            }

            /// An id from a random draw, zero mapped to one.
            #[inline]
            fn from_draw(value: $int) -> Self {
                $ty(NonZero::new(value).unwrap_or(NonZero::<$int>::MIN))
            }

            /// Parses exactly the lowercase or uppercase hex form; rejects zero and any other length.
            ///
            #[doc = concat!("```\nuse census_runtime::", stringify!($ty), ";\n\n")]
            #[doc = concat!("let id = ", stringify!($ty), "::from_hex(\"", $example, "\").unwrap();")]
            #[doc = concat!("assert_eq!(id.to_string(), \"", $example, "\");")]
            #[doc = concat!("assert!(", stringify!($ty), "::from_hex(\"", $example, "0\").is_none()); // too long")]
            #[doc = "```"]
            pub fn from_hex(hex: &str) -> Option<Self> {
                if hex.len() != $digits || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                <$int>::from_str_radix(hex, 16).ok().and_then(Self::new)
            }

            /// Writes the lowercase hex form into `out`, with no allocation.
            ///
            #[doc = concat!("```\nuse census_runtime::", stringify!($ty), ";\n\n")]
            #[doc = concat!("let id = ", stringify!($ty), "::from_hex(\"", $example, "\").unwrap();")]
            #[doc = concat!("let mut out = [0u8; ", $digits, "];")]
            #[doc = "id.write_hex(&mut out);"]
            #[doc = concat!("assert_eq!(&out, b\"", $example, "\");\n```")]
            pub fn write_hex(self, out: &mut [u8; $digits]) {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let mut value = self.0.get();
                for slot in out.iter_mut().rev() {
                    *slot = HEX[(value & 0xf) as usize];
                    value >>= 4;
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut buf = [0u8; $digits];
                self.write_hex(&mut buf);
                // The buffer holds ASCII hex digits only.
                f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($ty), "({})"), self)
            }
        }
    };
}

hex_id!(TraceId, u128, 32, "4bf92f3577b34da6a3ce929d0e0e4736");
hex_id!(SpanId, u64, 16, "00f067aa0ba902b7");

impl TraceId {
    /// A fresh random trace id.
    ///
    /// ```
    /// use census_runtime::TraceId;
    ///
    /// assert_ne!(TraceId::random(), TraceId::random());
    /// ```
    pub fn random() -> Self {
        let high = u128::from(next_random());
        let low = u128::from(next_random());
        TraceId::from_draw((high << 64) | low)
    }
}

impl SpanId {
    /// A fresh random span id.
    ///
    /// ```
    /// use census_runtime::SpanId;
    ///
    /// assert_ne!(SpanId::random(), SpanId::random());
    /// ```
    pub fn random() -> Self {
        SpanId::from_draw(next_random())
    }
}

/// The identity of a span as other code and other services see it: what `traceparent` carries.
///
/// ```
/// # use census_runtime::{SpanContext, SpanId, TraceId};
/// let ctx = SpanContext::new(TraceId::random(), SpanId::random(), true);
/// assert!(ctx.is_sampled());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct SpanContext {
    trace_id: TraceId,
    span_id: SpanId,
    sampled: bool,
}

impl SpanContext {
    /// A context from its parts.
    ///
    /// ```
    /// use census_runtime::{SpanContext, SpanId, TraceId};
    ///
    /// let ctx = SpanContext::new(
    ///     TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
    ///     SpanId::from_hex("00f067aa0ba902b7").unwrap(),
    ///     true,
    /// );
    /// assert!(ctx.is_sampled());
    /// ```
    pub const fn new(trace_id: TraceId, span_id: SpanId, sampled: bool) -> Self {
        SpanContext {
            trace_id,
            span_id,
            sampled,
        }
    }

    /// The trace (operation) id.
    ///
    /// ```
    /// use census_runtime::{SpanContext, SpanId, TraceId};
    ///
    /// let ctx = SpanContext::new(
    ///     TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
    ///     SpanId::from_hex("00f067aa0ba902b7").unwrap(),
    ///     true,
    /// );
    /// assert_eq!(ctx.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    /// ```
    pub const fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// The span id.
    ///
    /// ```
    /// use census_runtime::{SpanContext, SpanId, TraceId};
    ///
    /// let ctx = SpanContext::new(
    ///     TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
    ///     SpanId::from_hex("00f067aa0ba902b7").unwrap(),
    ///     true,
    /// );
    /// assert_eq!(ctx.span_id().to_string(), "00f067aa0ba902b7");
    /// ```
    pub const fn span_id(&self) -> SpanId {
        self.span_id
    }

    /// Whether the trace is recorded.
    ///
    /// ```
    /// use census_runtime::{SpanContext, SpanId, TraceId};
    ///
    /// let ctx = SpanContext::new(
    ///     TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
    ///     SpanId::from_hex("00f067aa0ba902b7").unwrap(),
    ///     true,
    /// );
    /// assert!(ctx.is_sampled()); // `traceparent` flag `01`
    /// ```
    pub const fn is_sampled(&self) -> bool {
        self.sampled
    }
}

// ---------------------------------------------------------------------------------------------
// Random numbers: a per-thread wyrand generator, seeded once per thread from the OS-seeded
// hasher.

#[cold]
#[inline(never)]
fn seed() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    // Each `RandomState` has keys of its own, seeded from the OS for each thread.
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(0x9e37_79b9_7f4a_7c15);
    hasher.finish() | 1
}

/// The next number of this thread's generator: uniform over `u64`, not cryptographic.
#[cfg_attr(not(debug_assertions), inline(always))]
pub(crate) fn next_random() -> u64 {
    hot::with(|hot| {
        let state = &hot.rng;
        let mut s = state.get();
        if s == 0 {
            s = seed();
        }
        let [increment, mix] = hot.rng_constants;
        s = s.wrapping_add(increment);
        state.set(s);
        let t = u128::from(s) * u128::from(s ^ mix);
        ((t >> 64) as u64) ^ (t as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_lowercase_hex() {
        let trace = TraceId::new(0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c).unwrap();
        assert_eq!(trace.to_string(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(
            TraceId::from_hex("0AF7651916CD43DD8448EB211C80319C"),
            Some(trace)
        );
        let span = SpanId::new(0xb7).unwrap();
        assert_eq!(span.to_string(), "00000000000000b7");
        assert_eq!(SpanId::from_hex(&span.to_string()), Some(span));
    }

    #[test]
    fn malformed_hex_ids_are_rejected() {
        for bad in [
            "",
            "0af7",
            "0af7651916cd43dd8448eb211c80319cc",
            "+af7651916cd43dd8448eb211c80319c",
            "0af7651916cd43dd8448eb211c80319g",
        ] {
            assert_eq!(TraceId::from_hex(bad), None, "{bad:?}");
        }
        assert_eq!(SpanId::from_hex("0000000000000000"), None);
        assert_eq!(SpanId::from_hex("+000000000000001"), None);
    }

    #[test]
    fn random_ids_are_nonzero_and_distinct() {
        let ids: std::collections::HashSet<_> = (0..10_000).map(|_| SpanId::random()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(TraceId::random().to_int() != 0);
    }
}
