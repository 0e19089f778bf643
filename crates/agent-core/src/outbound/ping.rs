//! `x-application/ping`: `PING` or `PING <count>` to a host or IP with the system's `ping`,
//! within the push's time.

use std::time::Duration;

use agent_protocol::CONTENT_TYPE_PING;

use super::{Delivered, PushError, TimeBudget};

pub(crate) async fn ping(
    host: &str,
    body: &str,
    budget: TimeBudget,
) -> Result<Delivered, PushError> {
    let count: u32 = body
        .trim()
        .strip_prefix("PING")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map_or(Ok(1), str::parse)
        .map_err(|_| PushError::PingBody(body.to_owned()))?;
    let count = count.clamp(1, 10);
    if host.starts_with('-') || host.is_empty() {
        return Err(PushError::PingHost(host.to_owned()));
    }
    let limit = Duration::from_secs(3 + 2 * u64::from(count)).min(budget.left());
    let out = tokio::time::timeout(
        limit,
        tokio::process::Command::new("ping")
            .args(["-c", &count.to_string(), "-W", "2", host])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| PushError::PingTimeout(host.to_owned()))?
    .map_err(|source| PushError::PingRun {
        host: host.to_owned(),
        source,
    })?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() {
        Ok((CONTENT_TYPE_PING.to_owned(), stdout))
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        Err(PushError::PingFailed {
            host: host.to_owned(),
            output: format!("{stdout}{stderr}"),
        })
    }
}
