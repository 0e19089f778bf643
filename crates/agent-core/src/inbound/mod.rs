//! Inbound channels: listeners for devices that send to the cloud, one module per kind
//! ([`mllp`], [`tcp`], [`astm`], [`dicom`]), the durable [`queue`] every message is committed to before its
//! device hears anything, and a [`forward`]er per channel that delivers the queue to the relay
//! in order.
//!
//! [`Inbound`] keeps the running channels in step with the configuration: it stops removed or
//! changed channels and starts new ones, and keeps a forwarder for every channel that has (or
//! had) messages. All listeners share one connection [`Budget`] set below the process's
//! file-descriptor limit.

mod astm;
mod dicom;
mod forward;
pub(crate) mod inbox;
mod mllp;
pub mod queue;
mod tcp;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use byte_stream::Budget;
use hl7v2::Charset;
use tokio::sync::{Mutex, watch};

use crate::config::remote::ChannelSpec;
use crate::event::{Event, Events};
use crate::link::RelayLink;
use crate::url::DeviceUrl;
use crate::{AgentConfig, ChannelProblem, RelayClient};
pub(crate) use forward::Forwarder;
use inbox::Inbox;

/// What every channel kind needs.
#[derive(Debug, Clone)]
pub(crate) struct ChannelContext {
    pub(crate) inbox: Arc<Inbox>,
    pub(crate) config: Arc<AgentConfig>,
    pub(crate) budget: Budget,
}

/// A channel's listener.
#[derive(Debug)]
pub(crate) enum Listener {
    Mllp(::mllp::Server),
    Stream(byte_stream::Server),
    Accept(byte_stream::Listener),
    Dicom(dicom::DicomListener),
}

impl Listener {
    async fn shutdown(self) {
        let drain = Duration::from_secs(2);
        match self {
            Listener::Mllp(s) => s.shutdown(drain).await,
            Listener::Stream(s) => s.shutdown(drain).await,
            Listener::Accept(l) => l.shutdown(drain).await,
            Listener::Dicom(l) => l.shutdown(),
        }
    }

    fn local_addr(&self) -> std::net::SocketAddr {
        match self {
            Listener::Mllp(s) => s.local_addr(),
            Listener::Stream(s) => s.local_addr(),
            Listener::Accept(l) => l.local_addr(),
            Listener::Dicom(l) => l.local_addr(),
        }
    }
}

/// `?encoding=` of a channel, or the kind's default.
fn charset(url: &DeviceUrl, default: Charset) -> Result<Charset, ChannelProblem> {
    match url.get("encoding") {
        Some(label) => Charset::from_label(label).map_err(ChannelProblem::Encoding),
        None => Ok(default),
    }
}

/// The TLS configuration of a channel that listens over TLS (`mllps://`, `dicom://...?tls=true`),
/// `None` for one that does not.
fn tls_config(url: &DeviceUrl) -> Result<Option<Arc<rustls::ServerConfig>>, ChannelProblem> {
    match agent_protocol::channel::listener_tls(&url.scheme, |k| url.get(k)) {
        Ok(true) => crate::outbound::device_tls::server_config(url)
            .map(Some)
            .map_err(ChannelProblem::Tls),
        Ok(false) => Ok(None),
        Err(e) => Err(ChannelProblem::Tls(e)),
    }
}

/// What would stop the channel at `address` from starting, short of binding its port: the
/// address, the scheme, its encoding and delimiters, and its TLS settings with the
/// certificate files read (the same functions the channel's start calls).
///
/// # Errors
///
/// The first [`ChannelProblem`] found.
pub(crate) fn check_settings(address: &str) -> Result<(), ChannelProblem> {
    let url = DeviceUrl::parse(address)?;
    match url.scheme.as_str() {
        "mllp" | "mllps" => charset(&url, Charset::Utf8).map(drop),
        "astm" => charset(&url, Charset::Latin1).map(drop),
        "tcp" => tcp::delimiters(&url).map(drop),
        "dicom" => Ok(()),
        other => Err(ChannelProblem::Scheme(other.to_owned())),
    }?;
    tls_config(&url).map(drop)
}

#[derive(Debug, Default)]
struct Running {
    channels: HashMap<String, (String, Listener)>,
    forwarders: HashMap<String, tokio::task::JoinHandle<()>>,
}

/// The running channels and their forwarders.
#[derive(Debug)]
pub(crate) struct Inbound {
    ctx: ChannelContext,
    forwarder: Forwarder,
    events: Events,
    running: Mutex<Running>,
}

impl Inbound {
    pub(crate) fn new(
        ctx: ChannelContext,
        relay: RelayLink,
        client: RelayClient,
        events: Events,
        stop: watch::Receiver<bool>,
    ) -> Inbound {
        let forwarder = Forwarder {
            inbox: ctx.inbox.clone(),
            relay,
            client,
            events: events.clone(),
            stop,
            answer_wait: ctx.config.inbound_answer_wait,
            max_attempts: ctx.config.inbound_max_attempts,
        };
        Inbound {
            ctx,
            forwarder,
            events,
            running: Mutex::default(),
        }
    }

    /// The inbox channels commit to.
    pub(crate) fn inbox(&self) -> &Arc<Inbox> {
        &self.ctx.inbox
    }

    /// The channels listening now, by name, with their bound addresses.
    pub(crate) async fn listening(&self) -> Vec<(String, std::net::SocketAddr)> {
        let running = self.running.lock().await;
        let mut out: Vec<_> = running
            .channels
            .iter()
            .map(|(name, (_, listener))| (name.clone(), listener.local_addr()))
            .collect();
        out.sort();
        out
    }

    /// Makes the running channels match `wanted`: stops removed or changed ones, starts new
    /// ones (a channel that cannot start is reported, the others run).
    pub(crate) async fn apply(&self, wanted: &[ChannelSpec]) {
        let mut running = self.running.lock().await;
        let keep: HashMap<&str, &str> = wanted
            .iter()
            .map(|c| (c.name.as_str(), c.address.as_str()))
            .collect();
        let stale: Vec<String> = running
            .channels
            .iter()
            .filter(|(n, (address, _))| keep.get(n.as_str()) != Some(&address.as_str()))
            .map(|(n, _)| n.clone())
            .collect();
        for name in stale {
            if let Some((_, listener)) = running.channels.remove(&name) {
                listener.shutdown().await;
                tracing::info!(channel = name, "channel stopped");
            }
        }
        for spec in wanted {
            if !running.channels.contains_key(&spec.name) {
                match self.listen(&spec.name, &spec.address).await {
                    Ok(listener) => {
                        let bound = listener.local_addr();
                        tracing::info!(
                            channel = spec.name,
                            address = spec.address,
                            %bound,
                            "channel listening"
                        );
                        self.events.emit(Event::ChannelStarted {
                            name: spec.name.clone(),
                            address: spec.address.clone(),
                            bound,
                        });
                        running
                            .channels
                            .insert(spec.name.clone(), (spec.address.clone(), listener));
                    }
                    Err(problem) => {
                        let error = crate::ConfigError::Channel {
                            channel: spec.name.clone(),
                            problem,
                        };
                        tracing::error!(channel = spec.name, address = spec.address, error = %error, "channel could not start");
                        self.events.emit(Event::ChannelFailed {
                            name: spec.name.clone(),
                            error: error.to_string(),
                        });
                    }
                }
            }
            self.ensure_forwarder(&mut running, &spec.name);
        }
    }

    /// Forwarders for channels with messages left by a previous run.
    pub(crate) async fn resume(&self) -> Result<(), crate::Error> {
        let mut running = self.running.lock().await;
        for channel in self.ctx.inbox.queue().channels_with_backlog()? {
            self.ensure_forwarder(&mut running, &channel);
        }
        Ok(())
    }

    fn ensure_forwarder(&self, running: &mut Running, channel: &str) {
        if running
            .forwarders
            .get(channel)
            .is_some_and(|f| !f.is_finished())
        {
            return;
        }
        let task = tokio::spawn(self.forwarder.clone().run(channel.to_owned()));
        running.forwarders.insert(channel.to_owned(), task);
    }

    /// Sends dead letter `id` again: back in its channel's queue, its forwarder woken. `false`
    /// when there is no such dead letter.
    pub(crate) async fn retry_dead_letter(&self, id: i64) -> Result<bool, crate::Error> {
        let Some(channel) = self.ctx.inbox.queue().retry_dead_letter(id)? else {
            return Ok(false);
        };
        tracing::info!(channel, id, "dead letter queued again");
        let mut running = self.running.lock().await;
        self.ensure_forwarder(&mut running, &channel);
        self.ctx.inbox.waker(&channel).notify_one();
        Ok(true)
    }

    /// Stops every channel and forwarder (the queue keeps what they received).
    pub(crate) async fn stop_all(&self) {
        let mut running = self.running.lock().await;
        for (_, (_, listener)) in running.channels.drain() {
            listener.shutdown().await;
        }
        for (_, f) in running.forwarders.drain() {
            f.abort();
        }
    }

    /// Starts a channel. Medplum listens on every interface and uses only the port of the
    /// address (`packages/agent/src/hl7.ts`, `channel.ts`), so Endpoints written for it may
    /// name a host that is not this machine's. Here an IP address of this machine is honoured
    /// (`127.0.0.1` keeps a channel on loopback); a host name, or an address this machine does
    /// not have, listens on every interface at that port, as Medplum does, and says so in the
    /// log.
    async fn listen(&self, name: &str, address: &str) -> Result<Listener, ChannelProblem> {
        let url = DeviceUrl::parse(address)?;
        let host = url.addr.rsplit_once(':').map_or("", |(h, _)| h);
        let literal = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok();
        // The same address with the host replaced by every interface.
        let every = address.replacen(&url.addr, &format!("0.0.0.0:{}", url.port()), 1);
        if !literal {
            tracing::info!(
                channel = name,
                address,
                "the address names a host, not an IP address: listening on every interface at its port, as Medplum does"
            );
            return self.start(name, &every).await;
        }
        match self.start(name, address).await {
            Err(ChannelProblem::Listen { source, .. })
                if source.kind() == std::io::ErrorKind::AddrNotAvailable =>
            {
                tracing::warn!(
                    channel = name,
                    address,
                    "this machine does not have that address: listening on every interface at its port, as Medplum does"
                );
                self.start(name, &every).await
            }
            other => other,
        }
    }

    async fn start(&self, name: &str, address: &str) -> Result<Listener, ChannelProblem> {
        let url = DeviceUrl::parse(address)?;
        match url.scheme.as_str() {
            "mllp" | "mllps" => mllp::start(&self.ctx, name, &url).await,
            "astm" => astm::start(&self.ctx, name, &url).await,
            "tcp" => tcp::start(&self.ctx, name, &url).await,
            "dicom" => dicom::start(&self.ctx, name, &url).await,
            other => Err(ChannelProblem::Scheme(other.to_owned())),
        }
    }
}
