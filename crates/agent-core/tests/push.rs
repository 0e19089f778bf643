//! Pushes from a caller through the relay and the agent to an MLLP device, and every fault.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use agent_core::{Event, PushAnswer, PushOptions};
use common::*;

fn wait(ms: u64) -> PushOptions {
    PushOptions {
        wait_for_response: true,
        wait_timeout: Some(Duration::from_millis(ms)),
        return_ack: None,
    }
}

async fn push(w: &World, opts: &PushOptions) -> Result<PushAnswer, agent_core::Error> {
    push_to(&w.relay.base_url(), opts).await
}

async fn push_to(base: &str, opts: &PushOptions) -> Result<PushAnswer, agent_core::Error> {
    caller(base)
        .push_to_agent(
            AGENT,
            &format!("Device/{DEVICE}"),
            ADT_LF,
            "x-application/hl7-v2+er7",
            opts,
        )
        .await
}

#[tokio::test]
async fn push_reaches_the_device_and_its_ack_comes_back() {
    let w = world().await;
    let PushAnswer::Answer { content_type, body } = push(&w, &wait(10_000)).await.unwrap() else {
        panic!()
    };
    assert_eq!(content_type, "x-application/hl7-v2+er7");
    assert!(
        body.starts_with("MSH|^~\\&|RECEIVER|DEST|ADTSYS|HOSPITAL|"),
        "{body}"
    );
    assert_eq!(msa(body.as_bytes()).0, "AA");
    assert_eq!(msa(body.as_bytes()).1, "1698105185516");
    // the body went out with \r terminators, though the caller wrote \n
    let got = w.device.received();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0],
        ADT_LF
            .replace('\n', "\r")
            .into_bytes()
            .into_iter()
            .chain(*b"\r")
            .collect::<Vec<u8>>()
    );
    // fire and forget is delivered too
    assert_eq!(
        push(&w, &PushOptions::default()).await.unwrap(),
        PushAnswer::Delivered
    );
    for _ in 0..50 {
        if w.device.received().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(w.device.received().len(), 2);
}

#[tokio::test]
async fn device_down_is_a_400_saying_connection_refused() {
    let World {
        device,
        relay,
        agent,
        ..
    } = world().await;
    let port = device.port;
    device.server.shutdown(Duration::from_secs(1)).await;
    let err = push_to(&relay.base_url(), &wait(10_000))
        .await
        .unwrap_err()
        .to_string();
    drop(agent);
    assert!(
        err.contains(&format!("cannot connect to 127.0.0.1:{port}")),
        "{err}"
    );
}

/// Issue 18: a device that answers has answered, whatever its MSA-1. The caller gets the ACK
/// with 200 (Medplum's meaning; code that reads MSA-1 works unchanged); only transport
/// failures are 400.
#[tokio::test]
async fn device_nak_is_a_200_answer_carrying_the_ack() {
    let w = world().await;
    w.device.mode.store(ANSWER_AE, Ordering::SeqCst);
    let answer = push(&w, &wait(10_000)).await.unwrap();
    let PushAnswer::Answer { content_type, body } = answer else {
        panic!("{answer:?}")
    };
    assert_eq!(content_type, "x-application/hl7-v2+er7");
    assert_eq!(msa(body.as_bytes()).0, "AE", "{body}");
    assert!(
        body.contains("MSA|AE|1698105185516|Unknown patient"),
        "the ACK is the answer: {body}"
    );
}

#[tokio::test]
async fn hanging_device_times_out_for_the_caller_and_the_agent_answers_anyway() {
    let w = world().await;
    w.device.mode.store(HANG, Ordering::SeqCst);
    let mut events = w.agent.events();
    let t = Instant::now();
    let err = push(&w, &wait(500)).await.unwrap_err().to_string();
    // The agent stops a fifth of the wait before the caller does and says why: the caller
    // learns that the device, not the agent, did not answer.
    assert!(
        err.contains("no acknowledgement for message 1698105185516 within"),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(3));
    // the relay passes the caller's deadline on (`deadlineMs`), shorter than the agent's own
    // limit (5 s here): the agent stops waiting then, and answers once, a 400 naming the wait
    let answered = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            if let Ok(Event::PushAnswered { status, body, .. }) = events.recv().await {
                return (status, body);
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(answered.0, 400);
    assert!(
        answered
            .1
            .contains("no acknowledgement for message 1698105185516 within"),
        "{}",
        answered.1
    );
    let waited: u64 = answered
        .1
        .split("within ")
        .nth(1)
        .and_then(|rest| rest.split(" ms").next())
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("no wait in {}", answered.1));
    assert!(
        waited <= 400,
        "the agent waited past its share of the caller's 500 ms: {}",
        answered.1
    );
}

#[tokio::test]
async fn agent_stopped_mid_push_fails_the_push_at_once() {
    let World {
        device,
        relay,
        agent,
        ..
    } = world().await;
    device.mode.store(HANG, Ordering::SeqCst);
    let base = relay.base_url();
    let pushing = tokio::spawn(async move {
        caller(&base)
            .push_to_agent(
                AGENT,
                &format!("Device/{DEVICE}"),
                ADT_LF,
                "x-application/hl7-v2+er7",
                &wait(30_000),
            )
            .await
    });
    for _ in 0..100 {
        if !device.received().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t = Instant::now();
    agent.shutdown().await;
    let err = pushing.await.unwrap().unwrap_err().to_string();
    assert!(err.contains("disconnected before answering"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}

#[tokio::test]
async fn relay_restart_agent_reconnects_and_pushes_work_again() {
    let device = Device::start(0).await;
    let bundle = bundle(device.port, 0);
    let data = tmp("relay");
    let relay = start_relay(
        "127.0.0.1:0",
        Some(data.clone()),
        &bundle,
        Duration::from_secs(3600),
    )
    .await;
    // restarted below on the same port, as a relay comes back at its address
    let listen = relay.local_addr().to_string();
    let agent = start_agent(agent_config(&relay.base_url(), tmp("agent"))).await;
    let base = relay.base_url();
    relay.shutdown().await;
    // The agent notices at once (the socket closes) and retries with backoff.
    for _ in 0..100 {
        if !agent.is_live() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!agent.is_live());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let relay = start_relay(&listen, Some(data), &bundle, Duration::from_secs(3600)).await;
    let t = Instant::now();
    assert!(
        agent.wait_live(Duration::from_secs(10)).await,
        "agent did not reconnect"
    );
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "reconnected after {:?} (backoff max 800 ms)",
        t.elapsed()
    );
    let answer = caller(&base)
        .push_to_agent(
            AGENT,
            &format!("Device/{DEVICE}"),
            ADT_LF,
            "x-application/hl7-v2+er7",
            &wait(10_000),
        )
        .await
        .unwrap();
    assert!(matches!(answer, PushAnswer::Answer { .. }));
    drop(relay);
}

#[tokio::test]
async fn agent_keeps_working_after_its_token_expires() {
    let device = Device::start(0).await;
    let bundle = bundle(device.port, 0);
    // tokens live 2 s; a reconnect and an inbound message after that need fresh ones
    let relay = start_relay("127.0.0.1:0", None, &bundle, Duration::from_secs(2)).await;
    let agent = start_agent(agent_config(&relay.base_url(), tmp("agent"))).await;
    let channel_port = channel_port(&agent, "adt-in").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut conn = mllp::Connection::connect(
        &format!("127.0.0.1:{channel_port}"),
        mllp::ClientOptions::default(),
    )
    .await
    .unwrap();
    let ack = conn.send(oru("AFTER-EXPIRY").as_bytes()).await.unwrap();
    assert_eq!(msa(ack.bytes()).0, "AA");
    let rows = relay
        .registry()
        .inbound(Some(AGENT), None, 0, 10)
        .await
        .unwrap();
    assert_eq!(
        rows.len(),
        1,
        "the message reached the relay with a refreshed token"
    );
    let answer = caller(&relay.base_url())
        .push_to_agent(
            AGENT,
            &format!("Device/{DEVICE}"),
            ADT_LF,
            "x-application/hl7-v2+er7",
            &wait(10_000),
        )
        .await
        .unwrap();
    assert!(matches!(answer, PushAnswer::Answer { .. }));
    drop(agent);
}

#[tokio::test]
async fn schemes_without_a_client_say_so() {
    let w = world().await;
    w.relay.registry().put(serde_json::json!({"resourceType": "Device", "id": "gopher", "url": "gopher://127.0.0.1:70"})).await.unwrap();
    let err = caller(&w.relay.base_url())
        .push_to_agent(AGENT, "Device/gopher", "x", "text/plain", &wait(5_000))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unsupported destination scheme gopher://"),
        "{err}"
    );
}

#[tokio::test]
async fn astm_push_reaches_the_analyzer() {
    let w = world().await;
    // The analyzer: an E1381 receiver on loopback.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let analyzer = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let mut conn = astm::Connection::new(
            s,
            astm::LinkOptions {
                role: astm::Role::Instrument,
                ..Default::default()
            },
        );
        conn.next_message().await.unwrap().unwrap()
    });
    w.relay
        .registry()
        .put(serde_json::json!({"resourceType": "Device", "id": "analyzer", "url": format!("astm://127.0.0.1:{port}")}))
        .await.unwrap();
    // records separated by \n in the JSON body, as a caller writes them
    let body = "H|\\^&|||LIS\nP|1||PID7||Müller^Jörg\nO|1|S7||^^^GLU|R\nL|1|N";
    let PushAnswer::Answer {
        content_type,
        body: summary,
    } = caller(&w.relay.base_url())
        .push_to_agent(
            AGENT,
            "Device/analyzer",
            body,
            "x-application/astm",
            &wait(10_000),
        )
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(content_type, "text/plain");
    assert!(
        summary.starts_with("sent 4 records in 4 frames to 127.0.0.1:"),
        "{summary}"
    );
    let got = analyzer.await.unwrap();
    // on the wire: CR-separated records, ISO 8859-1
    assert_eq!(
        got,
        b"H|\\^&|||LIS\rP|1||PID7||M\xfcller^J\xf6rg\rO|1|S7||^^^GLU|R\rL|1|N\r"
    );
}

#[tokio::test]
async fn astm_push_to_nobody_is_a_400() {
    let w = world().await;
    let nobody = test_support::ClosedPort::new();
    let port = nobody.port();
    w.relay
        .registry()
        .put(serde_json::json!({"resourceType": "Device", "id": "analyzer", "url": format!("astm://127.0.0.1:{port}")}))
        .await.unwrap();
    let err = caller(&w.relay.base_url())
        .push_to_agent(
            AGENT,
            "Device/analyzer",
            "H|\\^&\rL|1|N",
            "x-application/astm",
            &wait(10_000),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("cannot connect to 127.0.0.1:{port}")),
        "{err}"
    );
}

#[tokio::test]
async fn agent_status_off_refuses_pushes() {
    let w = world().await;
    let mut agent = w.bundle["entry"][2]["resource"].clone();
    agent["status"] = "off".into();
    w.relay.registry().put(agent).await.unwrap();
    // the agent re-reads its configuration when told to
    let (status, body) = reload_config(&w.relay).await;
    assert_eq!(status, 200, "{body}");
    assert!(w.agent.is_off());
    // The relay itself refuses pushes to an agent that is off.
    let err = push(&w, &wait(5_000)).await.unwrap_err().to_string();
    assert!(err.contains("Agent.status is 'off'"), "{err}");
}

/// Medplum's agent refuses transmits unless `Agent.status` is `active`
/// (packages/agent/src/app.ts: `this.config?.status !== 'active'` sends "Agent.status is
/// currently set to off"); only `off` stops the channels. The relay refuses only `off`, so a
/// push to an agent whose status is `error` reaches the agent and is refused there.
#[tokio::test]
async fn agent_status_other_than_active_stops_pushes_but_not_channels() {
    let w = world().await;
    let mut agent = w.bundle["entry"][2]["resource"].clone();
    agent["status"] = "error".into();
    w.relay.registry().put(agent.clone()).await.unwrap();
    assert_eq!(reload_config(&w.relay).await.0, 200);
    assert!(w.agent.is_off(), "transmits are stopped");
    let err = push(&w, &wait(5_000)).await.unwrap_err().to_string();
    assert!(
        err.contains("Agent.status is currently set to off"),
        "{err}"
    );
    assert!(w.device.received().is_empty(), "nothing reached the device");
    // The channel still listens and relays.
    assert!(
        w.agent
            .wait_channel("adt-in", Duration::from_secs(5))
            .await
            .is_some()
    );
    // Back to active: pushes go again.
    agent["status"] = "active".into();
    w.relay.registry().put(agent).await.unwrap();
    assert_eq!(reload_config(&w.relay).await.0, 200);
    assert!(!w.agent.is_off());
    assert!(matches!(
        push(&w, &wait(10_000)).await.unwrap(),
        PushAnswer::Answer { .. }
    ));
}

#[path = "../../dicom-net/tests/dcmtk/mod.rs"]
mod dcmtk;

async fn put_device(w: &World, id: &str, url: &str) {
    w.relay
        .registry()
        .put(serde_json::json!({"resourceType": "Device", "id": id, "url": url}))
        .await
        .unwrap();
}

#[tokio::test]
async fn dicom_push_stores_a_file_with_storescp() {
    use base64::Engine;
    let w = world().await;
    let dir = dcmtk::TempDir::new("agent-store");
    let file = dcmtk::make_file(
        dir.path(),
        "ct.dcm",
        true,
        &dcmtk::Spec {
            sop_instance: "2.25.501",
            size: 128,
            ..dcmtk::Spec::default()
        },
    );
    let scp = dcmtk::storescp(dir.path(), &[], &[]);
    put_device(
        &w,
        "pacs",
        &format!(
            "dicom://127.0.0.1:{}?calledAet=STORESCP&callingAet=OUTPOST",
            scp.port
        ),
    )
    .await;
    let body = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&file).unwrap());
    let PushAnswer::Answer { content_type, body } = caller(&w.relay.base_url())
        .push_to_agent(
            AGENT,
            "Device/pacs",
            &body,
            "application/dicom",
            &wait(20_000),
        )
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(content_type, "application/json");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "0x0000", "{body}");
    assert_eq!(v["sopInstanceUid"], "2.25.501");
    assert_eq!(v["transferSyntaxUid"], "1.2.840.10008.1.2.1");
    let stored = dir.path().join("in/CT.2.25.501");
    assert_eq!(dcmtk::data_set_of(&stored).1, dcmtk::data_set_of(&file).1);

    // Not base64: a 400 that says so, nothing sent.
    let err = caller(&w.relay.base_url())
        .push_to_agent(
            AGENT,
            "Device/pacs",
            "not base64!",
            "application/dicom",
            &wait(20_000),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not base64"), "{err}");
}

#[tokio::test]
async fn dicom_push_queries_a_worklist_with_wlmscpfs() {
    let w = world().await;
    let dir = dcmtk::TempDir::new("agent-wl");
    let wl = dcmtk::wlmscpfs(dir.path());
    put_device(
        &w,
        "ris",
        &format!("dicom://127.0.0.1:{}?calledAet=WLSCP", wl.port),
    )
    .await;
    let query = serde_json::json!({
        "00100010": {"vr": "PN"},
        "00080050": {"vr": "SH"},
        "00400100": {"vr": "SQ", "Value": [{
            "00080060": {"vr": "CS", "Value": ["CT"]},
            "00400001": {"vr": "AE"}
        }]}
    });
    let PushAnswer::Answer { content_type, body } = caller(&w.relay.base_url())
        .push_to_agent(
            AGENT,
            "Device/ris",
            &query.to_string(),
            "application/dicom+json",
            &wait(20_000),
        )
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(content_type, "application/dicom+json");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "{body}");
    assert_eq!(
        v[0]["00100010"]["Value"][0]["Alphabetic"],
        "Worklist^Patient"
    );
    assert_eq!(
        v[0]["00400100"]["Value"][0]["00400001"]["Value"][0],
        "CTSCANNER"
    );
}

#[tokio::test]
async fn dicom_push_rejected_association_is_a_400_with_the_reason() {
    let w = world().await;
    let dir = dcmtk::TempDir::new("agent-reject");
    let qr = dcmtk::dcmqrscp(dir.path());
    put_device(
        &w,
        "qr",
        &format!("dicom://127.0.0.1:{}?calledAet=WRONG", qr.port),
    )
    .await;
    let query =
        serde_json::json!({"00080052": {"vr": "CS", "Value": ["STUDY"]}, "0020000D": {"vr": "UI"}});
    let err = caller(&w.relay.base_url())
        .push_to_agent(
            AGENT,
            "Device/qr",
            &query.to_string(),
            "application/dicom+json",
            &wait(20_000),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("association rejected") && err.contains("called AE title not recognized"),
        "{err}"
    );
}
