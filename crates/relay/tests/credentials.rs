//! Client credentials: failed logins throttled per client id and per source address, secrets
//! hashed with PBKDF2 (older entries rehashed at the next login), generated when left out,
//! refused when too short.

use std::net::IpAddr;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use relay::{LoginLimits, RelayConfig};
use serde_json::json;
use test_support::relay::*;

fn url(relay: &relay::Relay, path: &str) -> String {
    format!("{}{path}", relay.base_url())
}

/// A client whose connections come from `addr` (any 127/8 address reaches the relay on Linux).
fn client_from(addr: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(addr.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

async fn login(c: &reqwest::Client, relay: &relay::Relay, id: &str, secret: &str) -> Resp {
    call(c.post(url(relay, "oauth2/token")).form(&[
        ("grant_type", "client_credentials"),
        ("client_id", id),
        ("client_secret", secret),
    ]))
    .await
}

#[tokio::test]
async fn a_burst_of_wrong_secrets_is_throttled_per_client_and_per_address() {
    let relay = start_with(RelayConfig {
        login_limits: LoginLimits {
            per_client: 5,
            per_address: 12,
            period: Duration::from_secs(600),
        },
        ..RelayConfig::default()
    })
    .await;
    let one = client_from("127.0.0.1");
    let two = client_from("127.0.0.2");
    // The first five failures for the caller's id are plain 401s...
    for _ in 0..5 {
        let r = login(&one, &relay, CALLER, "wrong-secret-wrong-secret").await;
        assert_eq!(r.status, 401, "{}", r.text);
    }
    // ...the sixth is counted over the allowance, and from then on the caller's id is refused
    // from any address, even with the right secret, without the secret being checked.
    let r = login(&one, &relay, CALLER, "wrong-secret-wrong-secret").await;
    assert_eq!(r.status, 401, "{}", r.text);
    for c in [&one, &two] {
        let resp = c
            .post(url(&relay, "oauth2/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", CALLER),
                ("client_secret", CALLER_SECRET),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 429);
        let retry: u64 = resp.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        // 600 s / 5 failures: the next attempt in at most 120 s.
        assert!((1..=120).contains(&retry), "Retry-After: {retry}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "slow_down");
    }
    // HTTP Basic on a REST route is the same login, so it is refused the same way.
    let r = call(
        one.get(url(&relay, "fhir/R4/Agent"))
            .basic_auth(CALLER, Some(CALLER_SECRET)),
    )
    .await;
    assert_eq!(r.status, 429, "{}", r.text);
    // Another client id from the same address is still served.
    let r = login(&one, &relay, AGENT_CLIENT, AGENT_SECRET).await;
    assert_eq!(r.status, 200, "{}", r.text);

    // Address 127.0.0.1 has failed 6 times; 6 more names it does not know use its allowance up.
    for i in 0..7 {
        let r = login(
            &one,
            &relay,
            &format!("guess-{i}"),
            "wrong-secret-wrong-secret",
        )
        .await;
        assert_eq!(r.status, 401, "{}", r.text);
    }
    let r = login(&one, &relay, AGENT_CLIENT, AGENT_SECRET).await;
    assert_eq!(r.status, 429, "address over its allowance: {}", r.text);
    // A second address is still served, for a client id that is not blocked.
    let r = login(&two, &relay, AGENT_CLIENT, AGENT_SECRET).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Successful logins never count: many in a row from the second address all pass.
    for _ in 0..20 {
        let r = login(&two, &relay, AGENT_CLIENT, AGENT_SECRET).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    relay.shutdown().await;
}

/// `sha256:SALT:HASH` as the first releases stored a secret.
fn legacy_hash(secret: &str) -> String {
    let salt = b"0123456789abcdef";
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(salt);
    ctx.update(secret.as_bytes());
    format!(
        "sha256:{}:{}",
        STANDARD.encode(salt),
        STANDARD.encode(ctx.finish().as_ref())
    )
}

#[tokio::test]
async fn sha256_and_plain_entries_are_rehashed_with_pbkdf2_on_the_next_login() {
    let relay = start().await;
    let secret = "an-old-secret-from-2025";
    relay
        .registry()
        .bootstrap(&json!({"resourceType": "Bundle", "entry": [
            {"resource": {"resourceType": "ClientApplication", "id": "old", "secret": legacy_hash(secret)}}]}))
        .await
        .unwrap();
    let stored = |relay: &relay::Relay| {
        let r = relay.registry().clone();
        async move {
            r.get("ClientApplication", "old").await.unwrap().unwrap()["secret"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    assert!(stored(&relay).await.starts_with("sha256:"));
    // A wrong secret does not upgrade anything.
    assert_eq!(
        login(&client(), &relay, "old", "not-the-old-secret")
            .await
            .status,
        401
    );
    assert!(stored(&relay).await.starts_with("sha256:"));
    // The right one logs in and the entry is rewritten.
    assert_eq!(login(&client(), &relay, "old", secret).await.status, 200);
    let upgraded = stored(&relay).await;
    assert!(
        upgraded.starts_with(&format!("pbkdf2-sha256:{}:", relay::PBKDF2_ITERATIONS)),
        "{upgraded}"
    );
    assert!(!upgraded.contains(secret));
    // The rewritten entry logs in (also by HTTP Basic) and refuses a wrong secret.
    assert_eq!(login(&client(), &relay, "old", secret).await.status, 200);
    let r = call(
        client()
            .get(url(&relay, "fhir/R4/Agent"))
            .basic_auth("old", Some(secret)),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        login(&client(), &relay, "old", "not-the-old-secret")
            .await
            .status,
        401
    );
    assert_eq!(stored(&relay).await, upgraded, "upgraded once");
    relay.shutdown().await;
}

#[tokio::test]
async fn a_client_written_without_a_secret_gets_one_returned_once() {
    let relay = start().await;
    let admin = token(&relay, CALLER, CALLER_SECRET).await;
    let r = call(
        client()
            .post(url(&relay, "fhir/R4/ClientApplication"))
            .bearer_auth(&admin)
            .json(&json!({"resourceType": "ClientApplication", "name": "new caller"})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_owned();
    let secret = r.json["secret"].as_str().unwrap().to_owned();
    // 32 random bytes, base64url: 43 characters, 256 bits.
    assert_eq!(secret.len(), 43, "{secret}");
    assert!(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&secret)
            .is_ok_and(|b| b.len() == 32)
    );
    assert_eq!(login(&client(), &relay, &id, &secret).await.status, 200);
    // Never shown again.
    let r = call(
        client()
            .get(url(&relay, &format!("fhir/R4/ClientApplication/{id}")))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.json.get("secret").is_none(), "{}", r.text);
    // PUT of a new client without a secret: generated too; an update without one keeps it.
    let put = |body: serde_json::Value| {
        client()
            .put(url(&relay, "fhir/R4/ClientApplication/by-put"))
            .bearer_auth(&admin)
            .json(&body)
    };
    let r = call(put(
        json!({"resourceType": "ClientApplication", "id": "by-put"}),
    ))
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let put_secret = r.json["secret"].as_str().unwrap().to_owned();
    let r = call(put(
        json!({"resourceType": "ClientApplication", "id": "by-put", "name": "renamed"}),
    ))
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.json.get("secret").is_none(), "{}", r.text);
    assert_eq!(
        login(&client(), &relay, "by-put", &put_secret).await.status,
        200
    );
    relay.shutdown().await;
}

#[tokio::test]
async fn a_chosen_secret_shorter_than_16_characters_is_refused_with_400() {
    let relay = start().await;
    let admin = token(&relay, CALLER, CALLER_SECRET).await;
    for short in ["a", "", "fifteen-chars-x"] {
        let r = call(
            client()
                .post(url(&relay, "fhir/R4/ClientApplication"))
                .bearer_auth(&admin)
                .json(&json!({"resourceType": "ClientApplication", "secret": short})),
        )
        .await;
        assert_eq!(r.status, 400, "{short:?}: {}", r.text);
        assert!(
            oo_text(&r.json).contains(&format!(
                "secret too short ({} characters, at least 16)",
                short.len()
            )),
            "{}",
            r.text
        );
    }
    let r = call(
        client()
            .put(url(&relay, "fhir/R4/ClientApplication/chosen"))
            .bearer_auth(&admin)
            .json(&json!({"resourceType": "ClientApplication", "id": "chosen", "secret": "sixteen-chars-xx"})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(
        r.json.get("secret").is_none(),
        "a chosen secret is not echoed"
    );
    assert_eq!(
        login(&client(), &relay, "chosen", "sixteen-chars-xx")
            .await
            .status,
        200
    );
    relay.shutdown().await;
}
