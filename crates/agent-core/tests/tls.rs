//! The agent over HTTPS/WSS: it trusts a relay whose certificate chains to its CA file and
//! refuses one that does not.

mod common;

use std::time::Duration;

use agent_core::{Agent, Event, LogBuffer};
use common::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use relay::{Relay, RelayConfig};

/// A CA and a relay certificate for 127.0.0.1 signed by it, written to a directory.
fn pki(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Outpost test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let (ca_path, cert_path, key_path) = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&ca_path, ca.pem()).unwrap();
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (ca_path, cert_path, key_path)
}

async fn tls_relay(
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    bundle: &serde_json::Value,
) -> Relay {
    let relay = Relay::start(RelayConfig {
        listen: "127.0.0.1:0".into(),
        tls: Some((cert, key)),
        ..RelayConfig::default()
    })
    .await
    .unwrap();
    relay.registry().bootstrap(bundle).await.unwrap();
    relay
}

#[tokio::test]
async fn trusted_with_the_ca_file() {
    let dir = tmp("pki");
    let (ca, cert, key) = pki(&dir);
    let device = Device::start(0).await;
    let bundle = bundle(device.port, 0);
    let relay = tls_relay(cert, key, &bundle).await;
    assert!(relay.base_url().starts_with("https://"));
    let mut cfg = agent_config(&relay.base_url(), tmp("agent"));
    cfg.ca_file = Some(ca.clone());
    let agent = start_agent(cfg).await;
    // and a push goes through over WSS
    let tls = agent_core::client_config(Some(&ca)).unwrap();
    let caller =
        agent_core::RelayClient::new(&relay.base_url(), "caller", "caller-secret-0123456", tls)
            .unwrap();
    let answer = caller
        .push_to_agent(
            AGENT,
            &format!("Device/{DEVICE}"),
            ADT_LF,
            "x-application/hl7-v2+er7",
            &agent_core::PushOptions {
                wait_for_response: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(matches!(answer, agent_core::PushAnswer::Answer { .. }));
    drop(agent);
}

#[tokio::test]
async fn untrusted_certificate_is_refused() {
    let dir = tmp("pki");
    let (_ca, cert, key) = pki(&dir);
    let bundle = bundle(0, 0);
    let relay = tls_relay(cert, key, &bundle).await;
    let agent = Agent::start(
        agent_config(&relay.base_url(), tmp("agent")),
        LogBuffer::new(),
    )
    .await
    .unwrap();
    let mut events = agent.events();
    let reason = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(Event::Disconnected { reason }) = events.recv().await {
                return reason;
            }
        }
    })
    .await
    .unwrap();
    assert!(reason.to_lowercase().contains("certificate"), "{reason}");
    assert!(!agent.is_live());
    // a CA file that does not exist is a configuration error at start
    let mut cfg = agent_config(&relay.base_url(), tmp("agent"));
    cfg.ca_file = Some(dir.join("missing.pem"));
    assert!(
        Agent::start(cfg, LogBuffer::new())
            .await
            .unwrap_err()
            .to_string()
            .starts_with("TLS: ")
    );
}
