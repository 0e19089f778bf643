//! `Binary`: raw and FHIR JSON uploads, raw and JSON reads, the size limit, who may do what.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;
use test_support::process::scratch;
use test_support::relay::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn url(relay: &relay::Relay, path: &str) -> String {
    format!("{}{path}", relay.base_url())
}

/// A raw `POST /fhir/R4/Binary` with `Transfer-Encoding: chunked` (no length announced):
/// `chunks` chunks of `len` bytes; the relay's answer, whole.
async fn chunked_post(relay: &relay::Relay, token: &str, chunks: usize, len: usize) -> String {
    let mut s = tokio::net::TcpStream::connect(relay.local_addr())
        .await
        .unwrap();
    let head = format!(
        "POST /fhir/R4/Binary HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\
         content-type: application/dicom\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..chunks {
        let mut c = format!("{len:x}\r\n").into_bytes();
        c.extend_from_slice(&payload(len));
        c.extend_from_slice(b"\r\n");
        // The relay may answer 413 and close before the rest is sent.
        if s.write_all(&c).await.is_err() {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer).await;
    answer
}

/// Bytes that are not all alike, so a shuffled or truncated copy cannot pass.
fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[tokio::test]
async fn an_agent_uploads_raw_bytes_and_a_caller_reads_them_back_byte_for_byte() {
    let data = scratch("binary-raw");
    let relay = start_with(relay::RelayConfig {
        data_dir: Some(data.clone()),
        ..relay::RelayConfig::default()
    })
    .await;
    let agent = token(&relay, AGENT_CLIENT, AGENT_SECRET).await;
    let caller = token(&relay, CALLER, CALLER_SECRET).await;
    let body = payload(3 << 20);
    let r = call(
        client()
            .post(url(&relay, "fhir/R4/Binary"))
            .bearer_auth(&agent)
            .header("content-type", "application/dicom")
            .body(body.clone()),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["resourceType"], "Binary");
    assert_eq!(r.json["contentType"], "application/dicom");
    let id = r.json["id"].as_str().unwrap().to_owned();
    // Stored on disk under --data, whole.
    assert_eq!(std::fs::read(data.join("binary").join(&id)).unwrap(), body);

    let raw = client()
        .get(url(&relay, &format!("fhir/R4/Binary/{id}")))
        .bearer_auth(&caller)
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 200);
    assert_eq!(raw.headers()["content-type"], "application/dicom");
    assert_eq!(raw.bytes().await.unwrap().as_ref(), body.as_slice());

    let r = call(
        client()
            .get(url(&relay, &format!("fhir/R4/Binary/{id}")))
            .bearer_auth(&caller)
            .header("accept", "application/fhir+json"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["id"], id.as_str());
    assert_eq!(
        STANDARD.decode(r.json["data"].as_str().unwrap()).unwrap(),
        body
    );

    // An agent's credentials create, they do not read; nobody reads without credentials.
    let r = call(
        client()
            .get(url(&relay, &format!("fhir/R4/Binary/{id}")))
            .bearer_auth(&agent),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text);
    // Except an agent executable, which `$upgrade` has the agent download.
    let r = call(
        client()
            .post(url(&relay, "fhir/R4/Binary"))
            .bearer_auth(&caller)
            .header("content-type", relay::AGENT_EXECUTABLE)
            .body("#!/bin/sh\n"),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let exe = r.json["id"].as_str().unwrap().to_owned();
    let r = call(
        client()
            .get(url(&relay, &format!("fhir/R4/Binary/{exe}")))
            .bearer_auth(&agent),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.text, "#!/bin/sh\n");
    let r = call(client().post(url(&relay, "fhir/R4/Binary")).body("x")).await;
    assert_eq!(r.status, 401);
    let r = call(
        client()
            .get(url(&relay, "fhir/R4/Binary/no-such"))
            .bearer_auth(&caller),
    )
    .await;
    assert_eq!(r.status, 404);
    relay.shutdown().await;
    let _ = std::fs::remove_dir_all(data);
}

#[tokio::test]
async fn the_fhir_json_form_stores_its_data() {
    let relay = start().await;
    let caller = token(&relay, CALLER, CALLER_SECRET).await;
    let r = call(
        client()
            .post(url(&relay, "fhir/R4/Binary"))
            .bearer_auth(&caller)
            .header("content-type", "application/fhir+json")
            .body(
                json!({"resourceType": "Binary", "contentType": "text/plain",
                    "data": STANDARD.encode("hello binary")})
                .to_string(),
            ),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.json["id"].as_str().unwrap();
    let raw = client()
        .get(url(&relay, &format!("fhir/R4/Binary/{id}")))
        .bearer_auth(&caller)
        .send()
        .await
        .unwrap();
    assert_eq!(raw.headers()["content-type"], "text/plain");
    assert_eq!(raw.text().await.unwrap(), "hello binary");
    let r = call(
        client()
            .post(url(&relay, "fhir/R4/Binary"))
            .bearer_auth(&caller)
            .header("content-type", "application/fhir+json")
            .body(
                json!({"resourceType": "Binary", "contentType": "text/plain", "data": "%%"})
                    .to_string(),
            ),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    relay.shutdown().await;
}

#[tokio::test]
async fn over_the_limit_is_413_whether_announced_or_streamed_and_nothing_is_kept() {
    let data = scratch("binary-limit");
    let relay = start_with(relay::RelayConfig {
        data_dir: Some(data.clone()),
        max_binary: 1000,
        ..relay::RelayConfig::default()
    })
    .await;
    let caller = token(&relay, CALLER, CALLER_SECRET).await;
    // Announced by Content-Length.
    let r = call(
        client()
            .post(url(&relay, "fhir/R4/Binary"))
            .bearer_auth(&caller)
            .header("content-type", "application/dicom")
            .body(payload(1001)),
    )
    .await;
    assert_eq!(r.status, 413, "{}", r.text);
    // Chunked, no length: found out while streaming.
    let answer = chunked_post(&relay, &caller, 3, 400).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // Exactly the limit is fine.
    let r = call(
        client()
            .post(url(&relay, "fhir/R4/Binary"))
            .bearer_auth(&caller)
            .header("content-type", "application/dicom")
            .body(payload(1000)),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let kept: Vec<_> = std::fs::read_dir(data.join("binary"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        kept.len(),
        2,
        "one blob and its type, no leftovers: {kept:?}"
    );
    relay.shutdown().await;
    let _ = std::fs::remove_dir_all(data);
}

#[tokio::test]
async fn with_postgresql_a_binary_stored_through_one_relay_is_read_through_another() {
    let pg = tokio::task::spawn_blocking(test_support::services::Postgres::start)
        .await
        .unwrap();
    let config = || relay::RelayConfig {
        database_url: Some(pg.url()),
        max_binary: 3 << 20,
        ..relay::RelayConfig::default()
    };
    let a = start_with(config()).await;
    let b = start_with(config()).await;
    let agent = token(&a, AGENT_CLIENT, AGENT_SECRET).await;
    let body = payload((2 << 20) + 12345);
    let r = call(
        client()
            .post(url(&a, "fhir/R4/Binary"))
            .bearer_auth(&agent)
            .header("content-type", "application/dicom")
            .body(body.clone()),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_owned();
    // 1 MiB chunks: three rows.
    let chunks = pg.psql(&format!(
        "SELECT count(*) FROM blob_chunk WHERE blob_id = '{id}'"
    ));
    assert_eq!(chunks.trim(), "3", "{chunks}");
    let caller = token(&b, CALLER, CALLER_SECRET).await;
    let raw = client()
        .get(url(&b, &format!("fhir/R4/Binary/{id}")))
        .bearer_auth(&caller)
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 200);
    assert_eq!(raw.headers()["content-type"], "application/dicom");
    assert_eq!(raw.bytes().await.unwrap().as_ref(), body.as_slice());
    // Over the limit: 413, and the chunks already written are rolled back.
    let answer = chunked_post(&a, &agent, 4, 1 << 20).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let rows = pg.psql("SELECT count(*) FROM blob_chunk");
    assert_eq!(rows.trim(), "3", "nothing of the refused upload: {rows}");
    a.shutdown().await;
    b.shutdown().await;
}
