//! The deployment shape: relay, agent, device and load generator as four processes on this
//! machine — `outpost server`, `outpost agent` (the release binary), the acknowledging MLLP
//! device and the load generator (this bench binary run with `--role device|loadgen`).
//!
//! Each process's CPU time (user + system, all threads) is read from `/proc/<pid>/stat` just
//! before the load generator starts its measured window and just after its last push returned;
//! the difference over the pushes in the window is the CPU time per push. The device's counters
//! are read at the same two points: every push of the window must have reached it exactly once
//! (and the load generator checks that each answer is that push's own AA).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::loadgen::Options;
use super::stats::{Spread, count, cpu, cpu_micros, micros, number};
use super::{AGENT, bootstrap_bundle};

/// The figures of one measured window.
#[derive(Clone, Debug)]
pub struct Figures {
    pub callers: usize,
    pub pushes: u64,
    pub per_second: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// CPU µs per push: relay, agent, device, load generator.
    pub cpu_us: [f64; 4],
}

/// A child process whose stdout is read line by line; killed when dropped.
struct Proc {
    name: String,
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            name: name.to_owned(),
            child,
            lines,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next stdout line that starts with `prefix` (other lines are skipped).
    fn expect(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line[prefix.len()..].to_owned(),
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!(
                        "{}: no line starting {prefix:?} within {timeout:?}",
                        self.name
                    )
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => panic!(
                    "{} ended ({:?}) before printing {prefix:?}",
                    self.name,
                    self.child.wait()
                ),
            }
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("{}: {e}", self.name));
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `outpost` binary: `OUTPOST_BIN`, else the one beside this bench's build (`cargo build
/// --release -p outpost` for `cargo bench`, `cargo build -p outpost` for `cargo test --benches`).
pub fn outpost_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("OUTPOST_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/push_roundtrip-<hash> → target/<profile>/outpost
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("outpost"))
        .expect("target directory");
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build --release -p outpost` for `cargo bench`, \
         `cargo build -p outpost` for `cargo test --benches`) or set OUTPOST_BIN",
        bin.display()
    );
    bin
}

fn role(role: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
    cmd.args(["--role", role]);
    cmd
}

/// The device's counters: messages, ACKs, failed replies.
fn device_counts(device: &mut Proc) -> [u64; 3] {
    device.send("COUNT");
    let line = device.expect("COUNT ", Duration::from_secs(10));
    let v: Vec<u64> = line
        .split_whitespace()
        .map(|n| n.parse().expect("COUNT line"))
        .collect();
    [v[0], v[1], v[2]]
}

/// One run: fresh relay (given `relay_args` besides its own), agent and device; a load generator
/// for each entry of `callers`, each measured for `window`. Returns the figures of each window and
/// the pushes sent in all (warm-up included), which the device counted too.
pub fn run(
    run: usize,
    callers: &[usize],
    window: Duration,
    relay_args: &[&str],
) -> (Vec<Figures>, u64) {
    let dir = std::env::temp_dir().join(format!(
        "outpost-push-bench-{}-{run}-{}",
        std::process::id(),
        relay_args.len()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let wait = Duration::from_secs(60);

    let mut device = Proc::spawn("device", role("device"));
    let device_addr = device.expect("LISTENING ", wait);
    let bundle = dir.join("bundle.json");
    std::fs::write(&bundle, bootstrap_bundle(&device_addr).to_string()).expect("bundle");

    let outpost = outpost_bin();
    let mut cmd = Command::new(&outpost);
    cmd.env("RUST_LOG", "warn")
        .args(["server", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.join("relay"))
        .arg("--bootstrap")
        .arg(&bundle)
        .args(relay_args);
    let mut relay = Proc::spawn("outpost server", cmd);
    let base_url = relay.expect("Relay listening on ", wait);

    let mut cmd = Command::new(&outpost);
    cmd.env("RUST_LOG", "warn")
        .args(["agent", "--base-url", &base_url])
        .args([
            "--client-id",
            "agent",
            "--client-secret",
            "agent-secret-0123456",
        ])
        .args(["--agent-id", AGENT, "--data-dir"])
        .arg(dir.join("agent"));
    let agent = Proc::spawn("outpost agent", cmd);

    let mut figures = Vec::new();
    let mut sent_total = 0;
    for &n in callers {
        let opts = Options {
            base_url: base_url.clone(),
            callers: n,
            window,
            tag: format!("R{run}L{n}"),
        };
        let mut cmd = role("loadgen");
        cmd.args(opts.to_args());
        let mut load = Proc::spawn("load generator", cmd);
        load.expect("READY", Duration::from_secs(180));
        let pids = [relay.pid(), agent.pid(), device.pid(), load.pid()];
        let counted_before = device_counts(&mut device);
        let cpu_before = pids.map(cpu_micros);
        load.send("GO");
        let done: u64 = load
            .expect("DONE ", window + wait)
            .parse()
            .expect("DONE line");
        let cpu_after = pids.map(cpu_micros);
        let counted_after = device_counts(&mut device);
        load.send("REPORT");
        let v: serde_json::Value =
            serde_json::from_str(&format!("{{{}", load.expect("{", wait))).expect("report");
        let status = load.child.wait().expect("load generator");
        assert!(status.success(), "load generator: {status}");
        let pushes = v["pushes"].as_u64().expect("pushes");
        assert_eq!(pushes, done);
        let [messages, acks, failed] = [0, 1, 2].map(|i| counted_after[i] - counted_before[i]);
        assert_eq!(
            (messages, acks, failed),
            (pushes, pushes, 0),
            "the device's count (messages, ACKs, failed replies) differs from the pushes answered"
        );
        sent_total += v["sent_total"].as_u64().expect("sent_total");
        figures.push(Figures {
            callers: n,
            pushes,
            per_second: pushes as f64 / v["secs"].as_f64().expect("secs"),
            p50_us: v["p50_us"].as_f64().expect("p50"),
            p99_us: v["p99_us"].as_f64().expect("p99"),
            cpu_us: [0, 1, 2, 3].map(|i| (cpu_after[i] - cpu_before[i]) / pushes as f64),
        });
    }
    let [messages, acks, failed] = device_counts(&mut device);
    assert_eq!(
        (messages, acks, failed),
        (sent_total, sent_total, 0),
        "the device's count over the whole run differs from the pushes sent"
    );
    drop((agent, relay, device));
    let _ = std::fs::remove_dir_all(&dir);
    (figures, sent_total)
}

/// Prints the table: one row per caller count, medians over `runs` with their range.
pub fn report(runs: &[Vec<Figures>], sent_total: u64) {
    println!(
        "| callers | pushes/s | p50 | p99 | relay CPU/push | agent CPU/push | device CPU/push | load generator CPU/push | four processes CPU/push |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let rows = runs.first().map_or(0, Vec::len);
    for row in 0..rows {
        let of = |f: fn(&Figures) -> f64| {
            Spread::of(&runs.iter().map(|r| f(&r[row])).collect::<Vec<_>>())
        };
        let cpus: Vec<String> = (0..4)
            .map(|i| {
                Spread::of(&runs.iter().map(|r| r[row].cpu_us[i]).collect::<Vec<_>>()).show(cpu)
            })
            .collect();
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            runs[0][row].callers,
            of(|f| f.per_second).show(count),
            of(|f| f.p50_us).show(micros),
            of(|f| f.p99_us).show(micros),
            cpus.join(" | "),
            of(|f| f.cpu_us.iter().sum()).show(cpu),
        );
    }
    let measured: u64 = runs.iter().flatten().map(|f| f.pushes).sum();
    println!();
    println!(
        "Every push was answered 200 with the device's AA for its own control ID; the device counted \
         each exactly once: {} in the measured windows, {} in all with the warm-ups.",
        number(measured as f64, 0),
        number(sent_total as f64, 0)
    );
}
