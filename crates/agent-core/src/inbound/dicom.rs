//! `dicom://HOST:PORT[?aeTitle=TITLE]`: a DICOM SCP (C-ECHO, C-STORE of every Storage SOP
//! class) for modalities and PACS that send to the cloud, forwarded the way Medplum's agent
//! (`dicom.ts`) does, so a Medplum server takes it as well as the relay.
//!
//! As Medplum does, only the port of the address is used: the SCP listens on every interface
//! (`0.0.0.0:PORT`), whatever the host says. `?aeTitle=` (optional, an Outpost extension)
//! restricts the called AE title; without it any called AE title is accepted, as Medplum does.
//!
//! `dicom://HOST:PORT?tls=true&cert=FILE&key=FILE[&ca=FILE]` (spelled as an outbound DICOM push
//! spells it): the same over TLS 1.2/1.3, DICOM's TLS profiles (PS3.15 Annex B), configured as
//! an `mllps://` channel is (`device_tls::server_config`): the agent presents `cert`; with `ca`
//! every SCU must present a client certificate from those CAs and one without is refused at
//! the handshake (within 10 s). A certificate or key that cannot be read stops the channel at
//! start, naming the file. `cert`, `key` or `ca` without `tls=true`, or a `tls` other than
//! `true` or `false`, is refused too: a channel is never plain when TLS was meant.
//!
//! Each instance is streamed to a Part 10 file (synced) by [`dicom_net::scp`], moved into the
//! channel's directory under the agent's data directory, and committed to the durable queue;
//! only then does the C-STORE response say Success. When the file or the queue cannot be
//! written the answer is 0xA700 (out of resources), never Success, and the sender keeps the
//! instance.
//!
//! The forwarder then, for each queued instance: uploads the file as a `Binary`
//! (`application/dicom`), rewrites the queue row into the message Medplum's agent sends —
//! contentType `application/json`, body `{association: {callingAeTitle, calledAeTitle},
//! dataset: <DICOM JSON without Pixel Data>, binary: {reference: "Binary/<id>"}}`, remote the
//! calling AE title — and deletes the file. A retry of the transmit never uploads again: the
//! row already names its Binary.
//!
//! Bounds: 16 associations at once (more are rejected, transient), 256 KiB PDUs, 60 s of
//! silence (then A-ABORT), 512 MiB per instance (the relay's default `Binary` limit; more
//! aborts the association), 30 s for the commit (then 0xA700). An instance the relay refuses
//! for good (a 4xx other than 401, 408 and 429 to the upload) is recorded as failed with the
//! reason and the channel moves on (its file stays in `<data>/dicom/<channel>/queued/` for an
//! operator); any other upload failure is retried with backoff.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use dicom_net::Status;
use dicom_net::scp::{self, Received, ScpOptions};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::inbound::inbox::Inbox;
use crate::inbound::queue::{Queue, Queued};
use crate::inbound::{ChannelContext, Listener};
use crate::url::DeviceUrl;
use crate::{ChannelProblem, RelayClient};

/// The content type of a queue row whose instance is still a file on disk (never sent).
pub(crate) const CONTENT_TYPE_PENDING: &str = "application/x-outpost-dicom-file";
/// What the relay receives (Medplum's DICOM channel payload).
const CONTENT_TYPE_JSON: &str = "application/json";
/// The Binary's media type.
const CONTENT_TYPE_DICOM: &str = "application/dicom";
/// Largest instance accepted: the relay's default `Binary` limit, so that what the sender is
/// told Success for can be uploaded (a larger one aborts the association).
const MAX_INSTANCE: u64 = 512 << 20;
/// Success and Out of Resources (PS3.7 Annex C).
const SUCCESS: Status = Status(0x0000);
const OUT_OF_RESOURCES: Status = Status(0xA700);

/// A running DICOM channel: the SCP and the task that commits what it receives.
#[derive(Debug)]
pub(crate) struct DicomListener {
    local: std::net::SocketAddr,
    serve: tokio::task::JoinHandle<()>,
    commit: tokio::task::JoinHandle<()>,
}

impl DicomListener {
    pub(crate) fn local_addr(&self) -> std::net::SocketAddr {
        self.local
    }

    pub(crate) fn shutdown(self) {
        self.serve.abort();
        self.commit.abort();
    }
}

/// Starts the SCP on every interface, at the address's port.
pub(crate) async fn start(
    ctx: &ChannelContext,
    name: &str,
    url: &DeviceUrl,
) -> Result<Listener, ChannelProblem> {
    let addr = format!("0.0.0.0:{}", url.port());
    let listen_failed = |source| ChannelProblem::Listen {
        addr: addr.clone(),
        source,
    };
    let dir = ctx.config.data_dir.join("dicom").join(dir_name(name));
    let queued = dir.join("queued");
    std::fs::create_dir_all(&queued).map_err(listen_failed)?;
    // Partial files of associations cut off by a stop or a crash.
    if let Ok(entries) = std::fs::read_dir(dir.join("incoming")) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(".incoming-") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let tls = super::tls_config(url)?;
    let listener = TcpListener::bind(&addr).await.map_err(listen_failed)?;
    let local = listener.local_addr().map_err(listen_failed)?;
    let opts = ScpOptions {
        ae_title: url
            .get("aeTitle")
            .filter(|t| !t.is_empty())
            .map(str::to_owned),
        output_dir: dir.join("incoming"),
        max_object: MAX_INSTANCE,
        ..ScpOptions::default()
    };
    let (tx, rx) = mpsc::channel(opts.max_associations);
    let channel = name.to_owned();
    let serve = tokio::spawn(async move {
        let served = match tls {
            Some(config) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(config);
                scp::serve_over(listener, opts, tx, move |tcp| acceptor.accept(tcp)).await
            }
            None => scp::serve(listener, opts, tx).await,
        };
        if let Err(e) = served {
            tracing::error!(channel, error = %e, "DICOM channel stopped");
        }
    });
    let commit = tokio::spawn(commit_all(rx, ctx.inbox.clone(), name.to_owned(), queued));
    Ok(Listener::Dicom(DicomListener {
        local,
        serve,
        commit,
    }))
}

/// A channel name as a directory name: letters, digits, `-` and `_` kept, the rest `_`.
fn dir_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Commits every received instance and answers its C-STORE.
async fn commit_all(
    mut rx: mpsc::Receiver<Received>,
    inbox: Arc<Inbox>,
    channel: String,
    queued: PathBuf,
) {
    while let Some(received) = rx.recv().await {
        let status = match commit(&inbox, &channel, &queued, &received).await {
            Ok(id) => {
                tracing::info!(
                    channel,
                    id,
                    sop_instance = received.object.sop_instance,
                    calling = received.object.calling_ae,
                    bytes = received.object.bytes,
                    "DICOM instance queued"
                );
                SUCCESS
            }
            Err(e) => {
                tracing::error!(channel, sop_instance = received.object.sop_instance, error = %e,
                    "cannot queue a DICOM instance; the sender is told 0xA700");
                OUT_OF_RESOURCES
            }
        };
        received.answer(status);
    }
}

/// Moves the file into the channel's directory (a name of its own: the same SOP Instance may
/// come twice) and commits its queue row; the queue id.
async fn commit(
    inbox: &Inbox,
    channel: &str,
    queued: &Path,
    received: &Received,
) -> Result<i64, crate::Error> {
    let o = &received.object;
    let file = queued.join(format!("{}.dcm", uuid::Uuid::new_v4()));
    tokio::fs::rename(&o.path, &file).await?;
    // The rename must survive a crash as well as the row: sync the directory (POSIX; on
    // Windows a directory cannot be opened as a file, and NTFS journals the rename).
    #[cfg(unix)]
    tokio::fs::File::open(queued).await?.sync_all().await?;
    let body = json!({
        "file": file,
        "association": {"callingAeTitle": o.calling_ae, "calledAeTitle": o.called_ae},
        "dataset": o.dataset,
    });
    match inbox.commit(
        channel,
        &o.calling_ae,
        CONTENT_TYPE_PENDING,
        &body.to_string(),
    ) {
        Ok(receipt) => {
            let id = receipt.id;
            // The SCU hears Success once the row is committed; the relay's answer is recorded.
            inbox.forget(receipt);
            Ok(id)
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&file).await;
            Err(e)
        }
    }
}

/// Why a queued instance cannot be sent now.
pub(crate) enum NotReady {
    /// Try again later (the upload failed, the relay is away).
    Retry(String),
    /// It never can be (its file is gone): record the reason and move on.
    Lost(String),
}

/// The message to send for a queue row: the row itself, unless it is a DICOM instance still
/// on disk, which is then uploaded as a `Binary` and the row rewritten to name it.
pub(crate) async fn ready(
    client: &RelayClient,
    queue: &Queue,
    m: &Queued,
) -> Result<Queued, NotReady> {
    if m.content_type != CONTENT_TYPE_PENDING {
        return Ok(m.clone());
    }
    let pending: Value = serde_json::from_str(&m.body)
        .map_err(|e| NotReady::Lost(format!("queued DICOM row {} is not JSON: {e}", m.id)))?;
    let file = PathBuf::from(pending["file"].as_str().unwrap_or_default());
    if !file.is_file() {
        return Err(NotReady::Lost(format!(
            "the DICOM instance {} is gone from the agent's disk",
            file.display()
        )));
    }
    let id = client
        .upload_binary(&file, CONTENT_TYPE_DICOM)
        .await
        .map_err(|e| match e {
            // Refused for good (too large, forbidden): retrying would block the channel.
            crate::Error::Status { status, .. }
                if (400..500).contains(&status) && ![401, 408, 429].contains(&status) =>
            {
                NotReady::Lost(format!("the relay refused the instance's Binary: {e}"))
            }
            e => NotReady::Retry(format!("Binary upload: {e}")),
        })?;
    let body = json!({
        "association": pending["association"],
        "dataset": pending["dataset"],
        "binary": {"reference": format!("Binary/{id}")},
    })
    .to_string();
    match queue.rewrite(m.id, CONTENT_TYPE_JSON, &body) {
        // The row names its Binary now; the file is no longer needed.
        Ok(()) => {
            if let Err(e) = tokio::fs::remove_file(&file).await {
                tracing::warn!(file = %file.display(), error = %e, "cannot remove a forwarded DICOM file");
            }
        }
        // Sent all the same; after a restart the file is uploaded again (a second Binary).
        Err(e) => tracing::warn!(id = m.id, error = %e, "cannot record the uploaded Binary"),
    }
    Ok(Queued {
        content_type: CONTENT_TYPE_JSON.to_owned(),
        body,
        ..m.clone()
    })
}
