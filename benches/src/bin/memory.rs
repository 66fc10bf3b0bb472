//! Peak memory while the ingestion endpoint is stalled and spans keep coming.
//!
//! The Azure exporter posts to a loopback sink that accepts connections, reads requests and
//! never answers; local storage is off. One thread records spans as fast as it can for the
//! given number of seconds while `VmHWM` (the peak RSS) is sampled every 250 ms. The peak must
//! stop growing: the queue, the exporter's channel and the transport's retry memory are bounded,
//! and what does not fit is dropped and counted.
//!
//! Usage: `memory [SECONDS] [--json PATH]` (default 20 s). Prints the series and a verdict;
//! with `--json`, also writes the figures for the report.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use census_benches::{Behaviour, Sink, rss_kib};
use census_runtime::azure::AzureExporter;
use census_runtime::inproc;

#[inproc]
#[inline(never)]
fn call(x: u64) -> u64 {
    black_box(x) ^ 0x9e37_79b9_7f4a_7c15
}

#[inproc]
#[inline(never)]
fn request(x: u64) -> u64 {
    let mut acc = x;
    for i in 0..10 {
        acc = call(acc.wrapping_add(i));
    }
    acc
}

fn main() {
    let mut seconds = 20u64;
    let mut json = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--json" => json = args.next(),
            other => match other.parse() {
                Ok(s) => seconds = s,
                Err(_) => {
                    eprintln!("usage: memory [SECONDS] [--json PATH]");
                    std::process::exit(2);
                }
            },
        }
    }

    let sink = Sink::start(Behaviour::Stall).expect("a loopback port");
    let census = census_runtime::pipeline()
        .exporter(
            AzureExporter::builder()
                .connection_string(sink.connection_string())
                .no_storage()
                // Short timeouts and backoffs: the retry memory fills in the first seconds rather
                // than one backoff cycle at a time, so that the second half of the run finds
                // every buffer at its cap.
                .timeout(Duration::from_millis(250))
                .retry_backoff(Duration::from_millis(10), Duration::from_millis(100))
                .build()
                .expect("the Azure exporter builds"),
        )
        .install()
        .expect("no other pipeline is installed");

    let (baseline, _) = rss_kib().unwrap_or((0, 0));
    let stop = Arc::new(AtomicBool::new(false));
    let produced = Arc::new(AtomicU64::new(0));
    let producer = {
        let stop = Arc::clone(&stop);
        let produced = Arc::clone(&produced);
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for i in 0..1_000 {
                    black_box(request(i));
                }
                n += 11_000;
                produced.store(n, Ordering::Relaxed);
            }
        })
    };

    let start = Instant::now();
    let mut series = Vec::new();
    println!("  t (s)   spans made   VmHWM (KiB)   VmRSS (KiB)");
    while start.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_millis(250));
        let (hwm, rss) = rss_kib().unwrap_or((0, 0));
        let t = start.elapsed().as_secs_f64();
        let made = produced.load(Ordering::Relaxed);
        series.push((t, made, hwm, rss));
        if series.len() % 4 == 0 {
            println!("{t:7.1} {made:12} {hwm:13} {rss:13}");
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = producer.join();
    let diagnostics = census_runtime::pipeline::diagnostics();
    let azure = census_runtime::azure::diagnostics();
    let _ = census.shutdown(Duration::from_millis(500));

    // Bounded: the peak reached by half of the run (past the first request timeouts and
    // retries, which fill the transport's memory) is within 5% (or 1 MiB) of the peak at the
    // end, while spans kept coming the whole time.
    let half = series
        .iter()
        .find(|(t, ..)| *t >= seconds as f64 / 2.0)
        .map_or(0, |s| s.2);
    let peak = series.last().map_or(0, |s| s.2);
    let made = produced.load(Ordering::Relaxed);
    let growth = peak.saturating_sub(half);
    let bounded = growth <= (half / 20).max(1024);
    println!(
        "spans made: {made}; requests the stalled endpoint took: {}; dropped at the full queue: {}; dropped behind the transport: {}",
        sink.requests(),
        diagnostics.dropped_queue_full,
        azure.dropped_unstored + azure.dropped_storage_full + azure.dropped_expired
    );
    println!(
        "peak RSS: {baseline} KiB before, {half} KiB after {:.0} s, {peak} KiB after {seconds} s: {}",
        seconds as f64 / 2.0,
        if bounded { "bounded" } else { "GROWING" }
    );
    if let Some(path) = json {
        let figures = serde_json::json!({
            "seconds": seconds,
            "spans": made,
            "baseline_kib": baseline,
            "half_kib": half,
            "peak_kib": peak,
            "bounded": bounded,
            "dropped_queue_full": diagnostics.dropped_queue_full,
        });
        if let Err(error) = std::fs::write(&path, figures.to_string()) {
            eprintln!("could not write {path}: {error}");
            std::process::exit(1);
        }
    }
    if !bounded {
        std::process::exit(1);
    }
}
