//! Two tenants on one relay: each tenant's caller (a ClientApplication with
//! `tenant-scope` extensions) reads, searches, pushes to and asks the status of its own Agents
//! and Devices only, and reads only its own Agents' inbound messages; everything of the other
//! tenant is a 403 (by id) or absent (in searches). The operator's caller still sees all.

use agent_protocol::AgentMessage;
use relay::{NewInbound, TENANT_SCOPE_EXTENSION};
use serde_json::{Value, json};
use test_support::relay::*;

const TENANT_SECRET: &str = "tenant-secret-0123456";
const AGENTS_SECRET: &str = "agents-secret-0123456";

/// Tenant `x` ("a" or "b"): Agent `agent-x` with a channel on `Endpoint/endpoint-x`, Device
/// `device-x`, and its caller `tenant-x`.
fn tenant(x: &str) -> Vec<Value> {
    let scope =
        |r: String| json!({"url": TENANT_SCOPE_EXTENSION, "valueReference": {"reference": r}});
    vec![
        json!({"resource": {"resourceType": "Agent", "id": format!("agent-{x}"), "status": "active",
            "identifier": [{"system": "urn:t", "value": format!("ident-{x}")}],
            "channel": [{"name": "in", "endpoint": {"reference": format!("Endpoint/endpoint-{x}")}}]}}),
        json!({"resource": {"resourceType": "Endpoint", "id": format!("endpoint-{x}"), "status": "active",
            "address": "mllp://0.0.0.0:57001"}}),
        json!({"resource": {"resourceType": "Device", "id": format!("device-{x}"),
            "url": format!("mllp://device-{x}.lan:2575"), "identifier": [{"system": "urn:t", "value": format!("dev-{x}")}]}}),
        json!({"resource": {"resourceType": "ClientApplication", "id": format!("tenant-{x}"), "secret": TENANT_SECRET,
            "extension": [scope(format!("Agent/agent-{x}")), scope(format!("Device/device-{x}"))]}}),
    ]
}

async fn two_tenants() -> relay::Relay {
    let relay = start().await;
    let mut entry = tenant("a");
    entry.extend(tenant("b"));
    entry.push(json!({"resource": {"resourceType": "ClientApplication", "id": "agents-ab", "secret": AGENTS_SECRET,
        "extension": [
            {"url": relay::ALLOWED_AGENT_EXTENSION, "valueReference": {"reference": "Agent/agent-a"}},
            {"url": relay::ALLOWED_AGENT_EXTENSION, "valueReference": {"reference": "Agent/agent-b"}}]}}));
    relay
        .registry()
        .bootstrap(&json!({"resourceType": "Bundle", "entry": entry}))
        .await
        .unwrap();
    for x in ["a", "b"] {
        relay
            .registry()
            .record_inbound(NewInbound {
                agent_id: format!("agent-{x}"),
                channel: "in".into(),
                remote: "10.0.0.9:4000".into(),
                content_type: "x-application/hl7-v2+er7".into(),
                body: format!("MSH|^~\\&|message of tenant {x}"),
                callback: format!("cb-{x}"),
            })
            .await
            .unwrap();
    }
    relay
}

fn url(relay: &relay::Relay, path: &str) -> String {
    format!("{}{path}", relay.base_url())
}

async fn get(relay: &relay::Relay, token: &str, path: &str) -> Resp {
    call(client().get(url(relay, path)).bearer_auth(token)).await
}

fn ids(bundle: &Value) -> Vec<String> {
    let mut v: Vec<String> = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

fn push_body(device: &str) -> Value {
    json!({"destination": format!("Device/{device}"), "contentType": "x-application/hl7-v2+er7",
        "body": "MSH|^~\\&|A|B", "waitForResponse": false})
}

#[tokio::test]
async fn neither_tenant_sees_or_reaches_the_others_agents_devices_or_messages() {
    let relay = two_tenants().await;
    let base = relay.base_url();
    let mut agent = std::collections::HashMap::new();
    for x in ["a", "b"] {
        agent.insert(
            x,
            ScriptedAgent::connect_base(&base, &format!("agent-{x}"), "agents-ab", AGENTS_SECRET)
                .await,
        );
    }
    let token = |x: &'static str| {
        let base = base.clone();
        async move { test_support::token(&base, &format!("tenant-{x}"), TENANT_SECRET).await }
    };
    for (me, other) in [("a", "b"), ("b", "a")] {
        let t = token(me).await;
        // Reads by id: its own are 200, the other tenant's are 403.
        for (path, mine) in [
            (format!("fhir/R4/Agent/agent-{me}"), true),
            (format!("fhir/R4/Device/device-{me}"), true),
            (format!("fhir/R4/Endpoint/endpoint-{me}"), true),
            (format!("fhir/R4/Agent/agent-{me}/$status"), true),
            (format!("fhir/R4/Agent/agent-{other}"), false),
            (format!("fhir/R4/Device/device-{other}"), false),
            (format!("fhir/R4/Endpoint/endpoint-{other}"), false),
            (format!("fhir/R4/Agent/agent-{other}/$status"), false),
            (format!("fhir/R4/Agent/{AGENT}"), false),
            (format!("fhir/R4/Device/{DEVICE}"), false),
            (format!("outpost/inbound?agent=agent-{me}"), true),
            (format!("outpost/inbound?agent=agent-{other}"), false),
        ] {
            let r = get(&relay, &t, &path).await;
            let want = if mine { 200 } else { 403 };
            assert_eq!(r.status, want, "tenant-{me} GET {path}: {}", r.text);
            if !mine {
                assert!(
                    oo_text(&r.json).contains("limited to its tenant's Agents and Devices"),
                    "{}",
                    r.text
                );
            }
        }
        let r = get(&relay, &t, &format!("fhir/R4/Agent/agent-{me}/$status")).await;
        assert_eq!(
            r.json["parameter"][0]["valueCode"], "connected",
            "{}",
            r.text
        );
        // The inbound log holds only its own agent's message.
        let r = get(&relay, &t, &format!("outpost/inbound?agent=agent-{me}")).await;
        let rows = r.json.as_array().unwrap();
        assert_eq!(rows.len(), 1, "{}", r.text);
        assert!(
            rows[0]["body"]
                .as_str()
                .unwrap()
                .ends_with(&format!("tenant {me}"))
        );
        assert_eq!(get(&relay, &t, "outpost/inbound").await.status, 403);
        // Searches list only its own.
        for (ty, want) in [
            ("Agent", format!("agent-{me}")),
            ("Device", format!("device-{me}")),
            ("Endpoint", format!("endpoint-{me}")),
        ] {
            let r = get(&relay, &t, &format!("fhir/R4/{ty}")).await;
            assert_eq!(r.status, 200, "{}", r.text);
            assert_eq!(ids(&r.json), [want], "{ty} search by tenant-{me}");
        }
        let r = get(
            &relay,
            &t,
            &format!("fhir/R4/Device?identifier=dev-{other}"),
        )
        .await;
        assert_eq!(ids(&r.json), Vec::<String>::new());
        // Bulk status covers its own agent only.
        let r = get(&relay, &t, "fhir/R4/Agent/$bulk-status").await;
        assert_eq!(r.status, 200, "{}", r.text);
        let entries = r.json["entry"].as_array().unwrap();
        assert_eq!(entries.len(), 1, "{}", r.text);
        assert_eq!(
            entries[0]["resource"]["parameter"][0]["resource"]["id"],
            format!("agent-{me}")
        );
        // A push to its own agent and device reaches that agent...
        let r = call(
            client()
                .post(url(&relay, &format!("fhir/R4/Agent/agent-{me}/$push")))
                .bearer_auth(&t)
                .json(&push_body(&format!("device-{me}"))),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let AgentMessage::TransmitRequest(req) = agent
            .get_mut(me)
            .unwrap()
            .recv_kind("agent:transmit:request")
            .await
        else {
            unreachable!()
        };
        assert_eq!(req.remote, format!("mllp://device-{me}.lan:2575"));
        // ...and by identifier too; the other tenant's identifier is not found.
        let r = call(
            client()
                .post(url(
                    &relay,
                    &format!("fhir/R4/Agent/$push?identifier=ident-{me}"),
                ))
                .bearer_auth(&t)
                .json(&push_body(&format!("device-{me}"))),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        agent
            .get_mut(me)
            .unwrap()
            .recv_kind("agent:transmit:request")
            .await;
        let r = call(
            client()
                .post(url(
                    &relay,
                    &format!("fhir/R4/Agent/$push?identifier=ident-{other}"),
                ))
                .bearer_auth(&t)
                .json(&push_body(&format!("device-{me}"))),
        )
        .await;
        assert_eq!(r.status, 404, "{}", r.text);
        // Pushes to the other tenant's agent, or through its own agent to the other's device
        // (by id or by search), are refused.
        for (agent_id, dest) in [
            (
                format!("agent-{other}"),
                json!(format!("Device/device-{other}")),
            ),
            (
                format!("agent-{other}"),
                json!(format!("Device/device-{me}")),
            ),
            (
                format!("agent-{me}"),
                json!(format!("Device/device-{other}")),
            ),
        ] {
            let mut body = push_body("x");
            body["destination"] = dest.clone();
            let r = call(
                client()
                    .post(url(&relay, &format!("fhir/R4/Agent/{agent_id}/$push")))
                    .bearer_auth(&t)
                    .json(&body),
            )
            .await;
            assert_eq!(
                r.status, 403,
                "tenant-{me} push {agent_id} {dest}: {}",
                r.text
            );
        }
        let mut body = push_body("x");
        body["destination"] = json!(format!("Device?identifier=dev-{other}"));
        let r = call(
            client()
                .post(url(&relay, &format!("fhir/R4/Agent/agent-{me}/$push")))
                .bearer_auth(&t)
                .json(&body),
        )
        .await;
        assert_eq!(r.status, 400, "{}", r.text);
        assert_eq!(oo_text(&r.json), "Destination device not found");
        // A tenant writes nothing and reads nothing else: the registry is the operator's.
        for (method, path, body) in [
            (
                "PUT",
                format!("fhir/R4/Device/device-{me}"),
                json!({"resourceType": "Device", "id": format!("device-{me}"), "url": "mllp://elsewhere:1"}),
            ),
            (
                "POST",
                "fhir/R4/Agent".to_owned(),
                json!({"resourceType": "Agent"}),
            ),
            ("DELETE", format!("fhir/R4/Agent/agent-{me}"), Value::Null),
            (
                "GET",
                format!("fhir/R4/ClientApplication/tenant-{me}"),
                Value::Null,
            ),
            ("GET", "fhir/R4/ClientApplication".to_owned(), Value::Null),
            ("GET", "fhir/R4/ServiceRequest".to_owned(), Value::Null),
            (
                "POST",
                "outpost/notify/any".to_owned(),
                json!({"resourceType": "ServiceRequest"}),
            ),
        ] {
            let req = client()
                .request(method.parse().unwrap(), url(&relay, &path))
                .bearer_auth(&t);
            let req = if body.is_null() { req } else { req.json(&body) };
            let r = call(req).await;
            assert_eq!(r.status, 403, "tenant-{me} {method} {path}: {}", r.text);
        }
    }
    // Nothing reached an agent beyond the two pushes each tenant made to its own.
    for x in ["a", "b"] {
        let a = agent.get_mut(x).unwrap();
        let quiet = tokio::time::timeout(std::time::Duration::from_millis(300), a.recv()).await;
        assert!(quiet.is_err(), "agent-{x} got more: {quiet:?}");
    }
    // The operator's caller sees both tenants.
    let t = test_support::token(&base, CALLER, CALLER_SECRET).await;
    let r = get(&relay, &t, "fhir/R4/Agent").await;
    let all = ids(&r.json);
    assert!(all.contains(&"agent-a".to_owned()) && all.contains(&"agent-b".to_owned()));
    let r = get(&relay, &t, "outpost/inbound").await;
    assert_eq!(r.json.as_array().unwrap().len(), 2, "{}", r.text);
    relay.shutdown().await;
}

/// Binaries hold patient data (DICOM instances from the agents' channels): a tenant's caller
/// reads none and writes none; the operator reads them.
#[tokio::test]
async fn a_tenant_reads_and_writes_no_binary() {
    let relay = two_tenants().await;
    let agents = token(&relay, "agents-ab", AGENTS_SECRET).await;
    let stored = call(
        client()
            .post(url(&relay, "fhir/R4/Binary"))
            .bearer_auth(&agents)
            .header("content-type", "application/dicom")
            .body(vec![0u8; 132]),
    )
    .await;
    assert_eq!(stored.status, 201, "{}", stored.text);
    let id = stored.json["id"].as_str().unwrap().to_owned();
    let tenant_a = token(&relay, "tenant-a", TENANT_SECRET).await;
    let r = get(&relay, &tenant_a, &format!("fhir/R4/Binary/{id}")).await;
    assert_eq!(r.status, 403, "{}", r.text);
    let r = call(
        client()
            .post(url(&relay, "fhir/R4/Binary"))
            .bearer_auth(&tenant_a)
            .header("content-type", "application/octet-stream")
            .body("x"),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text);
    let operator = token(&relay, CALLER, CALLER_SECRET).await;
    let r = get(&relay, &operator, &format!("fhir/R4/Binary/{id}")).await;
    assert_eq!(r.status, 200);
    // An agent's credentials: agent executables only, and the answer says so.
    let r = get(&relay, &agents, &format!("fhir/R4/Binary/{id}")).await;
    assert_eq!(r.status, 403);
    assert!(
        r.text.contains("application/vnd.outpost.agent"),
        "{}",
        r.text
    );
}
