//! Both ends of the agent link fed arbitrary frames and clock steps: never a panic, requests in
//! flight never above the bound, every timer moves forward when it fires, and a closed link
//! stays closed and quiet.
#![no_main]

use std::time::{Duration, Instant};

use agent_protocol::link::{Event, Link, LinkOptions, State};
use agent_protocol::{AgentMessage, ConnectRequest, TransmitRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let opts = LinkOptions {
        max_in_flight: 8,
        ..LinkOptions::default()
    };
    let mut links = [
        Link::agent(opts.clone(), ConnectRequest::default(), t0),
        Link::relay(opts, t0),
    ];
    let mut now = t0;
    let mut rest = data;
    let mut n = 0u32;
    while let [op, len, tail @ ..] = rest {
        let take = usize::from(*len).min(tail.len());
        let (arg, next) = tail.split_at(take);
        rest = next;
        let link = &mut links[usize::from(op & 1)];
        match op >> 1 {
            0..=63 => link.handle_bytes(arg, now),
            64..=95 => now += Duration::from_millis(u64::from(*len) * 250),
            96..=111 => {
                n += 1;
                let msg = AgentMessage::TransmitRequest(TransmitRequest {
                    callback: Some(format!("cb-{}", n % 16)),
                    ..TransmitRequest::default()
                });
                let _ = link.request(msg, now + Duration::from_millis(u64::from(*len) * 100), now);
            }
            112..=119 => {
                let _ = link.accept(now);
            }
            120..=123 => {
                let _ = link.cancel(&format!("cb-{}", len % 16));
            }
            _ => link.close(agent_protocol::link::CloseReason::Local),
        }
        for link in &mut links {
            if let Some(t) = link.poll_timeout()
                && t <= now
            {
                link.handle_timeout(now);
                assert!(link.poll_timeout().is_none_or(|after| after > now));
            }
            assert!(link.in_flight_count() <= 8);
            while link.poll_send().is_some() {}
            let mut closed = false;
            while let Some(e) = link.poll_event() {
                assert!(!closed, "an event after Closed");
                closed = matches!(e, Event::Closed(_));
            }
            if link.state() == State::Closed {
                assert!(link.poll_timeout().is_none());
            }
        }
    }
});
