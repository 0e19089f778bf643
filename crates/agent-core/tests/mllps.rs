//! `mllps://` pushes: MLLP over TLS to a device behind a TLS terminator that is not ours
//! (Debian's `socat`, OpenSSL), the server certificate verified against the CA named by `?ca=`,
//! a client certificate presented for mutual TLS (`?cert=&key=`), and a certificate from another
//! CA refused with an error that names the problem.

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
    let port = free_port();
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
