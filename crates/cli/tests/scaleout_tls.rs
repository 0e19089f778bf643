//! A relay process reaching PostgreSQL and Redis over TLS only: PostgreSQL accepts nothing but
//! `hostssl` connections and Redis has no plaintext port, so a relay that works proves both links
//! are encrypted; without the CA that signed their certificates, the relay refuses to start.

mod support;

use std::time::Duration;

use serde_json::json;
use support::services::{Postgres, Redis};
use support::{Proc, ack_device, outpost, run, scratch, token};
use test_support::Pki;

#[test]
fn relay_uses_postgres_and_redis_over_tls_only() {
    let dir = scratch("backend-tls");
    let Pki { ca, cert, key, .. } = Pki::new(&dir, "Outpost backend test CA");
    let redis = Redis::start_tls((&ca, &cert, &key));
    let pg = Postgres::start_tls((&ca, &cert, &key));
    let database_url = format!("{}?sslmode=require", pg.url());

    // Without the CA, the database's certificate is not trusted: the relay does not start.
    let mut cmd = outpost();
    cmd.args(["server", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.join("refused"))
        .args(["--database-url", &database_url, "--redis-url", &redis.url()]);
    let (code, _, stderr) = run("outpost server", cmd, Duration::from_secs(60));
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");

    // With it, the relay serves: an agent connects and a push goes through.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let device = ack_device("127.0.0.1:0", Default::default()).await;
        let bundle = json!({"resourceType": "Bundle", "type": "collection", "entry": [
            {"resource": {"resourceType": "ClientApplication", "id": "caller", "secret": "caller-secret-0123456"}},
            {"resource": {"resourceType": "ClientApplication", "id": "agent", "secret": "agent-secret-0123456",
                "extension": [{"url": "https://outpost.health/fhir/StructureDefinition/allowed-agent",
                    "valueReference": {"reference": "Agent/a1"}}]}},
            {"resource": {"resourceType": "Agent", "id": "a1", "name": "a", "status": "active"}},
            {"resource": {"resourceType": "Device", "id": "d1", "url": format!("mllp://{}", device.local_addr())}},
        ]});
        let bundle_path = dir.join("bundle.json");
        std::fs::write(&bundle_path, bundle.to_string()).unwrap();
        let mut cmd = outpost();
        cmd.args(["server", "--listen", "127.0.0.1:0", "--data"])
            .arg(dir.join("relay"))
            .args(["--database-url", &database_url, "--redis-url", &redis.url()])
            .arg("--backend-ca-file")
            .arg(&ca)
            .arg("--bootstrap")
            .arg(&bundle_path);
        let mut relay = Proc::spawn("outpost server", cmd);
        let base = relay.listening_url(Duration::from_secs(60));
        let agent = agent_core::Agent::start(
            agent_core::AgentConfig {
                base_url: base.clone(),
                client_id: "agent".into(),
                client_secret: "agent-secret-0123456".into(),
                agent_id: "a1".into(),
                data_dir: dir.join("agent"),
                ..agent_core::AgentConfig::default()
            },
            agent_core::LogBuffer::new(),
        )
        .await
        .unwrap();
        assert!(agent.wait_live(Duration::from_secs(20)).await);
        let http = reqwest::Client::new();
        let token = token(&base, "caller", "caller-secret-0123456").await;
        let answer = http
            .post(format!("{base}fhir/R4/Agent/a1/$push"))
            .bearer_auth(&token)
            .json(&json!({"destination": "Device/d1", "contentType": "x-application/hl7-v2+er7",
                "body": "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|TLS-1|P|2.5\rPID|1\r",
                "waitForResponse": true}))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(answer.contains("MSA|AA|TLS-1"), "{answer}");
        // The database itself reports the relay's connections as encrypted.
        let encrypted = pg.psql(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE s.ssl AND a.client_addr IS NOT NULL",
        );
        assert!(
            encrypted.parse::<u32>().unwrap() >= 2,
            "TLS connections: {encrypted}"
        );
        agent.shutdown().await;
        device.shutdown(Duration::from_millis(100)).await;
        drop(relay);
    });
    let _ = std::fs::remove_dir_all(&dir);
}
