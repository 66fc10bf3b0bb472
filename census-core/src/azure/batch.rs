//! Cutting envelopes into batches, and a batch into the body of a POST (a JSON array, gzipped).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::envelope::Items;

/// Envelopes waiting for a fuller batch, and since when.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    items: Items,
    since: Option<Instant>,
}

impl Pending {
    /// How many envelopes wait.
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// Adds `items` (left empty, for the buffer to be used again).
    pub(crate) fn add(&mut self, items: &mut Items, now: Instant) {
        if self.items.is_empty() {
            self.since = Some(now);
            // Taken as it is, without a copy.
            std::mem::swap(&mut self.items, items);
        } else {
            self.items.append(items);
        }
        items.clear();
    }

    /// When the oldest waiting envelope has waited `interval`: the partial batch goes then.
    pub(crate) fn due_at(&self, interval: Duration) -> Option<Instant> {
        self.since.map(|since| since + interval)
    }

    /// Takes what waits as batches of at most `max` envelopes: the full ones, and (`all`) the
    /// last, partial one too, which otherwise keeps waiting.
    pub(crate) fn take(&mut self, max: usize, all: bool) -> VecDeque<Items> {
        let max = max.max(1);
        let total = self.items.len();
        let ship = if all { total } else { total / max * max };
        let mut batches = VecDeque::new();
        if ship == total && ship <= max {
            // One batch: taken as it is, without a copy.
            if ship > 0 {
                batches.push_back(std::mem::take(&mut self.items));
            }
        } else {
            let mut start = 0;
            while start < ship {
                let end = (start + max).min(ship);
                batches.push_back(self.items.slice(start..end));
                start = end;
            }
            self.items = self.items.slice(ship..total);
        }
        if self.items.is_empty() {
            self.since = None;
        }
        batches
    }
}

/// The two halves of a batch the endpoint found too large (413).
pub(crate) fn halves(items: &Items) -> [Items; 2] {
    let half = items.len() / 2;
    [items.slice(0..half), items.slice(half..items.len())]
}

/// Writes batches as request bodies; the JSON buffer and the compressor are kept from batch to
/// batch (a new compressor allocates and clears some hundreds of kilobytes each time).
///
/// The body is compressed whole before it is sent rather than streamed: it must be sent again
/// as it is after a redirect or a failure, and a `Content-Length` body is what the ingestion
/// service and every proxy take.
#[derive(Default)]
pub(crate) struct Encoder {
    gzip: bool,
    json: Vec<u8>,
    deflate: Option<flate2::Compress>,
}

impl Encoder {
    pub(crate) fn new(gzip: bool) -> Encoder {
        Encoder {
            gzip,
            ..Encoder::default()
        }
    }

    /// Whether bodies are gzipped (`Content-Encoding: gzip`).
    pub(crate) fn gzip(&self) -> bool {
        self.gzip
    }

    /// The body that carries `items`: a JSON array, gzipped when asked for; `None` when
    /// compression failed.
    pub(crate) fn encode(&mut self, items: &Items) -> Option<bytes::Bytes> {
        items.write_array(&mut self.json);
        if !self.gzip {
            return Some(bytes::Bytes::copy_from_slice(&self.json));
        }
        let mut out = Vec::new();
        gzip_into(&mut self.deflate, &self.json, &mut out).then(|| bytes::Bytes::from(out))
    }
}

/// Writes `body` gzipped into `out`: the gzip header, a raw deflate stream from the reused
/// compressor, then the CRC-32 and length trailer (RFC 1952). `false` if compression failed.
fn gzip_into(deflate: &mut Option<flate2::Compress>, body: &[u8], out: &mut Vec<u8>) -> bool {
    let deflate =
        deflate.get_or_insert_with(|| flate2::Compress::new(flate2::Compression::fast(), false));
    deflate.reset();
    out.clear();
    // Magic, deflate, no flags, no time, no extra flags, unknown OS.
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
    out.reserve(body.len() / 2 + 64);
    loop {
        let consumed = usize::try_from(deflate.total_in()).unwrap_or(usize::MAX);
        let input = body.get(consumed..).unwrap_or_default();
        match deflate.compress_vec(input, out, flate2::FlushCompress::Finish) {
            Ok(flate2::Status::StreamEnd) => break,
            Ok(_) => out.reserve(out.capacity().max(64)),
            Err(_) => return false,
        }
    }
    let mut crc = flate2::Crc::new();
    crc.update(body);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    // ISIZE: the length modulo 2^32, as RFC 1952 says.
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(n: usize) -> Items {
        let mut items = Items::default();
        for i in 0..n {
            items.push(format!("{{\"i\":{i}}}").as_bytes());
        }
        items
    }

    #[test]
    fn full_batches_go_and_the_rest_waits_unless_all_is_asked() {
        let now = Instant::now();
        let mut pending = Pending::default();
        pending.add(&mut items(7), now);
        assert_eq!(
            pending.due_at(Duration::from_secs(1)),
            Some(now + Duration::from_secs(1))
        );
        let sizes = |batches: VecDeque<Items>| batches.iter().map(Items::len).collect::<Vec<_>>();
        assert_eq!(sizes(pending.take(3, false)), [3, 3]);
        assert_eq!(pending.len(), 1);
        assert!(
            pending.due_at(Duration::ZERO).is_some(),
            "the rest still waits"
        );
        let mut more = items(1);
        pending.add(&mut more, now);
        assert!(more.is_empty());
        assert_eq!(sizes(pending.take(3, true)), [2]);
        assert_eq!((pending.len(), pending.due_at(Duration::ZERO)), (0, None));
    }

    #[test]
    fn halves_keep_every_envelope_in_order() {
        let batch = items(5);
        let [a, b] = halves(&batch);
        assert_eq!((a.len(), b.len()), (2, 3));
        let mut joined = a;
        joined.append(&b);
        assert_eq!(joined, batch);
    }

    #[test]
    fn gzip_with_a_reused_compressor_round_trips() {
        use std::io::Read as _;
        let mut deflate = None;
        let mut out = Vec::new();
        let large: Vec<u8> = (0..300_000u32)
            .flat_map(|i| format!("{{\"n\":{}}}", i.wrapping_mul(2_654_435_761)).into_bytes())
            .collect();
        for body in [&b"{\"a\":1}"[..], &large, b"", b"[1,2,3]"] {
            assert!(gzip_into(&mut deflate, body, &mut out));
            let mut plain = Vec::new();
            flate2::read::GzDecoder::new(&out[..])
                .read_to_end(&mut plain)
                .expect("a valid gzip stream");
            assert_eq!(plain, body);
        }
    }

    #[test]
    fn a_body_is_the_json_array_gzipped_or_not() {
        use std::io::Read as _;
        let batch = items(2);
        let plain = Encoder::new(false)
            .encode(&batch)
            .expect("no compression to fail");
        assert_eq!(&plain[..], b"[{\"i\":0},{\"i\":1}]");
        let gzipped = Encoder::new(true).encode(&batch).expect("compresses");
        let mut unzipped = Vec::new();
        flate2::read::GzDecoder::new(&gzipped[..])
            .read_to_end(&mut unzipped)
            .expect("a valid gzip stream");
        assert_eq!(unzipped, plain);
    }
}
