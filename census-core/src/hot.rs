//! The two cells of a thread that every span's start reads: the random-number generator's
//! state and the word of the stack of open spans. They share one thread-local, so that the
//! fast path reaches both from one address and keeps no second thread-local base in a register
//! across a call.
//!
//! Each has one owner that gives it its meaning and is the only one to touch it: the generator
//! (`id.rs`) and the stack (`local.rs`).

use std::cell::Cell;

/// A thread's hot cells.
pub(crate) struct Hot {
    /// The generator's state; 0 until seeded.
    pub(crate) rng: Cell<u64>,
    /// The stack's word; see `local.rs`.
    pub(crate) word: Cell<usize>,
    /// The generator's two constants, never changed: read from here, beside the state, the
    /// inlined draw takes them as memory operands of a few bytes rather than as two 10-byte
    /// immediates in every instrumented function.
    pub(crate) rng_constants: [u64; 2],
    /// The mask that closes a sync unsampled root ([`CLOSE_ROOT_MASK`]), never changed: read
    /// from here, the compiler cannot narrow the word's read-modify-write to a one-byte AND in
    /// memory, whose store the next span's whole-word load of the word could not be forwarded
    /// (a stall that cost more than the rest of a dropped trace's call: 2.9-4.7 ns -> 6.3-6.6 ns).
    pub(crate) close_root_mask: usize,
}

/// The random-number generator's increment and mixing constant (wyrand's), kept in the hot
/// cells beside its state (`id.rs` draws with them).
const RNG_CONSTANTS: [u64; 2] = [0xa076_1d64_78bd_642f, 0xe703_7ed1_a0b4_28db];

/// Every bit of the stack's word but its three low ones, which say whether an unsampled sync
/// root is open, whether its trace id was drawn and whether the calls under it are counted
/// (`local.rs`).
pub(crate) const CLOSE_ROOT_MASK: usize = !0b111;

thread_local! {
    static HOT: Hot = const {
        Hot {
            rng: Cell::new(0),
            word: Cell::new(0),
            rng_constants: RNG_CONSTANTS,
            close_root_mask: CLOSE_ROOT_MASK,
        }
    };
}

/// Runs `f` on this thread's hot cells.
///
/// `f` runs here, not inside the thread-local's accessor, which then takes the same function
/// at every call (as `local::with_local` does): given `f`, the accessor (`LocalKey::with`) was
/// left out of line where a span's end set the stack's depth, a call and an indirect call
/// to reach the thread's storage in every recorded span's end.
#[cfg_attr(not(debug_assertions), inline(always))]
pub(crate) fn with<R>(f: impl FnOnce(&Hot) -> R) -> R {
    match HOT.try_with(std::ptr::from_ref) {
        // SAFETY: the address of this thread's hot cells, which have no destructor: they are
        // there as long as the thread is.
        Ok(hot) => f(unsafe { &*hot }),
        Err(_) => gone(),
    }
}

/// The hot cells have no destructor, so that they are never gone; if they were, this says so.
#[cold]
#[inline(never)]
fn gone() -> ! {
    panic!("census: the thread's hot cells are gone")
}
