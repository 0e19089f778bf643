//! Faults injected for real into an `outpost server` process (issue 14, the relay's kinds):
//! a stalled agent (SIGSTOP of a child `outpost agent`), a hostile agent flooding its socket, a
//! damaged SQLite file, the file-descriptor limit, and a full disk (a tmpfs the test mounts).
//! Each asserts counts and the time answers took, and prints its figures (`FAULT` lines).

mod support;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_protocol::{AgentMessage, TransmitRequest};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{
    ack_device, agent_process, agent_status, outpost, relay_process, relay_process_with, run,
    scratch, token, wait_until,
};
use test_support::relay::ScriptedAgent;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(60);
const CALLER_SECRET: &str = "caller-secret-0123456";
const AGENT_SECRET: &str = "agent-secret-0123456";

/// Callers, an agent client bound to `a1` and `a2`, both agents with an MLLP channel, and a
/// device at `device`.
fn bundle(device: &str) -> Value {
    let bound = |a: &str| {
        json!({"url": "https://outpost.health/fhir/StructureDefinition/allowed-agent",
            "valueReference": {"reference": format!("Agent/{a}")}})
    };
    json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "ClientApplication", "id": "caller", "secret": CALLER_SECRET}},
        {"resource": {"resourceType": "ClientApplication", "id": "agent", "secret": AGENT_SECRET,
            "extension": [bound("a1"), bound("a2")]}},
        {"resource": {"resourceType": "Agent", "id": "a1", "name": "a1", "status": "active",
            "channel": [{"name": "in", "endpoint": {"reference": "Endpoint/in"}}]}},
        {"resource": {"resourceType": "Agent", "id": "a2", "name": "a2", "status": "active",
            "channel": [{"name": "in", "endpoint": {"reference": "Endpoint/in"}}]}},
        {"resource": {"resourceType": "Endpoint", "id": "in", "status": "active", "address": "mllp://127.0.0.1:9"}},
        {"resource": {"resourceType": "Device", "id": "d1", "url": format!("mllp://{device}")}},
    ]})
}

/// (VmRSS, VmHWM) of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU time (user + system) a process has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) are space-separated.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success(), "kill {sig} {pid}");
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A push; (HTTP status, body, time taken).
async fn push(
    client: &reqwest::Client,
    base: &str,
    t: &str,
    agent: &str,
    body: &str,
    wait: bool,
    wait_timeout_ms: u64,
) -> (u16, String, Duration) {
    let started = Instant::now();
    let r = client
        .post(format!("{base}fhir/R4/Agent/{agent}/$push"))
        .bearer_auth(t)
        .json(
            &json!({"destination": "Device/d1", "contentType": "x-application/hl7-v2+er7",
            "body": body, "waitForResponse": wait, "waitTimeout": wait_timeout_ms}),
        )
        .timeout(Duration::from_secs(30))
        .send()
        .await;
    match r {
        Ok(r) => {
            let code = r.status().as_u16();
            (code, r.text().await.unwrap_or_default(), started.elapsed())
        }
        Err(e) => (0, e.to_string(), started.elapsed()),
    }
}

fn hl7(id: &str, filler: usize) -> String {
    format!(
        "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|{id}|P|2.5\rPID|1||42\rNTE|1||{}\r",
        "x".repeat(filler)
    )
}

/// fault-05: the agent stops reading (SIGSTOP) while callers push 64 KB messages.
#[test]
fn stalled_agent_gets_no_all_ok_beyond_the_bound_and_is_disconnected() {
    let dir = scratch("fault-stalled");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let device = rt.block_on(ack_device("127.0.0.1:0", Default::default()));
    let (relay, base) = relay_process(
        &dir,
        &bundle(&device.local_addr().to_string()),
        &["--heartbeat-secs", "2"],
    );
    let relay_pid = relay.pid();
    let agent = agent_process(
        &base,
        ("agent", AGENT_SECRET),
        "a1",
        &dir.join("agent"),
        WAIT,
    );
    let agent_pid = agent.pid();
    rt.block_on(async {
        let client = reqwest::Client::new();
        let t = token(&base, "caller", CALLER_SECRET).await;
        let (code, body, _) = push(&client, &base, &t, "a1", &hl7("WARM", 10), true, 5000).await;
        assert_eq!(code, 200, "{body}");
        let (rss_before, _) = memory_kib(relay_pid);

        signal(agent_pid, "-STOP");
        let stopped = Instant::now();
        let payload = hl7("BIG", 64 * 1024);
        let all_ok = Arc::new(Mutex::new(0usize));
        let refused = Arc::new(Mutex::new(0usize));
        let slowest = Arc::new(Mutex::new(Duration::ZERO));
        // Eight callers pushing 64 KB without waiting for the answer, for 15 s.
        let mut callers = Vec::new();
        for _ in 0..8 {
            let (client, base, t, payload) =
                (client.clone(), base.clone(), t.clone(), payload.clone());
            let (all_ok, refused, slowest) = (all_ok.clone(), refused.clone(), slowest.clone());
            callers.push(tokio::spawn(async move {
                while stopped.elapsed() < Duration::from_secs(15) {
                    let (code, body, took) =
                        push(&client, &base, &t, "a1", &payload, false, 3000).await;
                    {
                        let mut s = slowest.lock().unwrap();
                        *s = (*s).max(took);
                    }
                    match code {
                        200 => *all_ok.lock().unwrap() += 1,
                        400 => *refused.lock().unwrap() += 1,
                        other => panic!("push answered {other}: {body}"),
                    }
                    if code != 200 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }));
        }
        // Pushes that wait, waitTimeout 3000, one a second: each answered within ~3 s.
        let mut waited = Vec::new();
        let mut disconnected_after = None;
        while stopped.elapsed() < Duration::from_secs(15) {
            let (code, body, took) =
                push(&client, &base, &t, "a1", &hl7("W", 10), true, 3000).await;
            assert_eq!(code, 400, "{body}");
            waited.push(took);
            if disconnected_after.is_none()
                && agent_status(&client, &base, &t, "a1").await == "disconnected"
            {
                disconnected_after = Some(stopped.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        for c in callers {
            c.await.unwrap();
        }
        let (rss_after, hwm) = memory_kib(relay_pid);
        let all_ok = *all_ok.lock().unwrap();
        let slowest_wait = waited.iter().max().copied().unwrap_or_default();
        println!(
            "FAULT stalled-agent: all_ok_after_sigstop={all_ok} ({} KiB) refused={} \
             slowest_fire_and_forget_ms={} slowest_wait_3000_ms={} disconnected_after_ms={:?} \
             relay_rss_kib {rss_before} -> {rss_after} (peak {hwm})",
            all_ok * 64,
            refused.lock().unwrap(),
            slowest.lock().unwrap().as_millis(),
            slowest_wait.as_millis(),
            disconnected_after.map(|d| d.as_millis()),
        );
        // "All OK" only for what fits in the socket's buffers before the relay notices
        // (README, promises): at most 16 MiB of 64 KB messages.
        assert!(
            all_ok * 64 <= 16 * 1024,
            "{all_ok} pushes All OK to a stopped agent"
        );
        assert!(
            slowest_wait < Duration::from_millis(3600),
            "a waitTimeout-3000 push took {slowest_wait:?}"
        );
        assert!(*slowest.lock().unwrap() < Duration::from_millis(3600));
        // Disconnected within the agent timeout (3 heartbeats + 5 s = 11 s) and a tick.
        let after = disconnected_after.expect("$status never said disconnected");
        assert!(
            after <= Duration::from_secs(13),
            "disconnected after {after:?}"
        );
        // Memory: bounded by the unsent-data bound, not by what callers send.
        assert!(
            hwm < rss_before + 64 * 1024,
            "relay peak RSS {hwm} KiB from {rss_before} KiB"
        );
    });
    signal(agent_pid, "-CONT");
    drop(agent);
    drop(relay);
}

/// Kind 5: an authenticated agent floods its socket with inbound messages the relay cannot
/// finish (the webhook never answers): the relay sheds with 429, its memory stays bounded, and
/// another agent is served meanwhile.
#[test]
fn a_flooding_agent_is_shed_and_others_are_served() {
    let dir = scratch("fault-flood");
    let rt = tokio::runtime::Runtime::new().unwrap();
    // A webhook that accepts connections and never answers.
    let hook = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let hook_url = format!("http://{}/hook", hook.local_addr().unwrap());
    let held = Arc::new(Mutex::new(Vec::new()));
    {
        let held = held.clone();
        rt.spawn(async move {
            while let Ok((s, _)) = hook.accept().await {
                held.lock().unwrap().push(s);
            }
        });
    }
    let device = rt.block_on(ack_device("127.0.0.1:0", Default::default()));
    let (relay, base) = relay_process(
        &dir,
        &bundle(&device.local_addr().to_string()),
        // Long heartbeats: the scripted agent does not answer them, and this test is about
        // the flood, not silence.
        &["--inbound-webhook", &hook_url, "--heartbeat-secs", "30"],
    );
    let pid = relay.pid();
    rt.block_on(async {
        let (rss_before, _) = memory_kib(pid);
        let hostile = ScriptedAgent::connect_base(&base, "a1", "agent", AGENT_SECRET).await;
        let mut good = ScriptedAgent::connect_base(&base, "a2", "agent", AGENT_SECRET).await;
        let t = token(&base, "agent", AGENT_SECRET).await;
        const N: usize = 600;
        let body = hl7("FLOOD", 256 * 1024);
        let (mut tx, mut rx) = hostile.ws.split();
        let started = Instant::now();
        let sender = tokio::spawn(async move {
            for i in 0..N {
                let m = AgentMessage::TransmitRequest(TransmitRequest {
                    access_token: Some(t.clone()),
                    channel: Some("in".into()),
                    remote: "127.0.0.1:1".into(),
                    content_type: "x-application/hl7-v2+er7".into(),
                    body: body.clone(),
                    callback: Some(format!("flood-{i}")),
                    ..TransmitRequest::default()
                });
                if tx.send(Message::Text(m.to_json().into())).await.is_err() {
                    return i;
                }

            }
            N
        });
        // The other agent is served during the flood: a push reaches it and comes back.
        let client = reqwest::Client::new();
        let ct = token(&base, "caller", CALLER_SECRET).await;
        let answer = async {
            loop {
                match good.recv().await {
                    Some(AgentMessage::TransmitRequest(r)) => {
                        good.send(&AgentMessage::TransmitResponse(
                            agent_protocol::TransmitResponse {
                                callback: r.callback,
                                content_type: "x-application/hl7-v2+er7".into(),
                                status_code: Some(200),
                                body: "MSH|^~\\&|D|D|A|B|20240101||ACK|1|P|2.5\rMSA|AA|GOOD\r"
                                    .into(),
                                ..Default::default()
                            },
                        ))
                        .await;
                        return;
                    }
                    Some(_) => continue,
                    None => panic!("the good agent's socket closed"),
                }
            }
        };
        let good_msg = hl7("GOOD", 10);
        let ((code, body, took), ()) = tokio::join!(
            push(&client, &base, &ct, "a2", &good_msg, true, 5000),
            answer
        );
        assert_eq!(code, 200, "{body}");
        // Every message is answered: 429 at once past the caps, 503 for those the relay took and
        // whose webhook timed out (10 s).
        let (mut busy, mut unavailable) = (0, 0);
        let mut peak_hwm = 0;
        while busy + unavailable < N {
            let frame = tokio::time::timeout(Duration::from_secs(20), rx.next())
                .await
                .expect("the relay stopped answering the flood");
            let Some(Ok(Message::Text(text))) = frame else {
                panic!(
                    "the flooding socket ended after {} ms, {busy} answers: {frame:?}",
                    started.elapsed().as_millis()
                );
            };
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["type"] == "agent:transmit:response" {
                match v["statusCode"].as_u64() {
                    Some(429) => {
                        assert!(v["body"].as_str().unwrap().starts_with("relay is busy"), "{v}");
                        busy += 1;
                    }
                    Some(503) => unavailable += 1,
                    _ => panic!("{v}"),
                }
            }
            peak_hwm = peak_hwm.max(memory_kib(pid).1);
        }
        let sent = sender.await.unwrap();
        let (rss_after, hwm) = memory_kib(pid);
        let in_webhook = held.lock().unwrap().len();
        println!(
            "FAULT flood: sent={sent} x 256 KiB, shed_429={busy}, webhook_timeouts_503={unavailable} in {} ms, webhook_connections={in_webhook}, \
             good_agent_push_ms={}, relay_rss_kib {rss_before} -> {rss_after} (peak {})",
            started.elapsed().as_millis(),
            took.as_millis(),
            hwm.max(peak_hwm)
        );
        assert_eq!(sent, N);
        // Only what the caps let through reached the webhook; the rest was shed at once.
        assert_eq!(in_webhook, unavailable);
        assert!(busy >= N / 2, "only {busy} of {N} shed");
        assert!(took < Duration::from_secs(3), "the good agent waited {took:?}");
        // 150 MB arrived; the relay holds at most its caps (32 messages a socket) of it.
        assert!(
            hwm.max(peak_hwm) < rss_before + 96 * 1024,
            "relay peak RSS {} KiB from {rss_before} KiB",
            hwm.max(peak_hwm)
        );
    });
    drop(relay);
}

/// Kind 8: a damaged registry file is refused at start, with a recovery step.
#[test]
fn a_damaged_registry_is_refused_at_start() {
    let dir = scratch("fault-damaged");
    // A registry with some pages: two hundred Devices.
    let mut b = bundle("127.0.0.1:9");
    for i in 0..200 {
        b["entry"]
            .as_array_mut()
            .unwrap()
            .push(json!({"resource": {"resourceType": "Device",
            "id": format!("dev-{i}"), "url": format!("mllp://127.0.0.1:{}", 1000 + i),
            "note": [{"text": "x".repeat(500)}]}}));
    }
    let (p, _) = relay_process(&dir, &b, &[]);
    // A clean stop checkpoints the WAL into the file.
    signal(p.pid(), "-TERM");
    let mut p = p;
    let _ = p.child.wait();
    let file = dir.join("relay").join("relay.sqlite");
    let mut bytes = std::fs::read(&file).unwrap();
    assert!(bytes.len() > 16 * 4096, "{} bytes", bytes.len());
    for b in &mut bytes[2 * 4096..6 * 4096] {
        *b = 0xA5;
    }
    std::fs::write(&file, &bytes).unwrap();
    let mut cmd = outpost();
    cmd.args(["server", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.join("relay"));
    let (code, out, err) = run("outpost server", cmd, WAIT);
    println!("FAULT damaged-registry: exit={code} stderr={err}");
    assert_ne!(code, 0, "{out}{err}");
    assert!(!out.contains("Relay listening"), "{out}");
    assert!(err.contains("is damaged"), "{err}");
    assert!(err.contains("restore the file from a backup"), "{err}");
}

/// Kind 9: at the file-descriptor limit the listener stays up: excess connections are closed
/// at once, the log says so once, the relay does not spin, and it serves again when they go.
#[test]
fn the_listener_stays_up_at_the_descriptor_limit() {
    let dir = scratch("fault-fds");
    let mut cmd = Command::new("prlimit");
    cmd.arg("--nofile=256:256")
        .arg(env!("CARGO_BIN_EXE_outpost"))
        .env("RUST_LOG", "info");
    let (relay, base) = relay_process_with(cmd, &dir, &bundle("127.0.0.1:9"), &[]);
    let pid = relay.pid();
    let addr = base
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // 256 descriptors, 64 kept back: 192 connections at once. Open 300.
        let mut held = Vec::new();
        for _ in 0..300 {
            if let Ok(s) = tokio::net::TcpStream::connect(&addr).await {
                held.push(s);
            }
        }
        let opened = held.len();
        let ticks = cpu_ticks(pid);
        let t0 = Instant::now();
        // The excess is closed at once: a read ends (EOF or reset) within a second.
        let reads = held.iter_mut().map(|s| async move {
            let mut buf = [0u8; 1];
            let r = tokio::time::timeout(
                Duration::from_secs(1),
                tokio::io::AsyncReadExt::read(s, &mut buf),
            )
            .await;
            matches!(r, Ok(Ok(0) | Err(_)))
        });
        let closed = futures_util::future::join_all(reads)
            .await
            .into_iter()
            .filter(|c| *c)
            .count();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let cpu = cpu_ticks(pid) - ticks;
        let elapsed = t0.elapsed();
        drop(held);
        let client = reqwest::Client::new();
        let back = Instant::now();
        wait_until(
            "the relay serves again",
            Duration::from_secs(10),
            || async {
                let r = client.get(format!("{base}healthz")).send().await.ok()?;
                (r.status() == 200).then_some(())
            },
        )
        .await;
        println!(
            "FAULT fd-limit: opened={opened} closed_at_once={closed} cpu_ticks={cpu} over {} ms, \
             serving again after {} ms",
            elapsed.as_millis(),
            back.elapsed().as_millis()
        );
        // 256 descriptors less 64 kept back: 192 served; every other connection was refused
        // or closed at once (a connect that met the reset counts too).
        assert_eq!(opened - closed, 192, "connections served");
        assert_eq!(
            (300 - opened) + closed,
            300 - 192,
            "connections closed at once"
        );
        // No spinning: well under a tenth of a core (100 ticks a second).
        assert!(
            cpu < elapsed.as_millis() as u64 / 100,
            "{cpu} ticks in {elapsed:?}"
        );
    });
    let mut relay = relay;
    let log = relay.output(Duration::from_millis(200));
    assert!(log.contains("max_connections=192"), "{log}");
    let said = log.matches("connection limit reached").count();
    assert_eq!(said, 1, "logged {said} times:\n{log}");
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(ok.success(), "mount tmpfs on {}", dir.display());
        Tmpfs(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// fault-10, the relay's side: its data volume fills while an agent forwards device messages;
/// every message it cannot store is answered 503 (retry), and when space returns the agent's
/// redelivery (same callbacks) stores each exactly once.
#[test]
fn a_full_disk_is_a_503_and_redelivery_stores_each_message_once() {
    assert!(
        is_root(),
        "this test mounts a tmpfs and must run as root (CI does)"
    );
    let dir = scratch("fault-disk-full");
    let data = dir.join("relay");
    let _tmpfs = Tmpfs::mount(&data, "4m");
    let (relay, base) = relay_process(&dir, &bundle("127.0.0.1:9"), &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut agent = ScriptedAgent::connect_base(&base, "a1", "agent", AGENT_SECRET).await;
        let t = token(&base, "agent", AGENT_SECRET).await;
        // Fill the volume: a filler file until the disk is full.
        let filler = data.join("filler");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&filler).unwrap();
            let chunk = vec![0u8; 16 * 1024];
            while f.write_all(&chunk).is_ok() {}
            let _ = f.sync_all();
        }
        const N: usize = 10;
        let message = |i: usize| {
            AgentMessage::TransmitRequest(TransmitRequest {
                access_token: Some(t.clone()),
                channel: Some("in".into()),
                remote: "127.0.0.1:1".into(),
                content_type: "x-application/hl7-v2+er7".into(),
                body: hl7(&format!("DF{i:03}"), 8 * 1024),
                callback: Some(format!("Agent/a1-disk-{i}")),
                ..TransmitRequest::default()
            })
        };
        let mut unavailable = Vec::new();
        let mut slowest = Duration::ZERO;
        for i in 0..N {
            let started = Instant::now();
            agent.send(&message(i)).await;
            let AgentMessage::TransmitResponse(r) =
                agent.recv_kind("agent:transmit:response").await
            else {
                unreachable!()
            };
            slowest = slowest.max(started.elapsed());
            match r.status_code {
                Some(200) => {}
                Some(503) => {
                    assert_eq!(r.content_type, "text/plain");
                    assert!(
                        r.body.starts_with("relay could not store the message: ")
                            && r.body.ends_with("; retry"),
                        "{}",
                        r.body
                    );
                    unavailable.push(i);
                }
                other => panic!("answered {other:?}: {}", r.body),
            }
        }
        assert!(!unavailable.is_empty(), "the full disk never bit");
        // Space returns; the agent sends everything again, with the same callbacks.
        std::fs::remove_file(&filler).unwrap();
        for i in 0..N {
            agent.send(&message(i)).await;
            let AgentMessage::TransmitResponse(r) =
                agent.recv_kind("agent:transmit:response").await
            else {
                unreachable!()
            };
            assert_eq!(r.status_code, Some(200), "{}", r.body);
            assert!(r.body.contains(&format!("MSA|AA|DF{i:03}")), "{}", r.body);
        }
        let ct = token(&base, "caller", CALLER_SECRET).await;
        let rows: Vec<Value> = reqwest::Client::new()
            .get(format!("{base}outpost/inbound?agent=a1"))
            .bearer_auth(&ct)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut callbacks: Vec<&str> = rows.iter().filter_map(|r| r["callback"].as_str()).collect();
        callbacks.sort_unstable();
        let stored = callbacks.len();
        callbacks.dedup();
        println!(
            "FAULT disk-full: sent={N} answered_503={} stored_after_redelivery={stored} \
             unique={} slowest_answer_ms={}",
            unavailable.len(),
            callbacks.len(),
            slowest.as_millis()
        );
        assert_eq!(stored, N, "each message stored");
        assert_eq!(callbacks.len(), N, "none twice");
        assert!(slowest < Duration::from_secs(5));
    });
    drop(relay);
}
