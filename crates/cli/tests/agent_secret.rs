//! The agent's client secret kept out of `ps` and out of agent.properties: from
//! `MEDPLUM_CLIENT_SECRET` or from an owner-only file (`clientSecretFile=`,
//! `--client-secret-file`); a file others can read is refused, naming the path and the mode.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use support::*;
use test_support::relay::{AGENT, AGENT_CLIENT, AGENT_SECRET};

fn properties(dir: &Path, base: &str, extra: &str) -> std::path::PathBuf {
    let props = dir.join("agent.properties");
    std::fs::write(
        &props,
        format!(
            "baseUrl={base}\nclientId={AGENT_CLIENT}\nagentId={AGENT}\ndataDir={}\n{extra}",
            dir.join("data").display()
        ),
    )
    .unwrap();
    props
}

async fn connected(relay: &relay::Relay) {
    wait_until("agent connected", Duration::from_secs(30), || async {
        relay.is_connected(AGENT).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_from_the_environment_logs_the_agent_in() {
    let relay = test_support::relay::start().await;
    let dir = scratch("secret-env");
    let props = properties(&dir, &relay.base_url(), "");
    let mut cmd = outpost();
    cmd.env("MEDPLUM_CLIENT_SECRET", AGENT_SECRET)
        .args(["agent", "--config"])
        .arg(&props);
    let _agent = Proc::spawn("outpost agent (secret from env)", cmd);
    connected(&relay).await;
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_from_an_owner_only_file_logs_the_agent_in() {
    let relay = test_support::relay::start().await;
    let dir = scratch("secret-file");
    let secret = dir.join("client-secret");
    std::fs::write(&secret, format!("{AGENT_SECRET}\n")).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let props = properties(
        &dir,
        &relay.base_url(),
        &format!("clientSecretFile={}\n", secret.display()),
    );
    let mut cmd = outpost();
    cmd.env_remove("MEDPLUM_CLIENT_SECRET")
        .args(["agent", "--config"])
        .arg(&props);
    let _agent = Proc::spawn("outpost agent (clientSecretFile)", cmd);
    connected(&relay).await;
    relay.shutdown().await;
}

#[test]
fn a_secret_file_readable_by_others_is_refused_naming_path_and_mode() {
    let dir = scratch("secret-mode");
    let secret = dir.join("client-secret");
    std::fs::write(&secret, AGENT_SECRET).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let props = properties(
        &dir,
        "http://127.0.0.1:9/",
        &format!("clientSecretFile={}\n", secret.display()),
    );
    let mut cmd = outpost();
    cmd.env_remove("MEDPLUM_CLIENT_SECRET")
        .args(["agent", "--config"])
        .arg(&props);
    let (code, out, err) = run("outpost agent", cmd, Duration::from_secs(30));
    assert_ne!(code, 0, "{out}{err}");
    let p = secret.display();
    assert!(
        err.contains(&format!(
            "clientSecretFile {p} is readable by group or others (mode 0644); make it owner-only: chmod 600 {p}"
        )),
        "{err}"
    );
    // The same for the flag.
    let mut cmd = outpost();
    cmd.args([
        "agent",
        "--base-url",
        "http://127.0.0.1:9/",
        "--client-id",
        AGENT_CLIENT,
        "--agent-id",
        AGENT,
        "--client-secret-file",
    ])
    .arg(&secret);
    let (code, out, err) = run("outpost agent", cmd, Duration::from_secs(30));
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("(mode 0644)"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}
