//! The console tests' browser: a client that does not follow redirects, cookies and CSRF
//! tokens read from pages, an operator's login; and a scripted agent's answer to a push.

use agent_protocol::AgentMessage;
use test_support::relay::*;

pub(crate) fn url(relay: &relay::Relay, path: &str) -> String {
    format!("{}{path}", relay.base_url())
}

/// A client that does not follow redirects (the tests look at them).
pub(crate) fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// `name=value` of the `Set-Cookie` header setting `name`, and the whole header.
pub(crate) fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<(String, String)> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| (v.split(';').next().unwrap().to_owned(), v.to_owned()))
}

/// The value of `<input name="csrf" value="...">` or `"X-CSRF-Token":"..."` in a page.
pub(crate) fn csrf_in(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .map(|i| i + "name=\"csrf\" value=\"".len())
        .or_else(|| {
            html.find("X-CSRF-Token&quot;:&quot;")
                .map(|i| i + "X-CSRF-Token&quot;:&quot;".len())
        })
        .unwrap_or_else(|| panic!("no CSRF token in {html}"));
    html[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

/// Logs in as `id`; the login response.
pub(crate) async fn login(relay: &relay::Relay, id: &str, secret: &str) -> reqwest::Response {
    let b = browser();
    let page = b.get(url(relay, "console/login")).send().await.unwrap();
    let (login_cookie, _) = set_cookie(&page, "outpost_console_login").unwrap();
    let csrf = csrf_in(&page.text().await.unwrap());
    b.post(url(relay, "console/login"))
        .header("cookie", login_cookie)
        .form(&[
            ("client_id", id),
            ("client_secret", secret),
            ("csrf", &csrf),
        ])
        .send()
        .await
        .unwrap()
}

/// A logged-in operator: the session cookie and the page CSRF token.
pub(crate) async fn operator(relay: &relay::Relay) -> (String, String) {
    let resp = login(relay, CALLER, CALLER_SECRET).await;
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/console");
    let (cookie, header) = set_cookie(&resp, "outpost_console").unwrap();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(header.contains(flag), "{header}");
    }
    assert!(!header.contains("Secure"), "plain HTTP: {header}");
    let page = browser()
        .get(url(relay, "console"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csrf = csrf_in(&page.text().await.unwrap());
    (cookie, csrf)
}

/// The body of page `path` of `relay`, asked with the session `cookie`.
pub(crate) async fn page_text(relay: &relay::Relay, cookie: &str, path: &str) -> String {
    browser()
        .get(url(relay, path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Answers the next push `agent` gets with an AA for `control_id`; the pushed body.
pub(crate) async fn answer_one(agent: &mut ScriptedAgent, control_id: &str) -> String {
    let AgentMessage::TransmitRequest(req) = agent.recv_kind("agent:transmit:request").await else {
        unreachable!()
    };
    agent
        .send(&AgentMessage::TransmitResponse(
            agent_protocol::TransmitResponse {
                channel: None,
                remote: req.remote.clone(),
                callback: req.callback.clone(),
                content_type: "x-application/hl7-v2+er7".into(),
                status_code: Some(200),
                status: None,
                body: format!(
                    "MSH|^~\\&|LAB|H|EHR|H|20240101||ACK|A1|P|2.5\rMSA|AA|{control_id}\r"
                ),
                device_us: Some(7),
            },
        ))
        .await;
    req.body
}
