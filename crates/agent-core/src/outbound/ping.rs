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
            .args(ping_args(count, host))
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| PushError::PingTimeout(host.to_owned()))?;
    let out = match out {
        Ok(out) => out,
        Err(source) => {
            let e = PushError::PingRun {
                host: host.to_owned(),
                source,
            };
            tracing::warn!(host, reason = %e, "ping not run");
            // Medplum's CLI prints the body of a successful answer and drops the reason of a
            // failed one ("Unexpected response from agent while pinging"): answer in ping's
            // own shape, nothing sent, with the reason where ping names the host.
            return Ok((CONTENT_TYPE_PING.to_owned(), not_sent(host, &e)));
        }
    };
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

/// `ping`'s arguments on this platform: `count` echoes, about 2 s for each answer.
fn ping_args(count: u32, host: &str) -> Vec<String> {
    let count = count.to_string();
    let args: [&str; 5] = if cfg!(windows) {
        // -n count, -w timeout in milliseconds.
        ["-n", &count, "-w", "2000", host]
    } else if cfg!(any(
        target_os = "macos",
        target_os = "ios",
        target_os = "freebsd",
        target_os = "openbsd",
        target_os = "netbsd",
        target_os = "dragonfly"
    )) {
        // -W is in milliseconds on the BSDs.
        ["-c", &count, "-W", "2000", host]
    } else {
        // iputils and busybox: -W in seconds.
        ["-c", &count, "-W", "2", host]
    };
    args.iter().map(|a| (*a).to_owned()).collect()
}

/// What `ping` would have printed had it sent nothing, with why it did not.
fn not_sent(host: &str, why: &PushError) -> String {
    format!(
        "PING {host}: not sent: {why}\n\n--- {host} ping statistics ---\n0 packets transmitted, 0 received, 100% packet loss\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_platform_s_flags() {
        let args = ping_args(3, "10.0.0.1");
        if cfg!(windows) {
            assert_eq!(args, ["-n", "3", "-w", "2000", "10.0.0.1"]);
        } else if cfg!(target_os = "linux") {
            assert_eq!(args, ["-c", "3", "-W", "2", "10.0.0.1"]);
        }
    }

    #[test]
    fn not_sent_reads_like_ping() {
        let e = PushError::PingRun {
            host: "10.0.0.1".into(),
            source: std::io::ErrorKind::NotFound.into(),
        };
        assert_eq!(
            not_sent("10.0.0.1", &e),
            "PING 10.0.0.1: not sent: ping is not installed on the agent's host\n\n\
             --- 10.0.0.1 ping statistics ---\n\
             0 packets transmitted, 0 received, 100% packet loss\n"
        );
    }
}
