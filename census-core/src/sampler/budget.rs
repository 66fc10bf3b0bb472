//! A sampler that holds a budget: the rate of [`Sampler::rate_limited`] adapts so that about
//! its number of traces per second is kept.
//!
//! The hot path is a fixed-rate sampler's: a root reads the rate in force, as at any rate. The
//! adapting happens on the export worker, which is handed every recorded span anyway: it counts
//! the traces kept since it last looked ([`RateLimit::observe`]), and [`Adaptation::step`], a
//! pure function of its state, what was counted and how long that took, says the next rate.
//!
//! What the worker sees is the kept traces only, so the load offered to the sampler is
//! estimated from them: each root the sampler kept stands for `100 / sampleRate` roots it was
//! offered (its own rate: right across changes of the rate too), smoothed over about a second.
//! A count too far above the estimate to be chance replaces it at once, so that a burst is cut
//! at the first step that sees it; one too far below halves it at most. The rate that keeps the
//! budget is then the budget over that load, less what callers' `01` flags make this process
//! keep. What was kept beyond the budget or short of it (in the time a change takes to be seen,
//! from chance, and from the rates being steps) is made up for over the next seconds, within
//! bounds, so that the budget holds over time and not only on the estimates' average.
//!
//! The rates are the steps `1 / n` (percentages `100 / n`): Application Insights reads
//! `sampleRate` as an item count of `100 / sampleRate`, a whole number in its own SDKs. Putting
//! one in force builds nothing: the tables kept ids are built from at low rates do not depend on
//! the rate, and are built once, at install.

use std::time::{Duration, Instant};

use super::Sampler;
use crate::record::{KeptBy, Record};

/// The least time between two adaptations: shorter intervals see too few traces to count.
const STEP: Duration = Duration::from_millis(100);
/// How long the estimate of the offered load remembers, in seconds: the time constant of its
/// exponential moving average.
const SMOOTHING: f64 = 1.0;
/// How many standard deviations from the estimate a count must be to replace it at once.
const SURPRISE: f64 = 4.0;
/// The most seconds of budget owed or credited: a surplus from a burst is made up for by at
/// most this much less, a shortfall by at most this much more; beyond, it is forgotten.
const CARRY: f64 = 3.0;
/// Over how many seconds a surplus or a shortfall is made up.
const PAYBACK: f64 = 2.0;
/// The most of the budget a second given to making up for a surplus (or a shortfall): a rate
/// never falls to nothing to pay for a burst.
const MOST: f64 = 0.75;

/// Builds what the lowest rates take (see `ids::prepare`), at install.
pub(super) fn prepare() {
    super::ids::prepare(Rung::LOWEST.rate());
}

/// One of the rates a rate-limited sampler keeps traces at: `1 / n`, recorded as the
/// percentage `100 / n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rung(u32);

impl Rung {
    /// Everything.
    const ALL: Rung = Rung(1);
    /// The lowest rate, 1e-6 (0.0001 %): a floor, so that a trace is still kept now and then to
    /// see the load by.
    const LOWEST: Rung = Rung(1_000_000);

    /// The highest rung at or below `rate` (the lowest for a rate below it or NaN).
    fn at_or_below(rate: f64) -> Rung {
        if rate >= 1.0 {
            return Rung::ALL;
        }
        let n = (1.0 / rate).ceil();
        if rate > 0.0 && n < f64::from(Rung::LOWEST.0) {
            Rung(n as u32)
        } else {
            Rung::LOWEST
        }
    }

    /// The percentage recorded for it (`sampleRate`).
    pub(crate) fn percent(self) -> f32 {
        (100.0 / f64::from(self.0)) as f32
    }

    /// The rate traces are decided at: the percentage recorded for it over 100, as a reader
    /// of the percentage finds it (the `f32` widened, or its shortest decimal form as the
    /// envelope writes it, whichever is lower), so that every trace kept here scores below the
    /// rate any reader derives from `sampleRate`.
    pub(crate) fn rate(self) -> f64 {
        let percent = self.percent();
        let written: f64 = percent.to_string().parse().unwrap_or(f64::from(percent));
        f64::from(percent).min(written) / 100.0
    }
}

/// What the worker counted among the spans it was handed since it last adapted the rate.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Seen {
    /// Roots this process's sampler kept.
    pub(crate) kept: u64,
    /// The roots they stand for: the sum of their item counts, `100 / sampleRate`.
    pub(crate) offered: f64,
    /// Roots kept because their callers recorded their traces (flag `01`).
    pub(crate) followed: u64,
}

/// The state of a rate-limited sampler's adaptation.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Adaptation {
    /// Traces per second.
    budget: f64,
    /// Roots offered to the sampler per second, estimated.
    offered: f64,
    /// Roots kept on their callers' word per second, estimated.
    followed: f64,
    /// Traces kept beyond the budget and not yet made up for; below zero, a shortfall.
    debt: f64,
    /// The rate in force.
    rung: Rung,
    /// The rate in force before it: the traces counted at a step were kept at either.
    previous: Rung,
    /// Whether any trace was seen yet.
    loaded: bool,
}

impl Adaptation {
    /// Starts keeping everything.
    pub(crate) fn new(traces_per_second: f64) -> Adaptation {
        Adaptation {
            budget: traces_per_second,
            offered: 0.0,
            followed: 0.0,
            debt: 0.0,
            rung: Rung::ALL,
            previous: Rung::ALL,
            loaded: false,
        }
    }

    /// The rate in force.
    pub(crate) fn rung(&self) -> Rung {
        self.rung
    }

    /// The rate for the next interval, from what was `seen` over the `elapsed` time since the
    /// last step.
    pub(crate) fn step(&mut self, elapsed: Duration, seen: Seen) -> Rung {
        let seconds = elapsed.as_secs_f64();
        if seconds <= 0.0 {
            return self.rung;
        }
        // The offered load: smoothed, unless the count is too far from the estimate to be
        // chance. The sum of item counts over an interval has a variance of about the roots
        // offered times the item count (each kept root adds `1 / rate` with probability `rate`).
        let lowest = self.rung.rate().min(self.previous.rate());
        let expected = self.offered * seconds;
        let deviation = ((expected + 1.0) / lowest).sqrt();
        let smoothing = 1.0 - (-seconds / SMOOTHING).exp();
        if seen.offered - expected > SURPRISE * deviation {
            // More: at once, so that a burst is cut in one step.
            self.offered = seen.offered / seconds;
        } else if expected - seen.offered > SURPRISE * deviation {
            // Less: by halves at most, as an interval's few traces may say too little, and a
            // load taken too low lets the next burst through.
            self.offered = (seen.offered / seconds).max(self.offered / 2.0);
        } else {
            self.offered += smoothing * (seen.offered / seconds - self.offered);
        }
        self.followed += smoothing * (seen.followed as f64 / seconds - self.followed);

        // What was kept against the budget. Not what was kept before any load was seen (at
        // 100 %, not knowing better), and no credit builds up while the load is within the
        // budget: a quiet minute does not buy a loud one.
        let kept = (seen.kept + seen.followed) as f64;
        if self.loaded {
            self.debt += kept - self.budget * seconds;
        }
        self.loaded |= kept > 0.0;
        let unsampled = self.offered + self.followed;
        if unsampled <= self.budget {
            self.debt = self.debt.max(0.0);
        }
        self.debt = self.debt.clamp(-CARRY * self.budget, CARRY * self.budget);

        let payback = (self.debt / PAYBACK).clamp(-MOST * self.budget, MOST * self.budget);
        let room = self.budget - self.followed - payback;
        let rate = if self.offered > 0.0 {
            room / self.offered
        } else {
            1.0
        };
        self.previous = self.rung;
        self.rung = Rung::at_or_below(rate);
        self.rung
    }
}

/// A rate-limited sampler as the export worker runs it: counts what it is handed, and puts the
/// adapted rate in force.
#[derive(Debug)]
pub(crate) struct RateLimit {
    adaptation: Adaptation,
    seen: Seen,
    since: Instant,
}

impl RateLimit {
    /// For a [rate-limited](Sampler::rate_limited) sampler; `None` for any other.
    pub(crate) fn new(sampler: &Sampler, now: Instant) -> Option<RateLimit> {
        sampler.traces_per_second().map(|budget| RateLimit {
            adaptation: Adaptation::new(budget),
            seen: Seen::default(),
            since: now,
        })
    }

    /// Counts the traces among `drained` (records just taken from the queue), and adapts the
    /// rate when the last adaptation is long enough ago.
    pub(crate) fn observe(&mut self, drained: &[Record], now: Instant) {
        for span in drained.iter().filter_map(Record::as_span) {
            match span.kept_by() {
                KeptBy::Parent => {}
                KeptBy::Sampler => {
                    self.seen.kept += 1;
                    self.seen.offered += 100.0 / f64::from(span.sample_percent());
                }
                KeptBy::Caller => self.seen.followed += 1,
            }
        }
        let elapsed = now.saturating_duration_since(self.since);
        if elapsed < STEP {
            return;
        }
        let before = self.adaptation.rung();
        let rung = self
            .adaptation
            .step(elapsed, std::mem::take(&mut self.seen));
        self.since = now;
        // Not once the pipeline stopped: the next one's sampler may be in force by then.
        if rung != before && super::is_active() {
            super::put_in_force(rung.rate());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::next_random;

    #[test]
    fn each_rung_s_rate_gives_back_its_percentage_and_no_reader_finds_a_lower_one() {
        let mut rungs: Vec<u32> = (1..=20_000).collect();
        rungs.extend((0..20_000).map(|_| 1 + (next_random() % 1_000_000) as u32));
        rungs.push(Rung::LOWEST.0);
        for n in rungs {
            let rung = Rung(n);
            let percent = rung.percent();
            let rate = rung.rate();
            // What a new root records is computed from the rate alone.
            assert_eq!(super::super::percent_of(rate), percent, "1/{n}");
            let written: f64 = percent.to_string().parse().unwrap();
            assert!(rate <= f64::from(percent) / 100.0, "1/{n}");
            assert!(rate <= written / 100.0, "1/{n}");
            assert!((rate * f64::from(n) - 1.0).abs() < 1e-6, "1/{n}");
        }
    }

    #[test]
    fn rates_fall_to_the_rung_at_or_below_them() {
        for (rate, n) in [
            (2.0, 1),
            (1.0, 1),
            (0.99, 2),
            (0.5, 2),
            (0.4, 3),
            (0.0334, 30),
            (1e-5, 100_000),
            (1e-7, 1_000_000),
            (0.0, 1_000_000),
            (-1.0, 1_000_000),
            (f64::NAN, 1_000_000),
        ] {
            assert_eq!(Rung::at_or_below(rate), Rung(n), "{rate}");
        }
    }

    /// Counts drawn as the worker would see them: roots offered at `offered` per second over
    /// `seconds`, each kept with the rate in force (Poisson arrivals, by a normal approximation
    /// where they are many), and `followed` more per second kept on their callers' word.
    fn seen(rung: Rung, offered: f64, followed: f64, seconds: f64) -> Seen {
        let rate = rung.rate();
        let kept = poisson(offered * rate * seconds);
        Seen {
            kept,
            offered: kept as f64 / rate,
            followed: poisson(followed * seconds),
        }
    }

    fn poisson(mean: f64) -> u64 {
        if mean > 50.0 {
            // Box-Muller.
            let u = (next_random() >> 11) as f64 / (1u64 << 53) as f64;
            let v = (next_random() >> 11) as f64 / (1u64 << 53) as f64;
            let z = (-2.0 * (1.0 - u).ln()).sqrt() * (std::f64::consts::TAU * v).cos();
            return (mean + z * mean.sqrt()).round().max(0.0) as u64;
        }
        let limit = (-mean).exp();
        let mut product = 1.0;
        let mut count = 0;
        loop {
            product *= (next_random() >> 11) as f64 / (1u64 << 53) as f64;
            if product <= limit {
                return count;
            }
            count += 1;
        }
    }

    /// Runs the adaptation over a load that changes with time, stepping every 200 ms, each step
    /// seeing the traces kept since the last at the rate that step set; the traces kept per
    /// second over the seconds after `warm_up`.
    fn kept_per_second(
        budget: f64,
        seconds: f64,
        warm_up: f64,
        load: impl Fn(f64) -> (f64, f64),
    ) -> (f64, Adaptation) {
        const DT: f64 = 0.2;
        let mut adaptation = Adaptation::new(budget);
        let mut kept = 0u64;
        let mut t = 0.0;
        while t < seconds {
            let (offered, followed) = load(t);
            let now = seen(adaptation.rung(), offered, followed, DT);
            if t >= warm_up {
                kept += now.kept + now.followed;
            }
            adaptation.step(Duration::from_secs_f64(DT), now);
            t += DT;
        }
        (kept as f64 / (seconds - warm_up), adaptation)
    }

    #[test]
    fn the_adaptation_holds_the_budget_under_each_kind_of_load() {
        // (what, budget, load at time t: (offered, followed) per second, kept per second
        // expected after a warm-up of 5 s over 60 s)
        type Load = fn(f64) -> (f64, f64);
        let table: [(&str, f64, Load, f64); 9] = [
            ("steady", 100.0, |_| (5_000.0, 0.0), 100.0),
            ("steady, small budget", 5.0, |_| (3_000.0, 0.0), 5.0),
            (
                "steady, just above the budget",
                100.0,
                |_| (150.0, 0.0),
                100.0,
            ),
            ("below the budget: everything", 100.0, |_| (60.0, 0.0), 60.0),
            ("idle", 100.0, |_| (0.0, 0.0), 0.0),
            (
                "bursts",
                100.0,
                |t| ((if t % 3.0 < 1.5 { 8_000.0 } else { 1_000.0 }), 0.0),
                100.0,
            ),
            ("very high load", 5.0, |_| (50_000_000.0, 0.0), 50.0),
            ("callers' traces count", 100.0, |_| (5_000.0, 40.0), 100.0),
            (
                "callers' traces alone over it",
                100.0,
                |_| (5_000.0, 150.0),
                150.0,
            ),
        ];
        for (what, budget, load, expected) in table {
            let (kept, _) = kept_per_second(budget, 65.0, 5.0, load);
            // Poisson noise over 60 s, plus 5 % for the adaptation.
            let tolerance = 0.05 * expected + 4.0 * (expected / 60.0).sqrt() + 0.01;
            assert!(
                (kept - expected).abs() <= tolerance,
                "{what}: {kept:.2} kept per second, {expected} expected"
            );
        }
    }

    #[test]
    fn the_rate_follows_a_load_that_goes_away_and_comes_back() {
        let mut adaptation = Adaptation::new(100.0);
        let step = Duration::from_millis(200);
        for _ in 0..50 {
            let now = seen(adaptation.rung(), 10_000.0, 0.0, 0.2);
            adaptation.step(step, now);
        }
        assert!((70..=140).contains(&adaptation.rung().0), "{adaptation:?}");
        // The load goes to zero: back to everything within a few seconds.
        for _ in 0..25 {
            adaptation.step(step, Seen::default());
        }
        assert_eq!(adaptation.rung(), Rung::ALL, "{adaptation:?}");
        // It comes back at once: the first step that sees it cuts the rate to the budget's
        // share of it, or below while the traces it kept at 100 % are made up for.
        let now = seen(adaptation.rung(), 10_000.0, 0.0, 0.2);
        adaptation.step(step, now);
        assert!(
            (80..=1_000).contains(&adaptation.rung().0),
            "{adaptation:?}"
        );
        // And then holds it, less what the step at 100 % kept beyond it (up to the carry, 300).
        let mut kept = 0;
        for _ in 0..50 {
            let now = seen(adaptation.rung(), 10_000.0, 0.0, 0.2);
            kept += now.kept;
            adaptation.step(step, now);
        }
        assert!((600..=1_050).contains(&kept), "{kept} kept in 10 s");
    }

    #[test]
    fn a_step_of_no_time_changes_nothing() {
        let mut adaptation = Adaptation::new(10.0);
        let before = adaptation.clone();
        let seen = Seen {
            kept: 5,
            offered: 5.0,
            followed: 0,
        };
        assert_eq!(adaptation.step(Duration::ZERO, seen), Rung::ALL);
        assert_eq!(adaptation, before);
    }
}
