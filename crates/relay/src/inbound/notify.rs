//! Rest-hook `Subscription`s on results: an active Subscription with `channel.type`
//! `rest-hook` and `criteria` `DiagnosticReport[?params]` or `Observation[?params]` is sent the
//! transaction Bundle of each result message that stored a resource it matches: `POST` to
//! `channel.endpoint`, `Content-Type: application/fhir+json`, with each `channel.header`
//! (`Name: value`). A FHIR server (Medplum, HAPI) at the endpoint's base processes the Bundle
//! as it stands: conditional creates, `basedOn` a conditional reference to the order.
//!
//! Delivery does not hold up the device's answer: each notification is sent by a task of its
//! own, retried on a temporary failure (unreachable, 5xx, 429) with exponential backoff and
//! jitter, [`ATTEMPTS`] times at most; the outcome is logged.

use std::time::Duration;

use serde_json::Value;

use crate::fhir::{id_of, url_params};
use crate::store::Registry;

/// Attempts per notification.
const ATTEMPTS: u32 = 4;
/// The wait after the first failure, doubled after each.
const BACKOFF: Duration = Duration::from_millis(500);
/// Time allowed for each POST.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Where one Subscription is notified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hook {
    /// `Subscription/<id>`.
    pub(crate) subscription: String,
    /// `channel.endpoint`.
    pub(crate) endpoint: String,
    /// `channel.header`, split at the first `:`.
    pub(crate) headers: Vec<(String, String)>,
}

/// Why a results Subscription (criteria `DiagnosticReport` / `Observation`, channel type
/// `rest-hook`) cannot be notified: no `http://` or `https://` endpoint, or a header line that
/// is not `Name: value`. `Ok` for every other Subscription.
pub(crate) fn check_subscription(sub: &Value) -> Result<(), String> {
    let criteria = sub["criteria"].as_str().unwrap_or("");
    let ty = criteria.split('?').next().unwrap_or("");
    if !matches!(ty, "DiagnosticReport" | "Observation")
        || sub["channel"]["type"].as_str() != Some("rest-hook")
    {
        return Ok(());
    }
    let endpoint = sub["channel"]["endpoint"].as_str().unwrap_or("");
    let lower = endpoint.to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return Err(format!(
            "a rest-hook Subscription on {ty} needs channel.endpoint http:// or https://, not {endpoint:?}"
        ));
    }
    for h in sub["channel"]["header"].as_array().into_iter().flatten() {
        if !h.as_str().is_some_and(|h| h.contains(':')) {
            return Err(format!("channel.header {h} is not \"Name: value\""));
        }
    }
    Ok(())
}

/// The results Subscriptions that one of `resources` (the reports and results of a message
/// that changed something) matches.
pub(crate) fn hooks(registry: &Registry, resources: &[std::sync::Arc<Value>]) -> Vec<Hook> {
    registry
        .all_cached("Subscription")
        .into_iter()
        .filter(|s| s["status"].as_str() == Some("active"))
        .filter(|s| s["channel"]["type"].as_str() == Some("rest-hook"))
        .filter_map(|s| {
            let criteria = s["criteria"].as_str()?;
            let (ty, query) = criteria.split_once('?').unwrap_or((criteria, ""));
            if !matches!(ty, "DiagnosticReport" | "Observation") {
                return None;
            }
            let params = url_params(query);
            let hit = resources.iter().any(|r| {
                r["resourceType"].as_str() == Some(ty)
                    && params
                        .iter()
                        .all(|(k, v)| crate::orders::criterion(r, k, v))
            });
            let endpoint = s["channel"]["endpoint"].as_str()?;
            let lower = endpoint.to_ascii_lowercase();
            if !(lower.starts_with("http://") || lower.starts_with("https://")) {
                tracing::warn!(
                    subscription = id_of(&s),
                    endpoint,
                    "results Subscription without an http(s) endpoint"
                );
                return None;
            }
            let headers = s["channel"]["header"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|h| {
                    let (name, value) = h.as_str()?.split_once(':')?;
                    Some((name.trim().to_owned(), value.trim().to_owned()))
                })
                .collect();
            hit.then(|| Hook {
                subscription: format!("Subscription/{}", id_of(&s)),
                endpoint: endpoint.to_owned(),
                headers,
            })
        })
        .collect()
}

/// Sends `bundle` to each hook, each from a task of its own.
pub(crate) fn send(http: &reqwest::Client, hooks: Vec<Hook>, bundle: &Value) {
    let body = bundle.to_string();
    for hook in hooks {
        let (http, body) = (http.clone(), body.clone());
        tokio::spawn(async move {
            for attempt in 1..=ATTEMPTS {
                let mut req = http
                    .post(&hook.endpoint)
                    .timeout(TIMEOUT)
                    .header("Content-Type", "application/fhir+json");
                for (name, value) in &hook.headers {
                    req = req.header(name, value);
                }
                let outcome = match req.body(body.clone()).send().await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err((r.status().as_u16(), format!("HTTP {}", r.status()))),
                    Err(e) => Err((0, crate::store::chain(&e))),
                };
                match outcome {
                    Ok(()) => {
                        tracing::info!(
                            subscription = hook.subscription,
                            attempt,
                            "results notification delivered"
                        );
                        return;
                    }
                    Err((status, text)) => {
                        let temporary = status == 0 || status >= 500 || status == 429;
                        if !temporary || attempt == ATTEMPTS {
                            tracing::warn!(
                                subscription = hook.subscription,
                                attempt,
                                error = text,
                                "results notification not delivered"
                            );
                            return;
                        }
                        let wait = BACKOFF * 2u32.pow(attempt - 1);
                        // Up to a quarter more, so that many hooks do not retry in step.
                        let jitter = (uuid::Uuid::new_v4().as_u128() % 1000) as u32;
                        tokio::time::sleep(wait + wait / 4 * jitter / 1000).await;
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    #[tokio::test]
    async fn matching_subscriptions() {
        let registry = Registry::open_sqlite(None).await.unwrap();
        for (id, criteria, endpoint) in [
            ("reports", "DiagnosticReport", "http://h/fhir"),
            ("finals", "DiagnosticReport?status=final", "http://h/final"),
            (
                "prelims",
                "DiagnosticReport?status=preliminary",
                "http://h/p",
            ),
            ("obs", "Observation", "mllp://h:1"),
            ("orders", "ServiceRequest", "http://h/sr"),
        ] {
            registry
                .put(
                    json!({"resourceType": "Subscription", "id": id, "status": "active",
                    "criteria": criteria, "channel": {"type": "rest-hook", "endpoint": endpoint,
                    "header": ["Authorization: Bearer x"]}}),
                )
                .await
                .unwrap();
        }
        let created = [Arc::new(
            json!({"resourceType": "DiagnosticReport", "id": "r", "status": "final"}),
        )];
        let found: Vec<String> = hooks(&registry, &created)
            .into_iter()
            .map(|h| h.subscription)
            .collect();
        assert_eq!(found, ["Subscription/finals", "Subscription/reports"]);
        let h = &hooks(&registry, &created)[0];
        let sub = |endpoint: &str, header: Value| {
            json!({"resourceType": "Subscription", "criteria": "Observation?code=2345-7",
                "channel": {"type": "rest-hook", "endpoint": endpoint, "header": header}})
        };
        assert_eq!(
            check_subscription(&sub("https://ehr/fhir", json!(["A: b"]))),
            Ok(())
        );
        assert!(
            check_subscription(&sub("mllp://h:1", json!([])))
                .unwrap_err()
                .contains("http://")
        );
        assert!(check_subscription(&sub("http://h", json!(["no colon"]))).is_err());
        assert_eq!(
            h.headers,
            [("Authorization".to_owned(), "Bearer x".to_owned())]
        );
    }
}
