//! `Agent.setting` (issue 18): `keepAlive`, `maxClientsPerRemote`, `logStatsFreqSecs`, and
//! names the agent does not use, logged once.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_core::{LogBuffer, LogLayer, PushAnswer, PushOptions};
use common::*;
use serde_json::{Value, json};
use tracing_subscriber::layer::SubscriberExt;

/// An acknowledging MLLP device that notes the connection each message came on and how many
/// it was answering at once; each answer takes `hold` (a slow device).
struct CountingDevice {
    server: mllp::Server,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    most_at_once: Arc<AtomicUsize>,
}

impl CountingDevice {
    async fn start(hold: Duration) -> CountingDevice {
        let peers = Arc::new(Mutex::new(Vec::new()));
        let most_at_once = Arc::new(AtomicUsize::new(0));
        let now = Arc::new(AtomicUsize::new(0));
        let (p, m) = (peers.clone(), most_at_once.clone());
        let server = mllp::Server::bind(
            "127.0.0.1:0",
            mllp::ServerOptions::default(),
            move |req: mllp::Request| {
                let (p, m, now) = (p.clone(), m.clone(), now.clone());
                async move {
                    p.lock().unwrap().push(req.peer());
                    let at_once = now.fetch_add(1, Ordering::SeqCst) + 1;
                    m.fetch_max(at_once, Ordering::SeqCst);
                    tokio::time::sleep(hold).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                    let msg = req.message().unwrap();
                    for ack in mllp::acks_for(&msg, false) {
                        let _ = req.reply(&ack).await;
                    }
                }
            },
        )
        .await
        .unwrap();
        CountingDevice {
            server,
            peers,
            most_at_once,
        }
    }

    fn connections(&self) -> usize {
        self.peers
            .lock()
            .unwrap()
            .iter()
            .collect::<HashSet<_>>()
            .len()
    }
}

async fn reload_with(w: &World, settings: Value) {
    let store = w.relay.registry();
    let mut agent = (*store.get("Agent", AGENT).await.unwrap().unwrap()).clone();
    agent["setting"] = settings;
    store.put(agent).await.unwrap();
    let (status, body) = reload_config(&w.relay).await;
    assert_eq!(status, 200, "{body}");
}

async fn push_to_counting(w: &World) {
    let opts = PushOptions {
        wait_for_response: true,
        wait_timeout: Some(Duration::from_secs(10)),
        return_ack: None,
    };
    let answer = caller(&w.relay.base_url())
        .push_to_agent(
            AGENT,
            "Device/counting",
            ADT_LF,
            "x-application/hl7-v2+er7",
            &opts,
        )
        .await
        .unwrap();
    assert!(matches!(answer, PushAnswer::Answer { .. }), "{answer:?}");
}

async fn pushes_at_once(w: &World, n: usize) {
    let all: Vec<_> = (0..n).map(|_| push_to_counting(w)).collect();
    futures_util::future::join_all(all).await;
}

/// The lines logged so far that contain `text`.
fn logged(logs: &LogBuffer, text: &str) -> Vec<String> {
    logs.recent(10_000)
        .into_iter()
        .map(|l| l.msg)
        .filter(|m| m.contains(text))
        .collect()
}

async fn wait_logged(logs: &LogBuffer, text: &str) -> String {
    for _ in 0..100 {
        if let Some(line) = logged(logs, text).into_iter().next() {
            return line;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never logged: {text}");
}

#[tokio::test]
async fn keep_alive_max_clients_and_stats_follow_agent_setting() {
    let logs = LogBuffer::new();
    let _subscriber = tracing::subscriber::set_default(
        tracing_subscriber::registry().with(LogLayer::new(logs.clone())),
    );
    let device = CountingDevice::start(Duration::from_millis(200)).await;
    let mut bundle = bundle(0, 0);
    bundle["entry"][2]["resource"]["setting"] = json!([
        {"name": "keepAlive", "valueBoolean": true},
        {"name": "logStatsFreqSecs", "valueInteger": 1},
        {"name": "colour", "valueString": "blue"},
        {"name": "durableQueue", "valueBoolean": true},
    ]);
    bundle["entry"]
        .as_array_mut()
        .unwrap()
        .push(json!({"resource": {
            "resourceType": "Device", "id": "counting",
            "url": format!("mllp://{}", device.server.local_addr()),
        }}));
    let relay = start_relay("127.0.0.1:0", None, &bundle, Duration::from_secs(3600)).await;
    let agent = agent_core::Agent::start(
        agent_config(&relay.base_url(), tmp("settings")),
        logs.clone(),
    )
    .await
    .unwrap();
    assert!(agent.wait_live(Duration::from_secs(10)).await);
    let channel_port = channel_port(&agent, "adt-in").await;
    let w = World {
        device: Device::start(0).await,
        relay,
        agent,
        channel_port,
        bundle,
    };

    // keepAlive=true: one connection for every push (and one at a time, Medplum's default).
    for _ in 0..3 {
        push_to_counting(&w).await;
    }
    assert_eq!(device.connections(), 1, "keepAlive=true");

    // keepAlive=false: a fresh connection for each message.
    reload_with(&w, json!([{"name": "keepAlive", "valueBoolean": false}, {"name": "colour", "valueString": "red"}])).await;
    for _ in 0..3 {
        push_to_counting(&w).await;
    }
    assert_eq!(device.connections(), 4, "keepAlive=false");

    // maxClientsPerRemote caps the connections open to the device at once.
    reload_with(&w, json!([{"name": "keepAlive", "valueBoolean": false}, {"name": "maxClientsPerRemote", "valueInteger": 1}])).await;
    device.most_at_once.store(0, Ordering::SeqCst);
    pushes_at_once(&w, 3).await;
    assert_eq!(device.most_at_once.load(Ordering::SeqCst), 1);
    reload_with(&w, json!([{"name": "keepAlive", "valueBoolean": false}, {"name": "maxClientsPerRemote", "valueInteger": 3}])).await;
    device.most_at_once.store(0, Ordering::SeqCst);
    pushes_at_once(&w, 3).await;
    assert_eq!(device.most_at_once.load(Ordering::SeqCst), 3);

    // Unknown and inapplicable names: said once each, however often the agent reloads.
    assert_eq!(
        logged(
            &logs,
            "Agent.setting colour ignored: not a setting Outpost knows"
        )
        .len(),
        1
    );
    assert_eq!(logged(&logs, "Agent.setting durableQueue ignored").len(), 1);

    // logStatsFreqSecs: a stats line per period with each channel's counts.
    reload_with(&w, json!([{"name": "logStatsFreqSecs", "valueInteger": 1}])).await;
    let mut c = mllp::Connection::connect(
        &format!("127.0.0.1:{}", w.channel_port),
        mllp::ClientOptions::default(),
    )
    .await
    .unwrap();
    c.send(oru("STATS-1").as_bytes()).await.unwrap();
    let line = wait_logged(&logs, "adt-in: received=1 sent=1 errored=0 queued=0 dead=0").await;
    assert!(line.starts_with("agent stats: "), "{line}");
}
