//! What the relay configures for this agent: `Agent.status`, `Agent.setting[]`
//! ([`AgentSettings`]) and `Agent.channel[]` with each channel's `Endpoint.address`. Read from
//! the relay at every connection and on `agent:reloadconfig:request`; the last one read is kept
//! in the data directory (`last-config.json`) so that an agent started while the relay is unreachable opens the same
//! channels and goes on queueing device messages.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::url::DeviceUrl;
use crate::{ChannelProblem, ConfigError, Error, RelayClient};

/// The file, in the data directory.
const FILE: &str = "last-config.json";

/// One inbound channel: its name and where it listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ChannelSpec {
    /// `Agent.channel.name`.
    pub(crate) name: String,
    /// `Endpoint.address`.
    pub(crate) address: String,
}

/// `Agent.setting[]` names Medplum's agent reads that do not apply to Outpost, and why.
const NOT_APPLICABLE: &[(&str, &str)] = &[
    ("durableQueue", "Outpost's inbound queue is always durable"),
    (
        "queueDbPath",
        "Outpost's queue is in the data directory (dataDir)",
    ),
    (
        "queueRetentionDays",
        "Outpost deletes a message once the relay has it",
    ),
    (
        "queueRetentionMaxMb",
        "Outpost deletes a message once the relay has it",
    ),
    (
        "queueErroredRetentionDays",
        "Outpost keeps refused messages as dead letters until retried",
    ),
    (
        "queueSweepIntervalSecs",
        "Outpost deletes a message once the relay has it",
    ),
];

/// What the agent reads of `Agent.setting[]` (`name` and one `value[x]`), with the names and
/// value types of Medplum's agent (packages/agent/src/app.ts, `reloadConfig`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct AgentSettings {
    /// `keepAlive` (`valueBoolean`): `true` keeps outbound MLLP connections open per
    /// destination; `false` opens one per message. Absent: Outpost's pool (a connection is
    /// reused when the next message comes within 10 s).
    pub(crate) keep_alive: Option<bool>,
    /// `maxClientsPerRemote` (`valueInteger`, at least 1): most outbound connections open to
    /// one `host:port` at once. Absent: 1 with `keepAlive=true`, else 5 (Outpost's pool).
    pub(crate) max_clients_per_remote: Option<u32>,
    /// `logStatsFreqSecs` (`valueInteger`): every N seconds, a stats line per inbound channel.
    /// Absent or not positive: none.
    pub(crate) log_stats_freq_secs: Option<u64>,
    /// Settings not applied: `(name, why)`.
    pub(crate) ignored: Vec<(String, String)>,
}

impl AgentSettings {
    /// Reads `Agent.setting[]`. A setting with the wrong `value[x]` is ignored, saying so.
    pub(crate) fn read(settings: &serde_json::Value) -> AgentSettings {
        let mut s = AgentSettings::default();
        for setting in settings.as_array().into_iter().flatten() {
            let name = setting["name"].as_str().unwrap_or_default();
            let mut wrong = |want: &str| {
                s.ignored
                    .push((name.to_owned(), format!("{name} needs a {want}")));
            };
            match name {
                "keepAlive" => match setting["valueBoolean"].as_bool() {
                    Some(v) => s.keep_alive = Some(v),
                    None => wrong("valueBoolean"),
                },
                "maxClientsPerRemote" => {
                    match setting["valueInteger"]
                        .as_u64()
                        .and_then(|v| u32::try_from(v).ok())
                    {
                        Some(v) if v > 0 => s.max_clients_per_remote = Some(v),
                        _ => wrong("positive valueInteger"),
                    }
                }
                "logStatsFreqSecs" => match setting["valueInteger"].as_i64() {
                    Some(v) => s.log_stats_freq_secs = u64::try_from(v).ok().filter(|v| *v > 0),
                    None => wrong("valueInteger"),
                },
                other => {
                    let why = NOT_APPLICABLE
                        .iter()
                        .find(|(n, _)| *n == other)
                        .map_or("not a setting Outpost knows", |(_, why)| why);
                    s.ignored.push((other.to_owned(), why.to_owned()));
                }
            }
        }
        s
    }
}

/// The relay's configuration of this agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RemoteConfig {
    /// `Agent.status` is `off`: pushes are refused and no channel runs.
    pub(crate) off: bool,
    /// `Agent.status` is neither absent nor `active` (`off`, `error`): pushes are refused, as
    /// Medplum's agent refuses transmits unless its status is `active`; the channels run unless
    /// it is `off`.
    #[serde(default)]
    pub(crate) transmits_stopped: bool,
    /// `Agent.setting[]`.
    #[serde(default)]
    pub(crate) settings: AgentSettings,
    /// The channels whose Endpoint is not `off`.
    pub(crate) channels: Vec<ChannelSpec>,
}

impl RemoteConfig {
    /// Reads the Agent and its Endpoints from the relay.
    ///
    /// # Errors
    ///
    /// The relay's errors; [`ConfigError`] (every problem found, not just the first) when a
    /// channel has no usable address or two share a port. Nothing is applied then.
    pub(crate) async fn read(client: &RelayClient, agent_id: &str) -> Result<RemoteConfig, Error> {
        let (config, mut problems) = RemoteConfig::fetch(client, agent_id).await?;
        match problems.len() {
            0 => Ok(config),
            1 => Err(problems.remove(0).into()),
            _ => Err(ConfigError::Several(problems).into()),
        }
    }

    /// Reads the Agent and its Endpoints: the channels that have an address, and every
    /// problem found.
    async fn fetch(
        client: &RelayClient,
        agent_id: &str,
    ) -> Result<(RemoteConfig, Vec<ConfigError>), Error> {
        let agent = client.read("Agent", agent_id).await?;
        let off = agent["status"].as_str() == Some("off");
        let transmits_stopped = agent["status"].as_str().is_some_and(|s| s != "active");
        let settings = AgentSettings::read(&agent["setting"]);
        let mut channels = Vec::new();
        let mut problems = Vec::new();
        if !off {
            for ch in agent["channel"].as_array().into_iter().flatten() {
                let name = ch["name"].as_str().unwrap_or_default().to_owned();
                let problem = |problem| ConfigError::Channel {
                    channel: name.clone(),
                    problem,
                };
                let Some(reference) = ch["endpoint"]["reference"].as_str() else {
                    problems.push(problem(ChannelProblem::NoEndpoint));
                    continue;
                };
                let id = reference.strip_prefix("Endpoint/").unwrap_or(reference);
                let endpoint = match client.read("Endpoint", id).await {
                    Ok(e) => e,
                    // The relay says no (it does not exist, may not be read): this channel's
                    // problem, not the agent's. A relay failing (5xx) is the relay's error.
                    Err(Error::Status { status, text, .. }) if status < 500 => {
                        problems.push(problem(ChannelProblem::Endpoint {
                            id: id.to_owned(),
                            status,
                            text,
                        }));
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                if endpoint["status"].as_str() == Some("off") {
                    continue;
                }
                match endpoint["address"].as_str() {
                    Some(address) => channels.push(ChannelSpec {
                        name,
                        address: address.to_owned(),
                    }),
                    None => problems.push(problem(ChannelProblem::NoAddress(id.to_owned()))),
                }
            }
        }
        let config = RemoteConfig {
            off,
            transmits_stopped,
            settings,
            channels,
        };
        problems.extend(config.problems());
        Ok((config, problems))
    }

    /// Reads the Agent and its Endpoints as a connection starts: the channels that can run
    /// (without those that have a problem: an address that does not parse, the second of two
    /// on one port or with one name), and every problem found. A configuration problem never
    /// keeps the agent off the relay; only the relay's own errors (reading the Agent, the
    /// network) are errors.
    ///
    /// # Errors
    ///
    /// The relay's errors reading the Agent, or an Endpoint other than by an HTTP status.
    pub(crate) async fn read_runnable(
        client: &RelayClient,
        agent_id: &str,
    ) -> Result<(RemoteConfig, Vec<ConfigError>), Error> {
        let (mut config, problems) = RemoteConfig::fetch(client, agent_id).await?;
        let refused = config.refused();
        config.channels = std::mem::take(&mut config.channels)
            .into_iter()
            .enumerate()
            .filter(|(n, _)| !refused.contains(n))
            .map(|(_, c)| c)
            .collect();
        Ok((config, problems))
    }

    /// Checks what the relay configures for `agent_id` without starting anything: each
    /// channel as `(name, address)`, and every problem that would stop one (an address that
    /// does not parse or whose scheme has no listener, an encoding, delimiter or TLS setting
    /// that the channel's start refuses, no Endpoint, two channels on one port).
    ///
    /// # Errors
    ///
    /// The relay's errors (login, reading the Agent or an Endpoint).
    pub(crate) async fn check(
        client: &RelayClient,
        agent_id: &str,
    ) -> Result<(Vec<(String, String)>, Vec<String>), Error> {
        let (config, problems) = RemoteConfig::fetch(client, agent_id).await?;
        let mut problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
        for ch in &config.channels {
            // An address that does not parse is among `problems` already.
            if DeviceUrl::parse(&ch.address).is_err() {
                continue;
            }
            if let Err(problem) = crate::inbound::check_settings(&ch.address) {
                problems.push(
                    ConfigError::Channel {
                        channel: ch.name.clone(),
                        problem,
                    }
                    .to_string(),
                );
            }
        }
        let channels = config
            .channels
            .into_iter()
            .map(|c| (c.name, c.address))
            .collect();
        Ok((channels, problems))
    }

    /// Addresses that do not parse, names used twice and ports used twice (port 0, "any free
    /// port", is never shared: each such channel gets its own).
    fn problems(&self) -> Vec<ConfigError> {
        self.faults().into_iter().map(|(_, e)| e).collect()
    }

    /// The indexes of the channels [`Self::problems`] refuses (for two on one port or with one
    /// name, the second).
    fn refused(&self) -> HashSet<usize> {
        self.faults().into_iter().map(|(n, _)| n).collect()
    }

    /// Each problem, with the index of the channel it refuses.
    fn faults(&self) -> Vec<(usize, ConfigError)> {
        let mut problems = Vec::new();
        let mut ports: HashMap<String, &str> = HashMap::new();
        let mut names: HashSet<&str> = HashSet::new();
        for (n, ch) in self.channels.iter().enumerate() {
            if !names.insert(&ch.name) {
                problems.push((n, ConfigError::SameName(ch.name.clone())));
                continue;
            }
            match DeviceUrl::parse(&ch.address) {
                Ok(u) => {
                    let port = u.port().to_owned();
                    if port == "0" {
                        continue;
                    }
                    match ports.get(&port) {
                        Some(other) => problems.push((
                            n,
                            ConfigError::SharedPort {
                                first: (*other).to_owned(),
                                second: ch.name.clone(),
                                port,
                            },
                        )),
                        None => {
                            ports.insert(port, &ch.name);
                        }
                    }
                }
                Err(e) => problems.push((
                    n,
                    ConfigError::Channel {
                        channel: ch.name.clone(),
                        problem: e.into(),
                    },
                )),
            }
        }
        problems
    }

    /// Keeps this configuration in `dir`, replacing the previous one atomically.
    pub(crate) fn save(&self, dir: &Path) -> std::io::Result<()> {
        let tmp = dir.join(format!("{FILE}.tmp"));
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, json)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, dir.join(FILE))
    }

    /// The configuration kept in `dir`, if there is one that reads.
    pub(crate) fn load(dir: &Path) -> Option<RemoteConfig> {
        let path = dir.join(FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the last configuration");
                return None;
            }
        };
        match serde_json::from_slice::<RemoteConfig>(&bytes) {
            Ok(c) if c.problems().is_empty() => Some(c),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "the last configuration does not read; ignored");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_read_with_medplums_names_and_types() {
        let s = AgentSettings::read(&serde_json::json!([
            {"name": "keepAlive", "valueBoolean": true},
            {"name": "maxClientsPerRemote", "valueInteger": 3},
            {"name": "logStatsFreqSecs", "valueInteger": 60},
            {"name": "durableQueue", "valueBoolean": true},
            {"name": "colour", "valueString": "blue"},
        ]));
        assert_eq!(
            (
                s.keep_alive,
                s.max_clients_per_remote,
                s.log_stats_freq_secs
            ),
            (Some(true), Some(3), Some(60))
        );
        assert_eq!(
            s.ignored,
            [
                (
                    "durableQueue".into(),
                    "Outpost's inbound queue is always durable".into()
                ),
                ("colour".into(), "not a setting Outpost knows".into()),
            ]
        );
        let s = AgentSettings::read(&serde_json::json!([
            {"name": "keepAlive", "valueString": "true"},
            {"name": "maxClientsPerRemote", "valueInteger": 0},
            {"name": "logStatsFreqSecs", "valueInteger": -1},
        ]));
        assert_eq!(
            (
                s.keep_alive,
                s.max_clients_per_remote,
                s.log_stats_freq_secs
            ),
            (None, None, None)
        );
        assert_eq!(
            s.ignored,
            [
                ("keepAlive".into(), "keepAlive needs a valueBoolean".into()),
                (
                    "maxClientsPerRemote".into(),
                    "maxClientsPerRemote needs a positive valueInteger".into()
                ),
            ]
        );
        assert_eq!(
            AgentSettings::read(&serde_json::Value::Null),
            AgentSettings::default()
        );
    }

    #[test]
    fn saved_and_loaded_and_checked() {
        let dir = std::env::temp_dir().join(format!("outpost-remote-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(RemoteConfig::load(&dir), None);
        let c = RemoteConfig {
            channels: vec![
                ChannelSpec {
                    name: "adt".into(),
                    address: "mllp://0.0.0.0:2575".into(),
                },
                ChannelSpec {
                    name: "lab".into(),
                    address: "astm://0.0.0.0:2576".into(),
                },
            ],
            ..RemoteConfig::default()
        };
        c.save(&dir).unwrap();
        assert_eq!(RemoteConfig::load(&dir), Some(c.clone()));
        let mut clash = c;
        clash.channels[1].address = "tcp://0.0.0.0:2575?startChar=%02&endChar=%03".into();
        assert_eq!(
            clash.problems()[0].to_string(),
            "channels adt and lab share port 2575"
        );
        // What runs at a connection all the same: the first of the two.
        assert_eq!(clash.refused(), HashSet::from([1]));
        let mut twice = clash.clone();
        twice.channels[1] = ChannelSpec {
            name: "adt".into(),
            address: "mllp://0.0.0.0:2577".into(),
        };
        assert_eq!(
            twice.problems()[0].to_string(),
            "two channels are named adt: channel names must differ"
        );
        assert_eq!(twice.refused(), HashSet::from([1]));
        let mut any = clash.clone();
        any.channels[0].address = "mllp://127.0.0.1:0".into();
        any.channels[1].address = "astm://127.0.0.1:0".into();
        assert!(any.problems().is_empty(), "port 0 is any free port");
        // A file written before settings were kept still reads.
        std::fs::write(dir.join(FILE), br#"{"off":false,"channels":[]}"#).unwrap();
        assert_eq!(RemoteConfig::load(&dir), Some(RemoteConfig::default()));
        std::fs::write(dir.join(FILE), b"{not json").unwrap();
        assert_eq!(RemoteConfig::load(&dir), None);
        let _ = std::fs::remove_dir_all(dir);
    }
}
