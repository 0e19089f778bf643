//! TLS toward devices, against peers that are not ours. `mllps://` pushes: MLLP over TLS to a
//! device behind Debian's `socat` (OpenSSL) terminating TLS, the server certificate verified
//! against the CA named by `?ca=`, a client certificate presented for mutual TLS
//! (`?cert=&key=`), a certificate from another CA refused with an error that names the
//! problem. `dicom://...?tls=true`: C-STORE to dcmtk's `storescp +tls`, which asks for the
//! agent's client certificate (mutual TLS).

mod common;

use std::process::Command;
use std::time::Duration;

use agent_core::{PushAnswer, PushOptions};
use common::*;
use serde_json::json;
use test_support::{Pki, Proc, wait_until};

/// `socat` from the environment (scripts/peers.sh `ensure_tls_peers`).
fn socat() -> Command {
    let path = std::env::var("OUTPOST_SOCAT").unwrap_or_else(|_| "/usr/bin/socat".into());
    assert!(
        std::path::Path::new(&path).exists(),
        "socat not found at {path}: run `source scripts/peers.sh && ensure_peers`"
    );
    Command::new(path)
}

/// socat terminating TLS on a free port with `pki`'s server certificate and forwarding to the
/// plain device on `device_port`; with `client_ca`, a client certificate from it is required.
async fn terminator(pki: &Pki, device_port: u16, client_ca: Option<&Pki>) -> (Proc, u16) {
    // socat takes a port number.
    let port = test_support::port_for_peer();
    let verify = match client_ca {
        Some(ca) => format!("verify=1,cafile={}", ca.ca.display()),
        None => "verify=0".to_owned(),
    };
    let mut cmd = socat();
    cmd.arg(format!(
        "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},{verify}",
        pki.cert.display(),
        pki.key.display()
    ))
    .arg(format!("TCP:127.0.0.1:{device_port}"));
    let proc = Proc::spawn("socat (TLS terminator)", cmd);
    wait_until("socat listening", Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    (proc, port)
}

async fn push_to_device(w: &World, device: &str) -> Result<PushAnswer, agent_core::Error> {
    caller(&w.relay.base_url())
        .push_to_agent(
            AGENT,
            &format!("Device/{device}"),
            ADT_LF,
            "x-application/hl7-v2+er7",
            &PushOptions {
                wait_for_response: true,
                wait_timeout: Some(Duration::from_secs(10)),
                return_ack: None,
            },
        )
        .await
}

async fn device(w: &World, id: &str, url: String) {
    w.relay
        .registry()
        .put(json!({"resourceType": "Device", "id": id, "url": url}))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mllps_pushes_verify_the_device_certificate_against_the_ca_given() {
    let w = world().await;
    let good = Pki::new(&tmp("pki-device"), "Device CA");
    let other = Pki::new(&tmp("pki-other"), "Some Other CA");
    let (_socat, port) = terminator(&good, w.device.port, None).await;

    device(
        &w,
        "tls",
        format!("mllps://127.0.0.1:{port}?ca={}", good.ca.display()),
    )
    .await;
    let PushAnswer::Answer { body, .. } = push_to_device(&w, "tls").await.unwrap() else {
        panic!("no answer")
    };
    assert_eq!(msa(body.as_bytes()).0, "AA", "{body}");
    assert_eq!(msa(body.as_bytes()).1, "1698105185516");
    assert_eq!(w.device.received().len(), 1, "the message went through TLS");

    // A CA that did not sign the device's certificate: refused, naming the problem.
    device(
        &w,
        "wrong-ca",
        format!("mllps://127.0.0.1:{port}?ca={}", other.ca.display()),
    )
    .await;
    let err = push_to_device(&w, "wrong-ca")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!(
            "TLS handshake with 127.0.0.1:{port} failed: invalid peer certificate: UnknownIssuer"
        )),
        "{err}"
    );
    // Without ?ca= the system roots (and the agent's caFile, none here) do not know it either.
    device(&w, "no-ca", format!("mllps://127.0.0.1:{port}")).await;
    let err = push_to_device(&w, "no-ca").await.unwrap_err().to_string();
    assert!(
        err.contains("invalid peer certificate: UnknownIssuer"),
        "{err}"
    );
    // A CA file that cannot be read is named.
    device(
        &w,
        "missing-ca",
        format!("mllps://127.0.0.1:{port}?ca=/nonexistent/ca.pem"),
    )
    .await;
    let err = push_to_device(&w, "missing-ca")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("TLS to 127.0.0.1:{port}: /nonexistent/ca.pem")),
        "{err}"
    );
    // The wrong CA delivered nothing.
    assert_eq!(w.device.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mllps_presents_a_client_certificate_for_mutual_tls() {
    let w = world().await;
    let server = Pki::new(&tmp("pki-mtls-server"), "Device CA");
    let client = Pki::new(&tmp("pki-mtls-client"), "Agent CA");
    let (_socat, port) = terminator(&server, w.device.port, Some(&client)).await;
    device(
        &w,
        "mtls",
        format!(
            "mllps://127.0.0.1:{port}?ca={}&cert={}&key={}",
            server.ca.display(),
            client.cert.display(),
            client.key.display()
        ),
    )
    .await;
    let PushAnswer::Answer { body, .. } = push_to_device(&w, "mtls").await.unwrap() else {
        panic!("no answer")
    };
    assert_eq!(msa(body.as_bytes()).0, "AA", "{body}");
    assert_eq!(w.device.received().len(), 1);
    // Without the client certificate the terminator refuses the connection: nothing delivered.
    device(
        &w,
        "mtls-no-cert",
        format!("mllps://127.0.0.1:{port}?ca={}", server.ca.display()),
    )
    .await;
    let err = push_to_device(&w, "mtls-no-cert")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("received fatal alert: CertificateRequired"),
        "{err}"
    );
    assert_eq!(w.device.received().len(), 1);
}

#[path = "../../dicom-net/tests/dcmtk/mod.rs"]
mod dcmtk;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dicom_tls_stores_a_file_with_storescp_over_mutual_tls() {
    use base64::Engine;
    let w = world().await;
    let dir = dcmtk::TempDir::new("agent-store-tls");
    let pki = Pki::new(&dir.path().join("pki"), "PACS CA");
    let agent_pki = Pki::new(&dir.path().join("pki-agent"), "Agent CA");
    let other = Pki::new(&dir.path().join("pki-other"), "Some Other CA");
    let file = dcmtk::make_file(
        dir.path(),
        "ct.dcm",
        true,
        &dcmtk::Spec {
            sop_instance: "2.25.777",
            size: 128,
            ..dcmtk::Spec::default()
        },
    );
    let key = pki.key.display().to_string();
    let cert = pki.cert.display().to_string();
    let agent_ca = agent_pki.ca.display().to_string();
    // storescp with TLS (OpenSSL, dcmtk's default BCP 195 profile); it verifies the client
    // certificate the agent presents against the agent's CA.
    let scp = dcmtk::storescp(dir.path(), &["+tls", &key, &cert, "+cf", &agent_ca], &[]);
    let url = |ca: &Pki| {
        format!(
            "dicom://127.0.0.1:{}?calledAet=STORESCP&callingAet=OUTPOST&tls=true&ca={}&cert={}&key={}",
            scp.port,
            ca.ca.display(),
            agent_pki.cert.display(),
            agent_pki.key.display()
        )
    };
    device(&w, "pacs-tls", url(&pki)).await;
    let body = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&file).unwrap());
    let push = |device: &'static str| {
        let (base, body) = (w.relay.base_url(), body.clone());
        async move {
            caller(&base)
                .push_to_agent(
                    AGENT,
                    &format!("Device/{device}"),
                    &body,
                    "application/dicom",
                    &PushOptions {
                        wait_for_response: true,
                        wait_timeout: Some(Duration::from_secs(20)),
                        return_ack: None,
                    },
                )
                .await
        }
    };
    let PushAnswer::Answer { body: answer, .. } = push("pacs-tls").await.unwrap() else {
        panic!("no answer")
    };
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(v["status"], "0x0000", "{answer}");
    assert_eq!(v["sopInstanceUid"], "2.25.777");
    let stored = dcmtk::stored(dir.path(), "2.25.777");
    assert_eq!(dcmtk::data_set_of(&stored).1, dcmtk::data_set_of(&file).1);
    // The SCP's certificate checked against another CA: refused, naming the problem.
    device(&w, "pacs-wrong-ca", url(&other)).await;
    let err = push("pacs-wrong-ca").await.unwrap_err().to_string();
    assert!(
        err.contains(&format!(
            "TLS to 127.0.0.1:{}: handshake failed: invalid peer certificate: UnknownIssuer",
            scp.port
        )),
        "{err}"
    );
    // Without the client certificate storescp refuses the connection.
    device(
        &w,
        "pacs-no-cert",
        format!(
            "dicom://127.0.0.1:{}?calledAet=STORESCP&callingAet=OUTPOST&tls=true&ca={}",
            scp.port,
            pki.ca.display()
        ),
    )
    .await;
    let err = push("pacs-no-cert").await.unwrap_err().to_string();
    assert!(
        err.contains("received fatal alert: CertificateRequired"),
        "{err}"
    );
}

/// Sends one MLLP-framed message through `socat` as a TLS client with `options` (cafile, cert,
/// key, ...) and returns socat's exit status and what came back.
async fn socat_send(port: u16, options: String, message: &str) -> (bool, Vec<u8>, String) {
    let mut frame = vec![0x0b];
    frame.extend_from_slice(message.as_bytes());
    frame.extend_from_slice(&[0x1c, 0x0d]);
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut cmd = socat();
        cmd.args(["-t", "5", "STDIO"])
            .arg(format!("OPENSSL:127.0.0.1:{port},{options}"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("socat starts");
        child.stdin.take().unwrap().write_all(&frame).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            out.stdout,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mllps_channel_takes_messages_over_mutual_tls_only() {
    let device = Device::start(0).await;
    let agent_pki = Pki::new(&tmp("pki-channel"), "Agent channel CA");
    let devices = Pki::new(&tmp("pki-devices"), "Devices CA");
    let stranger = Pki::new(&tmp("pki-stranger"), "Stranger CA");
    let mut b = bundle(device.port, 0);
    b["entry"][3]["resource"]["address"] = format!(
        "mllps://127.0.0.1:0?cert={}&key={}&ca={}",
        agent_pki.cert.display(),
        agent_pki.key.display(),
        devices.ca.display()
    )
    .into();
    let relay = start_relay("127.0.0.1:0", None, &b, Duration::from_secs(3600)).await;
    let agent = start_agent(agent_config(&relay.base_url(), tmp("agent"))).await;
    // On port 0: the agent says which port the channel took, once it listens.
    let channel_port = channel_port(&agent, "adt-in").await;
    let stored = || async {
        relay
            .registry()
            .inbound(Some(AGENT), None, 0, 100)
            .await
            .unwrap()
    };
    // A device with a certificate from the devices' CA, checking the agent's against its CA.
    let trusted = format!(
        "cafile={},cert={},key={},verify=1",
        agent_pki.ca.display(),
        devices.cert.display(),
        devices.key.display()
    );
    let (ok, out, err) = socat_send(channel_port, trusted, &oru("TLS-1")).await;
    assert!(ok, "socat: {err}");
    let ack = String::from_utf8_lossy(&out);
    assert!(ack.contains("MSA|AA|TLS-1"), "{ack:?} {err}");
    let rows = stored().await;
    assert_eq!(rows.len(), 1);
    assert!(rows[0].body.contains("|TLS-1|"), "{}", rows[0].body);
    // Without a client certificate the agent refuses the device: nothing stored.
    let anonymous = format!("cafile={},verify=1", agent_pki.ca.display());
    let (_, out, err) = socat_send(channel_port, anonymous, &oru("TLS-2")).await;
    assert!(
        out.is_empty(),
        "answered without a client certificate: {err}"
    );
    // A device that does not trust the agent's CA stops at the handshake.
    let distrustful = format!(
        "cafile={},cert={},key={},verify=1",
        stranger.ca.display(),
        devices.cert.display(),
        devices.key.display()
    );
    let (ok, out, err) = socat_send(channel_port, distrustful, &oru("TLS-3")).await;
    assert!(!ok && out.is_empty(), "{err}");
    assert!(err.contains("certificate verify failed"), "{err}");
    assert_eq!(stored().await.len(), 1, "only the trusted device's message");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_s_client_gets_the_ack_from_an_mllps_channel_over_verified_mutual_tls() {
    let agent_pki = Pki::new(&tmp("pki-s-client-agent"), "Agent channel CA");
    let devices = Pki::new(&tmp("pki-s-client-devices"), "Devices CA");
    let mut b = bundle(0, 0);
    b["entry"][3]["resource"]["address"] = format!(
        "mllps://127.0.0.1:0?cert={}&key={}&ca={}",
        agent_pki.cert.display(),
        agent_pki.key.display(),
        devices.ca.display()
    )
    .into();
    let relay = start_relay("127.0.0.1:0", None, &b, Duration::from_secs(3600)).await;
    let agent = start_agent(agent_config(&relay.base_url(), tmp("agent"))).await;
    let port = channel_port(&agent, "adt-in").await;
    let mut frame = vec![0x0b];
    frame.extend_from_slice(oru("S-CLIENT-1").as_bytes());
    frame.extend_from_slice(&[0x1c, 0x0d]);
    // The agent's certificate verified against its CA and for the name `localhost`; the device
    // presents its own.
    let args = [
        "-CAfile".to_owned(),
        agent_pki.ca.display().to_string(),
        "-verify_return_error".into(),
        "-verify_hostname".into(),
        "localhost".into(),
        "-cert".into(),
        devices.cert.display().to_string(),
        "-key".into(),
        devices.key.display().to_string(),
    ];
    let (out, _) = s_client(port, &args, &frame, &[0x1c, 0x0d]).await;
    let text = String::from_utf8_lossy(&out);
    // The ACK, MLLP-framed, for this message.
    let start = out
        .iter()
        .position(|&b| b == 0x0b)
        .unwrap_or_else(|| panic!("no MLLP frame: {text}"));
    let end = out.len() - 2;
    assert_eq!(&out[end..], &[0x1c, 0x0d], "{text}");
    let (code, control_id, _) = msa(&out[start + 1..end]);
    assert_eq!((code.as_str(), control_id.as_str()), ("AA", "S-CLIENT-1"));
    // TLS 1.2 or 1.3, the agent's certificate verified by OpenSSL, a client certificate asked
    // for from the devices' CA.
    assert!(
        text.contains("New, TLSv1.3, Cipher is") || text.contains("New, TLSv1.2, Cipher is"),
        "{text}"
    );
    assert!(text.contains("issuer=CN = Agent channel CA"), "{text}");
    assert!(text.contains("Verification: OK"), "{text}");
    assert!(text.contains("Verified peername: localhost"), "{text}");
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    assert!(
        text.contains("Acceptable client certificate CA names\nCN = Devices CA"),
        "{text}"
    );
    let rows = relay
        .registry()
        .inbound(Some(AGENT), None, 0, 100)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].body.contains("|S-CLIENT-1|"), "{}", rows[0].body);

    // Without a client certificate the agent ends the connection at the handshake: no ACK.
    let anonymous = &args[..5];
    let (out, err) = s_client(port, anonymous, &frame, &[0x1c, 0x0d]).await;
    let text = String::from_utf8_lossy(&out);
    assert!(!text.contains("MSA|"), "{text}");
    assert!(err.contains("alert certificate required"), "{err}");
    assert_eq!(
        relay
            .registry()
            .inbound(Some(AGENT), None, 0, 100)
            .await
            .unwrap()
            .len(),
        1
    );
    drop(agent);
}
