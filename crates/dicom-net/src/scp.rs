//! The DICOM SCP over TCP (tokio): a thin driver of the sans-IO [`Acceptor`]. One task per
//! association under a bound on their number; each received object is streamed to a Part 10
//! file (meta group added) as its fragments arrive, and handed to the application through a
//! channel *before* the C-STORE is answered: the application replies with the status (Success
//! once it has committed the object, 0xA700 when it cannot), so a durable queue can come first.
//!
//! Limits (all in [`ScpOptions`]): the maximum PDU this side receives (advertised and
//! enforced), the number of associations at once (more are rejected with A-ASSOCIATE-RJ,
//! transient, "local limit exceeded"), the idle time between two reads (then A-ABORT), the
//! largest data set of one C-STORE (then A-ABORT), and how long the application may take to
//! answer (then 0xA700).
//!
//! [`serve_over`] runs the same over a stream made from each accepted connection (a TLS
//! handshake for DICOM's TLS profiles, PS3.15 Annex B), within [`ScpOptions::handshake_timeout`]:
//! this crate does no TLS itself.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::acceptor::{Acceptor, AcceptorConfig, ScpEvent};
use crate::dataset::DataSetStream;
use crate::dimse::Status;
use crate::part10::FileMeta;
use crate::pdu::{self, Pdu};
use crate::{Error, uids};

/// Values longer than this are left out of the DICOM JSON of a received object (as Pixel Data
/// always is): 64 KiB.
pub const MAX_JSON_VALUE: u32 = 64 << 10;

/// How the SCP runs.
#[derive(Debug, Clone)]
pub struct ScpOptions {
    /// This SCP's AE title; when set, associations calling another are rejected.
    pub ae_title: Option<String>,
    /// Where received objects are written, as `<SOP Instance UID>.dcm`; a further copy of an
    /// instance whose file is there already (sent twice, or at once on two associations) as
    /// `<UID>.1.dcm`, `<UID>.2.dcm`, …: nothing answered Success is overwritten.
    pub output_dir: PathBuf,
    /// The largest P-DATA-TF received (default 256 KiB).
    pub max_pdu: u32,
    /// Associations at once (default 16).
    pub max_associations: usize,
    /// Longest silence from an SCU before the association is aborted (default 60 s).
    pub idle_timeout: Duration,
    /// Largest data set of one C-STORE (default 4 GiB).
    pub max_object: u64,
    /// How long the application may take to answer a stored object (default 30 s), after
    /// which the SCU hears 0xA700.
    pub answer_timeout: Duration,
    /// How long [`serve_over`]'s stream may take to open (a TLS handshake) before the
    /// connection is closed (default 10 s).
    pub handshake_timeout: Duration,
}

impl Default for ScpOptions {
    fn default() -> Self {
        ScpOptions {
            ae_title: None,
            output_dir: PathBuf::from("."),
            max_pdu: 256 << 10,
            max_associations: 16,
            idle_timeout: Duration::from_secs(60),
            max_object: 4 << 30,
            answer_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// An object received and written to disk, waiting for the application's answer: read
/// [`Received::object`], commit it, then [`Received::answer`].
#[derive(Debug)]
pub struct Received {
    /// What arrived.
    pub object: ReceivedObject,
    reply: oneshot::Sender<Status>,
}

/// What arrived in one C-STORE.
#[derive(Debug, Clone)]
pub struct ReceivedObject {
    /// The Part 10 file written.
    pub path: PathBuf,
    /// Affected SOP Class UID.
    pub sop_class: String,
    /// Affected SOP Instance UID.
    pub sop_instance: String,
    /// The data set's transfer syntax.
    pub transfer_syntax: String,
    /// The SCU's AE title.
    pub calling_ae: String,
    /// The AE title it called.
    pub called_ae: String,
    /// Data set bytes received.
    pub bytes: u64,
    /// The data set as DICOM JSON (PS3.18 §F.2) without Pixel Data or values over
    /// [`MAX_JSON_VALUE`]; `Null` if the data set could not be read.
    pub dataset: serde_json::Value,
}

impl Received {
    /// Answers the SCU (Success once the object is kept, 0xA700 when it cannot be) and
    /// returns what arrived.
    pub fn answer(self, status: Status) -> ReceivedObject {
        let _ = self.reply.send(status);
        self.object
    }
}

/// Serves `listener` until it fails; each stored object comes out of `objects`. Dropping the
/// returned future stops the server and aborts its associations (a partial file of an
/// aborted association is left as `.incoming-*` in the output directory).
///
/// # Errors
/// [`Error::Io`] when the listener fails or the output directory cannot be created.
pub async fn serve(
    listener: TcpListener,
    opts: ScpOptions,
    objects: mpsc::Sender<Received>,
) -> Result<(), Error> {
    serve_over(listener, opts, objects, |tcp| std::future::ready(Ok(tcp))).await
}

/// [`serve`] over the stream `open` makes of each accepted connection (for example a TLS
/// server handshake), run in the association's own task within
/// [`ScpOptions::handshake_timeout`]; a connection it cannot open is closed and logged, naming
/// the problem, and nothing is received from it. A connection over the association limit is
/// opened too, so that its A-ASSOCIATE-RJ reaches the SCU over the same stream.
///
/// # Errors
/// As [`serve`].
pub async fn serve_over<O, F, S>(
    listener: TcpListener,
    opts: ScpOptions,
    objects: mpsc::Sender<Received>,
    open: O,
) -> Result<(), Error>
where
    O: Fn(TcpStream) -> F + Send + Sync + 'static,
    F: Future<Output = std::io::Result<S>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::fs::create_dir_all(&opts.output_dir).await?;
    let opts = Arc::new(opts);
    let open = Arc::new(open);
    let slots = Arc::new(Semaphore::new(opts.max_associations));
    // Associations are owned here: when this future is dropped (the server stopped), every
    // association it started is aborted with it.
    let mut associations = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            Some(_) = associations.join_next(), if !associations.is_empty() => continue,
        };
        let (stream, peer) = accepted?;
        let _ = stream.set_nodelay(true);
        let opening = tokio::time::timeout(opts.handshake_timeout, open(stream));
        let within = opts.handshake_timeout;
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "association refused: limit reached");
            tokio::spawn(async move {
                let Some(mut stream) = opened(opening.await, peer, within) else {
                    return;
                };
                let mut rj = Vec::new();
                pdu::encode(
                    &Pdu::AssociateRj {
                        result: 2,
                        source: 3,
                        reason: 2,
                    },
                    &mut rj,
                );
                let mut head = [0u8; 1024];
                let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut head)).await;
                let _ = stream.write_all(&rj).await;
                let _ = stream.shutdown().await;
            });
            continue;
        };
        let (opts, objects) = (opts.clone(), objects.clone());
        associations.spawn(async move {
            if let Some(stream) = opened(opening.await, peer, within)
                && let Err(e) = association(stream, &opts, &objects).await
            {
                tracing::warn!(%peer, "association ended: {e}");
            }
            drop(permit);
        });
    }
}

/// The stream [`serve_over`]'s `open` made, or `None` (logged) when it failed or took too long.
fn opened<S>(
    result: Result<std::io::Result<S>, tokio::time::error::Elapsed>,
    peer: SocketAddr,
    within: Duration,
) -> Option<S> {
    match result {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::warn!(%peer, error = %e, "connection closed before the association: handshake failed");
            None
        }
        Err(_) => {
            tracing::warn!(%peer, "connection closed before the association: handshake not completed within {} s", within.as_secs());
            None
        }
    }
}

/// One object being received.
struct Incoming {
    file: tokio::fs::File,
    part: PathBuf,
    sop_class: String,
    sop_instance: String,
    transfer_syntax: String,
    bytes: u64,
    json: Option<DataSetStream>,
    failed: Option<String>,
}

static NEXT: AtomicU64 = AtomicU64::new(0);

async fn association<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    opts: &ScpOptions,
    objects: &mpsc::Sender<Received>,
) -> Result<(), Error> {
    let mut acceptor = Acceptor::new(AcceptorConfig {
        ae_title: opts.ae_title.clone(),
        max_pdu: opts.max_pdu,
        max_object: opts.max_object,
    });
    let mut buf = vec![0u8; 64 << 10];
    let (mut calling_ae, mut called_ae) = (String::new(), String::new());
    let mut incoming: Option<Incoming> = None;
    loop {
        while let Some(event) = acceptor.poll_event() {
            match event {
                ScpEvent::Associated {
                    calling_ae: a,
                    called_ae: b,
                } => {
                    tracing::info!(calling = %a, called = %b, "association accepted");
                    (calling_ae, called_ae) = (a, b);
                }
                ScpEvent::StoreBegin {
                    sop_class,
                    sop_instance,
                    transfer_syntax,
                } => {
                    incoming = Some(
                        begin(opts, &calling_ae, sop_class, sop_instance, transfer_syntax).await?,
                    );
                }
                ScpEvent::StoreData { data, last } => {
                    let Some(inc) = incoming.as_mut() else {
                        continue;
                    };
                    inc.bytes += data.len() as u64;
                    if inc.failed.is_none()
                        && let Err(e) = inc.file.write_all(&data).await
                    {
                        inc.failed = Some(format!("writing {}: {e}", inc.part.display()));
                    }
                    if let Some(j) = inc.json.as_mut()
                        && j.push(&data).is_err()
                    {
                        inc.json = None;
                    }
                    if last && let Some(inc) = incoming.take() {
                        let status = finish(inc, opts, &calling_ae, &called_ae, objects).await;
                        acceptor.store_response(status)?;
                    }
                }
                ScpEvent::Echo => tracing::debug!("C-ECHO answered"),
                ScpEvent::Rejected(why) => tracing::info!("association rejected: {why}"),
                ScpEvent::Released => tracing::debug!("association released"),
                ScpEvent::Aborted(why) => tracing::info!("association aborted: {why}"),
            }
        }
        if let Some(out) = acceptor.poll_transmit() {
            stream.write_all(&out).await?;
        }
        if acceptor.is_closed() {
            if let Some(inc) = incoming.take() {
                let _ = tokio::fs::remove_file(&inc.part).await;
            }
            let _ = stream.shutdown().await;
            return Ok(());
        }
        let n = match tokio::time::timeout(opts.idle_timeout, stream.read(&mut buf)).await {
            Ok(r) => r?,
            Err(_) => {
                acceptor.abort(
                    format!("nothing from the SCU for {} s", opts.idle_timeout.as_secs()),
                    0,
                );
                continue;
            }
        };
        if n == 0 {
            if let Some(inc) = incoming.take() {
                let _ = tokio::fs::remove_file(&inc.part).await;
            }
            return Err(Error::Closed);
        }
        acceptor.handle_bytes(&buf[..n]);
    }
}

/// Gives a received object its final name, `<SOP Instance UID>.dcm`, or `<UID>.<n>.dcm` when
/// that name is taken: the same instance may arrive twice, at once on two associations or again
/// later, and a copy already answered Success must never be overwritten. A hard link claims the
/// name atomically (it fails when the name exists); where the file system has no hard links the
/// object is renamed as it is.
async fn settle(part: &Path, dir: &Path, uid: &str) -> std::io::Result<PathBuf> {
    for n in 0..MAX_COPIES {
        let name = if n == 0 {
            format!("{uid}.dcm")
        } else {
            format!("{uid}.{n}.dcm")
        };
        let path = dir.join(name);
        match tokio::fs::hard_link(part, &path).await {
            Ok(()) => {
                tokio::fs::remove_file(part).await?;
                return Ok(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(_) if n == 0 => {
                // No hard links here (some network and FAT file systems).
                tokio::fs::rename(part, &path).await?;
                return Ok(path);
            }
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other(format!(
        "{MAX_COPIES} copies of {uid} already in the directory"
    )))
}

/// Copies of one SOP Instance kept side by side in the output directory, at most.
const MAX_COPIES: usize = 1000;

async fn begin(
    opts: &ScpOptions,
    calling_ae: &str,
    sop_class: String,
    sop_instance: String,
    transfer_syntax: String,
) -> Result<Incoming, Error> {
    let part = opts.output_dir.join(format!(
        ".incoming-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let mut file = tokio::fs::File::create(&part).await?;
    let mut meta = Vec::new();
    FileMeta {
        sop_class: sop_class.clone(),
        sop_instance: sop_instance.clone(),
        transfer_syntax: transfer_syntax.clone(),
    }
    .encode(Some(calling_ae).filter(|a| !a.is_empty()), &mut meta);
    let failed = file.write_all(&meta).await.err().map(|e| e.to_string());
    let syntax = uids::syntax(&transfer_syntax);
    Ok(Incoming {
        file,
        part,
        sop_class,
        sop_instance,
        transfer_syntax,
        bytes: 0,
        json: Some(DataSetStream::new(syntax, MAX_JSON_VALUE)),
        failed,
    })
}

/// Makes the file durable and named, hands it to the application, and returns its answer
/// (0xA700 when the file could not be written or no answer came in time).
async fn finish(
    mut inc: Incoming,
    opts: &ScpOptions,
    calling_ae: &str,
    called_ae: &str,
    objects: &mpsc::Sender<Received>,
) -> Status {
    const OUT_OF_RESOURCES: Status = Status(0xA700);
    let durable = async {
        inc.file.flush().await?;
        inc.file.sync_all().await
    };
    if inc.failed.is_none()
        && let Err(e) = durable.await
    {
        inc.failed = Some(format!("syncing {}: {e}", inc.part.display()));
    }
    let safe: String = inc
        .sop_instance
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let mut path = opts.output_dir.join(format!("{safe}.dcm"));
    if inc.failed.is_none() {
        match settle(&inc.part, &opts.output_dir, &safe).await {
            Ok(p) => path = p,
            Err(e) => inc.failed = Some(format!("naming {}: {e}", path.display())),
        }
    }
    if let Some(why) = inc.failed {
        tracing::error!("{} not stored: {why}", inc.sop_instance);
        let _ = tokio::fs::remove_file(&inc.part).await;
        return OUT_OF_RESOURCES;
    }
    let dataset = inc
        .json
        .and_then(|j| j.finish().ok())
        .map_or(serde_json::Value::Null, |ds| crate::to_json(&ds));
    let (reply, answer) = oneshot::channel();
    let object = ReceivedObject {
        path,
        sop_class: inc.sop_class,
        sop_instance: inc.sop_instance,
        transfer_syntax: inc.transfer_syntax,
        calling_ae: calling_ae.to_owned(),
        called_ae: called_ae.to_owned(),
        bytes: inc.bytes,
        dataset,
    };
    if objects.send(Received { object, reply }).await.is_err() {
        return OUT_OF_RESOURCES;
    }
    match tokio::time::timeout(opts.answer_timeout, answer).await {
        Ok(Ok(status)) => status,
        _ => OUT_OF_RESOURCES,
    }
}
