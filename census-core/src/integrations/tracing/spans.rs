//! The layer's table of the spans it bridged, from the moment they are made until they close.
//!
//! Most spans are found in a slot of their own, chosen by their id: a span made and closed
//! there takes one atomic exchange to claim its slot and one to take it back, where a sharded
//! map (`dashmap`) took four, the lock and unlock of a shard twice, and copied the record
//! through the stack on each side. The layer's `#[tracing::instrument]` span measured 236-252
//! ns against 261-269 through the map alone (alternating runs; 260-285 against 285-333 pinned
//! to one CPU). A span whose slot another holds goes to the map beside the slots.
//!
//! A slot is held by one thread at a time, from the moment it claims it until it lets go; a
//! thread that finds it held waits, spinning briefly and then yielding, as a lock would park
//! it. Nothing runs the application's code while it holds a slot. The slots take 32 KiB per
//! layer (256 of 128 bytes).
//!
//! The unsafe code is checked under Miri as well as by the tests:
//! `cargo +nightly miri test -p census-core --no-default-features --features tracing --lib
//! tracing::spans`.

use std::cell::UnsafeCell;
use std::hash::{BuildHasherDefault, Hasher};
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use dashmap::DashMap;

/// How many slots a layer keeps: a span past as many open at once, or whose slot another
/// holds, goes to the map beside them.
const SLOTS: usize = 256;

/// A slot holds nothing.
const EMPTY: u8 = 0;
/// A thread holds the slot: it is claiming it, reading or changing its value, or emptying it.
const HELD: u8 = 1;
/// The slot holds the value of the span its `id` says.
const FULL: u8 = 2;

/// The table of a layer's open spans, by id: slots, and a map for the spans that find their
/// slot taken.
pub(super) struct SpanTable<V> {
    slots: Box<[Slot<V>]>,
    overflow: DashMap<u64, V, BuildHasherDefault<IdHasher>>,
}

/// One slot, on cache lines of its own: threads that hold neighbouring slots do not contend
/// for one line.
#[repr(align(64))]
struct Slot<V> {
    state: AtomicU8,
    /// The id of the span whose value the slot holds; written only by the thread that holds
    /// the slot, and read again once the slot is held.
    id: AtomicU64,
    value: UnsafeCell<MaybeUninit<V>>,
}

// SAFETY: the value is reached only by the one thread that holds the slot (`state` `HELD`,
// claimed with acquiring exchanges and let go with releasing stores), so a value that can be
// sent between threads can be shared this way.
unsafe impl<V: Send> Sync for Slot<V> {}

impl<V> Default for Slot<V> {
    fn default() -> Self {
        Slot {
            state: AtomicU8::new(EMPTY),
            id: AtomicU64::new(0),
            value: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }
}

impl<V> Default for SpanTable<V> {
    fn default() -> Self {
        SpanTable {
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
            overflow: DashMap::default(),
        }
    }
}

/// A slot held by this thread, for the span it was looked up for; let go when dropped.
struct Held<'a, V> {
    slot: &'a Slot<V>,
    /// What the slot is left as: `FULL`, or `EMPTY` once its value is taken.
    after: u8,
}

impl<V> Held<'_, V> {
    fn value(&mut self) -> &mut V {
        // SAFETY: the slot is held by this thread, and holds a value (it was `FULL` when
        // claimed, and `after` is `FULL` until the value is taken).
        unsafe { (*self.slot.value.get()).assume_init_mut() }
    }
}

impl<V> Drop for Held<'_, V> {
    fn drop(&mut self) {
        self.slot.state.store(self.after, Ordering::Release);
    }
}

impl<V: Send> SpanTable<V> {
    fn slot(&self, id: u64) -> &Slot<V> {
        let hash = id.wrapping_mul(SPREAD);
        // The high bits, which the multiplication mixed best.
        &self.slots[(hash >> (u64::BITS - SLOTS.trailing_zeros())) as usize]
    }

    /// Keeps `value` for the span `id`.
    pub(super) fn insert(&self, id: u64, value: V) {
        self.insert_with(id, || value, |_| ());
    }

    /// Keeps the value `make` makes for the span `id`, made where it is kept, and gives it to
    /// `then` there before anyone else may reach it: a value made in place and changed there
    /// is not copied after its fields were written (a copy of a value just written is read in
    /// wider loads than the stores that wrote it, which the processor cannot forward).
    /// Neither closure may run the application's code or panic: the span's slot is held
    /// meanwhile, and one that panicked would stay held (its spans kept in the overflow map).
    #[inline(always)]
    pub(super) fn insert_with<R>(
        &self,
        id: u64,
        make: impl FnOnce() -> V,
        then: impl FnOnce(&mut V) -> R,
    ) -> R {
        let slot = self.slot(id);
        if slot
            .state
            .compare_exchange(EMPTY, HELD, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            slot.id.store(id, Ordering::Relaxed);
            // SAFETY: the slot is held by this thread, and was empty.
            let value = unsafe { (*slot.value.get()).write(make()) };
            let result = then(value);
            slot.state.store(FULL, Ordering::Release);
            result
        } else {
            let mut value = make();
            let result = then(&mut value);
            self.overflow.insert(id, value);
            result
        }
    }

    /// The slot of the span `id`, held, if it is there: waits while another thread holds it.
    fn hold(&self, id: u64) -> Option<Held<'_, V>> {
        let slot = self.slot(id);
        // A span is looked up only once it was made, after its insertion: an id other than
        // its own means that it is in the map (an id seen while another span claims the slot
        // may be stale, and is read again once the slot is held).
        if slot.id.load(Ordering::Relaxed) != id {
            return None;
        }
        let mut spins = 0_u32;
        loop {
            match slot
                .state
                .compare_exchange_weak(FULL, HELD, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(EMPTY) => return None,
                Err(_) => {
                    spins += 1;
                    if spins < 64 {
                        std::hint::spin_loop();
                    } else {
                        std::thread::yield_now();
                    }
                }
            }
        }
        let held = Held { slot, after: FULL };
        (slot.id.load(Ordering::Relaxed) == id).then_some(held)
    }

    /// Runs `f` on the value of the span `id`, if it is kept.
    pub(super) fn with<R>(&self, id: u64, f: impl FnOnce(&mut V) -> R) -> Option<R> {
        match self.hold(id) {
            Some(mut held) => Some(f(held.value())),
            None => self.overflow.get_mut(&id).map(|mut value| f(&mut value)),
        }
    }

    /// Moves the value of the span `id` out of the table through `take`, if it is kept:
    /// `take` is given the value where it lies, in its slot (held until `take` returns) or, for
    /// a span in the map, out of it, and must move it out (read it once, bitwise, and own it
    /// from then on): it is not dropped here. Whether the span was kept.
    ///
    /// A value moved straight from its slot is copied once, where taking it out and moving it
    /// on copied it twice.
    ///
    /// # Safety
    ///
    /// `take` moves the value out of the pointer it is given, exactly once.
    pub(super) unsafe fn take_with(&self, id: u64, take: impl FnOnce(*mut V)) -> bool {
        match self.hold(id) {
            Some(mut held) => {
                held.after = EMPTY;
                take(held.value());
                true
            }
            None => match self.overflow.remove(&id) {
                Some((_, value)) => {
                    let mut value = std::mem::ManuallyDrop::new(value);
                    take(&raw mut *value);
                    true
                }
                None => false,
            },
        }
    }

    /// How many spans are kept.
    pub(super) fn len(&self) -> usize {
        let held = self
            .slots
            .iter()
            .filter(|slot| slot.state.load(Ordering::Acquire) != EMPTY)
            .count();
        held + self.overflow.len()
    }

    /// Takes every value out of the table.
    pub(super) fn drain(&mut self) -> Vec<V> {
        let mut values: Vec<V> = std::mem::take(&mut self.overflow)
            .into_iter()
            .map(|(_, value)| value)
            .collect();
        self.empty_slots(|value| values.push(value));
        values
    }
}

impl<V> SpanTable<V> {
    /// Gives `each` the value of every full slot, and marks the slot empty: what [`drain`]
    /// returns and what dropping the table drops.
    ///
    /// [`drain`]: SpanTable::drain
    fn empty_slots(&mut self, mut each: impl FnMut(V)) {
        for slot in self.slots.iter_mut() {
            if *slot.state.get_mut() == FULL {
                *slot.state.get_mut() = EMPTY;
                // SAFETY: the table is borrowed whole, and the slot held a value, read once
                // (the slot is marked empty).
                each(unsafe { slot.value.get_mut().assume_init_read() });
            }
        }
    }
}

impl<V> Drop for SpanTable<V> {
    fn drop(&mut self) {
        self.empty_slots(drop);
    }
}

/// What a span id, a number the registry gives out (close to a count), is multiplied by to
/// spread its bits over the word (2^64 divided by the golden ratio): the high bits then choose
/// a slot, or the map's shard, and the low ones its bucket.
const SPREAD: u64 = 0x9e37_79b9_7f4a_7c15;

/// Hashes a span id for the map beside the slots ([`SPREAD`]).
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(self.0 ^ u64::from(byte));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(SPREAD);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc;

    impl<V: Send> SpanTable<V> {
        /// Takes the value of the span `id` out of the table, if it is kept.
        fn remove(&self, id: u64) -> Option<V> {
            let mut taken = None;
            // SAFETY: the value is read once, and owned by `taken` from then on.
            unsafe { self.take_with(id, |value| taken = Some(value.read())) };
            taken
        }
    }

    /// Ids that the table gives the same slot.
    fn colliding(table: &SpanTable<u64>, count: usize) -> Vec<u64> {
        let first = std::ptr::from_ref(table.slot(1));
        (1..)
            .filter(|&id| std::ptr::eq(table.slot(id), first))
            .take(count)
            .collect()
    }

    #[test]
    fn a_span_is_found_until_it_is_taken() {
        let table = SpanTable::default();
        table.insert(7, String::from("seven"));
        assert_eq!(
            table.with(7, |value| value.clone()).as_deref(),
            Some("seven")
        );
        table.with(7, |value| value.push('!'));
        assert_eq!(table.len(), 1);
        assert_eq!(table.remove(7).as_deref(), Some("seven!"));
        assert_eq!(table.with(7, |value| value.clone()), None);
        assert_eq!(table.remove(7), None);
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn spans_whose_slot_is_taken_are_kept_beside_it() {
        let table = SpanTable::default();
        let ids = colliding(&table, 3);
        for &id in &ids {
            table.insert(id, id * 10);
        }
        assert_eq!(
            table.overflow.len(),
            2,
            "one span in the slot, two beside it"
        );
        assert_eq!(table.len(), 3);
        for &id in &ids {
            assert_eq!(table.with(id, |value| *value), Some(id * 10));
        }
        // The slot's span taken, the others are still found, and the slot takes the next.
        assert_eq!(table.remove(ids[0]), Some(ids[0] * 10));
        assert_eq!(table.with(ids[1], |value| *value), Some(ids[1] * 10));
        table.insert(ids[0], 1);
        assert_eq!(table.overflow.len(), 2);
        for (id, value) in [(ids[0], 1), (ids[1], ids[1] * 10), (ids[2], ids[2] * 10)] {
            assert_eq!(table.remove(id), Some(value));
        }
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn what_is_left_is_drained_or_dropped_once() {
        let live = Arc::new(());
        let mut table = SpanTable::default();
        let ids = colliding(&SpanTable::default(), 2);
        for id in ids.iter().copied().chain([5, 6]) {
            table.insert(id, Arc::clone(&live));
        }
        let drained = table.drain();
        assert_eq!(drained.len(), 4);
        assert_eq!(table.len(), 0);
        drop(drained);
        for id in [8, 9] {
            table.insert(id, Arc::clone(&live));
        }
        drop(table);
        assert_eq!(
            Arc::strong_count(&live),
            1,
            "every value dropped, none twice"
        );
    }

    /// Threads make, change and close spans of their own and of one another, many sharing
    /// slots: every value is found whole under its id, and taken once.
    #[test]
    fn threads_share_spans_without_losing_or_mixing_them() {
        const THREADS: usize = 4;
        const SPANS: u64 = if cfg!(miri) { 300 } else { 20_000 };
        let table = Arc::new(SpanTable::<(u64, u64)>::default());
        let taken = Arc::new(AtomicUsize::new(0));
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..THREADS).map(|_| mpsc::channel::<u64>()).unzip();
        let threads: Vec<_> = receivers
            .into_iter()
            .enumerate()
            .map(|(thread, received)| {
                let table = Arc::clone(&table);
                let taken = Arc::clone(&taken);
                let next = senders[(thread + 1) % THREADS].clone();
                std::thread::spawn(move || {
                    for n in 0..SPANS {
                        // Few distinct ids at once, so that threads meet in the same slots.
                        let id = (n % 64) * THREADS as u64 + thread as u64 + 1 + (n / 64) * 1024;
                        table.insert(id, (id, 0));
                        assert_eq!(table.with(id, |value| value.1 += 1), Some(()));
                        if n % 2 == 0 {
                            assert_eq!(table.remove(id), Some((id, 1)));
                            taken.fetch_add(1, Ordering::Relaxed);
                        } else {
                            // Closed by the next thread, as a span sent to another task.
                            next.send(id).unwrap();
                        }
                        while let Ok(id) = received.try_recv() {
                            assert_eq!(table.with(id, |value| value.0), Some(id));
                            assert_eq!(table.remove(id), Some((id, 1)));
                            taken.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    drop(next);
                    received
                })
            })
            .collect();
        drop(senders);
        let receivers: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        for received in receivers {
            for id in received.try_iter() {
                assert_eq!(table.remove(id), Some((id, 1)));
                taken.fetch_add(1, Ordering::Relaxed);
            }
        }
        assert_eq!(taken.load(Ordering::Relaxed), THREADS * SPANS as usize);
        assert_eq!(table.len(), 0);
    }
}
