//! Local storage: batches that could not be delivered, kept on disk until the endpoint answers
//! again, also across restarts.
//!
//! Layout of the directory (one per instrumentation key):
//!
//! - `{micros}-{random}-{count}.blob`: a batch of `count` envelopes, one per line; `micros` is
//!   when it was written (microseconds since the Unix epoch, 20 digits, so names sort by age).
//!   The count is in the name so that what storage holds is counted from a listing, without
//!   reading the batches (earlier versions wrote `{micros}-{random}.blob`: those are read).
//! - `{micros}-{random}-{count}.blob@{until}-{pid}-{run}.lock`: the same batch, leased until `until`
//!   (microseconds since the epoch) by the process `pid` in its run `run` (a random number each
//!   process draws once, so that a process that reuses a dead one's pid, as a container's
//!   first process does at every restart, does not take that one's leases for its own) while it
//!   is being sent. A lease whose time passed, or whose process is gone, can be taken again; a
//!   lease of this very process is held, also against its other exporters.
//! - `{micros}-{random}-{count}.tmp`: a batch being written. It becomes a `.blob` by an atomic rename
//!   once complete, so a crash never leaves a half batch that would be sent.
//!
//! The directory is readable by its owner only (0700, files 0600 on Unix); its size is capped
//! (new batches are refused when full) and files older than the maximum age are deleted unsent.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::diagnostics::COUNTERS;
use super::envelope::Items;

const BLOB: &str = ".blob";
const TMP: &str = ".tmp";
const LOCK: &str = ".lock";

/// Why a batch was not written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("local storage is full ({used} of {max} bytes)")]
    Full { used: u64, max: u64 },
    #[error("could not write to local storage: {0}")]
    Io(#[from] io::Error),
}

/// The directory is listed again after this long, to see what other processes (and other
/// exporters of this one) wrote and deleted there.
const RELIST: Duration = Duration::from_secs(30);
/// Storage that seems full is listed again after this long before a batch is refused: another
/// process may have sent batches meanwhile.
const RELIST_WHEN_FULL: Duration = Duration::from_secs(1);

/// A bounded directory of undelivered batches.
#[derive(Debug, Clone)]
pub(crate) struct Storage {
    dir: PathBuf,
    max_bytes: u64,
    max_age: Duration,
    lease: Duration,
    /// How old a listing of the directory may be before a write lists it again ([`RELIST`]).
    relist: Duration,
    /// The same, when a write would go over the cap ([`RELIST_WHEN_FULL`]).
    relist_when_full: Duration,
    /// What is known of the directory without listing it, shared by the clones (the export
    /// worker writes, the transport writes, leases and deletes).
    known: Arc<Mutex<Known>>,
}

/// The directory as this storage last listed it, kept up to date with what it wrote and
/// deleted since: writing or leasing a batch costs no listing of the directory (which, with
/// thousands of small batches stored, meant thousands of `stat`s per batch).
#[derive(Debug, Default)]
struct Known {
    /// The bytes the directory's files take.
    used: u64,
    /// Names of files to try to lease, oldest first.
    next: VecDeque<String>,
    /// When the directory was last listed; `None` before the first listing.
    listed_at: Option<Instant>,
    /// How many times it was listed.
    #[cfg(test)]
    listings: usize,
}

/// A batch taken out of storage to be sent: delete it once delivered, release it otherwise.
#[derive(Debug)]
pub(crate) struct Leased {
    path: PathBuf,
    stem: String,
    /// The file's size.
    bytes: u64,
    pub(crate) items: Items,
}

impl Storage {
    /// Opens (creating it, owner-only) the directory.
    pub(crate) fn open(dir: PathBuf, max_bytes: u64, max_age: Duration) -> io::Result<Storage> {
        create_private_dir(&dir)?;
        Ok(Storage {
            dir,
            max_bytes,
            max_age,
            lease: Duration::from_secs(60),
            relist: RELIST,
            relist_when_full: RELIST_WHEN_FULL,
            known: Arc::default(),
        })
    }

    fn known(&self) -> MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lists the directory: the bytes its files take, and its files oldest first.
    fn list(&self, known: &mut Known) {
        let mut used = 0;
        let mut names = Vec::new();
        if let Ok(entries) = fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                if let Ok(metadata) = entry.metadata()
                    && metadata.is_file()
                {
                    used += metadata.len();
                    names.push(entry.file_name().to_string_lossy().into_owned());
                }
            }
        }
        names.sort_unstable();
        known.used = used;
        known.next = names.into();
        known.listed_at = Some(Instant::now());
        #[cfg(test)]
        {
            known.listings += 1;
        }
    }

    /// A file of `bytes` was deleted.
    fn freed(&self, bytes: u64) {
        let mut known = self.known();
        known.used = known.used.saturating_sub(bytes);
    }

    /// Lists the directory when the last listing is older than `age` (or there was none).
    fn list_if_older(&self, known: &mut Known, age: Duration) {
        if known.listed_at.is_none_or(|at| at.elapsed() >= age) {
            self.list(known);
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes a batch, atomically.
    pub(crate) fn write(&self, items: &Items) -> Result<(), StoreError> {
        if items.is_empty() {
            return Ok(());
        }
        let size = (items.byte_len() + items.len()) as u64;
        {
            let mut known = self.known();
            self.list_if_older(&mut known, self.relist);
            if known.used.saturating_add(size) > self.max_bytes {
                self.list_if_older(&mut known, self.relist_when_full);
            }
            if known.used.saturating_add(size) > self.max_bytes {
                return Err(StoreError::Full {
                    used: known.used,
                    max: self.max_bytes,
                });
            }
        }
        let stem = format!(
            "{:020}-{:016x}-{}",
            micros(SystemTime::now()),
            crate::id::next_random(),
            items.len()
        );
        let tmp = self.dir.join(format!("{stem}{TMP}"));
        let mut bytes = Vec::with_capacity(size as usize);
        items.write_lines(&mut bytes);
        let name = format!("{stem}{BLOB}");
        let result = (|| {
            let mut file = create_private_file(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            fs::rename(&tmp, self.dir.join(&name))
        })();
        if let Err(error) = result {
            let _ = fs::remove_file(&tmp);
            return Err(error.into());
        }
        let mut known = self.known();
        known.used += bytes.len() as u64;
        known.next.push_back(name);
        Ok(())
    }

    /// How many envelopes the stored batches hold (leased ones included): read when a flush
    /// could not deliver everything, to say how much is left. Counted from the names; a batch
    /// an earlier version wrote, whose name has no count, is read.
    pub(crate) fn count_items(&self) -> u64 {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return 0;
        };
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                is_batch(&name).then(|| count_stored(&e.path(), &name))
            })
            .sum()
    }

    /// Whether any batch waits (leased by others or not).
    #[cfg(test)]
    pub(crate) fn has_batches(&self) -> bool {
        fs::read_dir(&self.dir).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| is_batch(&e.file_name().to_string_lossy()))
        })
    }

    /// Leases the oldest batch that can be sent, deleting expired ones and leftovers on the way.
    pub(crate) fn lease_oldest(&self) -> Option<Leased> {
        let now = SystemTime::now();
        let now_micros = micros(now);
        let max_age = self.max_age.as_micros() as u64;
        // The names known are tried first; the directory is listed when they run out (once per
        // call), to find what other processes wrote. The files are read and renamed with the
        // lock let go.
        let mut listed = false;
        loop {
            let name = {
                let mut known = self.known();
                match known.next.pop_front() {
                    Some(name) => name,
                    None if listed => return None,
                    None => {
                        self.list(&mut known);
                        listed = true;
                        continue;
                    }
                }
            };
            let path = self.dir.join(&name);
            let Some(written) = name.get(..20).and_then(|d| d.parse::<u64>().ok()) else {
                continue;
            };
            let age = now_micros.saturating_sub(written);
            if name.ends_with(TMP) {
                // A write that never finished: its process died.
                if age > self.lease.as_micros() as u64 {
                    let _ = fs::remove_file(&path);
                }
                continue;
            }
            let stem = match name.split_once(BLOB) {
                Some((stem, "")) => stem.to_owned(),
                Some((stem, rest)) if rest.starts_with('@') && rest.ends_with(LOCK) => {
                    if lease_held(&rest[1..rest.len() - LOCK.len()], now_micros) {
                        continue;
                    }
                    stem.to_owned()
                }
                _ => continue,
            };
            if age > max_age {
                let bytes = fs::metadata(&path).map_or(0, |m| m.len());
                let count = count_stored(&path, &name);
                if fs::remove_file(&path).is_ok() {
                    self.freed(bytes);
                    COUNTERS.dropped_expired.fetch_add(count, Ordering::Relaxed);
                }
                continue;
            }
            let until = now_micros + self.lease.as_micros() as u64;
            let leased = self.dir.join(format!(
                "{stem}{BLOB}@{until}-{}-{}{LOCK}",
                std::process::id(),
                run()
            ));
            if fs::rename(&path, &leased).is_err() {
                continue; // taken by another process meanwhile
            }
            match fs::read(&leased) {
                Ok(bytes) => {
                    return Some(Leased {
                        path: leased,
                        stem,
                        bytes: bytes.len() as u64,
                        items: Items::from_lines(&bytes),
                    });
                }
                Err(_) => continue,
            }
        }
    }

    /// The batch was delivered (or dropped for good): delete it.
    pub(crate) fn remove(&self, leased: Leased) {
        if fs::remove_file(&leased.path).is_ok() {
            self.freed(leased.bytes);
        }
    }

    /// The batch could not be delivered: give it back for a later try (the first one).
    pub(crate) fn release(&self, leased: Leased) {
        let name = format!("{}{BLOB}", leased.stem);
        if fs::rename(&leased.path, self.dir.join(&name)).is_ok() {
            self.known().next.push_front(name);
        }
    }

    /// Replaces a leased batch by what is left of it to send (after a partial success), or
    /// deletes it when nothing is.
    pub(crate) fn replace(&self, leased: Leased, rest: &Items) -> Result<(), StoreError> {
        if rest.is_empty() {
            self.remove(leased);
            return Ok(());
        }
        let result = self.write_unbounded(rest);
        self.remove(leased);
        result
    }

    fn write_unbounded(&self, items: &Items) -> Result<(), StoreError> {
        let storage = Storage {
            max_bytes: u64::MAX,
            ..self.clone()
        };
        storage.write(items)
    }
}

/// Whether a file of the directory is a batch (leased or not).
fn is_batch(name: &str) -> bool {
    name.ends_with(BLOB) || name.ends_with(LOCK)
}

/// How many envelopes the batch `name` at `path` holds: as its name says, or, for a batch an
/// earlier version wrote, as reading it finds.
fn count_stored(path: &Path, name: &str) -> u64 {
    count_in_name(name)
        .unwrap_or_else(|| fs::read(path).map_or(0, |bytes| Items::count_lines(&bytes) as u64))
}

/// The count of envelopes a batch's name says (`{micros}-{random}-{count}.blob`, leased or not),
/// or `None` for a name without one (an earlier version's `{micros}-{random}.blob`).
fn count_in_name(name: &str) -> Option<u64> {
    let (stem, _) = name.split_once(BLOB)?;
    let mut parts = stem.split('-');
    let (_micros, _random, count) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    count.parse().ok()
}

/// This process's run: drawn once, written in its leases.
fn run() -> u64 {
    static RUN: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *RUN.get_or_init(crate::id::next_random)
}

/// `until-pid-run` (or `until-pid`, as earlier versions wrote it): whether that lease still
/// holds.
fn lease_held(lease: &str, now_micros: u64) -> bool {
    let mut parts = lease.split('-');
    let (Some(until), Some(pid)) = (parts.next(), parts.next()) else {
        return false;
    };
    let (Ok(until), Ok(pid)) = (until.parse::<u64>(), pid.parse::<u32>()) else {
        return false;
    };
    let lessee_run = parts.next().and_then(|r| r.parse::<u64>().ok());
    if until <= now_micros {
        return false;
    }
    if pid == std::process::id() {
        // Held by this run (another of its exporters is sending it), not by an earlier
        // process that had the same pid.
        return lessee_run == Some(run());
    }
    process_alive(pid)
}

fn process_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true // elsewhere the lease's time decides
    }
}

fn micros(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_micros() as u64
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)
}

#[cfg(unix)]
fn create_private_file(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn create_private_file(path: &Path) -> io::Result<File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

/// The default place: `{user cache dir}/census/{hash of the key}`.
pub(crate) fn default_dir(ikey: &str) -> Option<PathBuf> {
    let cache = if cfg!(target_os = "macos") {
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join("Library/Caches"))
    } else if cfg!(windows) {
        std::env::var_os("LOCALAPPDATA").map(PathBuf::from)
    } else {
        std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
    }?;
    Some(cache.join("census").join(key_dir(ikey)))
}

/// A directory name per instrumentation key that does not reveal the key (FNV-1a, 64 bits).
pub(crate) fn key_dir(ikey: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in ikey.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    /// A storage of `dir` capped at `max` bytes, its batches kept an hour.
    fn open(dir: &Path, max: u64) -> Storage {
        Storage::open(dir.to_owned(), max, HOUR).unwrap()
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "census-storage-{name}-{}-{:x}",
            std::process::id(),
            crate::id::next_random()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn items(n: usize) -> Items {
        let mut items = Items::default();
        for i in 0..n {
            items.push(format!("{{\"n\":{i}}}").as_bytes());
        }
        items
    }

    /// The one batch file in `dir`.
    fn only_batch(dir: &Path) -> PathBuf {
        let mut batches: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|e| is_batch(&e.file_name().to_string_lossy()))
            .map(|e| e.path())
            .collect();
        assert_eq!(batches.len(), 1, "one batch in {dir:?}");
        batches.pop().unwrap()
    }

    #[test]
    fn the_stored_envelopes_are_counted_from_the_names_and_an_earlier_version_s_batches_read() {
        let dir = temp_dir("count");
        let storage = open(&dir, 1 << 20);
        storage.write(&items(3)).unwrap();
        // The name says 3: the content is not read (two lines more in it change nothing).
        let batch = only_batch(&dir);
        fs::write(
            &batch,
            b"{\"n\":0}\n{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n{\"n\":4}\n",
        )
        .unwrap();
        assert_eq!(storage.count_items(), 3);
        // Leased, the name keeps its count.
        let leased = storage.lease_oldest().unwrap();
        assert_eq!(storage.count_items(), 3);
        storage.remove(leased);
        assert_eq!(storage.count_items(), 0);
        // A batch named as earlier versions named them (no count) is read: 2 lines.
        fs::write(
            dir.join(format!(
                "{:020}-{:016x}{BLOB}",
                micros(SystemTime::now()),
                7
            )),
            b"{\"n\":0}\n{\"n\":1}\n",
        )
        .unwrap();
        assert_eq!(storage.count_items(), 2);
        // And sent like any other.
        let leased = storage.lease_oldest().unwrap();
        assert_eq!(leased.items.len(), 2);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_expired_batch_is_counted_dropped_from_its_name() {
        let dir = temp_dir("expired");
        // Every batch is past its age as soon as it is written.
        let storage = Storage::open(dir.clone(), 1 << 20, Duration::ZERO).unwrap();
        storage.write(&items(3)).unwrap();
        let batch = only_batch(&dir);
        fs::write(&batch, b"{\"n\":0}\n").unwrap();
        std::thread::sleep(Duration::from_millis(2));
        let before = COUNTERS.dropped_expired.load(Ordering::Relaxed);
        assert!(storage.lease_oldest().is_none());
        assert!(!batch.exists());
        assert_eq!(COUNTERS.dropped_expired.load(Ordering::Relaxed) - before, 3);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_name_s_count_is_read_only_where_it_stands() {
        assert_eq!(
            count_in_name("00000000000000000001-00000000000000ff-12.blob"),
            Some(12)
        );
        assert_eq!(
            count_in_name("00000000000000000001-00000000000000ff-12.blob@99-4-7.lock"),
            Some(12)
        );
        assert_eq!(
            count_in_name("00000000000000000001-00000000000000ff.blob"),
            None
        );
        assert_eq!(
            count_in_name("00000000000000000001-00000000000000ff-x.blob"),
            None
        );
        assert_eq!(count_in_name("00000000000000000001-ff-1-2.blob"), None);
        assert_eq!(count_in_name("00000000000000000001-ff-3.tmp"), None);
    }

    #[test]
    fn write_lease_release_remove() {
        let dir = temp_dir("cycle");
        let storage = open(&dir, 1 << 20);
        storage.write(&items(3)).unwrap();
        assert!(storage.has_batches());
        let leased = storage.lease_oldest().unwrap();
        assert_eq!(leased.items, items(3));
        storage.release(leased);
        let leased = storage.lease_oldest().unwrap();
        storage.remove(leased);
        assert!(!storage.has_batches());
        assert!(storage.lease_oldest().is_none());
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn a_lease_of_this_process_is_held_against_its_other_exporters_not_an_earlier_run_s() {
        let dir = temp_dir("lease-owner");
        let storage = open(&dir, 1 << 20);
        // Two exporters of one process share the directory (same instrumentation key).
        let other = open(&dir, 1 << 20);
        storage.write(&items(2)).unwrap();
        let leased = storage.lease_oldest().expect("a batch to send");
        assert!(
            other.lease_oldest().is_none(),
            "being sent by this process: not sent twice"
        );
        storage.release(leased);
        assert!(other.lease_oldest().is_some());

        let now = micros(SystemTime::now());
        let pid = std::process::id();
        let later = now + 60_000_000;
        assert!(lease_held(&format!("{later}-{pid}-{}", run()), now));
        assert!(
            !lease_held(&format!("{later}-{pid}-{}", run().wrapping_add(1)), now),
            "an earlier process with this pid"
        );
        assert!(
            !lease_held(&format!("{later}-{pid}"), now),
            "written before runs"
        );
        assert!(
            !lease_held(&format!("{now}-{pid}-{}", run()), now + 1),
            "expired"
        );
        let _ = fs::remove_dir_all(dir);
    }

    #[cfg(unix)]
    #[test]
    fn owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("perm");
        let storage = open(&dir, 1 << 20);
        storage.write(&items(1)).unwrap();
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            assert_eq!(
                entry.metadata().unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn full_storage_refuses() {
        let dir = temp_dir("full");
        let storage = open(&dir, 20);
        storage.write(&items(2)).unwrap();
        assert!(matches!(
            storage.write(&items(2)),
            Err(StoreError::Full { .. })
        ));
        let _ = fs::remove_dir_all(dir);
    }

    /// A batch of one envelope that names `i`.
    fn batch(i: usize) -> Items {
        let mut items = Items::default();
        items.push(format!("{{\"batch\":{i:04}}}").as_bytes());
        items
    }

    /// A storage of `dir` capped at `max` bytes, listing its directory again only as `relist`
    /// and `relist_when_full` say.
    fn relisting(dir: &Path, max: u64, relist: Duration, relist_when_full: Duration) -> Storage {
        let mut storage = open(dir, max);
        storage.relist = relist;
        storage.relist_when_full = relist_when_full;
        storage
    }

    fn listings(storage: &Storage) -> usize {
        storage.known().listings
    }

    #[test]
    fn batches_are_leased_in_the_order_written_with_no_listing_of_the_directory_per_batch() {
        let dir = temp_dir("listings");
        let storage = relisting(&dir, 1 << 20, HOUR, HOUR);
        for i in 0..100 {
            storage.write(&batch(i)).unwrap();
        }
        assert_eq!(listings(&storage), 1, "listed once, at the first write");
        for i in 0..100 {
            let leased = storage.lease_oldest().expect("a batch left");
            assert_eq!(leased.items, batch(i));
            storage.remove(leased);
        }
        assert_eq!(listings(&storage), 1, "the batches it wrote are known");
        assert!(storage.lease_oldest().is_none());
        assert_eq!(
            listings(&storage),
            2,
            "listed when none is known, to find others'"
        );
        assert_eq!(storage.known().used, 0);
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn the_cap_counts_the_batches_written_and_deleted_since_the_directory_was_listed() {
        let dir = temp_dir("cap");
        let size = (batch(0).byte_len() + 1) as u64;
        let storage = relisting(&dir, 3 * size, HOUR, HOUR);
        for i in 0..3 {
            storage.write(&batch(i)).unwrap();
        }
        assert!(matches!(
            storage.write(&batch(3)),
            Err(StoreError::Full { used, .. }) if used == 3 * size
        ));
        let leased = storage.lease_oldest().unwrap();
        storage.remove(leased);
        storage
            .write(&batch(3))
            .expect("room made by the batch sent");
        let leased = storage.lease_oldest().unwrap();
        storage.release(leased);
        assert!(
            storage.write(&batch(4)).is_err(),
            "a released batch still counts"
        );
        assert_eq!(listings(&storage), 1);
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn storage_that_seems_full_is_listed_again_before_a_batch_is_refused() {
        let dir = temp_dir("relist");
        let size = (batch(0).byte_len() + 1) as u64;
        let storage = relisting(&dir, 2 * size, HOUR, Duration::ZERO);
        let other = open(&dir, 2 * size);
        storage.write(&batch(0)).unwrap();
        storage.write(&batch(1)).unwrap();
        // Another exporter (or process) sends one of them.
        let leased = other.lease_oldest().unwrap();
        other.remove(leased);
        storage
            .write(&batch(2))
            .expect("the room another made is seen");
        assert_eq!(listings(&storage), 2);
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn batches_another_exporter_wrote_are_leased_once_the_known_ones_are_sent() {
        let dir = temp_dir("others");
        let storage = open(&dir, 1 << 20);
        let other = open(&dir, 1 << 20);
        storage.write(&batch(0)).unwrap();
        other.write(&batch(1)).unwrap();
        let leased = storage.lease_oldest().unwrap();
        assert_eq!(leased.items, batch(0));
        storage.remove(leased);
        let leased = storage.lease_oldest().expect("the other's batch");
        assert_eq!(leased.items, batch(1));
        storage.remove(leased);
        assert!(storage.lease_oldest().is_none());
        assert!(other.lease_oldest().is_none(), "sent once");
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn key_dir_hides_key() {
        let d = key_dir("00000000-0000-0000-0000-000000000001");
        assert_eq!(d.len(), 16);
        assert!(!d.contains("0001"));
    }
}
