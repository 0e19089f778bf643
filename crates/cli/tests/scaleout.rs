//! Three `outpost server` processes sharing PostgreSQL and Redis (both real, started here),
//! behind a round-robin TCP balancer for the agents; six agents spread over them. Pushes sent to
//! every process reach every agent; one process is killed mid-run: its agents reconnect
//! elsewhere, pushes in flight answer (never hang), `$status` follows.

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::services::{Postgres, Redis};
use support::{Proc, ack_device, agent_status, outpost, token, wait_until};

const WAIT: Duration = Duration::from_secs(60);
const AGENTS: usize = 6;

/// A relay process on a port it binds itself; the process and that port.
fn relay(
    name: &str,
    dir: &std::path::Path,
    redis: &Redis,
    pg: &Postgres,
    bootstrap: Option<&std::path::Path>,
) -> (Proc, u16) {
    let mut cmd = outpost();
    cmd.env("RUST_LOG", "info")
        .args(["server", "--listen", "127.0.0.1:0", "--heartbeat-secs", "1"])
        .args([
            "--redis-url",
            &redis.url(),
            "--database-url",
            &pg.url(),
            "--data",
        ])
        .arg(dir.join(format!("relay-{name}")));
    if let Some(b) = bootstrap {
        cmd.arg("--bootstrap").arg(b);
    }
    let mut p = Proc::spawn("outpost server", cmd);
    let url = p.listening_url(WAIT);
    let port = url
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {url}"));
    (p, port)
}

/// A TCP balancer: each connection goes to the next backend that accepts it.
async fn balancer(backends: Vec<u16>) -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let next = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = l.accept().await else {
                continue;
            };
            let (backends, next) = (backends.clone(), next.clone());
            tokio::spawn(async move {
                for _ in 0..backends.len() {
                    let b = backends[next.fetch_add(1, Ordering::Relaxed) % backends.len()];
                    if let Ok(mut out) = tokio::net::TcpStream::connect(("127.0.0.1", b)).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                        return;
                    }
                }
            });
        }
    });
    port
}

struct Device {
    server: mllp::Server,
    seen: Arc<Mutex<Vec<String>>>,
}

async fn device() -> Device {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let server = ack_device("127.0.0.1:0", seen.clone()).await;
    Device { server, seen }
}

/// One push with `waitForResponse`: (HTTP status, body).
async fn push(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    agent: usize,
    id: &str,
) -> (u16, String) {
    let body = format!("MSH|^~\\&|EHR|H|LIS|L|20240101120000||ADT^A08|{id}|P|2.5\rPID|1||{id}\r");
    match client
        .post(format!("{base}fhir/R4/Agent/agent-{agent}/$push"))
        .bearer_auth(token)
        .json(&json!({"destination": format!("Device/dev-{agent}"), "contentType": "x-application/hl7-v2+er7",
            "body": body, "waitForResponse": true, "waitTimeout": 5000}))
        .send()
        .await
    {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

#[test]
fn three_relays_one_fleet() {
    let redis = Redis::start();
    let pg = Postgres::start();
    let dir = std::env::temp_dir().join(format!("outpost-scaleout-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let devices: Vec<Device> = rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..AGENTS {
            v.push(device().await);
        }
        v
    });
    let allowed: Vec<Value> = (0..AGENTS)
        .map(|i| json!({"url": "https://outpost.health/fhir/StructureDefinition/allowed-agent", "valueReference": {"reference": format!("Agent/agent-{i}")}}))
        .collect();
    let mut entries = vec![
        json!({"resource": {"resourceType": "ClientApplication", "id": "caller", "secret": "caller-secret-0123456"}}),
        json!({"resource": {"resourceType": "ClientApplication", "id": "agent", "secret": "agent-secret-0123456", "extension": allowed}}),
    ];
    for (i, d) in devices.iter().enumerate() {
        entries.push(json!({"resource": {"resourceType": "Agent", "id": format!("agent-{i}"), "name": format!("agent {i}"), "status": "active"}}));
        entries.push(json!({"resource": {"resourceType": "Device", "id": format!("dev-{i}"), "url": format!("mllp://{}", d.server.local_addr())}}));
    }
    let bundle = dir.join("bundle.json");
    std::fs::write(
        &bundle,
        json!({"resourceType": "Bundle", "type": "collection", "entry": entries}).to_string(),
    )
    .unwrap();

    let (first, p0) = relay("0", &dir, &redis, &pg, Some(&bundle));
    let mut relays: Vec<Option<Proc>> = vec![Some(first)];
    let mut ports = vec![p0];
    for name in ["1", "2"] {
        let (r, p) = relay(name, &dir, &redis, &pg, None);
        relays.push(Some(r));
        ports.push(p);
    }
    let base = |i: usize| format!("http://127.0.0.1:{}/", ports[i]);

    rt.block_on(async {
        let lb = balancer(ports.to_vec()).await;
        let mut agents = Vec::new();
        for i in 0..AGENTS {
            let a = agent_core::Agent::start(
                agent_core::AgentConfig {
                    base_url: format!("http://127.0.0.1:{lb}/"),
                    client_id: "agent".into(),
                    client_secret: "agent-secret-0123456".into(),
                    agent_id: format!("agent-{i}"),
                    data_dir: dir.join(format!("agent-{i}")),
                    min_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_millis(800),
                    ..agent_core::AgentConfig::default()
                },
                agent_core::LogBuffer::new(),
            )
            .await
            .unwrap();
            assert!(a.wait_live(Duration::from_secs(20)).await, "agent-{i} did not connect");
            agents.push(a);
        }
        let client = reqwest::Client::new();
        let tokens: Vec<String> = {
            let mut t = Vec::new();
            for i in 0..3 {
                t.push(token(&base(i), "caller", "caller-secret-0123456").await);
            }
            t
        };

        // Every process sees every agent connected, and reaches every one.
        for (r, t) in tokens.iter().enumerate() {
            for a in 0..AGENTS {
                assert_eq!(agent_status(&client, &base(r), t, &format!("agent-{a}")).await, "connected", "agent-{a} via relay {r}");
                let id = format!("R{r}-A{a}");
                let (code, body) = push(&client, &base(r), t, a, &id).await;
                assert_eq!(code, 200, "push to agent-{a} via relay {r}: {body}");
                assert!(body.contains(&format!("MSA|AA|{id}")), "{body}");
            }
        }

        // The registry is shared: a Subscription and a Patient written through relay 1 drive a
        // lab order created through relay 2, pushed once, its AuditEvent readable on relay 0.
        let put = |r: usize, resource: Value| {
            let (client, b, t) = (client.clone(), base(r), tokens[r].clone());
            async move {
                let url = format!("{b}fhir/R4/{}/{}", resource["resourceType"].as_str().unwrap(), resource["id"].as_str().unwrap());
                client.put(url).bearer_auth(t).json(&resource).send().await.unwrap().status().as_u16()
            }
        };
        assert_eq!(put(1, json!({"resourceType": "Patient", "id": "p1", "identifier": [{"value": "MRN-1"}], "name": [{"family": "Doe"}]})).await, 201);
        assert_eq!(put(1, json!({"resourceType": "Subscription", "id": "orders", "status": "active", "reason": "orders",
            "criteria": "ServiceRequest", "channel": {"type": "rest-hook"},
            "extension": [{"url": "https://outpost.health/fhir/StructureDefinition/order-push", "extension": [
                {"url": "agent", "valueReference": {"reference": "Agent/agent-5"}},
                {"url": "device", "valueReference": {"reference": "Device/dev-5"}},
                {"url": "format", "valueCode": "hl7-orm"}]}]})).await, 201);
        // Relay 2 hears of the Subscription through PostgreSQL's NOTIFY.
        let sub_url = format!("{}fhir/R4/Subscription/orders", base(2));
        wait_until("relay 2 has the Subscription", Duration::from_secs(10), || async {
            let r = client.get(&sub_url).bearer_auth(&tokens[2]).send().await.ok()?;
            (r.status() == 200).then_some(())
        })
        .await;
        assert_eq!(put(2, json!({"resourceType": "ServiceRequest", "id": "sr-1", "status": "active", "intent": "order",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]}, "subject": {"reference": "Patient/p1"}})).await, 201);
        let mut audit = Value::Null;
        for _ in 0..100 {
            let v: Value = client
                .get(format!("{}fhir/R4/AuditEvent?entity=ServiceRequest/sr-1", base(0)))
                .bearer_auth(&tokens[0])
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if v["total"].as_u64() == Some(1) {
                audit = v["entry"][0]["resource"].clone();
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(audit["outcome"], "0", "{audit}");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let orders = devices[5].seen.lock().unwrap().iter().filter(|id| !id.starts_with('R')).count();
        assert_eq!(orders, 1, "the order reached the device exactly once");

        // Pushes keep flowing through relays 0 and 2 while relay 1 is killed.
        let stop = Arc::new(AtomicBool::new(false));
        let results = Arc::new(Mutex::new(Vec::<(u16, String, Duration)>::new()));
        let mut pushers = Vec::new();
        for w in 0..4 {
            let (stop, results, client) = (stop.clone(), results.clone(), client.clone());
            let (b, t) = if w % 2 == 0 { (base(0), tokens[0].clone()) } else { (base(2), tokens[2].clone()) };
            pushers.push(tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let a = (w + n) % AGENTS;
                    let t0 = Instant::now();
                    let (code, body) = push(&client, &b, &t, a, &format!("K{w}-{n}")).await;
                    results.lock().unwrap().push((code, body, t0.elapsed()));
                    n += 1;
                    if code != 200 {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let killed = relays[1].take().unwrap();
        let held: Vec<String> = {
            let mut k = killed;
            let out = k.output(Duration::from_millis(100));
            out.lines()
                .filter(|l| l.contains("agent connected"))
                .filter_map(|l| l.split("agent=").nth(1).map(|s| s.split_whitespace().next().unwrap_or("").trim_matches('"').to_owned()))
                .collect()
            // `k` is dropped here: SIGKILL.
        };
        let killed_at = Instant::now();

        // Within seconds every agent is connected again (to a live process) and reachable.
        let mut back = false;
        let mut probe = 0;
        while killed_at.elapsed() < Duration::from_secs(20) {
            let mut all = true;
            for a in 0..AGENTS {
                probe += 1;
                let reachable = push(&client, &base(0), &tokens[0], a, &format!("PROBE-{probe}")).await.0 == 200;
                if !reachable || agent_status(&client, &base(0), &tokens[0], &format!("agent-{a}")).await != "connected" {
                    all = false;
                }
            }
            if all {
                back = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(back, "agents did not all reconnect within 20 s of the kill");
        let recovered = killed_at.elapsed();
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop.store(true, Ordering::Relaxed);
        for p in pushers {
            p.await.unwrap();
        }
        for r in [0, 2] {
            for a in 0..AGENTS {
                let id = format!("AFTER-R{r}-A{a}");
                let (code, body) = push(&client, &base(r), &tokens[r], a, &id).await;
                assert_eq!(code, 200, "after the kill, agent-{a} via relay {r}: {body}");
            }
        }
        let results = results.lock().unwrap().clone();
        let slowest = results.iter().map(|r| r.2).max().unwrap();
        let failed: Vec<&(u16, String, Duration)> = results.iter().filter(|r| r.0 != 200).collect();
        assert!(slowest < Duration::from_secs(7), "a push took {slowest:?}: it hung");
        for f in &failed {
            assert_eq!(f.0, 400, "failures are 400s saying why: {f:?}");
        }
        println!(
            "relay 1 held {held:?}; {} pushes during the kill, {} failed (400), slowest {} ms; all agents back in {} ms",
            results.len(),
            failed.len(),
            slowest.as_millis(),
            recovered.as_millis()
        );
        // Redis loses everything (as a restart without persistence does): the processes put
        // their agents back on the next heartbeats, and pushes through the other process work.
        {
            use std::io::{Read, Write};
            let mut r = std::net::TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
            r.write_all(b"FLUSHALL\r\n").unwrap();
            let mut ok = [0u8; 5];
            r.read_exact(&mut ok).unwrap();
            assert_eq!(&ok, b"+OK\r\n");
        }
        let flushed_at = Instant::now();
        let mut missing = Vec::new();
        while flushed_at.elapsed() < Duration::from_secs(15) {
            missing.clear();
            for r in [0, 2] {
                for a in 0..AGENTS {
                    let id = format!("FLUSHED-R{r}-A{a}-{}", flushed_at.elapsed().as_millis());
                    let (code, _) = push(&client, &base(r), &tokens[r], a, &id).await;
                    if code != 200 {
                        missing.push((r, a));
                    }
                }
            }
            if missing.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert!(missing.is_empty(), "15 s after Redis lost its data, (relay, agent) not reachable: {missing:?}");
        println!("Redis flushed: every agent reachable through every process again in {} ms", flushed_at.elapsed().as_millis());

        // No device got a message twice.
        for (i, d) in devices.iter().enumerate() {
            let seen = d.seen.lock().unwrap().clone();
            let unique: HashSet<&String> = seen.iter().collect();
            assert_eq!(unique.len(), seen.len(), "device {i} got a message twice");
        }
        // An agent that leaves is shown disconnected by every process within moments (its
        // owner withdraws it), not only after the agent timeout (8 s here).
        let mut agents = agents;
        agents.remove(0).shutdown().await;
        let left_at = Instant::now();
        for r in [0, 2] {
            while agent_status(&client, &base(r), &tokens[r], "agent-0").await != "disconnected" {
                assert!(
                    left_at.elapsed() < Duration::from_secs(3),
                    "relay {r} still shows agent-0 connected"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        for a in agents {
            a.shutdown().await;
        }
    });
    drop(relays);
}
