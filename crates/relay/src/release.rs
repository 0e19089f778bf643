//! Agent releases: which `Binary` holds the agent executable of a version, and its SHA-256.
//!
//! Medplum's agent downloads its installer from GitHub by version; an Outpost agent downloads
//! its executable from the relay it is connected to. The operator uploads the executable as a
//! `Binary` of content type [`AGENT_EXECUTABLE`] (the only Binaries an agent's credentials may
//! read) and registers the release as a `DocumentReference`:
//!
//! ```json
//! {"resourceType": "DocumentReference", "status": "current",
//!  "identifier": [{"system": "https://outpost.health/fhir/agent-release", "value": "0.2.0"}],
//!  "content": [{"attachment": {
//!    "url": "Binary/<id>", "contentType": "application/vnd.outpost.agent",
//!    "extension": [{"url": "https://outpost.health/fhir/StructureDefinition/sha256",
//!                   "valueString": "<64 hex digits>"}]}}]}
//! ```
//!
//! `$upgrade?version=0.2.0` (what `medplum agent upgrade --agentVersion 0.2.0` sends) then
//! names that Binary and SHA-256 to the agent; without `version`, the highest version
//! registered. `$upgrade?version=V&binary=ID&sha256=HEX` names them directly.

use std::cmp::Ordering;

use serde_json::Value;

use crate::fhir::valid_id;
use crate::store::{Registry, StoreError};

/// `DocumentReference.identifier.system` of an agent release; its value is the version.
pub const RELEASE_SYSTEM: &str = "https://outpost.health/fhir/agent-release";

/// The extension on the release's attachment that carries the executable's SHA-256 (hex).
pub const SHA256_EXTENSION: &str = "https://outpost.health/fhir/StructureDefinition/sha256";

/// The content type of a `Binary` holding an agent executable.
pub const AGENT_EXECUTABLE: &str = "application/vnd.outpost.agent";

/// One release: a version, the Binary holding it and its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Release {
    pub(crate) version: String,
    pub(crate) binary: String,
    pub(crate) sha256: String,
}

/// Why no release could be named (the operator's or the caller's to fix: a 400).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReleaseError {
    /// The registry could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Nothing registered for that version (or at all).
    #[error(
        "no agent release registered for version {0}: upload the executable as a Binary ({AGENT_EXECUTABLE}) and register it as a DocumentReference with identifier {RELEASE_SYSTEM}|<version> (README, \"Upgrading agents\")"
    )]
    NotRegistered(String),
    /// A parameter of the request is wrong.
    #[error("{0}")]
    Parameter(&'static str),
}

/// Whether `content_type` (parameters aside) is [`AGENT_EXECUTABLE`].
pub(crate) fn is_agent_executable(content_type: &str) -> bool {
    content_type.split(';').next().unwrap_or_default().trim() == AGENT_EXECUTABLE
}

fn valid_sha(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The release a `$upgrade` names: `binary` + `sha256` (+ `version`) given directly, else the
/// registered release of `version`, else the highest registered.
pub(crate) async fn resolve(
    registry: &Registry,
    version: Option<&str>,
    binary: Option<&str>,
    sha256: Option<&str>,
) -> Result<Release, ReleaseError> {
    if let Some(binary) = binary {
        let binary = binary.strip_prefix("Binary/").unwrap_or(binary);
        if !valid_id(binary) {
            return Err(ReleaseError::Parameter("'binary' must be a Binary's id"));
        }
        let Some(version) = version.filter(|v| !v.is_empty()) else {
            return Err(ReleaseError::Parameter(
                "'version' is required with 'binary': the agent checks that it is what runs after the upgrade",
            ));
        };
        return match sha256 {
            Some(s) if valid_sha(s) => Ok(Release {
                version: version.to_owned(),
                binary: binary.to_owned(),
                sha256: s.to_ascii_lowercase(),
            }),
            _ => Err(ReleaseError::Parameter(
                "'sha256' (64 hex digits) is required with 'binary'",
            )),
        };
    }
    let docs = registry
        .search("DocumentReference", &[], usize::MAX)
        .await?;
    let mut releases: Vec<Release> = docs.iter().filter_map(|d| release_of(d)).collect();
    match version.filter(|v| !v.is_empty()) {
        Some(v) => releases
            .into_iter()
            .find(|r| r.version == v)
            .ok_or_else(|| ReleaseError::NotRegistered(v.to_owned())),
        None => {
            releases.sort_by(|a, b| compare_versions(&a.version, &b.version));
            releases
                .pop()
                .ok_or_else(|| ReleaseError::NotRegistered("latest".to_owned()))
        }
    }
}

/// One current release per version: `doc` (about to be written) may not register a version
/// that another current `DocumentReference` registers, or which one `$upgrade` installs would
/// depend on the order of a search.
///
/// # Errors
///
/// The sentence to answer with (400), or the store's error.
pub(crate) async fn check_unique(registry: &Registry, doc: &Value) -> Result<(), String> {
    let Some(mine) = release_of(doc) else {
        return Ok(());
    };
    let id = doc["id"].as_str().unwrap_or_default();
    let docs = registry
        .search("DocumentReference", &[], usize::MAX)
        .await
        .map_err(|e| e.to_string())?;
    match docs.iter().find(|d| {
        d["id"].as_str() != Some(id) && release_of(d).is_some_and(|r| r.version == mine.version)
    }) {
        Some(other) => Err(format!(
            "release {} is already registered by DocumentReference/{}: one current release per version (set that one's status to superseded first)",
            mine.version,
            other["id"].as_str().unwrap_or_default()
        )),
        None => Ok(()),
    }
}

/// The release a `DocumentReference` registers, if it is a current, complete one.
fn release_of(doc: &Value) -> Option<Release> {
    if doc["status"].as_str().is_some_and(|s| s != "current") {
        return None;
    }
    let version = doc["identifier"]
        .as_array()?
        .iter()
        .find(|i| i["system"] == RELEASE_SYSTEM)?["value"]
        .as_str()?
        .to_owned();
    let attachment = &doc["content"][0]["attachment"];
    let url = attachment["url"].as_str()?;
    let binary = url.rsplit_once("Binary/").map(|(_, id)| id)?;
    let sha256 = attachment["extension"]
        .as_array()?
        .iter()
        .find(|e| e["url"] == SHA256_EXTENSION)?["valueString"]
        .as_str()?;
    (valid_id(binary) && valid_sha(sha256)).then(|| Release {
        version,
        binary: binary.to_owned(),
        sha256: sha256.to_ascii_lowercase(),
    })
}

/// Orders versions by their dot-separated parts, numerically where both parts are numbers
/// (`0.10.0` > `0.9.1`).
fn compare_versions(a: &str, b: &str) -> Ordering {
    let mut x = a.trim_start_matches('v').split(['.', '-', '+']);
    let mut y = b.trim_start_matches('v').split(['.', '-', '+']);
    loop {
        match (x.next(), y.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(p), Some(q)) => {
                let o = match (p.parse::<u64>(), q.parse::<u64>()) {
                    (Ok(m), Ok(n)) => m.cmp(&n),
                    _ => p.cmp(q),
                };
                if o != Ordering::Equal {
                    return o;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(version: &str, binary: &str, sha: &str) -> Value {
        json!({"resourceType": "DocumentReference", "status": "current",
            "identifier": [{"system": RELEASE_SYSTEM, "value": version}],
            "content": [{"attachment": {"url": format!("Binary/{binary}"),
                "extension": [{"url": SHA256_EXTENSION, "valueString": sha}]}}]})
    }

    #[test]
    fn releases_from_documents() {
        let sha = "ab".repeat(32);
        assert_eq!(
            release_of(&doc("0.2.0", "b1", &sha)),
            Some(Release {
                version: "0.2.0".into(),
                binary: "b1".into(),
                sha256: sha.clone()
            })
        );
        assert_eq!(release_of(&doc("0.2.0", "b1", "abc")), None);
        assert_eq!(release_of(&doc("0.2.0", "../x", &sha)), None);
        let mut superseded = doc("0.2.0", "b1", &sha);
        superseded["status"] = json!("superseded");
        assert_eq!(release_of(&superseded), None);
    }

    #[test]
    fn versions_order_numerically() {
        assert_eq!(compare_versions("0.10.0", "0.9.1"), Ordering::Greater);
        assert_eq!(compare_versions("v1.0.0", "1.0.0"), Ordering::Equal);
        assert_eq!(compare_versions("1.0", "1.0.1"), Ordering::Less);
    }

    #[test]
    fn executable_content_type() {
        assert!(is_agent_executable("application/vnd.outpost.agent"));
        assert!(is_agent_executable(
            "application/vnd.outpost.agent; os=linux"
        ));
        assert!(!is_agent_executable("application/dicom"));
    }
}
