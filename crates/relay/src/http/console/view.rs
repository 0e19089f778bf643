//! The console's HTML: the page frame, the login form, error pages and the pieces the pages
//! share. Everything is built with `maud`, which escapes every value it is given.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

/// A page: the frame (title, navigation, scripts) around `body`. `csrf` is the session's
/// token, sent by htmx with every request it makes (`hx-headers`); `None` on pages shown
/// before login.
pub(super) fn page(title: &str, csrf: Option<&str>, active: &str, body: &Markup) -> Html<String> {
    let headers = csrf.map(|t| serde_json::json!({"X-CSRF-Token": t}).to_string());
    let nav = [
        ("Fleet", "/console"),
        ("Messages", "/console/messages"),
        ("Charts", "/console/charts"),
    ];
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (title) " · Outpost console" }
                    link rel="stylesheet" href="/console/assets/console.css";
                    script src="/console/assets/htmx.min.js" {}
                    script src="/console/assets/htmx-sse.min.js" {}
                }
                body hx-headers=[headers] {
                    header.top {
                        a.brand href="/console" { "Outpost" }
                        @if csrf.is_some() {
                            nav {
                                @for (label, href) in nav {
                                    a href=(href) class=[(label == active).then_some("active")] { (label) }
                                }
                            }
                            button.link #logout hx-post="/console/logout" { "Log out" }
                        }
                    }
                    main { (body) }
                }
            }
        }
        .into_string(),
    )
}

/// The login form; `error` picks one of a fixed set of messages.
pub(super) fn login(csrf: &str, error: Option<&str>) -> Html<String> {
    let message = match error {
        Some("credentials") => Some("Those credentials were not accepted."),
        Some("throttled") => Some("Too many failed logins: wait a minute and try again."),
        Some("not-operator") => {
            Some("Those are an agent's or a tenant's credentials: the console takes an operator's.")
        }
        _ => None,
    };
    page(
        "Log in",
        None,
        "",
        &html! {
            form.login method="post" action="/console/login" {
                h1 { "Log in" }
                p.hint { "With an operator ClientApplication's id and secret." }
                @if let Some(m) = message { p.error #login-error { (m) } }
                input type="hidden" name="csrf" value=(csrf);
                label { "Client id" input #client_id name="client_id" autocomplete="username" required; }
                label { "Client secret" input #client_secret name="client_secret" type="password" autocomplete="current-password" required; }
                button #login type="submit" { "Log in" }
            }
        },
    )
}

/// An error page with `status`: what went wrong, and that nothing changed.
pub(super) fn error_page(status: StatusCode, text: &str) -> Response {
    let body = page(
        status.canonical_reason().unwrap_or("Error"),
        None,
        "",
        &html! {
            section.error-page {
                h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
                p #error-text { (text) }
                p { a href="/console" { "Back to the console" } }
            }
        },
    );
    (status, body).into_response()
}

/// A status badge: `connected` green, `disconnected` red, anything else grey.
pub(super) fn status_badge(status: &str) -> Markup {
    let class = match status {
        "connected" => "badge ok",
        "disconnected" => "badge bad",
        _ => "badge none",
    };
    let label = match status {
        "unknown" => "never seen",
        s => s,
    };
    html! { span class=(class) data-status=(status) { (label) } }
}

/// Pretty-printed JSON in a `<pre>`.
pub(super) fn json_block(v: &serde_json::Value) -> Markup {
    html! { pre.json { (serde_json::to_string_pretty(v).unwrap_or_default()) } }
}
