//! The one table of requests in flight: what was sent with a callback, until when an answer is
//! awaited, and which callbacks expired recently (so a late answer can be told from a stray one).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

/// Expired or cancelled callbacks remembered, so that an answer to one of them is reported as
/// late rather than unmatched. The oldest is forgotten first.
pub(crate) const EXPIRED_KEPT: usize = 1024;

#[derive(Debug, Clone, Copy)]
struct Pending {
    deadline: Instant,
    sent: Instant,
    /// Order of sending; breaks ties between equal deadlines.
    seq: u64,
}

/// What became of an answer's callback.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// It was in flight; it is no longer. How long the answer took.
    Answered(Duration),
    /// Its deadline had passed, or the application had given up on it.
    Late,
    /// Not sent on this link, or forgotten.
    Unknown,
}

/// Requests in flight by callback, ordered by deadline.
#[derive(Debug, Default)]
pub(crate) struct Callbacks {
    pending: HashMap<String, Pending>,
    deadlines: BTreeMap<(Instant, u64), String>,
    expired: VecDeque<String>,
    expired_set: HashSet<String>,
    next_seq: u64,
}

impl Callbacks {
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }

    pub(crate) fn contains(&self, callback: &str) -> bool {
        self.pending.contains_key(callback)
    }

    /// Starts waiting for `callback` until `deadline`. A callback that expired before is sent
    /// again: it is in flight once more and no longer counted as expired.
    pub(crate) fn insert(&mut self, callback: &str, deadline: Instant, now: Instant) {
        if self.expired_set.remove(callback) {
            self.expired.retain(|c| c != callback);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.deadlines.insert((deadline, seq), callback.to_owned());
        self.pending.insert(
            callback.to_owned(),
            Pending {
                deadline,
                sent: now,
                seq,
            },
        );
    }

    /// An answer for `callback` arrived at `now`.
    pub(crate) fn answer(&mut self, callback: &str, now: Instant) -> Lookup {
        if let Some(p) = self.pending.remove(callback) {
            self.deadlines.remove(&(p.deadline, p.seq));
            return Lookup::Answered(now.saturating_duration_since(p.sent));
        }
        if self.expired_set.contains(callback) {
            return Lookup::Late;
        }
        Lookup::Unknown
    }

    /// Stops waiting for `callback`; an answer to it later is late. `false` if it was not in
    /// flight.
    pub(crate) fn cancel(&mut self, callback: &str) -> bool {
        let Some(p) = self.pending.remove(callback) else {
            return false;
        };
        self.deadlines.remove(&(p.deadline, p.seq));
        self.remember_expired(callback.to_owned());
        true
    }

    /// The earliest deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.keys().next().map(|(d, _)| *d)
    }

    /// Takes the first request whose deadline is at or before `now`, remembering it as expired.
    pub(crate) fn pop_expired(&mut self, now: Instant) -> Option<String> {
        let entry = self.deadlines.first_entry()?;
        if entry.key().0 > now {
            return None;
        }
        let callback = entry.remove();
        self.pending.remove(&callback);
        self.remember_expired(callback.clone());
        Some(callback)
    }

    /// Takes every request still in flight, in the order they were sent (the link is closing).
    pub(crate) fn drain(&mut self) -> Vec<String> {
        let mut all: Vec<(u64, String)> = self.pending.drain().map(|(c, p)| (p.seq, c)).collect();
        self.deadlines.clear();
        all.sort_unstable();
        all.into_iter().map(|(_, c)| c).collect()
    }

    /// The callbacks in flight, in the order they were sent.
    pub(crate) fn in_flight(&self) -> Vec<&str> {
        let mut all: Vec<(u64, &str)> = self
            .pending
            .iter()
            .map(|(c, p)| (p.seq, c.as_str()))
            .collect();
        all.sort_unstable();
        all.into_iter().map(|(_, c)| c).collect()
    }

    fn remember_expired(&mut self, callback: String) {
        if self.expired.len() == EXPIRED_KEPT
            && let Some(old) = self.expired.pop_front()
        {
            self.expired_set.remove(&old);
        }
        self.expired_set.insert(callback.clone());
        self.expired.push_back(callback);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answered_expired_late_and_forgotten() {
        let t0 = Instant::now();
        let mut c = Callbacks::default();
        c.insert("a", t0 + Duration::from_secs(2), t0);
        c.insert("b", t0 + Duration::from_secs(1), t0);
        assert_eq!(c.next_deadline(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(c.in_flight(), ["a", "b"]);
        assert_eq!(c.pop_expired(t0), None);
        assert_eq!(
            c.pop_expired(t0 + Duration::from_secs(1)).as_deref(),
            Some("b")
        );
        assert_eq!(c.answer("b", t0), Lookup::Late);
        assert_eq!(
            c.answer("a", t0 + Duration::from_millis(1500)),
            Lookup::Answered(Duration::from_millis(1500))
        );
        assert_eq!(c.answer("a", t0), Lookup::Unknown);
        assert_eq!(c.len(), 0);
        // Sent again after expiring: in flight, not late.
        c.insert("b", t0 + Duration::from_secs(5), t0);
        assert_eq!(c.answer("b", t0), Lookup::Answered(Duration::ZERO));
        for i in 0..=EXPIRED_KEPT {
            c.insert(&i.to_string(), t0, t0);
            c.cancel(&i.to_string());
        }
        assert_eq!(c.answer("0", t0), Lookup::Unknown);
        assert_eq!(c.answer("1", t0), Lookup::Late);
    }
}
