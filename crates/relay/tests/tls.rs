//! `--tls-cert/--tls-key`: HTTPS and WSS with a certificate from a CA made in the test.

use std::sync::Arc;

use relay::RelayConfig;
use test_support::Pki;
use test_support::relay::*;

fn pki() -> Pki {
    let dir = std::env::temp_dir().join(format!("outpost-tls-{}", uuid::Uuid::new_v4()));
    Pki::new(&dir, "Outpost test CA")
}

#[tokio::test]
async fn https_and_wss_with_a_trusted_ca_only() {
    let pki = pki();
    let relay = start_with(RelayConfig {
        tls: Some((pki.cert.clone(), pki.key.clone())),
        ..RelayConfig::default()
    })
    .await;
    assert!(relay.base_url().starts_with("https://"));
    let trusting = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let r = call(trusting.get(format!("{}healthz", relay.base_url()))).await;
    assert_eq!(r.text, "ok");
    let tok: serde_json::Value = trusting
        .post(format!("{}oauth2/token", relay.base_url()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", AGENT_CLIENT),
            ("client_secret", AGENT_SECRET),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(tok["access_token"].is_string());
    // a client with only the system roots refuses the certificate
    let err = reqwest::Client::new()
        .get(format!("{}healthz", relay.base_url()))
        .send()
        .await
        .unwrap_err();
    assert!(
        format!("{err:?}").to_lowercase().contains("certificate"),
        "{err:?}"
    );

    // WSS: TLS with rustls, then the WebSocket handshake and an agent session on top
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(relay.local_addr())
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let url = format!("wss://localhost:{}/ws/agent", relay.local_addr().port());
    let (mut ws, _) = tokio_tungstenite::client_async(url, tls).await.unwrap();
    use futures_util::{SinkExt, StreamExt};
    let connect = agent_protocol::AgentMessage::ConnectRequest(agent_protocol::ConnectRequest {
        access_token: tok["access_token"].as_str().map(str::to_owned),
        agent_id: Some(AGENT.into()),
        callback: None,
    });
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        connect.to_json().into(),
    ))
    .await
    .unwrap();
    let reply = ws.next().await.unwrap().unwrap();
    assert_eq!(
        reply.to_text().unwrap(),
        r#"{"type":"agent:connect:response"}"#
    );
    relay.shutdown().await;
}
