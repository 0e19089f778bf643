//! Fault tests of the agent as a process: the real fault is injected (a 4 MB tmpfs mounted by
//! the test and filled, SIGKILL, SIGSTOP, a low file-descriptor limit, a damaged queue file),
//! the relay is a scripted peer (or the real relay, stopped with SIGSTOP), and every test
//! counts what the devices were told, what the relay stored, what was lost (must be 0) and
//! duplicated (0: the relay de-duplicates by callback; resends on the wire are at-least-once),
//! and how long each answer took. Mounting needs root (these tests run as root in CI).

#[path = "../../agent-core/tests/common/scripted.rs"]
mod scripted;
mod support;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use scripted::{Mode, ScriptedRelay};
use support::{Proc, outpost};

const AGENT: &str = "fault-agent";
const WAIT: Duration = Duration::from_secs(30);

/// Runs a blocking wait (a process's output) without holding up the runtime's other tasks.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// A scratch directory under the system's temp dir, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("outpost-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A tmpfs of `size` mounted at `path` by the test; unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
    filler: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        let uid = Command::new("id").arg("-u").output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&uid.stdout).trim(),
            "0",
            "mounting a tmpfs needs root"
        );
        std::fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs at {}", path.display());
        Tmpfs {
            path: path.to_owned(),
            filler: path.join("filler"),
        }
    }

    /// Fills the file system, then frees `leave` bytes.
    fn fill_leaving(&self, leave: u64) {
        let mut f = std::fs::File::create(&self.filler).unwrap();
        let chunk = vec![0u8; 16 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.flush();
        let len = f.metadata().unwrap().len();
        f.set_len(len.saturating_sub(leave)).unwrap();
    }

    fn free(&self) {
        let _ = std::fs::remove_file(&self.filler);
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// `outpost agent` with an `agent.properties` in `dir` and its queue in `data`.
fn agent(dir: &Path, data: &Path, base_url: &str, extra: &str) -> Proc {
    let props = dir.join("agent.properties");
    std::fs::write(
        &props,
        format!(
            "baseUrl={base_url}\nclientId=agent\nclientSecret=agent-secret-0123456\nagentId={AGENT}\ndataDir={}\ninboundReplyWaitMs=2000\n{extra}",
            data.display()
        ),
    )
    .unwrap();
    let mut cmd = outpost();
    cmd.env("RUST_LOG", "info")
        .arg("agent")
        .arg("--config")
        .arg(&props);
    Proc::spawn("outpost agent", cmd)
}

async fn scripted_relay(channels: &[(&str, String)]) -> ScriptedRelay {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let named: Vec<(&str, &str)> = channels.iter().map(|(n, a)| (*n, a.as_str())).collect();
    let (agent, endpoints) = scripted::agent_with(AGENT, &named);
    ScriptedRelay::start(listener, agent, &endpoints)
}

/// An ORU^R01 with control id `id` and about `size` bytes of result text.
fn oru(id: &str, size: usize) -> String {
    format!(
        "MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240101120000||ORU^R01|{id}|P|2.5\rPID|1||42\rOBX|1|TX|REPORT||{}\r",
        "x".repeat(size)
    )
}

/// Sends one message on a fresh connection; the ACK code (or `None` without one) and the time
/// the answer took.
async fn send_one(port: u16, body: &str) -> (Option<String>, Duration) {
    let t = Instant::now();
    let opts = mllp::ClientOptions {
        ack_timeout: Duration::from_secs(15),
        ..mllp::ClientOptions::default()
    };
    let code = match mllp::Connection::connect(&format!("127.0.0.1:{port}"), opts).await {
        Ok(mut c) => match c.send(body.as_bytes()).await {
            Ok(ack) => Some(ack.code().to_string()),
            Err(mllp::Error::Negative { code, .. }) => Some(code.to_string()),
            Err(_) => None,
        },
        Err(_) => None,
    };
    (code, t.elapsed())
}

/// User + system CPU seconds of a process so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    let hz = Command::new("getconf").arg("CLK_TCK").output().unwrap();
    ticks
        / String::from_utf8_lossy(&hz.stdout)
            .trim()
            .parse::<f64>()
            .unwrap()
}

/// Checks the relay stored each of `acknowledged` exactly once: (stored, lost, duplicated).
fn count(relay: &ScriptedRelay, acknowledged: &[String]) -> (usize, usize, usize) {
    let stored = relay.stored();
    let mut per_body: HashMap<&str, usize> = HashMap::new();
    for (_, body) in &stored {
        *per_body.entry(body.as_str()).or_default() += 1;
    }
    let lost = acknowledged
        .iter()
        .filter(|b| !per_body.contains_key(b.as_str()))
        .count();
    let duplicated = per_body.values().map(|n| n - 1).sum();
    (stored.len(), lost, duplicated)
}

/// Case fault-01: the agent's queue volume fills up. Phase A: with the relay up, a device in
/// original mode gets AA while the queue can commit, AE once it cannot, AA again once space
/// returns. Phase B: with the relay unreachable, an enhanced=aa channel fills the disk; the
/// relay comes back while the disk is still full, so the agent cannot record the relay's
/// answers: it must keep them in memory and retry the local write with backoff — no hot loop
/// against the relay — and lose nothing once space returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_01_agent_disk_full() {
    let scratch = Scratch::new("fault01");
    let disk = Tmpfs::mount(&scratch.0.join("data"), "4m");
    let relay = scripted_relay(&[
        ("orig", "mllp://127.0.0.1:0".into()),
        ("aa", "mllp://127.0.0.1:0?enhanced=aa".into()),
    ])
    .await;
    let mut agent = agent(&scratch.0, &disk.path, &relay.base_url, "");
    assert!(relay.wait_connected(Duration::from_secs(30)).await);
    let (orig, aa) = blocking(|| {
        (
            agent.channel_port("orig", WAIT),
            agent.channel_port("aa", WAIT),
        )
    });

    // Phase A.
    disk.fill_leaving(192 * 1024);
    let (mut acked, mut refused) = (Vec::new(), Vec::new());
    let mut slowest_answer = Duration::ZERO;
    for i in 0..400 {
        let body = oru(&format!("A{i:03}"), 2000);
        let (code, took) = send_one(orig, &body).await;
        slowest_answer = slowest_answer.max(took);
        match code.as_deref() {
            Some("AA") => acked.push(body),
            Some("AE") => refused.push(body),
            other => panic!("message {i}: {other:?}"),
        }
        if refused.len() == 3 {
            break;
        }
    }
    assert_eq!(refused.len(), 3, "the disk never filled");
    disk.free();
    for i in 0..3 {
        let body = oru(&format!("A-after{i}"), 2000);
        let (code, took) = send_one(orig, &body).await;
        slowest_answer = slowest_answer.max(took);
        assert_eq!(code.as_deref(), Some("AA"), "AA again once space is back");
        acked.push(body);
    }
    relay
        .wait_stored(acked.len(), Duration::from_secs(60))
        .await;
    let (stored, lost, duplicated) = count(&relay, &acked);
    eprintln!(
        "fault-01 phase A: {} acknowledged (AA), {} refused (AE), {stored} stored at the relay, {lost} lost, {duplicated} duplicated; slowest device answer {slowest_answer:?}",
        acked.len(),
        refused.len()
    );
    assert_eq!((lost, duplicated), (0, 0));
    assert_eq!(stored, acked.len(), "no AE'd message was stored");
    assert!(slowest_answer < Duration::from_secs(5));

    // Phase B.
    relay.set_down(true);
    disk.fill_leaving(256 * 1024);
    let before = relay.stored().len();
    let mut b_acked = Vec::new();
    let mut b_refused = 0;
    let mut slowest_aa = Duration::ZERO;
    for i in 0..400 {
        let body = oru(&format!("B{i:03}"), 2000);
        let (code, took) = send_one(aa, &body).await;
        match code.as_deref() {
            Some("AA") => {
                slowest_aa = slowest_aa.max(took);
                b_acked.push(body);
            }
            Some("AE") => b_refused += 1,
            other => panic!("message B{i}: {other:?}"),
        }
        if b_refused == 3 {
            break;
        }
    }
    assert_eq!(b_refused, 3, "the disk never filled");
    assert!(!b_acked.is_empty());
    // The relay is back; the disk is still full.
    relay.set_down(false);
    assert!(
        relay.wait_connected(Duration::from_secs(60)).await,
        "agent did not reconnect"
    );
    let pid = agent.child.id();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (attempts0, cpu0, t0) = (relay.attempts().len(), cpu_seconds(pid), Instant::now());
    tokio::time::sleep(Duration::from_secs(10)).await;
    let secs = t0.elapsed().as_secs_f64();
    let attempts_per_s = (relay.attempts().len() - attempts0) as f64 / secs;
    let cpu_share = (cpu_seconds(pid) - cpu0) / secs;
    let log = blocking(|| agent.output(Duration::from_millis(100)));
    let errors = log.matches("cannot record the relay's answer").count();
    eprintln!(
        "fault-01 phase B, disk full, relay back: {attempts_per_s:.2} transmit attempts/s, agent CPU {:.1} %, {errors} error lines about it",
        cpu_share * 100.0
    );
    assert!(
        attempts_per_s < 1.0,
        "hot loop against the relay: {attempts_per_s:.1} attempts/s"
    );
    assert!(
        cpu_share < 0.10,
        "agent busy while the disk is full: {:.0} % CPU",
        cpu_share * 100.0
    );
    assert!(errors <= 2, "{errors} error lines");
    // Space returns: everything acknowledged reaches the relay, once.
    disk.free();
    relay
        .wait_stored(before + b_acked.len(), Duration::from_secs(90))
        .await;
    let (_, lost, duplicated) = count(&relay, &b_acked);
    let attempts = relay.attempts();
    let resent = attempts.len()
        - attempts
            .iter()
            .map(|a| &a.callback)
            .collect::<HashSet<_>>()
            .len();
    eprintln!(
        "fault-01 phase B: {} acknowledged (AA at once, slowest {slowest_aa:?}), {b_refused} refused (AE), {} stored, {lost} lost, {duplicated} duplicated; {resent} resends on the wire in all (same callback, answered from the relay's store)",
        b_acked.len(),
        relay.stored().len() - before
    );
    assert_eq!((lost, duplicated), (0, 0));
    assert_eq!(relay.stored().len() - before, b_acked.len());
}

/// Case fault-10: the relay cannot store (its disk is full) and answers 503 as the contract
/// says; the agent keeps every message queued and retries with backoff until the relay stores
/// it. Devices on mllp enhanced=aa, ASTM and mllp original mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_10_relay_disk_full_answers_503_then_200() {
    let scratch = Scratch::new("fault10");
    let relay = scripted_relay(&[
        ("aa", "mllp://127.0.0.1:0?enhanced=aa".into()),
        ("lab", "astm://127.0.0.1:0".into()),
        ("orig", "mllp://127.0.0.1:0".into()),
    ])
    .await;
    let mut agent = agent(&scratch.0, &scratch.0.join("data"), &relay.base_url, "");
    assert!(relay.wait_connected(Duration::from_secs(30)).await);
    let [aa, lab, orig] = blocking(|| ["aa", "lab", "orig"].map(|c| agent.channel_port(c, WAIT)));
    // The relay's store is full: its next twelve answers are 503.
    relay.set_mode(Mode::Unavailable(12));
    let mut acknowledged = Vec::new();
    let mut times: Vec<(&str, Duration)> = Vec::new();
    for i in 0..4 {
        let body = oru(&format!("AA{i}"), 100);
        let (code, took) = send_one(aa, &body).await;
        assert_eq!(code.as_deref(), Some("AA"));
        times.push(("enhanced=aa AA", took));
        acknowledged.push(body);
    }
    let opts = astm::LinkOptions {
        role: astm::Role::Instrument,
        ..astm::LinkOptions::default()
    };
    let mut analyzer = astm::connect(&format!("127.0.0.1:{lab}"), opts)
        .await
        .unwrap();
    for i in 0..3 {
        let body = format!("H|\\^&|||Analyzer\rP|1||ASTM{i}\rR|1|^^^GLU|5.{i}|mmol/L\rL|1|N\r");
        let t = Instant::now();
        analyzer.send(body.as_bytes()).await.unwrap();
        times.push(("ASTM last-frame ACK", t.elapsed()));
        acknowledged.push(body);
    }
    for i in 0..3 {
        let body = oru(&format!("ORIG{i}"), 100);
        let (code, took) = send_one(orig, &body).await;
        // The relay's answer if it stored it in time, else "queued at the agent" after the
        // reply wait (2 s here): AA either way, never AE for a temporary failure.
        assert_eq!(code.as_deref(), Some("AA"), "ORIG{i}");
        times.push(("original mode AA", took));
        acknowledged.push(body);
    }
    relay
        .wait_stored(acknowledged.len(), Duration::from_secs(90))
        .await;
    let (stored, lost, duplicated) = count(&relay, &acknowledged);
    let attempts = relay.attempts();
    let temporary = attempts.len() - stored;
    eprintln!(
        "fault-10: {} acknowledged, {stored} stored, {lost} lost, {duplicated} duplicated, {temporary} attempts answered 503 and retried; answer times: {:?}",
        acknowledged.len(),
        times
    );
    assert_eq!((stored, lost, duplicated), (acknowledged.len(), 0, 0));
    assert!(temporary >= 12);
    for (what, took) in &times {
        let limit = if what.starts_with("original") { 4 } else { 2 };
        assert!(*took < Duration::from_secs(limit), "{what} took {took:?}");
    }
}

/// Kind 7: an agent restarted (SIGKILL) while the relay is unreachable opens its channels from
/// the last configuration it saw, keeps acknowledging and queueing, and when the relay is back
/// delivers what it queued and takes the relay's current configuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_without_the_relay_the_agent_opens_its_channels_and_queues() {
    let scratch = Scratch::new("kind7");
    let data = scratch.0.join("data");
    let relay = scripted_relay(&[("aa", "mllp://127.0.0.1:0?enhanced=aa".into())]).await;
    let mut first = agent(&scratch.0, &data, &relay.base_url, "");
    assert!(relay.wait_connected(Duration::from_secs(30)).await);
    blocking(|| first.channel_port("aa", WAIT));
    // Killed without warning; the relay becomes unreachable.
    kill(&mut first);
    relay.set_down(true);
    let mut second = agent(&scratch.0, &data, &relay.base_url, "");
    blocking(|| second.wait_for("opening the channels of the last configuration seen", WAIT));
    // Port 0 in the Endpoint: the restarted agent's channel says where it listens now.
    let aa = blocking(|| second.channel_port("aa", WAIT));
    let mut acknowledged = Vec::new();
    for i in 0..5 {
        let body = oru(&format!("OFFLINE{i}"), 100);
        let (code, took) = send_one(aa, &body).await;
        assert_eq!(
            code.as_deref(),
            Some("AA"),
            "acknowledged while the relay is unreachable"
        );
        assert!(took < Duration::from_secs(2));
        acknowledged.push(body);
    }
    assert!(relay.stored().is_empty());
    // The relay comes back with one more channel.
    {
        let (agent_res, endpoints) = scripted::agent_with(
            AGENT,
            &[
                ("aa", "mllp://127.0.0.1:0?enhanced=aa"),
                ("added", "mllp://127.0.0.1:0?enhanced=aa"),
            ],
        );
        *relay.script.agent.lock().unwrap() = agent_res;
        let mut e = relay.script.endpoints.lock().unwrap();
        for ep in endpoints {
            e.insert(ep["id"].as_str().unwrap().to_owned(), ep);
        }
    }
    relay.set_down(false);
    relay.wait_stored(5, Duration::from_secs(60)).await;
    let (stored, lost, duplicated) = count(&relay, &acknowledged);
    eprintln!(
        "kind 7: {} acknowledged offline, {stored} stored after reconnecting, {lost} lost, {duplicated} duplicated",
        acknowledged.len()
    );
    assert_eq!((stored, lost, duplicated), (5, 0, 0));
    // Reconciled: the channel added while the agent was cut off now runs.
    let added = blocking(|| second.channel_port("added", WAIT));
    let (code, _) = send_one(added, &oru("ADDED", 10)).await;
    assert_eq!(code.as_deref(), Some("AA"));
}

/// SIGKILL (`Child::kill` sends it on Unix).
fn kill(p: &mut Proc) {
    p.child.kill().unwrap();
    p.child.wait().unwrap();
}

/// Kind 8: a queue file whose pages cannot be read stops the agent at start with a clear
/// message and the recovery step, instead of serving from it.
#[test]
fn a_damaged_queue_refuses_to_start_with_a_recovery_step() {
    let scratch = Scratch::new("kind8");
    let data = scratch.0.join("data");
    std::fs::create_dir_all(&data).unwrap();
    // A real queue with rows, then pages in the middle overwritten.
    {
        let q = agent_core::queue::Queue::open(Some(&data.join("agent-queue.sqlite"))).unwrap();
        for i in 0..200 {
            q.push(AGENT, "c", "r", "t", &"y".repeat(400 + i)).unwrap();
        }
    }
    let path = data.join("agent-queue.sqlite");
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid..mid + 8192].fill(0x5A);
    std::fs::write(&path, bytes).unwrap();
    let mut cmd = outpost();
    cmd.args([
        "agent",
        "--base-url",
        "http://127.0.0.1:9/",
        "--client-id",
        "a",
        "--client-secret",
        "s",
        "--agent-id",
        AGENT,
        "--data-dir",
    ])
    .arg(&data);
    let t = Instant::now();
    let (code, out, err) = support::run("outpost agent", cmd, Duration::from_secs(30));
    assert_ne!(code, 0, "{out}{err}");
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(err.contains("is damaged"), "{err}");
    assert!(err.contains("move the file aside"), "{err}");
}

/// Kind 9: listeners stay up at the file-descriptor limit. Under a hard limit of 128 the agent
/// caps device connections (all channels together) below it; connections past the cap are
/// closed at once, logged once per episode, and the channels serve again when they end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_a_low_descriptor_limit_excess_connections_are_closed_at_once() {
    let scratch = Scratch::new("kind9");
    let relay = scripted_relay(&[
        ("c1", "mllp://127.0.0.1:0?enhanced=aa".into()),
        ("c2", "mllp://127.0.0.1:0?enhanced=aa".into()),
        ("c3", "tcp://127.0.0.1:0?startChar=%02&endChar=%03".into()),
    ])
    .await;
    let props = scratch.0.join("agent.properties");
    std::fs::write(
        &props,
        format!(
            "baseUrl={}\nclientId=agent\nclientSecret=agent-secret-0123456\nagentId={AGENT}\ndataDir={}\n",
            relay.base_url,
            scratch.0.join("data").display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new("prlimit");
    cmd.arg("--nofile=128:128")
        .arg(env!("CARGO_BIN_EXE_outpost"))
        .env("RUST_LOG", "info")
        .arg("agent")
        .arg("--config")
        .arg(&props);
    let mut agent = Proc::spawn("outpost agent (nofile 128)", cmd);
    blocking(|| agent.wait_for("device_connections=64", WAIT));
    assert!(relay.wait_connected(Duration::from_secs(30)).await);
    let ports = blocking(|| ["c1", "c2", "c3"].map(|c| agent.channel_port(c, WAIT)));
    // Forty devices at each channel: 120 connections for a budget of 64.
    let mut held = Vec::new();
    let mut closed_at_once = 0;
    let t = Instant::now();
    for p in ports {
        for _ in 0..40 {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", p))
                .await
                .unwrap();
            let mut b = [0u8; 1];
            use tokio::io::AsyncReadExt;
            match tokio::time::timeout(Duration::from_millis(200), s.read(&mut b)).await {
                Ok(Ok(0)) | Ok(Err(_)) => closed_at_once += 1,
                _ => held.push(s),
            }
        }
    }
    eprintln!(
        "kind 9: 120 connections under nofile 128: {} held, {closed_at_once} closed at once, in {:?}",
        held.len(),
        t.elapsed()
    );
    assert!(held.len() <= 64, "{} connections held", held.len());
    assert_eq!(held.len() + closed_at_once, 120);
    assert!(agent.child.try_wait().unwrap().is_none(), "the agent died");
    // Logged once per listener and episode, not per connection.
    let log = blocking(|| agent.output(Duration::from_millis(300)));
    let warnings = log.matches("too many connections").count();
    assert!((1..=3).contains(&warnings), "{warnings} warnings:\n{log}");
    // The devices leave; a new one is served.
    drop(held);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (code, _) = send_one(ports[0], &oru("AFTER-FLOOD", 10)).await;
    assert_eq!(code.as_deref(), Some("AA"));
}

/// The soft file-descriptor limit is raised to the hard one at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_soft_descriptor_limit_is_raised_at_start() {
    let scratch = Scratch::new("kind9b");
    let relay = scripted_relay(&[]).await;
    let props = scratch.0.join("agent.properties");
    std::fs::write(
        &props,
        format!(
            "baseUrl={}\nclientId=agent\nclientSecret=agent-secret-0123456\nagentId={AGENT}\ndataDir={}\n",
            relay.base_url,
            scratch.0.join("data").display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new("prlimit");
    cmd.arg("--nofile=256:4096")
        .arg(env!("CARGO_BIN_EXE_outpost"))
        .env("RUST_LOG", "info")
        .arg("agent")
        .arg("--config")
        .arg(&props);
    let mut agent = Proc::spawn("outpost agent (nofile 256:4096)", cmd);
    let line = blocking(|| agent.wait_for("device connections capped", WAIT));
    assert!(line.contains("fd_limit=4096"), "{line}");
}

/// The relay process stalls (SIGSTOP): devices are answered within their protocol's timers
/// all the same (ASTM within E1381's 15 s, MLLP enhanced=aa at once), and after SIGCONT every
/// message is stored by the real relay exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_relay_process_does_not_hold_up_devices() {
    let scratch = Scratch::new("sigstop");
    let bundle = serde_json::json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "ClientApplication", "id": "caller", "secret": "caller-secret-0123456"}},
        {"resource": {"resourceType": "ClientApplication", "id": "agent", "secret": "agent-secret-0123456",
            "extension": [{"url": "https://outpost.health/fhir/StructureDefinition/allowed-agent", "valueReference": {"reference": format!("Agent/{AGENT}")}}]}},
        {"resource": {"resourceType": "Agent", "id": AGENT, "name": "Faults", "status": "active",
            "channel": [{"name": "aa", "endpoint": {"reference": "Endpoint/aa"}}, {"name": "lab", "endpoint": {"reference": "Endpoint/lab"}}]}},
        {"resource": {"resourceType": "Endpoint", "id": "aa", "status": "active", "address": "mllp://127.0.0.1:0?enhanced=aa"}},
        {"resource": {"resourceType": "Endpoint", "id": "lab", "status": "active", "address": "astm://127.0.0.1:0"}},
    ]});
    std::fs::write(scratch.0.join("bundle.json"), bundle.to_string()).unwrap();
    let mut cmd = outpost();
    cmd.args(["server", "--listen", "127.0.0.1:0", "--data"])
        .arg(scratch.0.join("relay"))
        .arg("--bootstrap")
        .arg(scratch.0.join("bundle.json"));
    let mut relay = Proc::spawn("outpost server", cmd);
    let base = blocking(|| relay.listening_url(WAIT));
    // A relay answer is awaited for 20 s (original mode); E1381's timers are 15 s.
    let mut agent = agent(
        &scratch.0,
        &scratch.0.join("data"),
        &base,
        "inboundReplyWaitMs=20000\n",
    );
    blocking(|| agent.wait_for("connected to the relay", WAIT));
    let (aa, lab) = blocking(|| {
        (
            agent.channel_port("aa", WAIT),
            agent.channel_port("lab", WAIT),
        )
    });
    let pid = relay.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut acknowledged = Vec::new();
    let mut slowest = Duration::ZERO;
    for i in 0..3 {
        let body = oru(&format!("STALL{i}"), 100);
        let (code, took) = send_one(aa, &body).await;
        assert_eq!(code.as_deref(), Some("AA"));
        slowest = slowest.max(took);
        acknowledged.push(body);
    }
    let opts = astm::LinkOptions {
        role: astm::Role::Instrument,
        ..astm::LinkOptions::default()
    };
    let mut analyzer = astm::connect(&format!("127.0.0.1:{lab}"), opts)
        .await
        .unwrap();
    for i in 0..3 {
        let body = format!("H|\\^&|||Analyzer\rP|1||STALL{i}\rR|1|^^^GLU|5.{i}|mmol/L\rL|1|N\r");
        let t = Instant::now();
        analyzer.send(body.as_bytes()).await.unwrap();
        slowest = slowest.max(t.elapsed());
        acknowledged.push(body);
    }
    assert!(
        Command::new("kill")
            .args(["-CONT", &pid])
            .status()
            .unwrap()
            .success()
    );
    // Every message stored by the relay, once.
    let token = support::token(&base, "caller", "caller-secret-0123456").await;
    let deadline = Instant::now() + Duration::from_secs(90);
    let rows = loop {
        let rows: Vec<serde_json::Value> = reqwest::Client::new()
            .get(format!("{base}outpost/inbound?agent={AGENT}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if rows.len() >= acknowledged.len() || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let bodies: Vec<&str> = rows.iter().filter_map(|r| r["body"].as_str()).collect();
    let lost = acknowledged
        .iter()
        .filter(|b| !bodies.contains(&b.as_str()))
        .count();
    let duplicated = bodies.len() - bodies.iter().collect::<HashSet<_>>().len();
    eprintln!(
        "relay stalled: {} acknowledged (slowest answer {slowest:?}), {} stored after SIGCONT, {lost} lost, {duplicated} duplicated",
        acknowledged.len(),
        bodies.len()
    );
    assert_eq!((lost, duplicated), (0, 0));
    assert!(
        slowest < Duration::from_secs(2),
        "a device waited {slowest:?}"
    );
}
