//! Token endpoint, registry routes, authentication and bad input.

use base64::Engine;
use serde_json::{Value, json};
use test_support::relay::*;

fn url(relay: &relay::Relay, path: &str) -> String {
    format!("{}{path}", relay.base_url())
}

#[tokio::test]
async fn token_from_form_or_basic() {
    let relay = start().await;
    let t = token(&relay, CALLER, CALLER_SECRET).await;
    assert_eq!(t.split('.').count(), 3);
    // Basic header, as the Medplum CLI also sends
    let r = call(
        client()
            .post(url(&relay, "oauth2/token"))
            .basic_auth(CALLER, Some(CALLER_SECRET))
            .form(&[("grant_type", "client_credentials")]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["token_type"], "Bearer");
    assert_eq!(r.json["expires_in"], 3600);
    // the JWT has client_id and exp, and no login_id
    let payload = r.json["access_token"]
        .as_str()
        .unwrap()
        .split('.')
        .nth(1)
        .unwrap()
        .to_owned();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["client_id"], CALLER);
    assert!(claims["exp"].as_i64().unwrap() > chrono::Utc::now().timestamp() + 3500);
    assert!(claims.get("login_id").is_none());
}

#[tokio::test]
async fn wrong_credentials_are_401_with_description() {
    let relay = start().await;
    for (id, secret) in [(CALLER, "wrong"), ("nobody", "x"), (CALLER, "")] {
        let r = call(client().post(url(&relay, "oauth2/token")).form(&[
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", secret),
        ]))
        .await;
        if secret.is_empty() {
            assert_eq!(r.status, 400);
        } else {
            assert_eq!(r.status, 401, "{id}");
            assert_eq!(r.json["error_description"], "Invalid client credentials");
        }
    }
    let r = call(
        client()
            .post(url(&relay, "oauth2/token"))
            .form(&[("grant_type", "password")]),
    )
    .await;
    assert_eq!(
        (r.status, r.json["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
}

#[tokio::test]
async fn registry_crud_and_search() {
    let relay = start().await;
    let t = token(&relay, CALLER, CALLER_SECRET).await;
    let c = client();
    let r = call(c.post(url(&relay, "fhir/R4/Device")).bearer_auth(&t).json(&json!({"resourceType": "Device", "url": "mllp://10.0.0.5:2575", "deviceName": [{"name": "ADT receiver"}]}))).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(r.content_type.starts_with("application/fhir+json"));
    let id = r.json["id"].as_str().unwrap().to_owned();
    let r = call(
        c.get(url(&relay, &format!("fhir/R4/Device/{id}")))
            .bearer_auth(&t),
    )
    .await;
    assert_eq!(r.json["url"], "mllp://10.0.0.5:2575");
    assert_eq!(r.json["meta"]["versionId"], "1");
    let r = call(
        c.put(url(&relay, &format!("fhir/R4/Device/{id}")))
            .bearer_auth(&t)
            .json(&json!({"resourceType": "Device", "id": id, "url": "mllp://10.0.0.6:2575"})),
    )
    .await;
    assert_eq!(
        (r.status, r.json["meta"]["versionId"].as_str()),
        (200, Some("2"))
    );
    for (q, n) in [
        ("url=mllp://10.0.0.6:2575", 1),
        ("identifier=urn:outpost|adt-1", 1),
        ("identifier=adt-1", 1),
        (&format!("_id={id},{DEVICE}"), 2),
        ("name=nothing", 0),
    ] {
        let r = call(
            c.get(url(&relay, &format!("fhir/R4/Device?{q}")))
                .bearer_auth(&t),
        )
        .await;
        assert_eq!(r.json["resourceType"], "Bundle");
        assert_eq!(r.json["type"], "searchset");
        assert_eq!(r.json["entry"].as_array().unwrap().len(), n, "{q}");
    }
    let r = call(c.get(url(&relay, "fhir/R4/Agent?name=Lab")).bearer_auth(&t)).await;
    assert_eq!(r.json["entry"][0]["resource"]["id"], AGENT);
    let r = call(
        c.delete(url(&relay, &format!("fhir/R4/Device/{id}")))
            .bearer_auth(&t),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = call(
        c.get(url(&relay, &format!("fhir/R4/Device/{id}")))
            .bearer_auth(&t),
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(oo_text(&r.json), format!("Device/{id} not found"));
}

#[tokio::test]
async fn record_searches_are_bounded_by_count() {
    let relay = start().await;
    let t = token(&relay, CALLER, CALLER_SECRET).await;
    let c = client();
    for i in 0..5 {
        let r = call(c.put(url(&relay, &format!("fhir/R4/Patient/p{i}"))).bearer_auth(&t).json(
            &json!({"resourceType": "Patient", "id": format!("p{i}"), "name": [{"family": "Doe"}]}),
        ))
        .await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let r = call(
        c.get(url(&relay, "fhir/R4/Patient?name=doe"))
            .bearer_auth(&t),
    )
    .await;
    assert_eq!(r.json["entry"].as_array().unwrap().len(), 5);
    assert_eq!(r.json["total"], 5);
    // Cut short by `_count`: the first matches by id, and no total (it is not known).
    let r = call(
        c.get(url(&relay, "fhir/R4/Patient?name=doe&_count=2"))
            .bearer_auth(&t),
    )
    .await;
    let ids: Vec<&str> = r.json["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["p0", "p1"]);
    assert!(r.json.get("total").is_none(), "{}", r.json);
    let r = call(c.get(url(&relay, "fhir/R4/Patient/p3")).bearer_auth(&t)).await;
    assert_eq!(r.json["name"][0]["family"], "Doe");
}

#[tokio::test]
async fn client_secrets_are_never_returned() {
    let relay = start().await;
    let t = token(&relay, CALLER, CALLER_SECRET).await;
    let r = call(
        client()
            .get(url(&relay, &format!("fhir/R4/ClientApplication/{CALLER}")))
            .bearer_auth(&t),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.json.get("secret").is_none(), "{}", r.text);
    let r = call(
        client()
            .get(url(&relay, "fhir/R4/ClientApplication"))
            .bearer_auth(&t),
    )
    .await;
    assert!(!r.text.contains(CALLER_SECRET));
}

#[tokio::test]
async fn every_fhir_route_requires_a_valid_token() {
    let relay = start().await;
    let good = token(&relay, CALLER, CALLER_SECRET).await;
    let other_key = relay::Tokens::new(b"not the relay's key, not the relay's key")
        .issue(CALLER, chrono::Utc::now().timestamp());
    // signed with the relay's own key, but two hours old
    let expired = relay
        .tokens()
        .issue(CALLER, chrono::Utc::now().timestamp() - 7200);
    let mut tampered: Vec<String> = good.split('.').map(str::to_owned).collect();
    tampered[1].push('A');
    let tampered = tampered.join(".");
    let routes: Vec<(reqwest::Method, String)> = vec![
        (reqwest::Method::GET, format!("fhir/R4/Agent/{AGENT}")),
        (reqwest::Method::GET, "fhir/R4/Device".into()),
        (reqwest::Method::POST, "fhir/R4/Device".into()),
        (reqwest::Method::PUT, format!("fhir/R4/Device/{DEVICE}")),
        (reqwest::Method::DELETE, format!("fhir/R4/Device/{DEVICE}")),
        (
            reqwest::Method::POST,
            format!("fhir/R4/Agent/{AGENT}/$push"),
        ),
        (
            reqwest::Method::POST,
            "fhir/R4/Agent/$push?identifier=lab-1".into(),
        ),
        (
            reqwest::Method::GET,
            format!("fhir/R4/Agent/{AGENT}/$status"),
        ),
        (reqwest::Method::GET, "fhir/R4/Agent/$bulk-status".into()),
        (
            reqwest::Method::GET,
            format!("fhir/R4/Agent/{AGENT}/$reload-config"),
        ),
        (reqwest::Method::GET, "outpost/inbound".into()),
    ];
    for (method, path) in &routes {
        for (label, auth) in [
            ("none", None),
            ("other key", Some(&other_key)),
            ("expired", Some(&expired)),
            ("tampered", Some(&tampered)),
        ] {
            let mut req = client()
                .request(method.clone(), url(&relay, path))
                .body("{}");
            if let Some(t) = auth {
                req = req.bearer_auth(t);
            }
            let r = call(req).await;
            assert_eq!(
                r.status, 401,
                "{method} {path} with {label} token: {}",
                r.text
            );
            assert!(oo_text(&r.json).starts_with("Unauthorized"));
        }
    }
    // the same routes with the good token are not 401
    for (method, path) in &routes {
        let r = call(
            client()
                .request(method.clone(), url(&relay, path))
                .bearer_auth(&good)
                .body("{}"),
        )
        .await;
        assert_ne!(r.status, 401, "{method} {path}");
    }
    // Basic client credentials work too
    let r = call(
        client()
            .get(url(&relay, &format!("fhir/R4/Agent/{AGENT}")))
            .basic_auth(CALLER, Some(CALLER_SECRET)),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = call(
        client()
            .get(url(&relay, &format!("fhir/R4/Agent/{AGENT}")))
            .basic_auth(CALLER, Some("nope")),
    )
    .await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn bad_input_gets_operation_outcomes() {
    let relay = start_with(relay::RelayConfig {
        max_body: 1024,
        ..relay::RelayConfig::default()
    })
    .await;
    let t = token(&relay, CALLER, CALLER_SECRET).await;
    let c = client();
    let r = call(
        c.post(url(&relay, "fhir/R4/Device"))
            .bearer_auth(&t)
            .body("{not json"),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(oo_text(&r.json).starts_with("invalid JSON: "), "{}", r.text);
    let big = json!({"resourceType": "Device", "note": "x".repeat(4096)});
    let r = call(
        c.post(url(&relay, "fhir/R4/Device"))
            .bearer_auth(&t)
            .json(&big),
    )
    .await;
    assert_eq!(r.status, 413);
    assert_eq!(oo_text(&r.json), "request body larger than 1024 bytes");
    let r = call(c.get(url(&relay, "no/such/route")).bearer_auth(&t)).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json["resourceType"], "OperationOutcome");
    let r = call(c.get(url(&relay, "fhir/R4/Observation/1")).bearer_auth(&t)).await;
    assert_eq!(r.status, 404);
    let r = call(
        c.put(url(&relay, "fhir/R4/Device/a%2Fb"))
            .bearer_auth(&t)
            .json(&json!({"resourceType": "Device"})),
    )
    .await;
    assert_eq!(r.status, 400);
    let r = call(
        c.put(url(&relay, "fhir/R4/Device/x"))
            .bearer_auth(&t)
            .json(&json!({"resourceType": "Agent"})),
    )
    .await;
    assert_eq!(r.status, 400);
    // the relay is still fine
    let r = call(c.get(url(&relay, "healthz"))).await;
    assert_eq!(r.text, "ok");
}

#[tokio::test]
async fn an_agents_credentials_only_read_its_agent_and_endpoints() {
    let relay = start().await;
    let t = token(&relay, AGENT_CLIENT, AGENT_SECRET).await;
    let get = |path: String| {
        let (relay, t) = (&relay, &t);
        async move { call(client().get(url(relay, &path)).bearer_auth(t)).await }
    };
    assert_eq!(get(format!("fhir/R4/Agent/{AGENT}")).await.status, 200);
    assert_eq!(get("fhir/R4/Endpoint/e1".into()).await.status, 200);
    let denied: Vec<(reqwest::Method, String)> = vec![
        (reqwest::Method::GET, "fhir/R4/Agent/agent-off".into()),
        (reqwest::Method::GET, "fhir/R4/Agent".into()),
        (reqwest::Method::GET, format!("fhir/R4/Device/{DEVICE}")),
        (
            reqwest::Method::GET,
            format!("fhir/R4/ClientApplication/{CALLER}"),
        ),
        (reqwest::Method::POST, "fhir/R4/Device".into()),
        (reqwest::Method::PUT, format!("fhir/R4/Agent/{AGENT}")),
        (reqwest::Method::DELETE, format!("fhir/R4/Agent/{AGENT}")),
        (
            reqwest::Method::POST,
            format!("fhir/R4/Agent/{AGENT}/$push"),
        ),
        (
            reqwest::Method::GET,
            format!("fhir/R4/Agent/{AGENT}/$status"),
        ),
        (reqwest::Method::GET, "fhir/R4/Agent/$bulk-status".into()),
        (reqwest::Method::GET, "outpost/inbound".into()),
    ];
    for (method, path) in &denied {
        let r = call(
            client()
                .request(method.clone(), url(&relay, path))
                .bearer_auth(&t)
                .body("{}"),
        )
        .await;
        assert_eq!(r.status, 403, "{method} {path}: {}", r.text);
        assert!(oo_text(&r.json).starts_with("Forbidden:"), "{}", r.text);
    }
    // A caller's credentials still reach everything.
    let c = token(&relay, CALLER, CALLER_SECRET).await;
    let r = call(
        client()
            .get(url(&relay, &format!("fhir/R4/Device/{DEVICE}")))
            .bearer_auth(&c),
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn client_secrets_are_hashed_at_rest() {
    let dir = std::env::temp_dir().join(format!("outpost-relay-secrets-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let relay = start_with(relay::RelayConfig {
        data_dir: Some(dir.clone()),
        ..relay::RelayConfig::default()
    })
    .await;
    // Logging in works...
    let t = token(&relay, CALLER, CALLER_SECRET).await;
    assert_eq!(t.split('.').count(), 3);
    // ...an update without a secret keeps it...
    let r = call(
        client()
            .put(url(&relay, &format!("fhir/R4/ClientApplication/{CALLER}")))
            .bearer_auth(&t)
            .json(&json!({"resourceType": "ClientApplication", "id": CALLER, "name": "renamed"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    token(&relay, CALLER, CALLER_SECRET).await;
    relay.shutdown().await;
    // ...and the registry file holds no secret in the clear.
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("sha256:"), "hashed secrets are stored");
    for secret in [CALLER_SECRET, AGENT_SECRET] {
        assert!(!text.contains(secret), "{secret} is stored in the clear");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_agent_whose_channels_share_a_port_or_a_name_is_refused_when_written() {
    let relay = start().await;
    let t = token(&relay, CALLER, CALLER_SECRET).await;
    let c = client();
    for (id, address) in [
        ("adt", "mllp://0.0.0.0:57002"),
        ("lab", "astm://0.0.0.0:57002"),
        ("other", "mllp://0.0.0.0:57003"),
    ] {
        let r = call(
            c.put(url(&relay, &format!("fhir/R4/Endpoint/{id}")))
                .bearer_auth(&t)
                .json(&json!({"resourceType": "Endpoint", "id": id, "status": "active", "address": address})),
        )
        .await;
        assert!(r.status == 200 || r.status == 201, "{}", r.text);
    }
    let ch = |name: &str, e: &str| json!({"name": name, "endpoint": {"reference": format!("Endpoint/{e}")}});
    let agent = |channels: Value| json!({"resourceType": "Agent", "id": "site", "name": "Site", "status": "active", "channel": channels});
    let r = call(
        c.put(url(&relay, "fhir/R4/Agent/site"))
            .bearer_auth(&t)
            .json(&agent(json!([ch("adt", "adt"), ch("lab", "lab")]))),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(
        oo_text(&r.json),
        "Agent/site: channels adt and lab share port 57002; each channel needs a port of its own"
    );
    let r = call(
        c.post(url(&relay, "fhir/R4/Agent"))
            .bearer_auth(&t)
            .json(&agent(json!([ch("adt", "adt"), ch("adt", "other")]))),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(
        oo_text(&r.json).ends_with("two channels are named adt; channel names must differ"),
        "{}",
        r.text
    );
    // Different names and ports: stored.
    let r = call(
        c.put(url(&relay, "fhir/R4/Agent/site"))
            .bearer_auth(&t)
            .json(&agent(json!([ch("adt", "adt"), ch("other", "other")]))),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    relay.shutdown().await;
}

#[tokio::test]
async fn device_and_endpoint_urls_the_agent_cannot_use_are_refused_when_written() {
    let relay = start().await;
    let t = token(&relay, CALLER, CALLER_SECRET).await;
    let c = client();
    let r = call(
        c.post(url(&relay, "fhir/R4/Device"))
            .bearer_auth(&t)
            .json(&json!({"resourceType": "Device", "url": "mlp://127.0.0.1:56000"})),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(
        oo_text(&r.json).contains("\"mlp://127.0.0.1:56000\": unknown scheme mlp://")
            && oo_text(&r.json).contains("mllp://host:port"),
        "{}",
        r.text
    );
    let r = call(
        c.put(url(&relay, "fhir/R4/Endpoint/in"))
            .bearer_auth(&t)
            .json(&json!({"resourceType": "Endpoint", "id": "in", "status": "active", "address": "mllp://0.0.0.0"})),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(
        oo_text(&r.json).starts_with("Endpoint/in: address \"mllp://0.0.0.0\" has no host:port"),
        "{}",
        r.text
    );
    // Nothing was stored.
    let r = call(c.get(url(&relay, "fhir/R4/Endpoint/in")).bearer_auth(&t)).await;
    assert_eq!(r.status, 404, "{}", r.text);
    // A usable one is taken.
    let r = call(
        c.put(url(&relay, "fhir/R4/Endpoint/in"))
            .bearer_auth(&t)
            .json(&json!({"resourceType": "Endpoint", "id": "in", "status": "active", "address": "tcp://0.0.0.0:9000"})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
}
