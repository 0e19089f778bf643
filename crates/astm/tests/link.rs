//! The E1381 link state machine: two ends wired together in memory, a fake clock, and a wire
//! that can split, corrupt or drop bytes. No sockets, no sleeping.

use std::time::{Duration, Instant};

use astm::frame::{ACK, ENQ, EOT, NAK, frames};
use astm::{Error, Link, LinkEvent, LinkOptions, Role};

fn opts(role: Role) -> LinkOptions {
    LinkOptions {
        role,
        ..LinkOptions::default()
    }
}

const MSG: &[u8] =
    b"H|\\^&|||Analyzer\rP|1||PID123||Doe^John\rO|1|S001||^^^GLU|R\rR|1|^^^GLU|5.4|mmol/L\rL|1|N\r";

/// Two links and a clock. `filter` sees every chunk going a → b (true) or b → a (false) and
/// returns what arrives.
struct Wire {
    a: Link,
    b: Link,
    now: Instant,
    /// deliver byte by byte
    trickle: bool,
    a_events: Vec<LinkEvent>,
    b_events: Vec<LinkEvent>,
    a_sent: Vec<Vec<u8>>,
    b_sent: Vec<Vec<u8>>,
}

impl Wire {
    fn new(a: Role, b: Role) -> Wire {
        Wire {
            a: Link::new(opts(a)),
            b: Link::new(opts(b)),
            now: Instant::now(),
            trickle: false,
            a_events: Vec::new(),
            b_events: Vec::new(),
            a_sent: Vec::new(),
            b_sent: Vec::new(),
        }
    }

    /// Moves bytes until neither side has anything to send.
    fn pump(&mut self, mut filter: impl FnMut(bool, Vec<u8>) -> Vec<u8>) {
        loop {
            let mut moved = false;
            while let Some(out) = self.a.poll_transmit() {
                self.a_sent.push(out.clone());
                let got = filter(true, out);
                deliver(&mut self.b, &got, self.now, self.trickle);
                moved = true;
            }
            while let Some(out) = self.b.poll_transmit() {
                self.b_sent.push(out.clone());
                let got = filter(false, out);
                deliver(&mut self.a, &got, self.now, self.trickle);
                moved = true;
            }
            while let Some(e) = self.a.poll_event() {
                self.a_events.push(e);
            }
            while let Some(e) = self.b.poll_event() {
                self.b_events.push(e);
            }
            if !moved {
                return;
            }
        }
    }

    /// Advances the clock to the next timer of either side and fires it.
    fn advance(&mut self) -> Duration {
        let next = [self.a.poll_timeout(), self.b.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        let Some(t) = next else { return Duration::ZERO };
        let waited = t.saturating_duration_since(self.now);
        self.now = self.now.max(t);
        self.a.handle_timeout(self.now);
        self.b.handle_timeout(self.now);
        waited
    }
}

fn deliver(link: &mut Link, bytes: &[u8], now: Instant, trickle: bool) {
    if trickle {
        for b in bytes {
            link.handle_bytes(std::slice::from_ref(b), now);
        }
    } else {
        link.handle_bytes(bytes, now);
    }
}

fn received(events: &[LinkEvent]) -> Vec<Vec<u8>> {
    events
        .iter()
        .filter_map(|e| {
            if let LinkEvent::Received(m) = e {
                Some(m.clone())
            } else {
                None
            }
        })
        .collect()
}

fn sent(events: &[LinkEvent]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, LinkEvent::Sent))
        .count()
}

#[test]
fn a_message_goes_across_whole_or_byte_by_byte() {
    for trickle in [false, true] {
        let mut w = Wire::new(Role::Instrument, Role::Computer);
        w.trickle = trickle;
        w.a.send(MSG, w.now).unwrap();
        w.pump(|_, b| b);
        assert_eq!(sent(&w.a_events), 1);
        assert_eq!(received(&w.b_events), [MSG.to_vec()]);
        // ENQ, five frames, EOT; the receiver answers ACK six times and sends nothing after EOT
        assert_eq!(w.a_sent.first().unwrap(), &[ENQ]);
        assert_eq!(w.a_sent.last().unwrap(), &[EOT]);
        assert_eq!(w.a_sent.len(), 7);
        assert!(w.b_sent.iter().all(|b| b == &[ACK]) && w.b_sent.len() == 6);
        assert!(w.a.is_idle() && w.b.is_idle());
    }
}

#[test]
fn fn_wraps_and_long_records_are_joined() {
    let mut msg = b"H|\\^&\r".to_vec();
    for i in 0..9 {
        msg.extend_from_slice(format!("R|{i}|^^^T{i}|{i}\r").as_bytes());
    }
    msg.extend_from_slice(format!("C|1|I|{}|G\r", "X".repeat(592)).as_bytes());
    msg.extend_from_slice(b"L|1|N\r");
    let mut w = Wire::new(Role::Instrument, Role::Computer);
    w.a.send(&msg, w.now).unwrap();
    w.pump(|_, b| b);
    assert_eq!(received(&w.b_events), [msg.clone()]);
    let fns: Vec<u8> = w
        .a_sent
        .iter()
        .filter(|f| f.len() > 1)
        .map(|f| f[1])
        .collect();
    assert_eq!(fns, b"12345670123456"); // H, 9 one-frame records, a 3-frame comment, L
}

#[test]
fn corrupted_frame_is_naked_and_retransmitted() {
    let mut w = Wire::new(Role::Instrument, Role::Computer);
    w.a.send(MSG, w.now).unwrap();
    let mut corrupted = false;
    w.pump(|a_to_b, mut b| {
        // flip a bit in the third frame, once
        if a_to_b && b.len() > 1 && b[1] == b'3' && !corrupted {
            corrupted = true;
            b[4] ^= 0x01;
        }
        b
    });
    assert_eq!(received(&w.b_events), [MSG.to_vec()]);
    assert_eq!(w.b_sent.iter().filter(|b| b == &&vec![NAK]).count(), 1);
    assert_eq!(w.a.stats().retransmissions, 1);
    assert_eq!(w.b.stats().frames_refused, 1);
}

#[test]
fn six_naks_give_up_with_eot() {
    let mut w = Wire::new(Role::Instrument, Role::Computer);
    w.a.send(MSG, w.now).unwrap();
    w.pump(|a_to_b, mut b| {
        if a_to_b && b.len() > 1 && b[1] == b'2' {
            b[4] ^= 0x01; // frame 2 always arrives damaged
        }
        b
    });
    let failed = w.a_events.iter().find_map(|e| {
        if let LinkEvent::Failed(e) = e {
            Some(e.to_string())
        } else {
            None
        }
    });
    assert_eq!(failed.as_deref(), Some("frame 2 (FN 2) refused 6 times"));
    assert_eq!(
        w.a_sent
            .iter()
            .filter(|f| f.len() > 1 && f[1] == b'2')
            .count(),
        6
    );
    assert_eq!(w.a_sent.last().unwrap(), &[EOT]);
    // the receiver got frame 1 and then EOT: not a complete message, so not delivered
    assert!(received(&w.b_events).is_empty());
    assert!(w.b_events.iter().any(|e| matches!(
        e,
        LinkEvent::Discarded("incomplete: no L record before EOT")
    )));
}

#[test]
fn lost_ack_means_a_duplicate_that_is_acked_and_dropped() {
    let mut w = Wire::new(Role::Instrument, Role::Computer);
    w.a.send(MSG, w.now).unwrap();
    let mut acks = 0;
    w.pump(|a_to_b, b| {
        if !a_to_b && b == [ACK] {
            acks += 1;
            if acks == 3 {
                return Vec::new(); // the ACK of frame 2 is lost
            }
        }
        b
    });
    // the sender times out waiting and... no: it waits 15 s, then gives up. Fire the timer.
    assert!(w.a_events.is_empty());
    let waited = w.advance();
    assert_eq!(waited, Duration::from_secs(15));
    w.pump(|_, b| b);
    assert!(matches!(
        w.a_events.last(),
        Some(LinkEvent::Failed(Error::Timeout(_)))
    ));
}

#[test]
fn repeated_frame_after_a_nak_of_the_ack_is_dropped() {
    // The receiver's ACK arrives damaged (as junk): the sender repeats the frame, the receiver
    // sees the same FN again, ACKs and drops it.
    let mut w = Wire::new(Role::Instrument, Role::Computer);
    w.a.send(MSG, w.now).unwrap();
    let mut acks = 0;
    w.pump(|a_to_b, b| {
        if !a_to_b && b == [ACK] {
            acks += 1;
            if acks == 3 {
                return vec![NAK];
            }
        }
        b
    });
    assert_eq!(received(&w.b_events), [MSG.to_vec()]);
    assert_eq!(w.b.stats().duplicates, 1);
}

#[test]
fn receiver_interrupt_then_whole_message_again() {
    let mut w = Wire::new(Role::Computer, Role::Instrument);
    w.a.send(MSG, w.now).unwrap();
    // the instrument asks for the line once the first frame arrives
    let mut asked = false;
    loop {
        let mut moved = false;
        while let Some(out) = w.a.poll_transmit() {
            w.b.handle_bytes(&out, w.now);
            if !asked && out.len() > 1 {
                asked = true;
                // it wants to send results: answer the *next* frame with EOT
                w.b.request_interrupt();
            }
            moved = true;
        }
        while let Some(out) = w.b.poll_transmit() {
            w.a.handle_bytes(&out, w.now);
            moved = true;
        }
        if !moved {
            break;
        }
    }
    while let Some(e) = w.b.poll_event() {
        w.b_events.push(e);
    }
    assert!(
        w.b_events
            .iter()
            .any(|e| matches!(e, LinkEvent::Discarded("interrupted by this side")))
    );
    // the instrument sends its own message now
    w.b.send(b"H|\\^&\rR|1|^^^GLU|5.4\rL|1|N\r", w.now).unwrap();
    w.pump(|_, b| b);
    assert_eq!(
        received(&w.a_events),
        [b"H|\\^&\rR|1|^^^GLU|5.4\rL|1|N\r".to_vec()]
    );
    // and 15 s later the computer sends its whole message again
    assert_eq!(w.advance(), Duration::from_secs(15));
    w.pump(|_, b| b);
    assert_eq!(sent(&w.a_events), 1);
    assert_eq!(received(&w.b_events), [MSG.to_vec()]);
}

#[test]
fn contention_the_instrument_wins() {
    let mut w = Wire::new(Role::Instrument, Role::Computer);
    let from_instrument = b"H|\\^&\rR|1|^^^NA|140\rL|1|N\r".to_vec();
    w.a.send(&from_instrument, w.now).unwrap();
    w.b.send(MSG, w.now).unwrap();
    // both ENQs cross on the wire
    let enq_a = w.a.poll_transmit().unwrap();
    let enq_b = w.b.poll_transmit().unwrap();
    assert_eq!(
        (enq_a.as_slice(), enq_b.as_slice()),
        (&[ENQ][..], &[ENQ][..])
    );
    w.a.handle_bytes(&enq_b, w.now);
    w.b.handle_bytes(&enq_a, w.now);
    w.pump(|_, b| b);
    // the instrument tries again after 1 s; the computer answers it
    assert_eq!(w.advance(), Duration::from_secs(1));
    w.pump(|_, b| b);
    assert_eq!(received(&w.b_events), [from_instrument]);
    assert_eq!(sent(&w.a_events), 1);
    // the computer waits its 20 s (from the collision) and then sends
    let waited = w.advance();
    assert_eq!(waited, Duration::from_secs(19));
    w.pump(|_, b| b);
    assert_eq!(received(&w.a_events), [MSG.to_vec()]);
    assert_eq!(sent(&w.b_events), 1);
}

#[test]
fn busy_receiver_and_establishment_timeout() {
    // NAK to ENQ: try again after 10 s; after six attempts, give up.
    let mut a = Link::new(opts(Role::Computer));
    let mut now = Instant::now();
    a.send(MSG, now).unwrap();
    for attempt in 1..=6 {
        assert_eq!(a.poll_transmit().unwrap(), [ENQ], "attempt {attempt}");
        a.handle_bytes(&[NAK], now);
        if attempt < 6 {
            now = a.poll_timeout().unwrap();
            a.handle_timeout(now);
        }
    }
    assert!(matches!(
        a.poll_event(),
        Some(LinkEvent::Failed(Error::Busy(6)))
    ));
    // no answer at all: EOT after 15 s, then again after 10 s
    let mut a = Link::new(opts(Role::Computer));
    let start = Instant::now();
    a.send(MSG, start).unwrap();
    assert_eq!(a.poll_transmit().unwrap(), [ENQ]);
    assert_eq!(a.poll_timeout().unwrap() - start, Duration::from_secs(15));
    a.handle_timeout(start + Duration::from_secs(15));
    assert_eq!(a.poll_transmit().unwrap(), [EOT]);
    assert_eq!(a.poll_timeout().unwrap() - start, Duration::from_secs(25));
    a.handle_timeout(start + Duration::from_secs(25));
    assert_eq!(a.poll_transmit().unwrap(), [ENQ]);
}

#[test]
fn an_unanswered_enq_fails_at_once_without_retry() {
    let mut a = Link::new(LinkOptions {
        retry_unanswered_enq: false,
        ..opts(Role::Computer)
    });
    let start = Instant::now();
    a.send(MSG, start).unwrap();
    assert_eq!(a.poll_transmit().unwrap(), [ENQ]);
    a.handle_timeout(start + Duration::from_secs(14));
    assert!(a.poll_event().is_none());
    a.handle_timeout(start + Duration::from_secs(15));
    assert_eq!(a.poll_transmit().unwrap(), [EOT]);
    assert!(
        matches!(a.poll_event(), Some(LinkEvent::Failed(Error::Timeout(d))) if d == Duration::from_secs(15))
    );
    assert!(a.poll_transmit().is_none() && a.poll_timeout().is_none());
    // A NAK (busy) is still retried after the backoff.
    let mut a = Link::new(LinkOptions {
        retry_unanswered_enq: false,
        ..opts(Role::Computer)
    });
    a.send(MSG, start).unwrap();
    a.poll_transmit();
    a.handle_bytes(&[NAK], start);
    assert!(a.poll_event().is_none());
    let t = a.poll_timeout().unwrap();
    assert_eq!(t - start, Duration::from_secs(10));
    a.handle_timeout(t);
    assert_eq!(a.poll_transmit().unwrap(), [ENQ]);
}

#[test]
fn frame_timeout_and_receiver_timeout() {
    // The receiver answers ENQ, then falls silent: the sender sends EOT after 15 s and fails.
    let mut a = Link::new(opts(Role::Instrument));
    let t0 = Instant::now();
    a.send(MSG, t0).unwrap();
    a.poll_transmit();
    a.handle_bytes(&[ACK], t0);
    assert!(a.poll_transmit().unwrap().len() > 1);
    a.handle_timeout(t0 + Duration::from_secs(14));
    assert!(a.poll_event().is_none());
    a.handle_timeout(t0 + Duration::from_secs(15));
    assert_eq!(a.poll_transmit().unwrap(), [EOT]);
    assert!(
        matches!(a.poll_event(), Some(LinkEvent::Failed(Error::Timeout(d))) if d == Duration::from_secs(15))
    );
    // A receiver that gets half a message and then nothing drops it after 30 s.
    let mut b = Link::new(opts(Role::Computer));
    b.handle_bytes(&[ENQ], t0);
    let f = frames(MSG);
    b.handle_bytes(&f[0], t0);
    assert_eq!(b.poll_timeout().unwrap() - t0, Duration::from_secs(30));
    b.handle_timeout(t0 + Duration::from_secs(30));
    assert!(matches!(b.poll_event(), Some(LinkEvent::Discarded(_))));
    assert!(b.is_idle());
}

#[test]
fn garbage_and_bad_frames_never_panic_and_are_refused() {
    let mut b = Link::new(opts(Role::Computer));
    let t = Instant::now();
    b.handle_bytes(b"junk before ENQ", t);
    b.handle_bytes(&[ENQ], t);
    let _ = b.poll_transmit();
    // wrong FN (expected 1)
    b.handle_bytes(&frames(b"H|\\^&\rP|1\r")[1], t);
    assert_eq!(b.poll_transmit().unwrap(), [NAK]);
    // an endless frame: refused once it passes 247 bytes
    let mut long = vec![0x02];
    long.extend(vec![b'A'; 400]);
    b.handle_bytes(&long, t);
    assert_eq!(b.poll_transmit().unwrap(), [NAK]);
    assert!(b.poll_transmit().is_none());
    // and the session goes on
    for f in frames(b"H|\\^&\rL|1|N\r") {
        b.handle_bytes(&f, t);
        assert_eq!(b.poll_transmit().unwrap(), [ACK]);
    }
    b.handle_bytes(&[EOT], t);
    assert!(matches!(b.poll_event(), Some(LinkEvent::Received(m)) if m == b"H|\\^&\rL|1|N\r"));
}

fn confirming() -> Link {
    Link::new(LinkOptions {
        confirm_before_ack: true,
        ..opts(Role::Computer)
    })
}

#[test]
fn confirm_mode_delivers_at_the_last_frame_and_holds_its_ack() {
    // A long comment makes the message span intermediate (ETB) frames: only the last is held.
    let mut msg = MSG[..MSG.len() - b"L|1|N\r".len()].to_vec();
    msg.extend_from_slice(format!("C|1|I|{}|G\r", "X".repeat(600)).as_bytes());
    msg.extend_from_slice(b"L|1|N\r");
    let mut w = Wire::new(Role::Instrument, Role::Computer);
    w.b = confirming();
    w.a.send(&msg, w.now).unwrap();
    w.pump(|_, b| b);
    // Delivered, but the sender has not heard so: the last frame is unanswered.
    assert_eq!(received(&w.b_events), [msg.clone()]);
    assert_eq!(sent(&w.a_events), 0);
    let frames_sent = w.a_sent.iter().filter(|f| f.len() > 1).count();
    assert_eq!(
        w.b_sent.len(),
        frames_sent,
        "ENQ and all but the last frame ACKed"
    );
    // Stored: the ACK goes, the sender ends, nothing is delivered a second time at EOT.
    w.b.confirm(true, w.now);
    w.pump(|_, b| b);
    assert_eq!(sent(&w.a_events), 1);
    assert_eq!(received(&w.b_events), [msg]);
    assert!(w.a.is_idle() && w.b.is_idle());
    assert_eq!(w.b.stats().frames_accepted as usize, frames_sent);
}

#[test]
fn confirm_mode_refusal_naks_and_the_message_comes_again() {
    let mut w = Wire::new(Role::Instrument, Role::Computer);
    w.b = confirming();
    w.a.send(MSG, w.now).unwrap();
    w.pump(|_, b| b);
    assert_eq!(received(&w.b_events).len(), 1);
    w.b.confirm(false, w.now); // could not store it
    w.pump(|_, b| b);
    assert_eq!(w.b_sent.last().unwrap(), &[NAK]);
    assert_eq!(w.a.stats().retransmissions, 1);
    assert_eq!(received(&w.b_events), [MSG.to_vec(), MSG.to_vec()]);
    assert_eq!(sent(&w.a_events), 0);
    w.b.confirm(true, w.now);
    w.pump(|_, b| b);
    assert_eq!(sent(&w.a_events), 1);
    assert_eq!(received(&w.b_events).len(), 2);
}

#[test]
fn confirm_mode_sender_that_gives_up_first_is_reported() {
    let mut w = Wire::new(Role::Instrument, Role::Computer);
    w.b = confirming();
    w.a.send(MSG, w.now).unwrap();
    w.pump(|_, b| b);
    assert_eq!(received(&w.b_events).len(), 1);
    // No confirm within the sender's 15 s: it sends EOT and fails; the receiver says so.
    assert_eq!(w.advance(), Duration::from_secs(15));
    w.pump(|_, b| b);
    assert!(
        w.a_events
            .iter()
            .any(|e| matches!(e, LinkEvent::Failed(Error::Timeout(_))))
    );
    assert!(
        w.b_events
            .iter()
            .any(|e| matches!(e, LinkEvent::Discarded(r) if r.contains("last ACK")))
    );
    // A late confirm is harmless.
    w.b.confirm(true, w.now);
    assert!(w.b.poll_transmit().is_none());
    assert!(w.b.is_idle());
}
