//! A push's deadline covers its whole path on the agent: hundreds of concurrent pushes to a
//! device that answers slowly (a pool of five connections) are each answered within the
//! agent's time, waiting for a pooled connection included, and a push whose time ran out
//! before it could be sent never reaches the device.

mod common;
#[path = "common/scripted.rs"]
mod scripted;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_core::{PushAnswer, PushOptions};
use agent_protocol::{AgentMessage, TransmitRequest};
use common::*;
use mllp::{Request, Server, ServerOptions, acks_for};

/// An MLLP device that takes `delay` over each message and records when each arrived.
async fn slow_device(delay: Duration) -> (Server, Arc<Mutex<Vec<Instant>>>) {
    let seen: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let s = seen.clone();
    let server = Server::serve(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        ServerOptions::default(),
        move |req: Request| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push(Instant::now());
                tokio::time::sleep(delay).await;
                for a in acks_for(&req.message().unwrap(), false) {
                    let _ = req.reply(&a).await;
                }
            }
        },
    )
    .unwrap();
    (server, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundreds_of_pushes_to_a_slow_device_each_answered_within_the_agents_time() {
    const PUSHES: usize = 300;
    let (device, seen) = slow_device(Duration::from_millis(100)).await;
    let bundle = bundle(device.local_addr().port(), 0);
    let relay = start_relay("127.0.0.1:0", None, &bundle, Duration::from_secs(3600)).await;
    let mut config = agent_config(&relay.base_url(), tmp("agent"));
    config.ack_timeout = Duration::from_secs(1);
    let agent = start_agent(config).await;
    let caller = caller(&relay.base_url());
    caller.token().await.unwrap();
    let opts = PushOptions {
        wait_for_response: true,
        wait_timeout: Some(Duration::from_secs(20)),
        return_ack: None,
    };
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..PUSHES {
        let (caller, opts) = (caller.clone(), opts.clone());
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let body = oru(&format!("SLOW{i}"));
            let r = caller
                .push_to_agent(
                    AGENT,
                    &format!("Device/{DEVICE}"),
                    &body,
                    "x-application/hl7-v2+er7",
                    &opts,
                )
                .await;
            (r, t.elapsed())
        }));
    }
    let (mut delivered, mut not_sent, mut other) = (0, 0, Vec::new());
    let mut slowest = Duration::ZERO;
    for t in tasks {
        let (r, took) = t.await.unwrap();
        slowest = slowest.max(took);
        match r {
            Ok(PushAnswer::Answer { body, .. }) if body.contains("MSA|AA") => delivered += 1,
            Err(e) if e.to_string().contains("not sent") => not_sent += 1,
            other_result => other.push(format!("{other_result:?}")),
        }
    }
    let received = seen.lock().unwrap().clone();
    eprintln!(
        "{PUSHES} pushes: {delivered} delivered, {not_sent} not sent, {} other; device received {}; slowest answer {slowest:?}",
        other.len(),
        received.len()
    );
    // Every caller was answered, none later than the agent's time plus the trip through the
    // relay (1 s + margin on a loaded 2-core machine).
    assert!(
        slowest < Duration::from_secs(4),
        "slowest answer {slowest:?}"
    );
    assert_eq!(delivered + not_sent + other.len(), PUSHES);
    assert!(delivered >= 5, "the device was served: {delivered}");
    assert!(
        not_sent > 0,
        "some pushes ran out of time waiting for a connection"
    );
    // What the device received is exactly what was delivered plus what was on the wire when
    // its push ran out of time (answered "no acknowledgement", logged as late): no push
    // answered "not sent" reached it.
    assert!(
        other.iter().all(|o| o.contains("no acknowledgement")),
        "{other:?}"
    );
    assert_eq!(
        received.len(),
        delivered + other.len(),
        "{delivered} delivered, {} on the wire at their deadline",
        other.len()
    );
    // Nothing reached the device after the last push's time was up.
    let last = received.iter().max().copied().unwrap();
    assert!(
        last - started < Duration::from_secs(3),
        "{:?}",
        last - started
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        seen.lock().unwrap().len(),
        received.len(),
        "a push reached the device after its deadline"
    );
    drop(agent);
}

#[tokio::test]
async fn the_callers_deadline_sent_by_the_relay_bounds_the_push() {
    let (device, seen) = slow_device(Duration::from_millis(300)).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (agent_res, endpoints) = scripted::agent_with(AGENT, &[]);
    let relay = scripted::ScriptedRelay::start(listener, agent_res, &endpoints);
    let agent = start_agent(agent_config(&relay.base_url, tmp("agent"))).await;
    assert!(relay.wait_connected(Duration::from_secs(10)).await);
    let push = |i: usize| {
        AgentMessage::TransmitRequest(TransmitRequest {
            remote: format!("mllp://{}", device.local_addr()),
            content_type: "x-application/hl7-v2+er7".into(),
            body: oru(&format!("DL{i}")),
            callback: Some(format!("push-{i}")),
            deadline_ms: Some(500),
            ..TransmitRequest::default()
        })
    };
    // Twenty at once to a device that takes 300 ms each over five connections: ten fit in
    // 500 ms at most; the agent's own limit (5 s) is not what ends the others.
    let started = Instant::now();
    let answers = futures_util::future::join_all(
        (0..20).map(|i| relay.request(push(i), Duration::from_secs(10))),
    )
    .await;
    let took = started.elapsed();
    let (mut ok, mut on_wire) = (0, 0);
    for a in &answers {
        let Some(AgentMessage::TransmitResponse(r)) = a else {
            panic!("no answer: {answers:?}")
        };
        if r.status_code == Some(200) {
            ok += 1;
        } else {
            assert!(
                r.body.contains("not sent") || r.body.contains("no acknowledgement"),
                "{}",
                r.body
            );
            if r.body.contains("no acknowledgement") {
                on_wire += 1;
            }
        }
    }
    assert!(
        took < Duration::from_millis(1500),
        "answered after {took:?}"
    );
    assert!((5..=10).contains(&ok), "{ok} delivered");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let received = seen.lock().unwrap().clone();
    assert_eq!(
        received.len(),
        ok + on_wire,
        "{ok} delivered, {on_wire} on the wire at the deadline"
    );
    assert!(
        received
            .iter()
            .all(|t| *t - started < Duration::from_millis(600)),
        "a push reached the device after its deadline"
    );
    // A push whose deadline has already passed when it arrives is not delivered at all.
    let mut late = push(99);
    if let AgentMessage::TransmitRequest(t) = &mut late {
        t.deadline_ms = Some(0);
    }
    let before = seen.lock().unwrap().len();
    let Some(AgentMessage::TransmitResponse(r)) = relay.request(late, Duration::from_secs(5)).await
    else {
        panic!("no answer")
    };
    assert_eq!(r.status_code, Some(400));
    assert!(r.body.contains("after its caller's deadline"), "{}", r.body);
    assert_eq!(seen.lock().unwrap().len(), before);
    drop(agent);
}
