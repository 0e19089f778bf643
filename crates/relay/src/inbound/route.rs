//! Where a channel's messages go, as Medplum configures it: `Agent.channel[].targetReference`.
//!
//! Medplum runs the Bot the reference names. Outpost runs no Bots; it honours a target
//! `Endpoint` with `connectionType` `rest-hook` and an `http://` or `https://` address (the
//! message is POSTed there as to the `--inbound-webhook`). A channel without a target uses the
//! `--inbound-webhook`, or none. Any other target (a `Bot/...`, another connection type, an
//! Endpoint that does not exist) is a configuration Outpost cannot run: it is reported — in
//! the relay's log when an agent connects or is asked to reload its configuration, in
//! `$status`, and in the answer to each of the channel's messages — and never acknowledged as
//! if it had run.

use serde_json::Value;

use super::lab_results::Processor;
use crate::store::Registry;

/// Where one channel's messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// No `targetReference`: the `--inbound-webhook` when set, else the relay answers.
    Default,
    /// A rest-hook Endpoint: its address receives each message.
    RestHook {
        /// `Endpoint/<id>`.
        reference: String,
        /// Its `address`.
        url: String,
    },
    /// A target Outpost cannot run.
    Unsupported {
        /// The `targetReference`.
        reference: String,
        /// Why, and what to do instead.
        why: String,
    },
}

impl Target {
    /// The problem with an unsupported target, in words for a log line, `$status` and the
    /// device's answer; `None` for a target that runs.
    pub(crate) fn problem(&self, channel: &str) -> Option<String> {
        match self {
            Target::Unsupported { reference, why } => Some(format!(
                "channel {channel}: target {reference} cannot run on Outpost: {why}"
            )),
            _ => None,
        }
    }
}

/// The target of `channel` of `agent` (an Agent resource).
pub(crate) fn target(registry: &Registry, agent: &Value, channel: &str) -> Target {
    let Some(c) = agent["channel"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"].as_str() == Some(channel))
    else {
        return Target::Default;
    };
    let Some(reference) = c["targetReference"]["reference"].as_str() else {
        return Target::Default;
    };
    let unsupported = |why: String| Target::Unsupported {
        reference: reference.to_owned(),
        why,
    };
    let (ty, id) = reference.split_once('/').unwrap_or((reference, ""));
    match ty {
        "Endpoint" => {}
        "Bot" => {
            return unsupported(
                "Outpost does not run Medplum Bots; point targetReference at an Endpoint with connectionType rest-hook and an https:// address"
                    .into(),
            );
        }
        other => {
            return unsupported(format!(
                "a {other} target is not supported; use an Endpoint with connectionType rest-hook"
            ));
        }
    }
    let Some(endpoint) = registry.cached("Endpoint", id) else {
        return unsupported(format!("{reference} not found"));
    };
    let codes = connection_types(&endpoint);
    if !codes.iter().any(|c| c == "rest-hook") {
        return unsupported(format!(
            "Endpoint connectionType {} is not supported; rest-hook is",
            if codes.is_empty() {
                "(none)".to_owned()
            } else {
                codes.join(", ")
            }
        ));
    }
    let url = endpoint["address"].as_str().unwrap_or_default();
    let lower = url.to_ascii_lowercase();
    if !(lower.starts_with("https://") || lower.starts_with("http://")) {
        return unsupported(format!(
            "a rest-hook Endpoint needs an http:// or https:// address, not {url:?}"
        ));
    }
    Target::RestHook {
        reference: reference.to_owned(),
        url: url.to_owned(),
    }
}

/// The processor `channel` of `agent` names (see [`super::lab_results`]), or the problem.
pub(crate) fn processor(agent: &Value, channel: &str) -> Result<Option<Processor>, String> {
    agent["channel"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"].as_str() == Some(channel))
        .map_or(Ok(None), super::lab_results::processor)
}

/// The problems of every channel of `agent` whose target or processor Outpost cannot run.
/// A channel with a processor does not use its target.
pub(crate) fn problems(registry: &Registry, agent: &Value) -> Vec<String> {
    agent["channel"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let name = c["name"].as_str()?;
            match super::lab_results::processor(c) {
                Ok(Some(_)) => None,
                Ok(None) => target(registry, agent, name).problem(name),
                Err(problem) => Some(format!("channel {name}: {problem}")),
            }
        })
        .collect()
}

/// The codes of `Endpoint.connectionType`: a Coding in R4, a list of CodeableConcepts in R5;
/// both are read.
fn connection_types(endpoint: &Value) -> Vec<String> {
    let ct = &endpoint["connectionType"];
    let mut codes: Vec<String> = Vec::new();
    let mut coding = |c: &Value| {
        if let Some(code) = c["code"].as_str() {
            codes.push(code.to_owned());
        }
    };
    coding(ct);
    for concept in ct.as_array().into_iter().flatten().chain([ct]) {
        coding(concept);
        for c in concept["coding"].as_array().into_iter().flatten() {
            coding(c);
        }
    }
    codes.sort();
    codes.dedup();
    codes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn connection_type_as_coding_or_concepts() {
        let r4 = json!({"connectionType": {"system": "x", "code": "rest-hook"}});
        let r5 = json!({"connectionType": [{"coding": [{"code": "rest-hook"}]}]});
        let none = json!({});
        assert_eq!(connection_types(&r4), ["rest-hook"]);
        assert_eq!(connection_types(&r5), ["rest-hook"]);
        assert!(connection_types(&none).is_empty());
    }
}
