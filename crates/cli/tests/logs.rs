//! Secrets and PHI stay out of the logs at the default level (info): client secrets, access
//! tokens, and message bodies (pushes, device answers, inbound messages, refusals), through
//! every path that logs.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use support::{Proc, outpost, run};

const WAIT: Duration = Duration::from_secs(60);
const CALLER_SECRET: &str = "caller-SECRET-1234";
const AGENT_SECRET: &str = "agent-SECRET-5678";
const WRONG_SECRET: &str = "WRONG-SECRET-9999";

fn oru(id: &str, name: &str) -> String {
    format!(
        "MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240101120000||ORU^R01|{id}|P|2.5\rPID|1||PID-{id}||{name}||19700101|F\rOBX|1|NM|2345-7^Glucose^LN||5.4|mmol/L\r"
    )
}

#[test]
fn no_secrets_tokens_or_bodies_in_logs_at_info() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    // The device: AA for most, AE with a text for messages whose control id starts with NAK.
    let seen = Arc::new(Mutex::new(0usize));
    let device = rt.block_on(async {
        let seen = seen.clone();
        mllp::Server::bind(
            "127.0.0.1:0",
            mllp::ServerOptions::default(),
            move |req: mllp::Request| {
                let seen = seen.clone();
                async move {
                    *seen.lock().unwrap() += 1;
                    let msg = req.message().unwrap();
                    let nak = msg.control_id().text().starts_with("NAK");
                    let code = if nak {
                        hl7v2::AckCode::AE
                    } else {
                        hl7v2::AckCode::AA
                    };
                    let opts = mllp::ack_options(
                        nak.then(|| "PHI-ERRTEXT patient Roe^Richard".to_owned()),
                    );
                    let ack = hl7v2::build_ack(&msg, code, &opts);
                    let _ = req.reply(&ack).await;
                }
            },
        )
        .await
        .unwrap()
    });
    let dir = std::env::temp_dir().join(format!("outpost-logs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bundle = json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "ClientApplication", "id": "caller", "secret": CALLER_SECRET}},
        {"resource": {"resourceType": "ClientApplication", "id": "agent", "secret": AGENT_SECRET,
            "extension": [{"url": "https://outpost.health/fhir/StructureDefinition/allowed-agent", "valueReference": {"reference": "Agent/logs"}}]}},
        {"resource": {"resourceType": "Agent", "id": "logs", "name": "Logs", "status": "active",
            "channel": [{"name": "in", "endpoint": {"reference": "Endpoint/in"}}]}},
        {"resource": {"resourceType": "Endpoint", "id": "in", "status": "active", "address": "mllp://127.0.0.1:0"}},
        {"resource": {"resourceType": "Device", "id": "lis", "url": format!("mllp://{}", device.local_addr())}},
    ]});
    std::fs::write(dir.join("bundle.json"), bundle.to_string()).unwrap();
    let mut cmd = outpost();
    cmd.env_remove("RUST_LOG")
        .args(["server", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.join("relay"))
        .arg("--bootstrap")
        .arg(dir.join("bundle.json"));
    let mut relay = Proc::spawn("outpost server", cmd);
    let base = relay.listening_url(WAIT);
    let mut cmd = outpost();
    cmd.env_remove("RUST_LOG")
        .args([
            "agent",
            "--base-url",
            &base,
            "--client-id",
            "agent",
            "--client-secret",
            AGENT_SECRET,
            "--agent-id",
            "logs",
            "--data-dir",
        ])
        .arg(dir.join("agent"));
    let mut agent = Proc::spawn("outpost agent", cmd);
    agent.wait_for("connected to the relay", WAIT);
    let channel = agent.channel_port("in", WAIT);

    let push = |id: &str, name: &str, secret: &str| {
        let mut cmd = outpost();
        cmd.args([
            "push",
            "logs",
            "--destination",
            "Device/lis",
            "--wait",
            "--body",
            &oru(id, name),
        ])
        .args([
            "--base-url",
            &base,
            "--client-id",
            "caller",
            "--client-secret",
            secret,
        ]);
        run("outpost push", cmd, WAIT)
    };
    let (code, out, err) = push("OK-1", "PHI-Doe^Janet", CALLER_SECRET);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = push("NAK-1", "PHI-Poe^Edgar", CALLER_SECRET);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("PHI-ERRTEXT") || out.contains("PHI-ERRTEXT"),
        "the caller gets the device's text: {out}{err}"
    );
    let (code, _, _) = push("X-1", "PHI-Nobody", WRONG_SECRET);
    assert_ne!(code, 0);
    // A device message through the agent's channel.
    rt.block_on(async {
        let mut c = mllp::Connection::connect(
            &format!("127.0.0.1:{channel}"),
            mllp::ClientOptions::default(),
        )
        .await
        .unwrap();
        let ack = c
            .send(oru("IN-1", "PHI-Inbound^Ivy").as_bytes())
            .await
            .unwrap();
        assert_eq!(ack.code(), hl7v2::AckCode::AA);
    });
    // The agent's logs also travel to the relay ($fetch-logs): same rules, so checking its
    // stderr covers them.
    let logs = format!(
        "{}\n{}",
        relay.output(Duration::from_millis(500)),
        agent.output(Duration::from_millis(500))
    );
    assert!(
        logs.contains("agent connected") && logs.contains("push answered"),
        "the logs are there:\n{logs}"
    );
    for secret in [
        CALLER_SECRET,
        AGENT_SECRET,
        WRONG_SECRET,
        "eyJ",
        "PHI-",
        "Janet",
        "Richard",
        "Ivy",
    ] {
        assert!(
            !logs.contains(secret),
            "{secret:?} appears in the logs:\n{logs}"
        );
    }
    assert!(*seen.lock().unwrap() >= 2);
    rt.block_on(device.shutdown(Duration::from_millis(100)));
}
