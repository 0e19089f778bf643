//! The agent binding: a ClientApplication lists the Agents it may connect as, and such
//! credentials only read those Agents and their Endpoints.

use serde_json::Value;

/// Extension on ClientApplication naming an Agent this client may connect as (repeatable,
/// `valueReference: {"reference": "Agent/<id>"}`).
pub const ALLOWED_AGENT_EXTENSION: &str =
    "https://outpost.health/fhir/StructureDefinition/allowed-agent";

/// Whether the ClientApplication `app` may connect as agent `agent_id`: it must list the agent
/// with the [`ALLOWED_AGENT_EXTENSION`].
pub(crate) fn may_act_as(app: Option<&Value>, agent_id: &str) -> bool {
    let Some(app) = app else {
        return false;
    };
    let wanted = format!("Agent/{agent_id}");
    app["extension"].as_array().into_iter().flatten().any(|e| {
        e["url"] == ALLOWED_AGENT_EXTENSION
            && e["valueReference"]["reference"].as_str() == Some(&wanted)
    })
}

/// The Agents a ClientApplication is bound to (its allowed-agent extensions); empty for a
/// caller.
pub(crate) fn bound_agents(app: Option<&Value>) -> Vec<String> {
    let Some(app) = app else {
        return Vec::new();
    };
    app["extension"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["url"] == ALLOWED_AGENT_EXTENSION)
        .filter_map(|e| {
            e["valueReference"]["reference"]
                .as_str()?
                .strip_prefix("Agent/")
        })
        .map(str::to_owned)
        .collect()
}

/// Whether credentials bound to `agents` may make this REST request: an agent only reads its
/// own Agent resources and the Endpoints their channels name (`agent` looks an Agent up).
/// Callers (bound to no Agent) may make any request.
pub(crate) fn agent_may(
    agents: &[String],
    read: bool,
    ty: &str,
    id: Option<&str>,
    agent: impl Fn(&str) -> Option<std::sync::Arc<Value>>,
) -> bool {
    if agents.is_empty() {
        return true;
    }
    let Some(id) = id.filter(|_| read) else {
        return false;
    };
    match ty {
        "Agent" => agents.iter().any(|a| a == id),
        "Endpoint" => {
            let wanted = format!("Endpoint/{id}");
            agents.iter().filter_map(|a| agent(a)).any(|agent| {
                agent["channel"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["endpoint"]["reference"].as_str() == Some(&wanted))
            })
        }
        _ => false,
    }
}
