//! Order-push Subscriptions: which ServiceRequests go where, in which format.
//!
//! A Subscription takes part when its `criteria` is `ServiceRequest[?params]` and it carries
//!
//! ```json
//! {"url": "https://outpost.health/fhir/StructureDefinition/order-push", "extension": [
//!   {"url": "agent",  "valueReference": {"reference": "Agent/<id>"}},
//!   {"url": "device", "valueReference": {"reference": "Device/<id>"}},
//!   {"url": "format", "valueCode": "hl7-orm"}]}
//! ```
//!
//! (`format`: `hl7-orm`, `hl7-oml` or `astm`; optional `astmCodeSystem` (`valueUri`),
//! `receivingApplication`, `receivingFacility` (`valueString`)).

use lab_orders::Format;
use serde_json::Value;

use crate::fhir::{id_of, url_params};
use crate::store::{Registry, matches};

/// The Subscription extension that makes it an order push.
pub const ORDER_PUSH_EXTENSION: &str = "https://outpost.health/fhir/StructureDefinition/order-push";

/// Search parameters a Subscription's criteria may use.
const CRITERIA_PARAMS: &[&str] = &[
    "_id",
    "status",
    "intent",
    "priority",
    "code",
    "category",
    "subject",
    "patient",
    "identifier",
];

/// Where and how a Subscription pushes.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// `Subscription/<id>`.
    pub(crate) subscription: String,
    /// The Agent id.
    pub(crate) agent_id: String,
    /// `Device/<id>`.
    pub(crate) device: String,
    /// The message format.
    pub(crate) format: Format,
    /// The format's name.
    pub(crate) format_name: String,
    /// Criteria parameters.
    pub(crate) criteria: Vec<(String, String)>,
    /// ASTM: the instrument's code system.
    pub(crate) astm_code_system: Option<String>,
    /// MSH-5 / ASTM H.10.
    pub(crate) receiving_application: String,
    /// MSH-6.
    pub(crate) receiving_facility: String,
}

fn sub_extension<'a>(ext: &'a Value, url: &str) -> Option<&'a Value> {
    ext["extension"]
        .as_array()?
        .iter()
        .find(|e| e["url"].as_str() == Some(url))
}

/// Why an order-push Subscription cannot work (the writer's mistake).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubscriptionError {
    /// The criteria do not name ServiceRequest.
    #[error("an order-push Subscription needs criteria ServiceRequest[?params], not {0:?}")]
    Criteria(String),
    /// A criteria parameter the relay cannot evaluate.
    #[error("criteria parameter {param:?} is not supported (use {supported})")]
    UnsupportedParameter {
        /// The parameter.
        param: String,
        /// The ones supported, comma-separated.
        supported: String,
    },
    /// The agent or device reference is missing or of the wrong type.
    #[error("order-push extension: {name} must be a reference to a {ty}")]
    Reference {
        /// `agent` or `device`.
        name: &'static str,
        /// `Agent` or `Device`.
        ty: &'static str,
    },
    /// An unknown format.
    #[error(transparent)]
    Format(#[from] lab_orders::Error),
}

/// Reads a Subscription's order-push configuration. `Ok(None)`: not an order push.
pub(crate) fn target(sub: &Value) -> Result<Option<Target>, SubscriptionError> {
    let Some(ext) = sub["extension"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["url"].as_str() == Some(ORDER_PUSH_EXTENSION))
    else {
        return Ok(None);
    };
    let criteria = sub["criteria"].as_str().unwrap_or("");
    let (ty, query) = criteria.split_once('?').unwrap_or((criteria, ""));
    if ty != "ServiceRequest" {
        return Err(SubscriptionError::Criteria(criteria.to_owned()));
    }
    let params = url_params(query);
    if let Some((k, _)) = params
        .iter()
        .find(|(k, _)| !CRITERIA_PARAMS.contains(&k.as_str()))
    {
        return Err(SubscriptionError::UnsupportedParameter {
            param: k.clone(),
            supported: CRITERIA_PARAMS.join(", "),
        });
    }
    let reference = |name: &'static str, ty: &'static str| {
        sub_extension(ext, name)
            .and_then(|e| e["valueReference"]["reference"].as_str())
            .and_then(|r| r.strip_prefix(&format!("{ty}/")))
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .ok_or(SubscriptionError::Reference { name, ty })
    };
    let agent_id = reference("agent", "Agent")?;
    let device = format!("Device/{}", reference("device", "Device")?);
    let format_name = sub_extension(ext, "format")
        .and_then(|e| e["valueCode"].as_str())
        .unwrap_or("")
        .to_owned();
    let format: Format = format_name.parse()?;
    let string = |name: &str| {
        sub_extension(ext, name)
            .and_then(|e| e["valueString"].as_str().or(e["valueUri"].as_str()))
            .map(str::to_owned)
    };
    Ok(Some(Target {
        subscription: format!("Subscription/{}", id_of(sub)),
        agent_id,
        device,
        format,
        format_name,
        criteria: params,
        astm_code_system: string("astmCodeSystem"),
        receiving_application: string("receivingApplication").unwrap_or_default(),
        receiving_facility: string("receivingFacility").unwrap_or_default(),
    }))
}

fn token_matches(concept: &Value, value: &str) -> bool {
    let (system, code) = match value.split_once('|') {
        Some((s, c)) => (Some(s), c),
        None => (None, value),
    };
    concept["coding"].as_array().into_iter().flatten().any(|c| {
        c["code"].as_str() == Some(code)
            && system.is_none_or(|s| s.is_empty() || c["system"].as_str() == Some(s))
    })
}

/// Whether a ServiceRequest matches a criteria parameter (values may be comma-separated
/// alternatives).
pub(crate) fn criterion(sr: &Value, key: &str, value: &str) -> bool {
    value.split(',').any(|v| match key {
        "intent" | "priority" => sr[key].as_str() == Some(v),
        "code" => token_matches(&sr["code"], v),
        "category" => sr["category"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| token_matches(c, v)),
        _ => matches(sr, key, v),
    })
}

/// The active order-push Subscriptions that `sr` matches.
pub(crate) fn matching_targets(registry: &Registry, sr: &Value) -> Vec<Target> {
    registry
        .all_cached("Subscription")
        .into_iter()
        .filter(|s| s["status"].as_str() == Some("active"))
        .filter_map(|s| match target(&s) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(
                    subscription = id_of(&s),
                    error = %e,
                    "unusable order-push Subscription"
                );
                None
            }
        })
        .filter(|t| t.criteria.iter().all(|(k, v)| criterion(sr, k, v)))
        .collect()
}
