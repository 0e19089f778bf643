//! The console at `/console`, over HTTP as a browser speaks it: login with an operator's
//! credentials (agent credentials refused), the session cookie's flags, CSRF on every action
//! (a forged or missing token changes nothing), live status over server-sent events, an
//! agent's action answered by the agent and audited, and bad input answered with an error page.

use std::time::Duration;

use agent_protocol::{AgentMessage, StatusResponse};
use test_support::relay::*;

#[path = "console/support.rs"]
mod support;

use support::{answer_one, browser, login, operator, page_text, set_cookie, url};

#[tokio::test]
async fn pages_need_a_login_and_agent_credentials_cannot_log_in() {
    let relay = start().await;
    let r = browser().get(url(&relay, "console")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/console/login");
    // An access token is not a session.
    let t = token(&relay, CALLER, CALLER_SECRET).await;
    let r = browser()
        .get(url(&relay, "console"))
        .header("cookie", format!("outpost_console={t}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);

    for (id, secret, why) in [
        (AGENT_CLIENT, AGENT_SECRET, "not-operator"),
        (CALLER, "wrong-secret", "credentials"),
    ] {
        let r = login(&relay, id, secret).await;
        assert_eq!(r.status(), 303, "{id}");
        assert_eq!(
            r.headers()["location"],
            format!("/console/login?error={why}").as_str()
        );
        assert!(set_cookie(&r, "outpost_console").is_none(), "{id}");
    }
    // A login form from elsewhere (no matching login cookie) is refused.
    let r = browser()
        .post(url(&relay, "console/login"))
        .form(&[
            ("client_id", CALLER),
            ("client_secret", CALLER_SECRET),
            ("csrf", "made-up"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(set_cookie(&r, "outpost_console").is_none());

    let (cookie, _) = operator(&relay).await;
    // Pages are not cached, not framed, and run only the relay's scripts.
    let page = browser()
        .get(url(&relay, "console"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    let h = page.headers();
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(h["x-frame-options"], "DENY");
    assert!(
        h["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    // Behind a TLS proxy that says so, the cookie is Secure.
    let login_page = browser()
        .get(url(&relay, "console/login"))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    let (_, login_cookie) = set_cookie(&login_page, "outpost_console_login").unwrap();
    assert!(login_cookie.contains("; Secure"), "{login_cookie}");
    let fleet = page_text(&relay, &cookie, "console").await;
    for text in ["Lab agent", AGENT, "lab-1", "Off agent", "never seen"] {
        assert!(fleet.contains(text), "{text} missing from the fleet page");
    }
    // Each login is audited, the refused ones too.
    let t = token(&relay, CALLER, CALLER_SECRET).await;
    let audit = call(
        client()
            .get(url(&relay, "fhir/R4/AuditEvent"))
            .bearer_auth(&t),
    )
    .await;
    let outcomes: Vec<(String, String)> = audit.json["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["resource"]["type"]["code"] == "console")
        .map(|e| {
            (
                e["resource"]["agent"][0]["who"]["reference"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                e["resource"]["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(outcomes.contains(&(format!("ClientApplication/{AGENT_CLIENT}"), "8".into())));
    assert!(outcomes.contains(&(format!("ClientApplication/{CALLER}"), "8".into())));
    assert!(outcomes.contains(&(format!("ClientApplication/{CALLER}"), "0".into())));
}

#[tokio::test]
async fn actions_need_the_sessions_csrf_token_and_are_audited() {
    let relay = start().await;
    let (cookie, csrf) = operator(&relay).await;
    let mut agent = ScriptedAgent::connect(&relay).await;
    let action = |token: Option<&str>| {
        let mut req = browser()
            .post(url(
                &relay,
                &format!("console/agents/{AGENT}/action/reload-config"),
            ))
            .header("cookie", &cookie);
        if let Some(t) = token {
            req = req.header("x-csrf-token", t);
        }
        req.send()
    };
    // Forged and missing tokens: 403, and the agent is asked nothing.
    for token in [Some("forged"), None] {
        let r = action(token).await.unwrap();
        assert_eq!(r.status(), 403);
        assert!(r.text().await.unwrap().contains("nothing was done"));
    }
    // With the token: the agent is asked, and its answer shown.
    let asked = async {
        let AgentMessage::ReloadConfigRequest(r) =
            agent.recv_kind("agent:reloadconfig:request").await
        else {
            unreachable!()
        };
        agent
            .send(&AgentMessage::ReloadConfigResponse(StatusResponse {
                status_code: 200,
                callback: r.callback,
            }))
            .await;
    };
    let (resp, ()) = tokio::join!(action(Some(&csrf)), asked);
    let resp = resp.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("The agent reloaded its configuration.")
    );
    let t = token(&relay, CALLER, CALLER_SECRET).await;
    let audit = call(
        client()
            .get(url(&relay, "fhir/R4/AuditEvent"))
            .bearer_auth(&t),
    )
    .await;
    assert!(
        audit.json["entry"].as_array().unwrap().iter().any(|e| {
            e["resource"]["subtype"][0]["code"] == "reload-config"
                && e["resource"]["entity"][0]["what"]["reference"] == format!("Agent/{AGENT}")
                && e["resource"]["outcome"] == "0"
        }),
        "{}",
        audit.text
    );
}

#[tokio::test]
async fn the_live_view_sends_a_row_when_an_agent_connects() {
    let relay = start().await;
    let (cookie, _) = operator(&relay).await;
    let resp = browser()
        .get(url(&relay, "console/events"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut resp = resp;
    let mut text = String::new();
    let mut agent = None;
    let connected = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = resp.chunk().await.unwrap() {
            text.push_str(&String::from_utf8_lossy(&chunk));
            // The first look sends every row; then the agent connects.
            if agent.is_none() && text.contains(&format!("event: agent-{AGENT}")) {
                assert!(text.contains("data-status=\"unknown\""), "{text}");
                agent = Some(ScriptedAgent::connect(&relay).await);
                text.clear();
            }
            if agent.is_some() && text.contains("data-status=\"connected\"") {
                return text;
            }
        }
        panic!("the stream ended: {text}");
    })
    .await
    .expect("no row for the connected agent within 10 s");
    assert!(
        connected.contains(&format!("event: agent-{AGENT}")),
        "{connected}"
    );
}

#[tokio::test]
async fn bad_input_gets_an_error_page() {
    let relay = start().await;
    let (cookie, csrf) = operator(&relay).await;
    let get = |path: String| {
        browser()
            .get(url(&relay, &path))
            .header("cookie", &cookie)
            .send()
    };
    for (path, status, text) in [
        (
            "console/agents/no-such-agent".to_owned(),
            404,
            "There is no such Agent.",
        ),
        (
            format!("console?q={}", "x".repeat(10_000)),
            400,
            "longer than 200",
        ),
        (
            "console/messages/12345".to_owned(),
            404,
            "There is no such message.",
        ),
        (
            "console/messages/abc".to_owned(),
            400,
            "A message number is a number.",
        ),
        (
            "console/pushes?since=yesterday".to_owned(),
            400,
            "A time is YYYY-MM-DDTHH:MM (UTC).",
        ),
        (
            "console/pushes/99999".to_owned(),
            404,
            "There is no such push.",
        ),
        (
            "console/assets/..%2F..%2FCargo.toml".to_owned(),
            404,
            "No such file.",
        ),
    ] {
        let r = get(path.clone()).await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{path}");
        let html = r.text().await.unwrap();
        assert!(html.contains(text), "{path}: {html}");
    }
    // An action on an unknown agent, with a valid token: 404, nothing audited.
    let r = browser()
        .post(url(
            &relay,
            "console/agents/no-such-agent/action/reload-config",
        ))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn an_inbound_message_shows_live_and_can_be_resent() {
    let relay = start().await;
    let (cookie, csrf) = operator(&relay).await;
    let mut resp = browser()
        .get(url(&relay, "console/messages/events?after=0"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut agent = ScriptedAgent::connect(&relay).await;
    let t = token(&relay, AGENT_CLIENT, AGENT_SECRET).await;
    let body = "MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240101120000||ORU^R01|LIVE1|P|2.5\rPID|1||<42>\r";
    agent
        .send(&AgentMessage::TransmitRequest(
            agent_protocol::TransmitRequest {
                access_token: Some(t),
                channel: Some("adt-in".into()),
                remote: "10.0.0.9:51234".into(),
                content_type: "x-application/hl7-v2+er7".into(),
                body: body.into(),
                callback: Some("Agent/live-1".into()),
                ..Default::default()
            },
        ))
        .await;
    let AgentMessage::TransmitResponse(answer) = agent.recv_kind("agent:transmit:response").await
    else {
        unreachable!()
    };
    assert!(answer.body.contains("MSA|AA|LIVE1"), "{}", answer.body);
    // The live list sends the new row.
    let mut text = String::new();
    let row = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = resp.chunk().await.unwrap() {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.contains("event: message") && text.contains("ORU^R01") {
                return text;
            }
        }
        panic!("the stream ended: {text}");
    })
    .await
    .expect("the message did not show within 10 s");
    let id: i64 = row
        .split("id=\"message-")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no row id in {row}"));
    // The fleet counts it on its channel.
    let fleet = page_text(&relay, &cookie, "console").await;
    assert!(
        fleet.contains("<b>adt-in</b> 1 received · 1 answered · last "),
        "{fleet}"
    );
    // Found by its keys; not by another's.
    for (query, found) in [
        ("control_id=LIVE1", true),
        ("message_type=ORU%5ER01", true),
        ("patient_id=%3C42%3E", true),
        ("control_id=OTHER", false),
        ("message_type=ADT", false),
        ("device=10.0.0.9%3A51234", true),
        ("device=10.0.0.8%3A1", false),
        ("since=2000-01-01T00%3A00", true),
        ("until=2000-01-01T00%3A00", false),
        ("since=2999-01-01T00%3A00", false),
    ] {
        let html = page_text(&relay, &cookie, &format!("console/messages?{query}")).await;
        assert_eq!(
            html.contains(&format!("id=\"message-{id}\"")),
            found,
            "{query}"
        );
    }
    // Its page shows the segments, escaped, with field paths.
    let page = page_text(&relay, &cookie, &format!("console/messages/{id}")).await;
    assert!(page.contains("title=\"PID-3\""), "{page}");
    assert!(page.contains("&lt;42&gt;"), "{page}");
    // Resend without the token: nothing; with it: the target answers again, audited.
    let resend = |token: &str| {
        browser()
            .post(url(&relay, &format!("console/messages/{id}/resend")))
            .header("cookie", &cookie)
            .header("x-csrf-token", token)
            .send()
    };
    assert_eq!(resend("forged").await.unwrap().status(), 403);
    let r = resend(&csrf).await.unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(html.contains("Sent again: status 200"), "{html}");
    assert!(html.contains("LIVE1"), "{html}");
    let t = token(&relay, CALLER, CALLER_SECRET).await;
    let audit = call(
        client()
            .get(url(&relay, "fhir/R4/AuditEvent"))
            .bearer_auth(&t),
    )
    .await;
    assert!(
        audit.json["entry"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["resource"]["subtype"][0]["code"] == "resend"
                && e["resource"]["outcomeDesc"] == format!("inbound message {id}")),
        "{}",
        audit.text
    );
}

#[tokio::test]
async fn pushes_are_logged_searchable_and_can_be_pushed_again() {
    let relay = start().await;
    let (cookie, csrf) = operator(&relay).await;
    let mut agent = ScriptedAgent::connect(&relay).await;
    let t = token(&relay, CALLER, CALLER_SECRET).await;
    let adt = "MSH|^~\\&|EHR|H|LAB|H|20240101||ADT^A08|PUSH-77|P|2.5\rPID|1||MRN-9^^^H^MR\r";
    let push_url = url(&relay, &format!("fhir/R4/Agent/{AGENT}/$push"));
    let body = serde_json::json!({"destination": format!("Device/{DEVICE}"),
        "contentType": "x-application/hl7-v2+er7", "body": adt, "waitForResponse": true});
    let (resp, pushed) = tokio::join!(
        call(client().post(&push_url).bearer_auth(&t).json(&body)),
        answer_one(&mut agent, "PUSH-77")
    );
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(pushed, adt);
    // Where the time went: the agent's round trip, and the device's share it reported.
    let raw = client().post(&push_url).bearer_auth(&t).json(&body).send();
    let (raw, _) = tokio::join!(raw, answer_one(&mut agent, "PUSH-77"));
    let raw = raw.unwrap();
    assert_eq!(raw.headers()["x-outpost-device-us"], "7");
    let agent_us: u64 = raw.headers()["x-outpost-agent-us"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(agent_us < 10_000_000, "{agent_us}");
    // The log is written in the background: wait for the row, found by its control id.
    let page = |path: String| {
        browser()
            .get(url(&relay, &path))
            .header("cookie", &cookie)
            .send()
    };
    let list = test_support::wait_until("the push in the log", Duration::from_secs(10), || {
        let p = page("console/pushes?control_id=PUSH-77".to_owned());
        async move {
            let html = p.await.ok()?.text().await.ok()?;
            html.contains("id=\"push-").then_some(html)
        }
    })
    .await;
    assert!(list.contains("ADT^A08"), "{list}");
    assert!(list.contains("answered (200)"), "{list}");
    let id: i64 = list
        .split("id=\"push-")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    // Searches by patient and type find it; one for another patient does not.
    for (query, found) in [
        ("patient_id=MRN-9", true),
        ("message_type=ADT", true),
        ("message_type=ADT%5EA08", true),
        ("patient_id=MRN-0", false),
        ("outcome=timeout", false),
        ("outcome=answered", true),
        ("since=2000-01-01T00%3A00%3A00", true),
        ("since=2999-01-01T00%3A00", false),
    ] {
        let html = page(format!("console/pushes?{query}"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(
            html.contains(&format!("id=\"push-{id}\"")),
            found,
            "{query}"
        );
    }
    let detail = page(format!("console/pushes/{id}"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(detail.contains("PUSH-77"), "{detail}");
    // Pushed again, with the token: the agent gets the same message.
    let repush = browser()
        .post(url(&relay, &format!("console/pushes/{id}/repush")))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .send();
    let (resp, again) = tokio::join!(repush, answer_one(&mut agent, "PUSH-77"));
    let html = resp.unwrap().text().await.unwrap();
    assert!(html.contains("Pushed again: HTTP 200"), "{html}");
    assert_eq!(again, adt);
}

/// Scale-out: two relay processes on one PostgreSQL and one Redis. A session made on one is
/// good on the other, and the other shows the agent connected to the first, live.
#[tokio::test]
async fn any_process_serves_the_console_with_live_status_from_the_others() {
    let pg = tokio::task::spawn_blocking(test_support::services::Postgres::start)
        .await
        .unwrap();
    let redis = tokio::task::spawn_blocking(test_support::services::Redis::start)
        .await
        .unwrap();
    let config = || relay::RelayConfig {
        database_url: Some(pg.url()),
        redis_url: Some(redis.url()),
        heartbeat_interval: Duration::from_millis(200),
        ..relay::RelayConfig::default()
    };
    let a = start_with(config()).await;
    let b = start_with(config()).await;
    let (cookie, _) = operator(&a).await;
    let mut live = browser()
        .get(url(&b, "console/events"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    let _agent = ScriptedAgent::connect(&a).await;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = live.chunk().await.unwrap() {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.contains("data-status=\"connected\"") && text.contains("another process") {
                return;
            }
        }
        panic!("the stream ended: {text}");
    })
    .await
    .unwrap_or_else(|_| panic!("process b never showed the agent connected to a: {text}"));
    // The page itself, from b, and a push log search, from b.
    let fleet = page_text(&b, &cookie, "console").await;
    assert!(fleet.contains("another process"), "{fleet}");
    let r = browser()
        .get(url(&b, "console/pushes?patient_id=X"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// A resend goes where a new message on its channel would go (here the lab-results
/// processor), and the answer the device was given stays recorded.
#[tokio::test]
async fn a_resend_goes_through_the_channels_processor_and_keeps_the_devices_answer() {
    let relay = start().await;
    let (cookie, csrf) = operator(&relay).await;
    let mut agent_doc = (*relay.registry().get("Agent", AGENT).await.unwrap().unwrap()).clone();
    agent_doc["channel"][0]["extension"] = serde_json::json!([{
        "url": relay::INBOUND_PROCESSOR_EXTENSION, "valueCode": "lab-results"}]);
    relay.registry().put(agent_doc).await.unwrap();
    let mut agent = ScriptedAgent::connect(&relay).await;
    let t = token(&relay, AGENT_CLIENT, AGENT_SECRET).await;
    let oru = "MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240301101500||ORU^R01|RES-1|P|2.5.1\r\
PID|1||MRN-7^^^HOSP^MR||Doe^Jane||19800101|F\r\
OBR|1|PL-42^EHR|F-9^LAB|2345-7^Glucose^LN|||20240301093000|||||||||||||||20240301101500|||F\r\
OBX|1|NM|2345-7^Glucose^LN||5.4|mmol/L|3.9-6.1|N|||F\r";
    agent
        .send(&AgentMessage::TransmitRequest(
            agent_protocol::TransmitRequest {
                access_token: Some(t),
                channel: Some("adt-in".into()),
                remote: "10.0.0.9:51234".into(),
                content_type: "x-application/hl7-v2+er7".into(),
                body: oru.into(),
                callback: Some("Agent/res-1".into()),
                ..Default::default()
            },
        ))
        .await;
    let AgentMessage::TransmitResponse(first) = agent.recv_kind("agent:transmit:response").await
    else {
        unreachable!()
    };
    assert!(
        first.body.contains("MSA|AA|RES-1|stored 1 report(s)"),
        "{}",
        first.body
    );
    let rows = relay.registry().inbound(None, None, 0, 10).await.unwrap();
    let id = rows[0].id;
    let resp = browser()
        .post(url(&relay, &format!("console/messages/{id}/resend")))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    let html = resp.text().await.unwrap();
    // The processor answered (the report is there already), not "no application configured".
    assert!(html.contains("already stored"), "{html}");
    assert!(!html.contains("no application configured"), "{html}");
    let rows = relay.registry().inbound(None, None, 0, 10).await.unwrap();
    assert_eq!(rows[0].response.as_deref(), Some(first.body.as_str()));
}

/// A session ends for every copy of its cookie when the operator logs out, when its
/// ClientApplication is deleted, and when its secret changes.
#[tokio::test]
async fn logout_deletion_and_a_new_secret_end_sessions_everywhere() {
    let relay = start().await;
    let fleet_status = |cookie: String| {
        let u = url(&relay, "console");
        async move {
            browser()
                .get(u)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // Logout: the copy kept from before is refused; a new login works.
    let (cookie, csrf) = operator(&relay).await;
    assert_eq!(fleet_status(cookie.clone()).await, 200);
    let r = browser()
        .post(url(&relay, "console/logout"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        fleet_status(cookie.clone()).await,
        303,
        "a copied cookie after logout"
    );
    let r = browser()
        .post(url(
            &relay,
            &format!("console/agents/{AGENT}/action/reload-config"),
        ))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "an action with a logged-out session");
    let (again, _) = operator(&relay).await;
    assert_eq!(fleet_status(again).await, 200);

    // Another operator, deleted: its session ends.
    relay
        .registry()
        .put(
            serde_json::json!({"resourceType": "ClientApplication", "id": "op2",
            "secret": "op2-secret-0123456789"}),
        )
        .await
        .unwrap();
    let r = login(&relay, "op2", "op2-secret-0123456789").await;
    let (cookie2, _) = set_cookie(&r, "outpost_console").unwrap();
    assert_eq!(fleet_status(cookie2.clone()).await, 200);
    relay
        .registry()
        .delete("ClientApplication", "op2")
        .await
        .unwrap();
    assert_eq!(fleet_status(cookie2).await, 303, "a deleted operator");

    // A third, whose secret is changed: its session ends.
    relay
        .registry()
        .put(
            serde_json::json!({"resourceType": "ClientApplication", "id": "op3",
            "secret": "op3-secret-0123456789"}),
        )
        .await
        .unwrap();
    let r = login(&relay, "op3", "op3-secret-0123456789").await;
    let (cookie3, _) = set_cookie(&r, "outpost_console").unwrap();
    assert_eq!(fleet_status(cookie3.clone()).await, 200);
    relay
        .registry()
        .put(
            serde_json::json!({"resourceType": "ClientApplication", "id": "op3",
            "secret": "op3-new-secret-0123456789"}),
        )
        .await
        .unwrap();
    assert_eq!(fleet_status(cookie3).await, 303, "a changed secret");
}

/// More Agents than a page holds: the page says how many matched, and a search finds any of
/// them, not only those of the first page.
#[tokio::test]
async fn the_fleet_searches_every_agent_beyond_the_first_page() {
    let relay = start().await;
    let entry: Vec<serde_json::Value> = (0..1005)
        .map(|i| {
            serde_json::json!({"resource": {"resourceType": "Agent", "id": format!("bulk-{i}"),
            "name": format!("Bulk {i}"), "status": "active"}})
        })
        .collect();
    relay
        .registry()
        .bootstrap(&serde_json::json!({"resourceType": "Bundle", "entry": entry}))
        .await
        .unwrap();
    let (cookie, _) = operator(&relay).await;
    let all = page_text(&relay, &cookie, "console").await;
    assert!(
        all.contains("1008 agents match; the first 1000 are shown"),
        "{}",
        &all[..all.len().min(2000)]
    );
    let one = page_text(&relay, &cookie, "console?q=bulk-1004").await;
    assert!(
        one.contains("id=\"agent-bulk-1004\""),
        "bulk-1004 not found"
    );
    assert!(one.contains("1 agents."), "one match");
}
