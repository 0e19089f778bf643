//! Round-trip times for `$stats`, in the shape of Medplum's agent (`channel-stats-tracker.ts`):
//! per inbound channel, the time from sending a device message to the relay to its answer; per
//! remote, the time from a push's arrival to the device's answer. The last
//! [`MAX_SAMPLES`] times of each are kept; `pendingCount` is what is on its way now.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

/// Samples kept per channel or remote (Medplum's `maxRttSamples`).
pub(crate) const MAX_SAMPLES: usize = 1000;

/// Remotes tracked at most: the relay chooses them, so their number is bounded here. A
/// remote beyond it is not tracked (its pushes still count in the metrics).
const MAX_REMOTES: usize = 1000;

/// One channel's or remote's round-trip times, in milliseconds.
#[derive(Debug, Default)]
struct Rtt {
    samples: VecDeque<f64>,
    pending: u64,
}

impl Rtt {
    fn finished(&mut self, took: Option<Duration>) {
        self.pending = self.pending.saturating_sub(1);
        if let Some(took) = took {
            if self.samples.len() == MAX_SAMPLES {
                self.samples.pop_front();
            }
            self.samples.push_back(took.as_secs_f64() * 1000.0);
        }
    }

    /// `{count, min, max, average, p50, p95, p99, pendingCount}`, -1 for each time when there
    /// is no sample (as Medplum's agent).
    fn to_json(&self) -> Value {
        if self.samples.is_empty() {
            return json!({"count": 0, "min": -1, "max": -1, "average": -1, "p50": -1,
                "p95": -1, "p99": -1, "pendingCount": self.pending});
        }
        let mut sorted: Vec<f64> = self.samples.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        // Nearest rank: the smallest sample with at least p% of the samples at or below it.
        let rank = |p: f64| sorted[((p / 100.0 * n as f64).ceil() as usize).clamp(1, n) - 1];
        json!({
            "count": n,
            "min": sorted[0],
            "max": sorted[n - 1],
            "average": sorted.iter().sum::<f64>() / n as f64,
            "p50": rank(50.0),
            "p95": rank(95.0),
            "p99": rank(99.0),
            "pendingCount": self.pending,
        })
    }
}

/// Which table a time goes in.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    /// An inbound channel, by `Agent.channel.name`.
    Channel,
    /// A push destination, by its URL.
    Remote,
}

/// The round-trip times of every channel and remote; cheap to clone, shared.
#[derive(Debug, Clone, Default)]
pub(crate) struct RttStats {
    channels: Arc<Mutex<BTreeMap<String, Rtt>>>,
    remotes: Arc<Mutex<BTreeMap<String, Rtt>>>,
}

impl RttStats {
    fn table(&self, kind: Kind) -> std::sync::MutexGuard<'_, BTreeMap<String, Rtt>> {
        match kind {
            Kind::Channel => &self.channels,
            Kind::Remote => &self.remotes,
        }
        .lock()
        .unwrap_or_else(|p| p.into_inner())
    }

    /// Something left for `key`: it is pending until [`RttStats::finished`].
    pub(crate) fn started(&self, kind: Kind, key: &str) {
        let mut table = self.table(kind);
        if let Some(rtt) = table.get_mut(key) {
            rtt.pending += 1;
        } else if table.len() < MAX_REMOTES {
            table.insert(
                key.to_owned(),
                Rtt {
                    pending: 1,
                    ..Rtt::default()
                },
            );
        }
    }

    /// What left for `key` came back after `took`, or (`None`) did not come back.
    pub(crate) fn finished(&self, kind: Kind, key: &str, took: Option<Duration>) {
        if let Some(rtt) = self.table(kind).get_mut(key) {
            rtt.finished(took);
        }
    }

    /// `{key: {"rtt": {...}}}` for one table.
    pub(crate) fn to_json(&self, kind: Kind) -> serde_json::Map<String, Value> {
        self.table(kind)
            .iter()
            .map(|(k, rtt)| (k.clone(), json!({"rtt": rtt.to_json()})))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank_and_empty_is_minus_one() {
        let stats = RttStats::default();
        stats.started(Kind::Remote, "mllp://a:1");
        let empty = &stats.to_json(Kind::Remote)["mllp://a:1"]["rtt"];
        assert_eq!(empty["count"], 0);
        assert_eq!(empty["p99"], -1);
        assert_eq!(empty["pendingCount"], 1);
        for ms in 1..=100u64 {
            stats.started(Kind::Channel, "in");
            stats.finished(Kind::Channel, "in", Some(Duration::from_millis(ms)));
        }
        let rtt = &stats.to_json(Kind::Channel)["in"]["rtt"];
        assert_eq!(rtt["count"], 100);
        assert_eq!(rtt["min"], 1.0);
        assert_eq!(rtt["max"], 100.0);
        assert_eq!(rtt["average"], 50.5);
        assert_eq!(rtt["p50"], 50.0);
        assert_eq!(rtt["p95"], 95.0);
        assert_eq!(rtt["p99"], 99.0);
        assert_eq!(rtt["pendingCount"], 0);
    }

    #[test]
    fn samples_are_bounded() {
        let stats = RttStats::default();
        for _ in 0..MAX_SAMPLES + 10 {
            stats.started(Kind::Channel, "in");
            stats.finished(Kind::Channel, "in", Some(Duration::from_millis(1)));
        }
        assert_eq!(
            stats.to_json(Kind::Channel)["in"]["rtt"]["count"],
            MAX_SAMPLES
        );
    }
}
