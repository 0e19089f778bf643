//! Inbound channels: listeners for devices that send to the cloud, from the Agent's
//! `channel[]` and their Endpoints.
//!
//! `mllp://HOST:PORT[?encoding=LABEL&enhanced=true|aa]`: an MLLP listener on `HOST:PORT`
//! (`0.0.0.0` for every interface). Each message is committed to the durable queue first. Then,
//! with `enhanced=true`, the device gets a CA at once and the relay's answer later; with
//! `enhanced=aa`, an AA at once and nothing later; otherwise (original mode) the relay's answer,
//! or, if the relay has not answered within `AgentConfig::inbound_reply_wait`, an AA saying the
//! message is queued (the agent has it durably and will deliver it).
//!
//! `tcp://HOST:PORT?startChar=C&endChar=C` (both required, URL-encoded, e.g. `%02`, `%03`): a
//! byte-stream listener. Each frame (the bytes after the start byte, through the end byte, as
//! Medplum's byte-stream channel cuts them) is committed to the queue as soon as it is complete
//! and forwarded hex-encoded as `application/octet-stream`; an `application/octet-stream` answer
//! from the relay is hex-decoded and written back to the device as is, in the order the frames
//! came. Any other answer (an error, `text/plain`) is only recorded.
//!
//! A worker per channel sends queued messages to the relay one at a time, oldest first, and
//! retries with backoff until the relay answers; a resend carries the same callback, which the
//! relay answers from its store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use agent_protocol::{
    AgentMessage, CONTENT_TYPE_ASTM, CONTENT_TYPE_HL7_V2, CONTENT_TYPE_OCTET_STREAM,
    CONTENT_TYPE_TEXT, TransmitRequest,
};
use bytes::BytesMut;
use hl7v2::{AckCode, Charset};
use mllp::{DelimitedFramer, Request, Server, ServerOptions, ack_options};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::dispatch::Url;
use crate::{Error, Event, Inner};

/// Limit on one attempt to hand a queued message to the relay.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// The running channels.
#[derive(Debug, Default)]
pub(crate) struct Channels {
    running: HashMap<String, Running>,
    workers: HashMap<String, tokio::task::JoinHandle<()>>,
}

#[derive(Debug)]
struct Running {
    address: String,
    listener: Listener,
}

/// The relay's answer to a device message.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) content_type: String,
    pub(crate) body: String,
}

/// A channel's listener.
#[derive(Debug)]
enum Listener {
    Mllp(Server),
    /// An ASTM or byte-stream accept loop.
    Task {
        stop: watch::Sender<bool>,
        task: tokio::task::JoinHandle<()>,
    },
}

impl Listener {
    async fn shutdown(self) {
        match self {
            Listener::Mllp(server) => server.shutdown(Duration::from_secs(2)).await,
            Listener::Task { stop, task } => {
                let _ = stop.send(true);
                let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
            }
        }
    }
}

/// Reads the Agent and its Endpoints from the relay and makes the running channels match.
pub(crate) async fn reload(inner: &Arc<Inner>) -> Result<(), Error> {
    let agent = inner.client.read("Agent", &inner.config.agent_id).await?;
    let off = agent["status"].as_str() == Some("off");
    inner.off.store(off, std::sync::atomic::Ordering::Relaxed);
    let mut wanted: Vec<(String, String)> = Vec::new();
    let mut errors = Vec::new();
    if !off {
        for ch in agent["channel"].as_array().into_iter().flatten() {
            let name = ch["name"].as_str().unwrap_or_default().to_owned();
            let Some(reference) = ch["endpoint"]["reference"].as_str() else {
                errors.push(format!("channel {name}: no endpoint"));
                continue;
            };
            let id = reference.strip_prefix("Endpoint/").unwrap_or(reference);
            let endpoint = inner.client.read("Endpoint", id).await?;
            if endpoint["status"].as_str() == Some("off") {
                continue;
            }
            match endpoint["address"].as_str() {
                Some(a) => wanted.push((name, a.to_owned())),
                None => errors.push(format!("channel {name}: Endpoint/{id} has no address")),
            }
        }
    }
    let mut ports: HashMap<String, &str> = HashMap::new();
    for (name, address) in &wanted {
        match Url::parse(address) {
            Ok(u) => {
                let port = u.addr.rsplit(':').next().unwrap_or_default().to_owned();
                if let Some(other) = ports.insert(port.clone(), name) {
                    errors.push(format!("channels {other} and {name} share port {port}"));
                }
            }
            Err(e) => errors.push(format!("channel {name}: {e}")),
        }
    }
    if !errors.is_empty() {
        return Err(Error::Config(errors.join("; ")));
    }
    apply(inner, wanted).await;
    Ok(())
}

/// Stops removed or changed channels, starts new ones.
async fn apply(inner: &Arc<Inner>, wanted: Vec<(String, String)>) {
    let mut set = inner.channels.lock().await;
    let keep: HashMap<&str, &str> = wanted
        .iter()
        .map(|(n, a)| (n.as_str(), a.as_str()))
        .collect();
    let stale: Vec<String> = set
        .running
        .iter()
        .filter(|(n, r)| keep.get(n.as_str()) != Some(&r.address.as_str()))
        .map(|(n, _)| n.clone())
        .collect();
    for name in stale {
        if let Some(r) = set.running.remove(&name) {
            r.listener.shutdown().await;
            tracing::info!(channel = name, "channel stopped");
        }
    }
    for (name, address) in wanted {
        if set.running.contains_key(&name) {
            continue;
        }
        match start(inner, &name, &address).await {
            Ok(listener) => {
                tracing::info!(channel = name, address, "channel listening");
                inner.emit(Event::ChannelStarted {
                    name: name.clone(),
                    address: address.clone(),
                });
                set.running
                    .insert(name.clone(), Running { address, listener });
            }
            Err(e) => {
                tracing::error!(channel = name, address, error = %e, "channel could not start");
                inner.emit(Event::ChannelFailed {
                    name: name.clone(),
                    error: e.to_string(),
                });
            }
        }
        ensure_worker_locked(inner, &mut set, &name);
    }
}

/// Stops every channel (the queue keeps what they received).
pub(crate) async fn stop_all(inner: &Inner) {
    let mut set = inner.channels.lock().await;
    for (_, r) in set.running.drain() {
        r.listener.shutdown().await;
    }
    for (_, w) in set.workers.drain() {
        w.abort();
    }
}

/// Makes sure a queue worker runs for `channel`.
pub(crate) async fn ensure_worker(inner: &Arc<Inner>, channel: &str) {
    let mut set = inner.channels.lock().await;
    ensure_worker_locked(inner, &mut set, channel);
}

fn ensure_worker_locked(inner: &Arc<Inner>, set: &mut Channels, channel: &str) {
    if set.workers.get(channel).is_some_and(|w| !w.is_finished()) {
        return;
    }
    let handle = tokio::spawn(worker(inner.clone(), channel.to_owned()));
    set.workers.insert(channel.to_owned(), handle);
}

async fn start(inner: &Arc<Inner>, name: &str, address: &str) -> Result<Listener, Error> {
    let scheme = address.split_once("://").map_or("", |(s, _)| s);
    let url = Url::parse(address).map_err(Error::Config)?;
    let charset = |default| match url.get("encoding") {
        Some(l) => {
            Charset::from_label(l).map_err(|e| Error::Config(format!("channel {name}: {e}")))
        }
        None => Ok(default),
    };
    match scheme {
        "mllp" => {
            let charset = charset(Charset::Utf8)?;
            let enhanced = url.get("enhanced").map(str::to_owned);
            let (inner, channel) = (inner.clone(), name.to_owned());
            let handler = move |req: Request| {
                let (inner, channel, enhanced) = (inner.clone(), channel.clone(), enhanced.clone());
                async move { on_message(&inner, &channel, charset, enhanced.as_deref(), req).await }
            };
            Server::bind(&url.addr, mllp_limits(), handler)
                .await
                .map(Listener::Mllp)
                .map_err(|e| {
                    Error::Config(format!(
                        "channel {name}: cannot listen on {}: {e}",
                        url.addr
                    ))
                })
        }
        "astm" => start_astm(inner, name, &url.addr, charset(Charset::Latin1)?).await,
        "tcp" => {
            let start = delimiter(&url, name, "startChar")?;
            let end = delimiter(&url, name, "endChar")?;
            start_stream(inner, name, &url.addr, start, end).await
        }
        _ => Err(Error::Config(format!(
            "channel {name}: unsupported endpoint scheme {scheme:?} (supported: mllp, astm, tcp)"
        ))),
    }
}

/// Commits a device message and wakes the channel's worker; the receiver gets the relay's
/// answer once it comes.
fn commit(
    inner: &Inner,
    channel: &str,
    remote: &str,
    content_type: &str,
    text: &str,
) -> Result<(i64, oneshot::Receiver<Answer>), Error> {
    let queued = inner
        .queue
        .push(&inner.config.agent_id, channel, remote, content_type, text)?;
    inner.emit(Event::InboundQueued {
        channel: channel.to_owned(),
        id: queued.id,
    });
    let (tx, rx) = oneshot::channel();
    Inner::lock(&inner.waiters).insert(queued.id, tx);
    inner.notifier(channel).notify_one();
    Ok((queued.id, rx))
}

/// The relay's answer to a committed message, or `None` if it did not come in time.
async fn answer(inner: &Inner, id: i64, rx: oneshot::Receiver<Answer>) -> Option<Answer> {
    answer_by(
        inner,
        id,
        rx,
        Instant::now() + inner.config.inbound_reply_wait,
    )
    .await
}

/// [`answer`] with a deadline.
async fn answer_by(
    inner: &Inner,
    id: i64,
    rx: oneshot::Receiver<Answer>,
    deadline: Instant,
) -> Option<Answer> {
    let got = tokio::time::timeout_at(deadline, rx).await;
    Inner::lock(&inner.waiters).remove(&id);
    got.ok().and_then(Result::ok)
}

/// `astm://HOST:PORT`: an E1381 listener as the LIS. Each message is committed when its last
/// frame arrives and before that frame is acknowledged (earlier frames are acknowledged one by
/// one as E1381 requires), forwarded, and an ASTM answer from the relay (orders for a host query,
/// say) is sent back to the analyzer.
/// Most analyzer connections one ASTM channel serves at once, and the largest message each may
/// send: at most 64 MB buffered per channel, whatever the senders do.
const MAX_ASTM_CONNECTIONS: usize = 16;
const MAX_ASTM_MESSAGE: usize = 4 << 20;

/// An MLLP channel serves at most 32 device connections with frames of at most 8 MB: at most
/// 256 MB buffered per channel, whatever the senders do. A frame must be complete within 60 s.
fn mllp_limits() -> ServerOptions {
    ServerOptions {
        max_frame: 8 << 20,
        max_connections: 32,
        ..ServerOptions::default()
    }
}

/// Accepts connections on `addr` until the channel stops, at most `max_conns` at once (past it,
/// new ones are closed), each served by `serve(stream, peer, stop)`.
async fn accept_loop<F, Fut>(
    name: &str,
    addr: &str,
    max_conns: usize,
    serve: F,
) -> Result<Listener, Error>
where
    F: Fn(tokio::net::TcpStream, std::net::SocketAddr, watch::Receiver<bool>) -> Fut
        + Send
        + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Config(format!("channel {name}: cannot listen on {addr}: {e}")))?;
    let (stop, stopped) = watch::channel(false);
    let channel = name.to_owned();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        let mut stop_rx = stopped.clone();
        loop {
            let (stream, peer) = tokio::select! {
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(channel, error = %e, "accept failed");
                        continue;
                    }
                },
                _ = stop_rx.changed() => break,
            };
            // Finished connections leave the set; past the cap, new ones are turned away.
            while conns.try_join_next().is_some() {}
            if conns.len() >= max_conns {
                tracing::warn!(channel, %peer, "too many device connections; closing this one");
                continue;
            }
            let _ = stream.set_nodelay(true);
            conns.spawn(serve(stream, peer, stopped.clone()));
        }
        conns.abort_all();
    });
    Ok(Listener::Task { stop, task })
}

async fn start_astm(
    inner: &Arc<Inner>,
    name: &str,
    addr: &str,
    charset: Charset,
) -> Result<Listener, Error> {
    let (inner, channel) = (inner.clone(), name.to_owned());
    accept_loop(
        name,
        addr,
        MAX_ASTM_CONNECTIONS,
        move |stream, peer, stop| {
            serve_astm(inner.clone(), channel.clone(), charset, stream, peer, stop)
        },
    )
    .await
}

/// One analyzer connection.
async fn serve_astm(
    inner: Arc<Inner>,
    channel: String,
    charset: Charset,
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    // The message is stored before the analyzer gets the ACK of its last frame.
    let opts = astm::LinkOptions {
        max_message: MAX_ASTM_MESSAGE,
        confirm_before_ack: true,
        ..astm::LinkOptions::default()
    };
    let mut conn = astm::Connection::new(stream, opts);
    loop {
        let message = tokio::select! {
            m = conn.next_message() => m,
            _ = stop.changed() => break,
        };
        let Ok(Some(message)) = message else { break };
        let text = charset.decode(&message).into_owned();
        let committed = commit(
            &inner,
            &channel,
            &peer.to_string(),
            CONTENT_TYPE_ASTM,
            &text,
        );
        // ACK (stored) or NAK (the analyzer sends the frame again) the last frame.
        if conn.confirm(committed.is_ok()).await.is_err() {
            break;
        }
        let (id, rx) = match committed {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(channel, error = %e, "cannot queue an analyzer message");
                continue;
            }
        };
        if let Some(a) = answer(&inner, id, rx).await
            && a.status < 400
            && a.body.trim_start().starts_with('H')
            && let Err(e) = conn
                .send(&crate::dispatch::astm_records(&a.body, charset))
                .await
        {
            tracing::warn!(channel, error = %e, "could not send the relay's answer to the analyzer");
        }
    }
}

/// A byte-stream channel's delimiter (`startChar`, `endChar`): the first character of the
/// parameter's value, which must be a single byte (code point below 256).
fn delimiter(url: &Url, name: &str, key: &str) -> Result<u8, Error> {
    let value = url.get(key).ok_or_else(|| {
        Error::Config(format!(
            "channel {name}: tcp:// channels need {key} (URL-encoded, e.g. {key}=%02)"
        ))
    })?;
    let c = value
        .chars()
        .next()
        .ok_or_else(|| Error::Config(format!("channel {name}: {key} is empty")))?;
    u8::try_from(u32::from(c)).map_err(|_| {
        Error::Config(format!(
            "channel {name}: {key} {c:?} is not a single byte (code point over 255)"
        ))
    })
}

/// Most device connections one byte-stream channel serves at once, the largest frame each may
/// send (at most 256 MB buffered per channel), and the time a started frame has to end.
const MAX_STREAM_CONNECTIONS: usize = 32;
const MAX_STREAM_FRAME: usize = 8 << 20;
const STREAM_FRAME_TIME: Duration = Duration::from_secs(60);

async fn start_stream(
    inner: &Arc<Inner>,
    name: &str,
    addr: &str,
    start: u8,
    end: u8,
) -> Result<Listener, Error> {
    let (inner, channel) = (inner.clone(), name.to_owned());
    accept_loop(
        name,
        addr,
        MAX_STREAM_CONNECTIONS,
        move |stream, peer, stop| {
            let frames = DelimitedFramer::new(start, end, MAX_STREAM_FRAME);
            serve_stream(inner.clone(), channel.clone(), stream, peer, frames, stop)
        },
    )
    .await
}

/// One device connection of a byte-stream channel: frames are committed as they complete; a
/// writer sends the relay's answers back in the same order.
async fn serve_stream(
    inner: Arc<Inner>,
    channel: String,
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    mut frames: DelimitedFramer,
    mut stop: watch::Receiver<bool>,
) {
    let (mut rd, mut wr) = stream.into_split();
    let (to_writer, mut pending) = mpsc::channel::<(i64, oneshot::Receiver<Answer>, Instant)>(64);
    let writer = {
        let (inner, channel) = (inner.clone(), channel.clone());
        tokio::spawn(async move {
            while let Some((id, rx, deadline)) = pending.recv().await {
                let Some(a) = answer_by(&inner, id, rx, deadline).await else {
                    continue;
                };
                if a.status >= 400
                    || a.content_type != CONTENT_TYPE_OCTET_STREAM
                    || a.body.is_empty()
                {
                    continue;
                }
                match hex::decode(a.body.trim()) {
                    Ok(bytes) => {
                        if let Err(e) = wr.write_all(&bytes).await {
                            tracing::warn!(channel, error = %e, "could not answer the device");
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(channel, error = %e, "the relay's answer is not hex; not sent");
                    }
                }
            }
        })
    };
    let remote = peer.to_string();
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut frame_since: Option<Instant> = None;
    'conn: loop {
        loop {
            match frames.decode(&mut buf) {
                Ok(Some(frame)) => {
                    let text = hex::encode(&frame);
                    match commit(&inner, &channel, &remote, CONTENT_TYPE_OCTET_STREAM, &text) {
                        Ok((id, rx)) => {
                            let deadline = Instant::now() + inner.config.inbound_reply_wait;
                            if to_writer.send((id, rx, deadline)).await.is_err() {
                                break 'conn;
                            }
                        }
                        Err(e) => {
                            tracing::error!(channel, error = %e, "cannot queue a device message");
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => tracing::warn!(channel, %peer, error = %e, "frame dropped"),
            }
        }
        frame_since = if frames.in_frame() {
            frame_since.or_else(|| Some(Instant::now()))
        } else {
            None
        };
        let read = async {
            match frame_since {
                Some(t) => tokio::time::timeout_at(t + STREAM_FRAME_TIME, rd.read_buf(&mut buf))
                    .await
                    .ok(),
                None => Some(rd.read_buf(&mut buf).await),
            }
        };
        tokio::select! {
            r = read => match r {
                Some(Ok(n)) if n > 0 => {}
                Some(Ok(_)) | Some(Err(_)) => break,
                None => {
                    tracing::warn!(channel, %peer, "frame not finished within 60 s; closing");
                    break;
                }
            },
            _ = stop.changed() => {
                writer.abort();
                return;
            }
        }
    }
    if let Some(len) = frames.finish(&mut buf) {
        tracing::warn!(channel, %peer, len, "connection closed inside a frame; its bytes are dropped");
    }
    // Answers to what was received still go out (the device may only have shut its sending
    // side), each within its deadline.
    drop(to_writer);
    let _ = writer.await;
}

/// One message from a device: commit, maybe acknowledge at once, relay, answer.
async fn on_message(
    inner: &Arc<Inner>,
    channel: &str,
    charset: Charset,
    enhanced: Option<&str>,
    req: Request,
) {
    let Ok(msg) = req.message() else { return };
    let text = charset.decode(req.bytes()).into_owned();
    let remote = req.peer().to_string();
    let (id, rx) = match commit(inner, channel, &remote, CONTENT_TYPE_HL7_V2, &text) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(channel, error = %e, "cannot queue a device message");
            let ack = hl7v2::build_ack(
                &msg,
                AckCode::AE,
                &ack_options(Some(format!("agent could not store the message: {e}"))),
            );
            let _ = req.reply(&ack).await;
            return;
        }
    };
    match enhanced {
        Some("aa") => {
            // Acknowledged at once; the relay's answer is only recorded.
            Inner::lock(&inner.waiters).remove(&id);
            let ack = hl7v2::build_ack(&msg, AckCode::AA, &ack_options(None));
            let _ = req.reply(&ack).await;
            return;
        }
        Some("true") => {
            let ack = hl7v2::build_ack(&msg, AckCode::CA, &ack_options(None));
            let _ = req.reply(&ack).await;
        }
        _ => {}
    }
    let answer = answer(inner, id, rx).await;
    let reply = match answer {
        Some(a) if a.status < 400 && a.body.starts_with("MSH") => {
            charset.encode(&a.body).into_owned()
        }
        Some(a) => hl7v2::build_ack(&msg, AckCode::AE, &ack_options(Some(first_line(&a.body)))),
        // Still queued: the agent has it and will deliver it.
        _ if enhanced == Some("true") => return,
        _ => hl7v2::build_ack(
            &msg,
            AckCode::AA,
            &ack_options(Some("queued at the agent for delivery".into())),
        ),
    };
    if let Err(e) = req.reply(&reply).await {
        tracing::warn!(channel, error = %e, "could not answer the device");
    }
}

fn first_line(s: &str) -> String {
    s.lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect()
}

/// Sends a channel's queued messages to the relay, oldest first, until the agent stops.
async fn worker(inner: Arc<Inner>, channel: String) {
    let notify = inner.notifier(&channel);
    let mut failures: u32 = 0;
    loop {
        if inner.stopping() {
            return;
        }
        let next = match inner.queue.next(&channel) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(channel, error = %e, "queue read failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let Some(m) = next else {
            // Woken by a new message, or a periodic look in case a wake-up was missed.
            let _ = tokio::time::timeout(Duration::from_secs(5), notify.notified()).await;
            continue;
        };
        if !inner.wait_live().await {
            return;
        }
        let _ = inner.queue.attempted(m.id);
        let token = match inner.client.token().await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(channel, error = %e, "cannot get a token to forward a message");
                backoff(&mut failures).await;
                continue;
            }
        };
        let request = AgentMessage::TransmitRequest(TransmitRequest {
            access_token: Some(token),
            channel: Some(channel.clone()),
            remote: m.remote.clone(),
            content_type: m.content_type.clone(),
            body: m.body.clone(),
            callback: Some(m.callback.clone()),
            return_ack: None,
            deadline_ms: None,
        });
        let Some(rx) = inner.request(&m.callback, &request).await else {
            backoff(&mut failures).await;
            continue;
        };
        let outcome = match tokio::time::timeout(ATTEMPT_TIMEOUT, rx).await {
            Ok(Ok(AgentMessage::TransmitResponse(r))) => {
                Some((false, r.status_code.unwrap_or(200), r.content_type, r.body))
            }
            Ok(Ok(AgentMessage::Error(e))) if e.body.starts_with("Invalid access token") => {
                inner.client.invalidate();
                None
            }
            // The relay refused it for good (unknown channel, empty body): record, move on.
            Ok(Ok(AgentMessage::Error(e))) => {
                Some((true, 400, CONTENT_TYPE_TEXT.to_owned(), e.body))
            }
            Ok(Ok(_)) | Ok(Err(_)) | Err(_) => None,
        };
        let Some((failed, status, content_type, body)) = outcome else {
            tracing::info!(
                channel,
                id = m.id,
                attempts = m.attempts + 1,
                "relay did not answer; will retry"
            );
            backoff(&mut failures).await;
            continue;
        };
        failures = 0;
        if let Err(e) = inner.queue.finish(m.id, failed, status, &body) {
            tracing::error!(channel, error = %e, "cannot record the relay's answer");
        }
        inner.emit(Event::InboundAnswered {
            channel: channel.clone(),
            id: m.id,
            status,
        });
        if let Some(tx) = Inner::lock(&inner.waiters).remove(&m.id) {
            let _ = tx.send(Answer {
                status,
                content_type,
                body,
            });
        }
    }
}

async fn backoff(failures: &mut u32) {
    *failures = failures.saturating_add(1);
    let ms = (250u64 << (*failures).min(7)).min(30_000);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}
