//! The `dicom://` channel with real senders (dcmtk's `storescu` and `echoscu`, pynetdicom's
//! `storescu`), end to end: each instance reaches the relay as a `Binary` holding what was
//! sent, and an `agent:transmit:request` in Medplum's shape naming it. The same over TLS
//! (`dicom://...?tls=true&cert=&key=&ca=`, DICOM's TLS profile) with `storescu +tls`.

mod common;

#[path = "../../dicom-net/tests/dcmtk/mod.rs"]
mod dcmtk;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use dcmtk::{Spec, TempDir, data_set_of, make_file};
use relay::{Relay, RelayConfig};
use serde_json::{Value, json};
use test_support::Pki;

/// Channels: `dicom-in` (any called AE title) and `dicom-ae` (`?aeTitle=OUTPOST`, its host
/// 127.0.0.1), both on port 0 (any free port; the SCP listens on every interface whatever the
/// host, as Medplum's does).
fn dicom_bundle() -> Value {
    let mut b = bundle(0, 0);
    let entries = b["entry"].as_array_mut().unwrap();
    for e in entries.iter_mut() {
        if e["resource"]["resourceType"] == "Agent" {
            e["resource"]["channel"] = json!([
                {"name": "dicom-in", "endpoint": {"reference": "Endpoint/dicom-in"}},
                {"name": "dicom-ae", "endpoint": {"reference": "Endpoint/dicom-ae"}},
            ]);
        }
    }
    entries.push(
        json!({"resource": {"resourceType": "Endpoint", "id": "dicom-in", "status": "active",
        "address": "dicom://0.0.0.0:0"}}),
    );
    entries.push(
        json!({"resource": {"resourceType": "Endpoint", "id": "dicom-ae", "status": "active",
        "address": "dicom://127.0.0.1:0?aeTitle=OUTPOST"}}),
    );
    b
}

struct DicomWorld {
    relay: Relay,
    agent: agent_core::Agent,
    agent_dir: PathBuf,
    relay_dir: PathBuf,
    port: u16,
    ae_port: u16,
}

async fn dicom_world(webhook: Option<String>) -> DicomWorld {
    dicom_world_with(webhook, RelayConfig::default().max_binary).await
}

async fn dicom_world_with(webhook: Option<String>, max_binary: u64) -> DicomWorld {
    let relay_dir = tmp("dicom-relay");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay = Relay::start_on(
        listener,
        RelayConfig {
            data_dir: Some(relay_dir.clone()),
            inbound_webhook: webhook,
            max_binary,
            ..RelayConfig::default()
        },
    )
    .await
    .unwrap();
    relay.registry().bootstrap(&dicom_bundle()).await.unwrap();
    let agent_dir = tmp("dicom-agent");
    let agent = start_agent(agent_config(&relay.base_url(), agent_dir.clone())).await;
    let port = channel_port(&agent, "dicom-in").await;
    let ae_port = channel_port(&agent, "dicom-ae").await;
    DicomWorld {
        relay,
        agent,
        agent_dir,
        relay_dir,
        port,
        ae_port,
    }
}

async fn run(mut cmd: Command) -> (bool, String) {
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn storescu(port: u16, args: &[&str], files: &[&Path]) -> Command {
    let mut c = Command::new(dcmtk::bin("storescu"));
    c.args(args).args(["127.0.0.1", &port.to_string()]);
    for f in files {
        c.arg(f);
    }
    c
}

fn files(dir: &Path) -> (PathBuf, PathBuf) {
    let ex = make_file(
        dir,
        "ex.dcm",
        true,
        &Spec {
            sop_instance: "2.25.9001",
            study_uid: "2.25.9000",
            size: 128,
            ..Spec::default()
        },
    );
    let im = make_file(
        dir,
        "im.dcm",
        false,
        &Spec {
            sop_instance: "2.25.9002",
            study_uid: "2.25.9000",
            ..Spec::default()
        },
    );
    (ex, im)
}

/// The relay's inbound rows of `channel`, once there are `n` answered ones.
async fn rows(relay: &Relay, channel: &str, n: usize) -> Vec<relay::InboundRow> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let rows = relay
            .registry()
            .inbound(Some(AGENT), Some(channel), 0, 1000)
            .await
            .unwrap();
        if rows.iter().filter(|r| r.status_code.is_some()).count() >= n {
            return rows;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {n} rows on {channel}: {rows:?}",
            rows.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The transmit's body, checked against Medplum's shape, and the Binary it names, fetched
/// from the relay into `dir`.
async fn instance(relay: &Relay, row: &relay::InboundRow, dir: &Path) -> (Value, PathBuf) {
    assert_eq!(row.content_type, "application/json");
    let body: Value = serde_json::from_str(&row.body).unwrap();
    assert_eq!(body["association"]["callingAeTitle"], row.remote.as_str());
    assert!(body["association"]["calledAeTitle"].is_string(), "{body}");
    assert!(body["dataset"].get("7FE00010").is_none(), "no Pixel Data");
    let reference = body["binary"]["reference"].as_str().unwrap();
    let id = reference.strip_prefix("Binary/").unwrap();
    let token = caller(&relay.base_url()).token().await.unwrap();
    let resp = reqwest::Client::new()
        .get(format!("{}fhir/R4/{reference}", relay.base_url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/dicom");
    let path = dir.join(format!("{id}.dcm"));
    std::fs::write(&path, resp.bytes().await.unwrap()).unwrap();
    (body, path)
}

fn uid(dataset: &Value, tag: &str) -> String {
    dataset[tag]["Value"][0]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn by_sop<'a>(found: &'a [(Value, PathBuf)], sop: &str) -> &'a (Value, PathBuf) {
    found
        .iter()
        .find(|(b, _)| uid(&b["dataset"], "00080018") == sop)
        .unwrap_or_else(|| panic!("no instance {sop}"))
}

/// Files the agent keeps for instances not yet uploaded.
fn waiting_files(agent_dir: &Path, channel: &str) -> usize {
    std::fs::read_dir(agent_dir.join("dicom").join(channel).join("queued"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test]
async fn storescu_several_files_one_association_and_a_compressed_one_reach_the_relay_as_binaries() {
    let w = dicom_world(None).await;
    let dir = TempDir::new("dicom-in-storescu");
    let (ex, im) = files(dir.path());
    let jpeg = dcmtk::pydicom_test_files().join("JPEG-lossy.dcm");

    let mut echo = Command::new(dcmtk::bin("echoscu"));
    echo.args(["127.0.0.1", &w.port.to_string()]);
    let (ok, text) = run(echo).await;
    assert!(ok, "echoscu: {text}");

    let (ok, text) = run(storescu(w.port, &["-v", "-aec", "PACS"], &[&ex, &im])).await;
    assert!(ok, "{text}");
    assert_eq!(
        text.matches("Received Store Response (Success)").count(),
        2,
        "{text}"
    );
    let (ok, text) = run(storescu(w.port, &["-xx"], &[&jpeg])).await;
    assert!(ok, "{text}");

    let rows = rows(&w.relay, "dicom-in", 3).await;
    assert_eq!(rows.len(), 3);
    let mut found = Vec::new();
    for row in &rows {
        assert_eq!(row.remote, "STORESCU");
        found.push(instance(&w.relay, row, dir.path()).await);
    }
    for original in [&ex, &im] {
        let (_, sent) = data_set_of(original);
        let sop = if original == &ex {
            "2.25.9001"
        } else {
            "2.25.9002"
        };
        let (body, binary) = by_sop(&found, sop);
        assert_eq!(body["association"]["calledAeTitle"], "PACS");
        assert_eq!(uid(&body["dataset"], "0020000D"), "2.25.9000");
        assert_eq!(uid(&body["dataset"], "0020000E"), "2.25.9000.1");
        let (_, got) = data_set_of(binary);
        assert!(
            got == sent,
            "{}: the Binary's data set differs",
            original.display()
        );
    }
    // The compressed file, in its own syntax: storescu re-encodes what it reads (not bit
    // preserving), so compare element by element.
    let jpeg_sop = {
        let (ts, _) = data_set_of(&jpeg);
        let (b, binary) = found
            .iter()
            .find(|(_, p)| data_set_of(p).0 == ts)
            .expect("the JPEG instance");
        let diffs = dcmtk::pydicom_differences(&[(jpeg.clone(), binary.clone())]);
        assert!(diffs.is_empty(), "{}", diffs.join("\n"));
        uid(&b["dataset"], "00080018")
    };
    assert!(!jpeg_sop.is_empty());
    assert_eq!(w.agent.queue_depth(), 0);
    assert_eq!(
        waiting_files(&w.agent_dir, "dicom-in"),
        0,
        "uploaded files are removed"
    );
    w.relay.shutdown().await;
    let _ = std::fs::remove_dir_all(&w.relay_dir);
}

#[tokio::test]
async fn implicit_only_and_pynetdicom_senders() {
    let w = dicom_world(None).await;
    let dir = TempDir::new("dicom-in-xi");
    let (ex, im) = files(dir.path());
    let (ok, text) = run(storescu(w.port, &["-xi"], &[&ex])).await;
    assert!(ok, "{text}");
    let rows_xi = rows(&w.relay, "dicom-in", 1).await;
    let mut c = Command::new(dcmtk::pydicom_python());
    c.args([
        "-m",
        "pynetdicom",
        "storescu",
        "-aet",
        "PYNETDICOM",
        "127.0.0.1",
    ])
    .arg(w.port.to_string())
    .arg(&ex)
    .arg(&im);
    let (ok, text) = run(c).await;
    assert!(ok, "{text}");
    let rows = rows(&w.relay, "dicom-in", 3).await;
    assert_eq!(rows[0].id, rows_xi[0].id);
    let xi = instance(&w.relay, &rows[0], dir.path()).await;
    // storescu -xi: converted to Implicit VR LE on the wire; the same elements.
    assert_eq!(rows[0].remote, "STORESCU");
    assert_eq!(uid(&xi.0["dataset"], "00080018"), "2.25.9001");
    assert_eq!(data_set_of(&xi.1).0, dicom_net::uids::IMPLICIT_VR_LE);
    let diffs = dcmtk::pydicom_differences(&[(ex.clone(), xi.1.clone())]);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    // pynetdicom sends the Explicit file as it is: the Binary holds its very bytes.
    let py_ex = instance(&w.relay, &rows[1], dir.path()).await;
    assert_eq!(rows[1].remote, "PYNETDICOM");
    assert_eq!(uid(&py_ex.0["dataset"], "00080018"), "2.25.9001");
    assert!(data_set_of(&py_ex.1) == data_set_of(&ex), "byte for byte");
    // ... and converts the Implicit one to Explicit VR LE: the same elements.
    let py_im = instance(&w.relay, &rows[2], dir.path()).await;
    assert_eq!(uid(&py_im.0["dataset"], "00080018"), "2.25.9002");
    assert_eq!(uid(&py_im.0["dataset"], "0020000D"), "2.25.9000");
    let diffs = dcmtk::pydicom_differences(&[(im.clone(), py_im.1.clone())]);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    w.relay.shutdown().await;
    let _ = std::fs::remove_dir_all(&w.relay_dir);
}

#[tokio::test]
async fn ae_title_restricts_the_called_title() {
    let w = dicom_world(None).await;
    // Only the port of `dicom://127.0.0.1:0` is used: the SCP listens on every interface.
    let bound = w
        .agent
        .wait_channel("dicom-ae", Duration::from_secs(5))
        .await
        .unwrap();
    assert!(bound.ip().is_unspecified(), "{bound}");
    let mut echo = Command::new(dcmtk::bin("echoscu"));
    echo.args(["-aec", "SOMEONE", "127.0.0.1", &w.ae_port.to_string()]);
    let (ok, text) = run(echo).await;
    assert!(
        !ok && text.contains("Called AE Title Not Recognized"),
        "{text}"
    );
    let mut echo = Command::new(dcmtk::bin("echoscu"));
    echo.args(["-aec", "OUTPOST", "127.0.0.1", &w.ae_port.to_string()]);
    let (ok, text) = run(echo).await;
    assert!(ok, "{text}");
    w.relay.shutdown().await;
}

#[tokio::test]
async fn an_instance_that_cannot_be_kept_is_answered_a700_never_success() {
    let w = dicom_world(None).await;
    let dir = TempDir::new("dicom-in-a700");
    let (ex, _) = files(dir.path());
    // The channel's directory for queued instances is replaced by a file: nothing can be kept.
    let queued = w.agent_dir.join("dicom/dicom-in/queued");
    std::fs::remove_dir_all(&queued).unwrap();
    std::fs::write(&queued, b"not a directory").unwrap();
    let (_, text) = run(storescu(w.port, &["-v"], &[&ex])).await;
    assert!(text.to_lowercase().contains("a700"), "{text}");
    assert!(!text.contains("(Success)"), "{text}");
    assert_eq!(w.agent.queue_depth(), 0);
    // Once it can be kept again, the sender's retry is.
    std::fs::remove_file(&queued).unwrap();
    std::fs::create_dir_all(&queued).unwrap();
    let (ok, text) = run(storescu(w.port, &["-v"], &[&ex])).await;
    assert!(ok && text.contains("(Success)"), "{text}");
    assert_eq!(rows(&w.relay, "dicom-in", 1).await.len(), 1);
    w.relay.shutdown().await;
    let _ = std::fs::remove_dir_all(&w.relay_dir);
}

/// A webhook that answers 503 to its first `fail` calls, then 200.
async fn flaky_webhook(fail: usize) -> (String, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let c = c.clone();
            async move {
                if c.fetch_add(1, Ordering::SeqCst) < fail {
                    (axum::http::StatusCode::SERVICE_UNAVAILABLE, "busy")
                } else {
                    (axum::http::StatusCode::OK, "stored")
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, calls)
}

#[tokio::test]
async fn a_retried_transmit_does_not_upload_the_instance_again() {
    let (hook, calls) = flaky_webhook(2).await;
    let w = dicom_world(Some(hook)).await;
    let dir = TempDir::new("dicom-in-retry");
    let (ex, _) = files(dir.path());
    let (ok, text) = run(storescu(w.port, &[], &[&ex])).await;
    assert!(ok, "{text}");
    let rows = rows(&w.relay, "dicom-in", 1).await;
    assert_eq!(rows.len(), 1, "one message, whatever the retries");
    assert!(
        calls.load(Ordering::SeqCst) >= 3,
        "the relay was asked again"
    );
    let blobs: Vec<_> = std::fs::read_dir(w.relay_dir.join("binary"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.ends_with(".type"))
        .collect();
    assert_eq!(blobs.len(), 1, "one Binary: {blobs:?}");
    let (body, binary) = instance(&w.relay, &rows[0], dir.path()).await;
    assert_eq!(body["binary"]["reference"], format!("Binary/{}", blobs[0]));
    assert!(data_set_of(&binary) == data_set_of(&ex));
    w.relay.shutdown().await;
    let _ = std::fs::remove_dir_all(&w.relay_dir);
}

#[tokio::test]
async fn an_instance_the_relay_refuses_for_good_is_dead_lettered_and_the_channel_moves_on() {
    // The relay takes Binaries of at most 1000 bytes: the upload is a 413.
    let w = dicom_world_with(None, 1000).await;
    let dir = TempDir::new("dicom-in-413");
    let (ex, im) = files(dir.path());
    let (ok, text) = run(storescu(w.port, &[], &[&ex, &im])).await;
    assert!(ok, "{text}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while w.agent.queue_depth() != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the channel is stuck"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The large one (32 KiB) was refused and recorded; the small one after it went through.
    let rows = rows(&w.relay, "dicom-in", 1).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (body, binary) = instance(&w.relay, &rows[0], dir.path()).await;
    assert_eq!(uid(&body["dataset"], "00080018"), "2.25.9002");
    assert!(data_set_of(&binary) == data_set_of(&im));
    let blobs = std::fs::read_dir(w.relay_dir.join("binary"))
        .unwrap()
        .count();
    assert_eq!(
        blobs, 2,
        "one Binary and its type, nothing of the refused one"
    );
    // The refused instance's file stays with the agent, listed among the dead letters with
    // the reason, to be sent again once the relay takes it.
    assert_eq!(waiting_files(&w.agent_dir, "dicom-in"), 1);
    let queue =
        agent_core::queue::Queue::open(Some(&w.agent_dir.join("agent-queue.sqlite"))).unwrap();
    let dead = queue.dead_letters().unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].reason.contains("413"), "{}", dead[0].reason);
    w.relay.shutdown().await;
    let _ = std::fs::remove_dir_all(&w.relay_dir);
}

#[tokio::test]
async fn instances_acknowledged_while_the_relay_is_down_survive_an_agent_restart() {
    let w = dicom_world(None).await;
    let dir = TempDir::new("dicom-in-restart");
    let (ex, im) = files(dir.path());
    // Restarted below at the same address with the same data, as a relay comes back.
    let listen = w.relay.local_addr().to_string();
    w.relay.shutdown().await;
    let (ok, text) = run(storescu(w.port, &["-v"], &[&ex, &im])).await;
    assert!(ok, "{text}");
    assert_eq!(text.matches("(Success)").count(), 2, "{text}");
    // Success meant: on the agent's disk and in its queue.
    assert_eq!(w.agent.queue_depth(), 2);
    assert_eq!(waiting_files(&w.agent_dir, "dicom-in"), 2);
    w.agent.shutdown().await;

    let relay = Relay::start(RelayConfig {
        listen,
        data_dir: Some(w.relay_dir.clone()),
        ..RelayConfig::default()
    })
    .await
    .unwrap();
    let agent = start_agent(agent_config(&relay.base_url(), w.agent_dir.clone())).await;
    let rows = rows(&relay, "dicom-in", 2).await;
    assert_eq!(rows.len(), 2, "each once");
    for (row, original, sop) in [(&rows[0], &ex, "2.25.9001"), (&rows[1], &im, "2.25.9002")] {
        let (body, binary) = instance(&relay, row, dir.path()).await;
        assert_eq!(uid(&body["dataset"], "00080018"), sop);
        assert!(data_set_of(&binary) == data_set_of(original), "{sop}");
    }
    assert_eq!(waiting_files(&w.agent_dir, "dicom-in"), 0);
    agent.shutdown().await;
    relay.shutdown().await;
    let _ = std::fs::remove_dir_all(&w.relay_dir);
}

#[tokio::test]
async fn a_deflated_instance_is_kept_deflated_and_its_json_read_through_the_deflate() {
    let w = dicom_world(None).await;
    let dir = TempDir::new("dicom-in-deflate");
    let (ex, _) = files(dir.path());
    let (ok, text) = run(storescu(w.port, &["-xd"], &[&ex])).await;
    assert!(ok, "{text}");
    let rows = rows(&w.relay, "dicom-in", 1).await;
    let (body, binary) = instance(&w.relay, &rows[0], dir.path()).await;
    assert_eq!(
        data_set_of(&binary).0,
        dicom_net::uids::DEFLATED_EXPLICIT_VR_LE
    );
    assert_eq!(uid(&body["dataset"], "00080018"), "2.25.9001");
    assert_eq!(uid(&body["dataset"], "0020000D"), "2.25.9000");
    let diffs = dcmtk::pydicom_differences(&[(ex.clone(), binary.clone())]);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    w.relay.shutdown().await;
    let _ = std::fs::remove_dir_all(&w.relay_dir);
}

/// The corpus of issue 24 (pydicom's test files: GDCM, dcmtk and vendor writers) through the
/// agent's DICOM channel: every file dcmtk's `storescu -R` stores there reaches the relay as a
/// Binary holding the data set it sent, byte for byte, named by the right SOP Instance UID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_archive_corpus_through_the_dicom_channel_arrives_unchanged() {
    let corpus = dcmtk::pydicom_test_files();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .collect();
    files.sort();
    let w = dicom_world(None).await;
    let dir = TempDir::new("dicom-in-corpus");
    let mut sent = Vec::new();
    for f in &files {
        let (ok, text) = run(storescu(w.port, &["-R", "-v"], &[f])).await;
        // What storescu itself cannot send (no meta header it can read, a syntax the channel
        // does not take as it is) is dcmtk's refusal, not the channel's: skipped.
        if ok && text.contains("(Success)") {
            sent.push(f.clone());
        }
    }
    assert!(
        sent.len() >= 25,
        "{} of {} files sent",
        sent.len(),
        files.len()
    );
    let rows = rows(&w.relay, "dicom-in", sent.len()).await;
    let mut arrived = Vec::new();
    for row in rows.iter().filter(|r| r.status_code.is_some()) {
        arrived.push(instance(&w.relay, row, dir.path()).await);
    }
    assert_eq!(arrived.len(), sent.len());
    // Paired by SOP Instance UID, compared element by element (storescu may convert a file to
    // the syntax the channel accepted first: the elements are what must not change).
    let mut pairs = Vec::new();
    for f in &sent {
        let sop = dicom_net::inspect_file(f).await.unwrap().sop_instance;
        let candidates: Vec<&PathBuf> = arrived
            .iter()
            .filter(|(b, _)| uid(&b["dataset"], "00080018") == sop)
            .map(|(_, p)| p)
            .collect();
        assert!(
            !candidates.is_empty(),
            "{}: no instance {sop} arrived",
            f.display()
        );
        pairs.extend(candidates.into_iter().map(|c| (f.clone(), c.clone())));
    }
    // Data Set Trailing Padding (FFFC,FFFC) is dropped by storescu itself when it sends (PS3.10
    // §7.2 lets anyone remove it): not a difference the channel made.
    let differing: Vec<String> = dcmtk::pydicom_differences(&pairs)
        .into_iter()
        .filter(|l| !l.ends_with("(FFFC,FFFC): only in original"))
        .collect();
    let mut unchanged = 0;
    for f in &sent {
        let name = f.display().to_string();
        let all = pairs.iter().filter(|(o, _)| o == f).count();
        let bad = differing.iter().filter(|l| l.contains(&name)).count();
        assert!(bad < all, "{name}: every arrival differs: {differing:#?}");
        unchanged += 1;
    }
    eprintln!(
        "corpus through the DICOM channel: {} files, {} sent by storescu -R, {unchanged} arrived unchanged",
        files.len(),
        sent.len()
    );
}

/// A relay and an agent whose one channel, `dicom-tls`, is DICOM over TLS on port 0: the
/// agent presents `agent`'s certificate and asks SCUs for one from `modalities`' CA.
struct TlsWorld {
    relay: Relay,
    agent: agent_core::Agent,
    agent_dir: PathBuf,
    port: u16,
}

async fn tls_world(agent: &Pki, modalities: &Pki) -> TlsWorld {
    let mut b = bundle(0, 0);
    let entries = b["entry"].as_array_mut().unwrap();
    for e in entries.iter_mut() {
        if e["resource"]["resourceType"] == "Agent" {
            e["resource"]["channel"] = json!([
                {"name": "dicom-tls", "endpoint": {"reference": "Endpoint/dicom-tls"}},
            ]);
        }
    }
    let address = format!(
        "dicom://127.0.0.1:0?tls=true&cert={}&key={}&ca={}",
        agent.cert.display(),
        agent.key.display(),
        modalities.ca.display()
    );
    entries.push(
        json!({"resource": {"resourceType": "Endpoint", "id": "dicom-tls",
        "status": "active", "address": address}}),
    );
    let relay = start_relay(
        "127.0.0.1:0",
        Some(tmp("dicom-tls-relay")),
        &b,
        Duration::from_secs(3600),
    )
    .await;
    let agent_dir = tmp("dicom-tls-agent");
    let agent = start_agent(agent_config(&relay.base_url(), agent_dir.clone())).await;
    let port = channel_port(&agent, "dicom-tls").await;
    TlsWorld {
        relay,
        agent,
        agent_dir,
        port,
    }
}

/// dcmtk's `storescu` over TLS (`+tls KEY CERT`, or `+tla` for none), trusting `ca` for the
/// agent's certificate, then `args`.
fn storescu_tls(
    port: u16,
    identity: Option<&Pki>,
    ca: &Pki,
    args: &[&str],
    files: &[&Path],
) -> Command {
    let mut tls: Vec<String> = match identity {
        Some(id) => vec![
            "+tls".into(),
            id.key.display().to_string(),
            id.cert.display().to_string(),
        ],
        None => vec!["+tla".into()],
    };
    tls.extend(["+cf".into(), ca.ca.display().to_string()]);
    tls.extend(args.iter().map(|a| a.to_string()));
    let tls: Vec<&str> = tls.iter().map(String::as_str).collect();
    let mut c = storescu(port, &tls, files);
    c.env("TCP_NODELAY", "1");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storescu_over_tls_with_a_client_certificate_reaches_the_relay_as_binaries() {
    let dir = TempDir::new("dicom-in-tls");
    let agent_pki = Pki::new(&dir.path().join("pki-agent"), "Agent CA");
    let modalities = Pki::new(&dir.path().join("pki-modalities"), "Modality CA");
    let w = tls_world(&agent_pki, &modalities).await;
    let (ex, im) = files(dir.path());
    let (ok, text) = run(storescu_tls(
        w.port,
        Some(&modalities),
        &agent_pki,
        &["-v", "-aec", "PACS"],
        &[&ex, &im],
    ))
    .await;
    assert!(ok, "{text}");
    assert_eq!(
        text.matches("Received Store Response (Success)").count(),
        2,
        "{text}"
    );
    let rows = rows(&w.relay, "dicom-tls", 2).await;
    assert_eq!(rows.len(), 2);
    let mut found = Vec::new();
    for row in &rows {
        assert_eq!(row.remote, "STORESCU");
        found.push(instance(&w.relay, row, dir.path()).await);
    }
    for (original, sop) in [(&ex, "2.25.9001"), (&im, "2.25.9002")] {
        let (body, binary) = by_sop(&found, sop);
        assert_eq!(body["association"]["calledAeTitle"], "PACS");
        assert_eq!(uid(&body["dataset"], "0020000D"), "2.25.9000");
        assert!(
            data_set_of(binary) == data_set_of(original),
            "{sop}: the Binary holds the data set sent"
        );
    }
    assert_eq!(w.agent.queue_depth(), 0);
    assert_eq!(waiting_files(&w.agent_dir, "dicom-tls"), 0);
    w.relay.shutdown().await;
}

/// What the channel has kept of `channel` so far: queue rows, files waiting, partial files.
fn kept(w: &TlsWorld, channel: &str) -> (i64, usize, usize) {
    let incoming = std::fs::read_dir(w.agent_dir.join("dicom").join(channel).join("incoming"))
        .map(|d| d.count())
        .unwrap_or(0);
    (
        w.agent.queue_depth(),
        waiting_files(&w.agent_dir, channel),
        incoming,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_channel_refuses_senders_without_a_trusted_certificate_and_plain_dicom() {
    let dir = TempDir::new("dicom-in-tls-refused");
    let agent_pki = Pki::new(&dir.path().join("pki-agent"), "Agent CA");
    let modalities = Pki::new(&dir.path().join("pki-modalities"), "Modality CA");
    let stranger = Pki::new(&dir.path().join("pki-stranger"), "Stranger CA");
    let w = tls_world(&agent_pki, &modalities).await;
    let (ex, im) = files(dir.path());

    // TLS without a client certificate: the agent ends the handshake (TLS 1.3: after the
    // client's Finished, so storescu sees the connection end when it requests the association).
    let (ok, text) = run(storescu_tls(w.port, None, &agent_pki, &["-v"], &[&ex])).await;
    assert!(!ok && !text.contains("(Success)"), "{text}");
    assert!(text.contains("Peer aborted Association"), "{text}");
    // The alert, as OpenSSL reports it.
    let anonymous = ["-CAfile".to_owned(), agent_pki.ca.display().to_string()];
    let (out, err) = s_client(w.port, &anonymous, b"", b"never").await;
    assert!(
        err.contains("alert certificate required"),
        "{err} {}",
        String::from_utf8_lossy(&out)
    );
    // A certificate from a CA the channel does not trust.
    let (ok, text) = run(storescu_tls(
        w.port,
        Some(&stranger),
        &agent_pki,
        &["-v"],
        &[&ex],
    ))
    .await;
    assert!(!ok && !text.contains("(Success)"), "{text}");
    // Plain DICOM at the TLS port: the A-ASSOCIATE-RQ is not a ClientHello, and the answer is a
    // TLS alert record (content type 21), which storescu reads as PDU type 0x15.
    let mut plain = storescu(w.port, &["-v"], &[&ex]);
    plain.env("TCP_NODELAY", "1");
    let (ok, text) = run(plain).await;
    assert!(!ok && !text.contains("(Success)"), "{text}");
    assert!(text.contains("Unrecognized PDU type: 15"), "{text}");
    assert_eq!(kept(&w, "dicom-tls"), (0, 0, 0), "nothing kept");

    // The trusted modality's instance is the first and only one that reaches the relay.
    let (ok, text) = run(storescu_tls(
        w.port,
        Some(&modalities),
        &agent_pki,
        &["-v"],
        &[&im],
    ))
    .await;
    assert!(ok && text.contains("(Success)"), "{text}");
    let rows = rows(&w.relay, "dicom-tls", 1).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (body, _) = instance(&w.relay, &rows[0], dir.path()).await;
    assert_eq!(uid(&body["dataset"], "00080018"), "2.25.9002");
    w.relay.shutdown().await;
}
