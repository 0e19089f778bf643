//! What the relay configures for this agent: `Agent.status` and `Agent.channel[]` with each
//! channel's `Endpoint.address`. Read from the relay at every connection and on
//! `agent:reloadconfig:request`; the last one read is kept in the data directory
//! (`last-config.json`) so that an agent started while the relay is unreachable opens the same
//! channels and goes on queueing device messages.

use std::collections::HashMap;
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

/// The relay's configuration of this agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RemoteConfig {
    /// `Agent.status` is `off`: pushes are refused and no channel runs.
    pub(crate) off: bool,
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
                let endpoint = client.read("Endpoint", id).await?;
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
        let config = RemoteConfig { off, channels };
        problems.extend(config.problems());
        Ok((config, problems))
    }

    /// Checks what the relay configures for `agent_id` without starting anything: each
    /// channel as `(name, address)`, and every problem that would stop one (an address that
    /// does not parse or whose scheme has no listener, no Endpoint, two channels on one port).
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
            if let Ok(u) = DeviceUrl::parse(&ch.address)
                && !crate::inbound::CHANNEL_SCHEMES.contains(&u.scheme.as_str())
            {
                problems.push(
                    ConfigError::Channel {
                        channel: ch.name.clone(),
                        problem: ChannelProblem::Scheme(u.scheme.clone()),
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

    /// Addresses that do not parse, and ports used twice (port 0, "any free port", is never
    /// shared: each such channel gets its own).
    fn problems(&self) -> Vec<ConfigError> {
        let mut problems = Vec::new();
        let mut ports: HashMap<String, &str> = HashMap::new();
        for ch in &self.channels {
            match DeviceUrl::parse(&ch.address) {
                Ok(u) => {
                    let port = u.port().to_owned();
                    if port == "0" {
                        continue;
                    }
                    if let Some(other) = ports.insert(port.clone(), &ch.name) {
                        problems.push(ConfigError::SharedPort {
                            first: other.to_owned(),
                            second: ch.name.clone(),
                            port,
                        });
                    }
                }
                Err(e) => problems.push(ConfigError::Channel {
                    channel: ch.name.clone(),
                    problem: e.into(),
                }),
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
    fn saved_and_loaded_and_checked() {
        let dir = std::env::temp_dir().join(format!("outpost-remote-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(RemoteConfig::load(&dir), None);
        let c = RemoteConfig {
            off: false,
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
        };
        c.save(&dir).unwrap();
        assert_eq!(RemoteConfig::load(&dir), Some(c.clone()));
        let mut clash = c;
        clash.channels[1].address = "tcp://0.0.0.0:2575?startChar=%02&endChar=%03".into();
        assert_eq!(
            clash.problems()[0].to_string(),
            "channels adt and lab share port 2575"
        );
        let mut any = clash.clone();
        any.channels[0].address = "mllp://127.0.0.1:0".into();
        any.channels[1].address = "astm://127.0.0.1:0".into();
        assert!(any.problems().is_empty(), "port 0 is any free port");
        std::fs::write(dir.join(FILE), b"{not json").unwrap();
        assert_eq!(RemoteConfig::load(&dir), None);
        let _ = std::fs::remove_dir_all(dir);
    }
}
