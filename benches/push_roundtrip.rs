//! `push_roundtrip`: `POST /Agent/{id}/$push` with `waitForResponse`, through the relay, over
//! the agent's WebSocket, to an MLLP device and back, on loopback; 1 and 64 concurrent callers;
//! pushes/s, p50/p99, and CPU time per push. Two shapes, medians of several runs with their
//! range:
//!
//! - four processes, as deployed: `outpost server`, `outpost agent`, an acknowledging MLLP device
//!   and a load generator on HTTP/1.1 keep-alive (`push/four_process.rs`), with each process's
//!   CPU time per push;
//! - one process: relay, agent, device and reqwest callers on one tokio runtime, with two worker
//!   threads and with one (`push/one_process.rs`).
//!
//! `cargo build --release -p outpost && cargo bench -p outpost-benches --bench push_roundtrip`
//! (`scripts/bench-report push_roundtrip` does both). `OUTPOST_PUSH_RUNS` (5) and
//! `OUTPOST_PUSH_SECS` (5) set the runs and each measured window. `cargo test --benches` runs a
//! short smoke pass of both shapes (it needs `target/debug/outpost`: `cargo build -p outpost`).

mod push;

use std::time::Duration;

use push::{four_process, loadgen, one_process};

// The allocator the `outpost` binary uses.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CALLERS: [usize; 2] = [1, 64];

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Medplum's MLLP hop alone (Hl7Client → Hl7Server, sequential): p50 in µs, from the script the
/// `mllp_roundtrip` bench runs.
fn medplum_mllp_p50() -> Result<f64, String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let modules = std::env::var("OUTPOST_NODE_MODULES")
        .unwrap_or_else(|_| root.join(".tools/node/node_modules").display().to_string());
    let mut child = std::process::Command::new("node")
        .arg(root.join("benches/medplum_mllp_roundtrip.mjs"))
        .args(["5000", "500"])
        .env("OUTPOST_NODE_MODULES", modules)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run node: {e}"))?;
    let adt = outpost_benches::adt_a01().replace("|1698105185516|", "|{ID}|");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), adt.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let line = String::from_utf8_lossy(&out.stdout);
    let at = line
        .find("\"p50_us\":")
        .ok_or(format!("unexpected output: {line}"))?
        + 9;
    line[at..]
        .split([',', '}'])
        .next()
        .unwrap_or("")
        .parse()
        .map_err(|e| format!("{e}"))
}

/// `cargo test --benches`: both shapes once, briefly, with every answer and count checked.
fn smoke() {
    let window = Duration::from_millis(300);
    let f = multi_thread().block_on(async {
        let s = one_process::Setup::start("smoke").await;
        let f = one_process::run(&s, 2, window).await;
        s.stop().await;
        f
    });
    println!(
        "push_roundtrip smoke, one process: {} pushes, {:.0}/s, p50 {:.0} µs",
        f.pushes, f.per_second, f.p50_us
    );
    let (figures, sent) = four_process::run(0, &[1, 2], window, &[]);
    for f in figures {
        println!(
            "push_roundtrip smoke, four processes, {} callers: {} pushes, {:.0}/s, p50 {:.0} µs, CPU/push {:?} µs",
            f.callers, f.pushes, f.per_second, f.p50_us, f.cpu_us
        );
    }
    println!("push_roundtrip smoke: the device counted all {sent} pushes");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--role") {
        match args.get(i + 1).map(String::as_str) {
            Some("device") => push::device::main(),
            Some("loadgen") => loadgen::main(loadgen::Options::from_args(&args)),
            other => panic!("unknown --role {other:?}"),
        }
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        smoke();
        return;
    }
    let runs = env_or("OUTPOST_PUSH_RUNS", 5).max(1) as usize;
    let window = Duration::from_secs(env_or("OUTPOST_PUSH_SECS", 5).max(1));
    println!(
        "push_roundtrip: $push with waitForResponse (the example ADT^A01) through the relay, the \
         agent's WebSocket and MLLP to a device answering AA, and back; {WARMUP} warm-up pushes \
         per caller, then {} s measured; medians of {runs} runs (range in brackets).",
        window.as_secs(),
        WARMUP = push::WARMUP
    );
    println!();
    println!(
        "Four processes: `outpost server`, `outpost agent`, the MLLP device, the load generator \
         (one HTTP/1.1 keep-alive connection per caller, one thread); each process's CPU time \
         (user + system) per push:"
    );
    println!();
    // The relay as it starts by default (the console's push log on), and with the push log off;
    // the two take turns in each run.
    let variants: [(&str, &[&str]); 2] = [
        ("push log on (the default)", &[]),
        (
            "push log off (`--push-log-rows 0`)",
            &["--push-log-rows", "0"],
        ),
    ];
    let mut four = vec![Vec::new(); variants.len()];
    let mut sent_total = [0; 2];
    for r in 0..runs {
        for (v, (label, relay_args)) in variants.iter().enumerate() {
            let (figures, sent) = four_process::run(r, &CALLERS, window, relay_args);
            for f in &figures {
                eprintln!(
                    "push_roundtrip: four processes, {label}, run {}: {f:?}",
                    r + 1
                );
            }
            four[v].push(figures);
            sent_total[v] += sent;
        }
    }
    for (v, (label, _)) in variants.iter().enumerate() {
        println!("Relay with the {label}:");
        println!();
        four_process::report(&four[v], sent_total[v]);
        println!();
    }
    println!(
        "One process: relay, agent, device and reqwest callers on one tokio runtime; CPU time of \
         the whole process per push:"
    );
    println!();
    let mut rows = Vec::new();
    for (label, rt) in [
        ("tokio, 2 worker threads", multi_thread()),
        ("tokio, 1 thread", current_thread()),
    ] {
        let mut per_callers: Vec<Vec<one_process::Figures>> = vec![Vec::new(); CALLERS.len()];
        for r in 0..runs {
            rt.block_on(async {
                let s = one_process::Setup::start(&format!("one-{r}")).await;
                for (i, &callers) in CALLERS.iter().enumerate() {
                    let f = one_process::run(&s, callers, window).await;
                    eprintln!(
                        "push_roundtrip: one process, {label}, run {}: {callers} callers {f:?}",
                        r + 1
                    );
                    per_callers[i].push(f);
                }
                s.stop().await;
            });
        }
        for (i, runs) in per_callers.into_iter().enumerate() {
            rows.push((label.to_owned(), CALLERS[i], runs));
        }
    }
    one_process::report(&rows);
    println!();
    match medplum_mllp_p50() {
        Ok(p50) => println!(
            "Reference, same run: Medplum's MLLP hop alone (@medplum/hl7 5.0.10 Hl7Client → Hl7Server, Node, one process, sequential): p50 {p50:.0} µs."
        ),
        Err(e) => println!("Reference (Medplum's MLLP hop alone) not run: {e}"),
    }
}
