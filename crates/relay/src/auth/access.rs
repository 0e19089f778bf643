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
        "Endpoint" => names_endpoint(agents, id, agent),
        _ => false,
    }
}

/// Extension on a caller's ClientApplication limiting it to one tenant's resources (repeatable,
/// `valueReference: {"reference": "Agent/<id>"}` or `"Device/<id>"`). A caller with none is the
/// operator's and sees everything; a caller with any sees only those Agents and Devices, and
/// the Endpoints its Agents' channels name.
pub const TENANT_SCOPE_EXTENSION: &str =
    "https://outpost.health/fhir/StructureDefinition/tenant-scope";

/// The references (`Agent/<id>`, `Device/<id>`) a tenant caller is limited to; empty for an
/// unrestricted caller.
pub(crate) fn tenant_scope(app: Option<&Value>) -> Vec<String> {
    let Some(app) = app else {
        return Vec::new();
    };
    app["extension"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["url"] == TENANT_SCOPE_EXTENSION)
        .filter_map(|e| e["valueReference"]["reference"].as_str())
        .map(str::to_owned)
        .collect()
}

/// Whether a tenant limited to `scope` sees resource `ty/id`: an Agent or Device it lists, or an
/// Endpoint one of its Agents' channels names (`agent` looks an Agent up). Nothing else.
pub(crate) fn tenant_sees(
    scope: &[String],
    ty: &str,
    id: &str,
    agent: impl Fn(&str) -> Option<std::sync::Arc<Value>>,
) -> bool {
    match ty {
        "Agent" | "Device" => {
            let wanted = format!("{ty}/{id}");
            scope.contains(&wanted)
        }
        "Endpoint" => {
            let agents: Vec<String> = scope
                .iter()
                .filter_map(|r| r.strip_prefix("Agent/"))
                .map(str::to_owned)
                .collect();
            names_endpoint(&agents, id, agent)
        }
        _ => false,
    }
}

/// Whether one of `agents` has a channel on `Endpoint/<id>`.
fn names_endpoint(
    agents: &[String],
    id: &str,
    agent: impl Fn(&str) -> Option<std::sync::Arc<Value>>,
) -> bool {
    let wanted = format!("Endpoint/{id}");
    agents.iter().filter_map(|a| agent(a)).any(|agent| {
        agent["channel"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["endpoint"]["reference"].as_str() == Some(&wanted))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_tenant_sees_its_agents_devices_and_their_endpoints_only() {
        let app = json!({"extension": [
            {"url": TENANT_SCOPE_EXTENSION, "valueReference": {"reference": "Agent/a1"}},
            {"url": TENANT_SCOPE_EXTENSION, "valueReference": {"reference": "Device/d1"}},
            {"url": ALLOWED_AGENT_EXTENSION, "valueReference": {"reference": "Agent/a9"}},
        ]});
        let scope = tenant_scope(Some(&app));
        assert_eq!(scope, ["Agent/a1", "Device/d1"]);
        let a1 =
            std::sync::Arc::new(json!({"channel": [{"endpoint": {"reference": "Endpoint/e1"}}]}));
        let lookup = |id: &str| (id == "a1").then(|| a1.clone());
        assert!(tenant_sees(&scope, "Agent", "a1", lookup));
        assert!(!tenant_sees(&scope, "Agent", "a9", lookup));
        assert!(tenant_sees(&scope, "Device", "d1", lookup));
        assert!(!tenant_sees(&scope, "Device", "a1", lookup));
        assert!(tenant_sees(&scope, "Endpoint", "e1", lookup));
        assert!(!tenant_sees(&scope, "Endpoint", "e2", lookup));
        assert!(!tenant_sees(&scope, "ClientApplication", "a1", lookup));
        assert!(tenant_scope(None).is_empty());
    }
}
