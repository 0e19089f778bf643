//! `outpost server` serves `Binary`: stored under `--data`, at most `--max-binary-mib`.

mod support;

use std::time::Duration;

use support::*;

#[tokio::test]
async fn binaries_are_kept_under_data_within_max_binary_mib() {
    let dir = scratch("binary-cli");
    let mut cmd = outpost();
    cmd.args([
        "server",
        "--listen",
        "127.0.0.1:0",
        "--max-binary-mib",
        "1",
        "--data",
    ])
    .arg(dir.join("relay"))
    .arg("--bootstrap")
    .arg(repo().join("examples/bootstrap/push-example.json"));
    let mut relay = Proc::spawn("outpost server", cmd);
    let base = tokio::task::spawn_blocking(move || {
        let url = relay.listening_url(Duration::from_secs(30));
        (relay, url)
    })
    .await
    .unwrap();
    let (_relay, base) = base;
    let token = token(&base, "outpost-caller", "caller-secret-change-me").await;
    let http = reqwest::Client::new();
    let post = |body: Vec<u8>| {
        http.post(format!("{base}fhir/R4/Binary"))
            .bearer_auth(&token)
            .header("content-type", "application/dicom")
            .body(body)
            .send()
    };
    let r = post(vec![7u8; (1 << 20) + 1]).await.unwrap();
    assert_eq!(r.status(), 413);
    let body: Vec<u8> = (0..5000u32).map(|i| (i % 253) as u8).collect();
    let r = post(body.clone()).await.unwrap();
    assert_eq!(r.status(), 201);
    let created: serde_json::Value = r.json().await.unwrap();
    let id = created["id"].as_str().unwrap();
    assert_eq!(
        std::fs::read(dir.join("relay/binary").join(id)).unwrap(),
        body
    );
    let _ = std::fs::remove_dir_all(dir);
}
