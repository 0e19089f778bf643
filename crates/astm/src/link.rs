//! [`Link`]: the E1381 data link layer of one connection, both directions, as a state machine.
//!
//! Sans-IO, in the manner of quinn-proto: feed received bytes with [`Link::handle_bytes`] and
//! expired timers with [`Link::handle_timeout`] (time is always passed in), then write what
//! [`Link::poll_transmit`] returns (each item in one write: a frame split over two writes costs
//! ~45 ms through Nagle's delay), arm a timer for [`Link::poll_timeout`], and read
//! [`Link::poll_event`].
//!
//! ```text
//!            ENQ→ / ←ACK            frame→ / ←ACK ... last ACK: EOT→
//!  Neutral ───────────► Establishing ────────► Sending ─────────────────► Neutral
//!     │ ←ENQ / ACK→                                  ←NAK: same frame again (6 tries)
//!     └──────────► Receiving ── ←EOT: message delivered ──► Neutral
//! ```
//!
//! Establishment: ENQ, then ACK (go) or NAK (busy: try again after [`LinkOptions::busy_backoff`]).
//! Transfer: a NAK repeats the frame with the same FN, at most six tries; an EOT in place of an
//! ACK accepts the frame and asks the sender to stop (receiver interrupt). Contention (both sides
//! send ENQ): the instrument has priority; the computer answers the instrument's next ENQ and
//! waits 20 s before trying again, the instrument waits 1 s. Timers: 15 s for an answer to ENQ or
//! to a frame, 30 s for the receiver between frames; all configurable.
//!
//! The receiver NAKs a bad checksum, an unexpected frame number or a malformed frame, ACKs and
//! drops a repeated frame (its ACK was lost), and delivers the message at EOT if it is complete
//! (ends with an L record; see [`LinkOptions::require_terminator`]) — or, with
//! [`LinkOptions::confirm_before_ack`], as soon as its last frame arrives, holding that frame's
//! ACK until the caller has stored the message ([`Link::confirm`]).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::Error;
use crate::frame::{ACK, ENQ, EOT, LF, MAX_FRAME, NAK, STX, decode_frame, frames};

/// Which side of the link this is; decides who yields when both want to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The analyzer: wins contention.
    Instrument,
    /// The LIS / host: yields on contention.
    Computer,
}

/// Timers and limits of a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkOptions {
    /// This side's role.
    pub role: Role,
    /// Wait for an answer to ENQ (15 s).
    pub establish_timeout: Duration,
    /// Wait for an answer to a frame (15 s).
    pub frame_timeout: Duration,
    /// Receiver: longest silence between frames before the message is dropped (30 s).
    pub receive_timeout: Duration,
    /// After a NAK to ENQ, or no answer to it (10 s).
    pub busy_backoff: Duration,
    /// After contention, when this side is the instrument (1 s).
    pub instrument_contention_backoff: Duration,
    /// After contention, when this side is the computer (20 s).
    pub computer_contention_backoff: Duration,
    /// After an honoured receiver interrupt, before sending again (15 s).
    pub interrupt_backoff: Duration,
    /// Tries per frame (6).
    pub max_frame_tries: u32,
    /// Attempts to establish a session before giving up (6).
    pub max_establish_attempts: u32,
    /// After an ENQ nobody answered within [`LinkOptions::establish_timeout`], bid again after
    /// the busy backoff (true), or fail the message at once (false: E1381's termination
    /// phase and nothing more; what a one-shot sender such as `outpost astm send` wants, as a
    /// peer that does not speak E1381 never answers). A NAK is retried either way.
    pub retry_unanswered_enq: bool,
    /// Stop sending when the receiver interrupts (and send the whole message again later),
    /// rather than carry on.
    pub honor_interrupt: bool,
    /// Largest message accepted by the receiver, in bytes (frames beyond it are refused).
    pub max_message: usize,
    /// Deliver a message only if its last record is an L (terminator) record. A sender that
    /// gives up mid-message still ends with EOT; without this check the receiver would deliver
    /// half a message.
    pub require_terminator: bool,
    /// Receiver: deliver a message as soon as the frame that completes it arrives (its last
    /// record is an L record, in a final ETX frame), and hold that frame's ACK until
    /// [`Link::confirm`]. The caller stores the message first, so an instrument never hears
    /// "received" for a message that is not yet safe; refusing it NAKs the frame and the
    /// instrument sends it again (the message is delivered again). Off by default: the message
    /// is delivered at EOT.
    pub confirm_before_ack: bool,
}

impl Default for LinkOptions {
    fn default() -> Self {
        LinkOptions {
            role: Role::Computer,
            establish_timeout: Duration::from_secs(15),
            frame_timeout: Duration::from_secs(15),
            receive_timeout: Duration::from_secs(30),
            busy_backoff: Duration::from_secs(10),
            instrument_contention_backoff: Duration::from_secs(1),
            computer_contention_backoff: Duration::from_secs(20),
            interrupt_backoff: Duration::from_secs(15),
            max_frame_tries: 6,
            max_establish_attempts: 6,
            retry_unanswered_enq: true,
            honor_interrupt: true,
            max_message: 16 * 1024 * 1024,
            require_terminator: true,
            confirm_before_ack: false,
        }
    }
}

/// What happened on the link.
#[derive(Debug)]
pub enum LinkEvent {
    /// A complete message arrived (the frames' text joined: records ended by CR).
    Received(Vec<u8>),
    /// The message given to [`Link::send`] was delivered: every frame ACKed.
    Sent,
    /// The message given to [`Link::send`] could not be delivered.
    Failed(Error),
    /// An incoming message was dropped before its EOT (timeout, or a new ENQ).
    Discarded(&'static str),
}

/// Counters, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Frames sent, retransmissions included.
    pub frames_sent: u64,
    /// Retransmissions after a NAK.
    pub retransmissions: u64,
    /// Frames received and accepted.
    pub frames_accepted: u64,
    /// Frames refused with NAK.
    pub frames_refused: u64,
    /// Repeated frames acknowledged and dropped.
    pub duplicates: u64,
    /// Bytes ignored (outside any session or frame).
    pub ignored_bytes: u64,
}

#[derive(Debug)]
struct Outgoing {
    frames: Vec<Vec<u8>>,
    establish_attempts: u32,
    restarts: u32,
}

#[derive(Debug)]
enum Mode {
    Neutral,
    Establishing {
        deadline: Instant,
    },
    Sending {
        idx: usize,
        tries: u32,
        deadline: Instant,
    },
    Receiving(Receiving),
}

/// The receiving side of a session.
#[derive(Debug)]
struct Receiving {
    expected: u8,
    last: Option<u8>,
    text: Vec<u8>,
    frame: Option<Vec<u8>>,
    deadline: Instant,
    /// Answer the next good frame with EOT.
    interrupt: bool,
    /// An EOT was answered: the message will end incomplete.
    interrupted: bool,
    /// With [`LinkOptions::confirm_before_ack`]: the FN of the frame that completed a
    /// delivered message, whose ACK waits for [`Link::confirm`].
    held: Option<u8>,
}

impl Receiving {
    /// Takes the frame numbered `fn_digit` (its text is kept by the caller): the next frame must
    /// follow it. The answer: EOT when this side asked to interrupt, else ACK.
    fn take(&mut self, fn_digit: u8, stats: &mut LinkStats) -> u8 {
        self.last = Some(fn_digit);
        self.expected = (fn_digit + 1) % 8;
        stats.frames_accepted += 1;
        if std::mem::take(&mut self.interrupt) {
            self.interrupted = true;
            EOT
        } else {
            ACK
        }
    }
}

/// One connection's link layer. See the [module docs](self).
#[derive(Debug)]
pub struct Link {
    opts: LinkOptions,
    mode: Mode,
    outgoing: Option<Outgoing>,
    hold_until: Option<Instant>,
    transmit: VecDeque<Vec<u8>>,
    events: VecDeque<LinkEvent>,
    stats: LinkStats,
}

/// Whether the last record (records end with CR) is an L record.
fn ends_with_terminator(message: &[u8]) -> bool {
    // The last record must be complete (end with CR) and be an L record.
    let Some(body) = message.strip_suffix(b"\r") else {
        return false;
    };
    let last = body.rsplit(|&b| b == b'\r').next().unwrap_or(body);
    last.first().is_some_and(|b| b.eq_ignore_ascii_case(&b'L'))
}

/// How many times a message is started again after receiver interrupts.
const MAX_RESTARTS: u32 = 3;

impl Link {
    /// A link in the neutral state.
    pub fn new(opts: LinkOptions) -> Self {
        Link {
            opts,
            mode: Mode::Neutral,
            outgoing: None,
            hold_until: None,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            stats: LinkStats::default(),
        }
    }

    /// The options.
    pub fn options(&self) -> &LinkOptions {
        &self.opts
    }

    /// Counters so far.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// Neutral, with nothing to send.
    pub fn is_idle(&self) -> bool {
        matches!(self.mode, Mode::Neutral) && self.outgoing.is_none()
    }

    /// Queues a message (records separated by CR) for sending; the link starts when it is
    /// neutral. One message at a time: a second is refused until the first is `Sent` or `Failed`.
    pub fn send(&mut self, message: &[u8], now: Instant) -> Result<(), Error> {
        if self.outgoing.is_some() {
            return Err(Error::Busy(0));
        }
        self.outgoing = Some(Outgoing {
            frames: frames(message),
            establish_attempts: 0,
            restarts: 0,
        });
        self.try_start(now);
        Ok(())
    }

    /// While receiving, answers the next good frame with EOT instead of ACK: asks the sender to
    /// stop so that this side can send.
    pub fn request_interrupt(&mut self) {
        if let Mode::Receiving(rx) = &mut self.mode {
            rx.interrupt = true;
        }
    }

    /// With [`LinkOptions::confirm_before_ack`]: answers the frame that completed the last
    /// delivered message: ACK when `stored` (the message is taken), NAK otherwise (the sender
    /// sends the frame again and the message is delivered again). Does nothing when no answer is
    /// pending (the sender gave up meanwhile).
    pub fn confirm(&mut self, stored: bool, now: Instant) {
        let Mode::Receiving(rx) = &mut self.mode else {
            return;
        };
        let Some(fn_digit) = rx.held.take() else {
            return;
        };
        rx.deadline = now + self.opts.receive_timeout;
        let reply = if stored {
            rx.text.clear();
            rx.take(fn_digit, &mut self.stats)
        } else {
            self.stats.frames_refused += 1;
            NAK
        };
        self.transmit.push_back(vec![reply]);
    }

    /// Bytes to write, each in one write call.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmit.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<LinkEvent> {
        self.events.pop_front()
    }

    /// When [`Link::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.mode {
            Mode::Neutral => self.outgoing.as_ref().and(self.hold_until),
            Mode::Establishing { deadline }
            | Mode::Sending { deadline, .. }
            | Mode::Receiving(Receiving { deadline, .. }) => Some(*deadline),
        }
    }

    /// Handles received bytes.
    pub fn handle_bytes(&mut self, bytes: &[u8], now: Instant) {
        for &b in bytes {
            self.on_byte(b, now);
        }
        self.try_start(now);
    }

    /// Handles the passing of time.
    pub fn handle_timeout(&mut self, now: Instant) {
        match &mut self.mode {
            Mode::Neutral => {}
            Mode::Establishing { deadline } if now >= *deadline => {
                // No answer to ENQ: terminate and try again later.
                self.transmit.push_back(vec![EOT]);
                self.mode = Mode::Neutral;
                if self.opts.retry_unanswered_enq {
                    self.establish_failed(now, Error::Timeout(self.opts.establish_timeout));
                } else {
                    self.fail(Error::Timeout(self.opts.establish_timeout));
                }
            }
            Mode::Sending { deadline, .. } if now >= *deadline => {
                self.transmit.push_back(vec![EOT]);
                self.mode = Mode::Neutral;
                self.fail(Error::Timeout(self.opts.frame_timeout));
            }
            Mode::Receiving(rx) if now >= rx.deadline => {
                self.mode = Mode::Neutral;
                self.events
                    .push_back(LinkEvent::Discarded("no frame within the receive timeout"));
            }
            _ => {}
        }
        self.try_start(now);
    }

    fn try_start(&mut self, now: Instant) {
        if !matches!(self.mode, Mode::Neutral) || self.outgoing.is_none() {
            return;
        }
        if self.hold_until.is_some_and(|t| now < t) {
            return;
        }
        self.hold_until = None;
        self.transmit.push_back(vec![ENQ]);
        self.mode = Mode::Establishing {
            deadline: now + self.opts.establish_timeout,
        };
    }

    fn fail(&mut self, e: Error) {
        self.outgoing = None;
        self.hold_until = None;
        self.events.push_back(LinkEvent::Failed(e));
    }

    /// ENQ refused or unanswered: back off, or give up after the limit.
    fn establish_failed(&mut self, now: Instant, e: Error) {
        let Some(out) = &mut self.outgoing else {
            return;
        };
        out.establish_attempts += 1;
        if out.establish_attempts >= self.opts.max_establish_attempts {
            let e = match e {
                Error::Busy(_) => Error::Busy(out.establish_attempts),
                other => other,
            };
            self.fail(e);
        } else {
            self.hold_until = Some(now + self.opts.busy_backoff);
        }
    }

    fn send_frame(&mut self, idx: usize, tries: u32, now: Instant) {
        if let Some(out) = &self.outgoing {
            self.transmit.push_back(out.frames[idx].clone());
            self.stats.frames_sent += 1;
        }
        self.mode = Mode::Sending {
            idx,
            tries,
            deadline: now + self.opts.frame_timeout,
        };
    }

    fn start_receiving(&mut self, now: Instant) {
        self.transmit.push_back(vec![ACK]);
        self.mode = Mode::Receiving(Receiving {
            expected: 1,
            last: None,
            text: Vec::new(),
            frame: None,
            deadline: now + self.opts.receive_timeout,
            interrupt: false,
            interrupted: false,
            held: None,
        });
    }

    fn on_byte(&mut self, b: u8, now: Instant) {
        match &mut self.mode {
            Mode::Neutral => {
                if b == ENQ {
                    self.start_receiving(now);
                } else {
                    self.stats.ignored_bytes += 1;
                }
            }
            Mode::Establishing { .. } => match b {
                ACK => self.send_frame(0, 1, now),
                NAK => {
                    self.mode = Mode::Neutral;
                    self.establish_failed(now, Error::Busy(0));
                }
                ENQ => {
                    // Contention: the instrument wins. Both go neutral; the instrument tries
                    // again after 1 s, and the computer answers that ENQ and waits 20 s.
                    self.mode = Mode::Neutral;
                    let wait = match self.opts.role {
                        Role::Instrument => self.opts.instrument_contention_backoff,
                        Role::Computer => self.opts.computer_contention_backoff,
                    };
                    self.hold_until = Some(now + wait);
                }
                _ => self.stats.ignored_bytes += 1,
            },
            Mode::Sending { idx, tries, .. } => {
                let (idx, tries) = (*idx, *tries);
                let total = self.outgoing.as_ref().map_or(0, |o| o.frames.len());
                match b {
                    ACK => {
                        if idx + 1 == total {
                            self.transmit.push_back(vec![EOT]);
                            self.mode = Mode::Neutral;
                            self.outgoing = None;
                            self.events.push_back(LinkEvent::Sent);
                        } else {
                            self.send_frame(idx + 1, 1, now);
                        }
                    }
                    NAK => {
                        if tries >= self.opts.max_frame_tries {
                            self.transmit.push_back(vec![EOT]);
                            self.mode = Mode::Neutral;
                            let fn_digit = self
                                .outgoing
                                .as_ref()
                                .and_then(|o| o.frames[idx].get(1).map(|d| d - b'0'))
                                .unwrap_or(0);
                            self.fail(Error::FrameRejected {
                                frame: idx + 1,
                                fn_digit,
                                tries,
                            });
                        } else {
                            self.stats.retransmissions += 1;
                            self.send_frame(idx, tries + 1, now);
                        }
                    }
                    EOT => {
                        // Receiver interrupt: the frame is accepted, and the receiver wants the
                        // line.
                        if !self.opts.honor_interrupt {
                            self.on_byte(ACK, now);
                            return;
                        }
                        self.transmit.push_back(vec![EOT]);
                        self.mode = Mode::Neutral;
                        let restarts = self.outgoing.as_ref().map_or(0, |o| o.restarts);
                        if restarts >= MAX_RESTARTS {
                            self.fail(Error::Interrupted(idx + 1));
                        } else if let Some(o) = &mut self.outgoing {
                            o.restarts += 1;
                            o.establish_attempts = 0;
                            self.hold_until = Some(now + self.opts.interrupt_backoff);
                        }
                    }
                    _ => self.stats.ignored_bytes += 1,
                }
            }
            Mode::Receiving(_) => self.on_receiving_byte(b, now),
        }
    }

    fn on_receiving_byte(&mut self, b: u8, now: Instant) {
        let receive_timeout = self.opts.receive_timeout;
        let Mode::Receiving(rx) = &mut self.mode else {
            return;
        };
        let Some(buf) = &mut rx.frame else {
            match b {
                STX => rx.frame = Some(vec![STX]),
                EOT => {
                    let message = std::mem::take(&mut rx.text);
                    let cut_short = rx.interrupted && !message.is_empty();
                    let held = rx.held.is_some();
                    self.mode = Mode::Neutral;
                    if held {
                        // The sender gave up waiting for our answer to the frame we delivered:
                        // it will send the message again (the caller may see it twice).
                        self.events
                            .push_back(LinkEvent::Discarded("sender ended before the last ACK"));
                    } else if cut_short {
                        // The sender stopped because we asked; it sends the whole message again.
                        self.events
                            .push_back(LinkEvent::Discarded("interrupted by this side"));
                    } else if self.opts.require_terminator
                        && !message.is_empty()
                        && !ends_with_terminator(&message)
                    {
                        self.events
                            .push_back(LinkEvent::Discarded("incomplete: no L record before EOT"));
                    } else if !message.is_empty() {
                        self.events.push_back(LinkEvent::Received(message));
                    }
                }
                ENQ => {
                    // A new session before EOT: the unfinished message is dropped.
                    if !rx.text.is_empty() {
                        self.events
                            .push_back(LinkEvent::Discarded("new ENQ before EOT"));
                    }
                    self.start_receiving(now);
                }
                _ => self.stats.ignored_bytes += 1,
            }
            return;
        };
        buf.push(b);
        if buf.len() > MAX_FRAME {
            // Too long to be a frame: refuse it; the rest of it is skipped until the next STX.
            rx.frame = None;
            rx.deadline = now + receive_timeout;
            self.stats.frames_refused += 1;
            self.transmit.push_back(vec![NAK]);
            return;
        }
        if b != LF {
            return;
        }
        let reply = match decode_frame(buf) {
            Ok(_) if rx.held.is_some() => {
                // A frame before we answered the held one: out of turn.
                self.stats.frames_refused += 1;
                NAK
            }
            Ok(f) if f.fn_digit == rx.expected => {
                if rx.text.len() + f.text.len() > self.opts.max_message {
                    self.stats.frames_refused += 1;
                    NAK
                } else if let Some(whole) = (self.opts.confirm_before_ack && f.last)
                    .then(|| [rx.text.as_slice(), f.text].concat())
                    .filter(|w| ends_with_terminator(w))
                {
                    // Complete: delivered now; the ACK waits for `confirm`.
                    self.events.push_back(LinkEvent::Received(whole));
                    rx.held = Some(f.fn_digit);
                    rx.frame = None;
                    rx.deadline = now + receive_timeout;
                    return;
                } else {
                    rx.text.extend_from_slice(f.text);
                    let fn_digit = f.fn_digit;
                    rx.take(fn_digit, &mut self.stats)
                }
            }
            Ok(f) if Some(f.fn_digit) == rx.last => {
                // The sender did not get our ACK and sent the frame again.
                self.stats.duplicates += 1;
                ACK
            }
            Ok(_) | Err(_) => {
                self.stats.frames_refused += 1;
                NAK
            }
        };
        rx.frame = None;
        rx.deadline = now + receive_timeout;
        self.transmit.push_back(vec![reply]);
    }
}
