//! C-STORE on an open association: how each object goes out (as it is, or rewritten into a
//! syntax the SCP accepted), from a file or from memory.

use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncSeekExt, BufReader};

use super::{Association, Context, DATA_SET_PRESENT, StoreResult, WRITE_BATCH};
use crate::dimse::{self, Command, Status};
use crate::{Error, Object, Transcoder, uids};

/// How a data set goes out.
#[derive(Debug, Clone, Copy)]
enum Plan {
    /// Its bytes as stored; `pad`: one NUL after a deflate stream of odd length.
    AsIs { pad: bool },
    /// Rewritten element by element into this encoding.
    Rewrite(uids::Encoding),
}

/// Where a data set's bytes come from.
enum Source<'a> {
    File(&'a mut BufReader<tokio::fs::File>),
    Memory(&'a [u8]),
}

impl Source<'_> {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Source::File(f) => f.read(buf).await,
            Source::Memory(m) => {
                let n = buf.len().min(m.len());
                buf[..n].copy_from_slice(&m[..n]);
                *m = &m[n..];
                Ok(n)
            }
        }
    }
}

impl Association {
    /// How `obj` goes out: the context, its transfer syntax, and whether its bytes go as they
    /// are or rewritten. The file's own syntax when the SCP accepted it (rewritten in the same
    /// syntax only to pad odd values); else a syntax it converts to without loss, Explicit VR
    /// LE first, then Implicit VR LE. Compressed pixel data is never converted.
    fn plan(&self, obj: &Object) -> Result<(u8, String, Plan), Error> {
        let ts = obj.transfer_syntax.as_str();
        let syntax = uids::syntax(ts);
        let accepted: Vec<&Context> = self
            .contexts()
            .iter()
            .filter(|c| c.accepted() && c.abstract_syntax == obj.sop_class)
            .collect();
        if let Some(c) = accepted.iter().find(|c| c.transfer_syntax == ts) {
            if obj.odd_values == 0 {
                let pad = syntax.deflated && obj.data_length % 2 == 1;
                return Ok((c.id, ts.to_owned(), Plan::AsIs { pad }));
            }
            if !syntax.deflated {
                return Ok((c.id, ts.to_owned(), Plan::Rewrite(syntax.encoding)));
            }
        }
        if syntax.convertible() {
            for target in [uids::EXPLICIT_VR_LE, uids::IMPLICIT_VR_LE] {
                if let Some(c) = accepted.iter().find(|c| c.transfer_syntax == target) {
                    let enc = uids::syntax(target).encoding;
                    return Ok((c.id, target.to_owned(), Plan::Rewrite(enc)));
                }
            }
        }
        if accepted.is_empty() {
            return Err(self.no_context(&obj.sop_class, Some(ts)));
        }
        let offered: Vec<String> = accepted
            .iter()
            .map(|c| uids::transfer_syntax_name(&c.transfer_syntax))
            .collect();
        let why = if syntax.convertible() {
            "it converts only to Explicit or Implicit VR Little Endian"
        } else {
            "compressed pixel data is not converted"
        };
        Err(Error::NoContext(format!(
            "{}: the SCP does not accept the file's transfer syntax {}; it accepted only {} ({why})",
            obj.sop_class,
            uids::transfer_syntax_name(ts),
            offered.join(", ")
        )))
    }

    /// C-STORE of a file from disk, read as [`crate::inspect_file`] reads it (with or without a
    /// meta group). When no value needs padding and the SCP accepted the file's transfer
    /// syntax, the bytes after the meta group are streamed into PDVs without being parsed;
    /// otherwise they are rewritten on the way ([`crate::Transcoder`]). Memory stays bounded
    /// by one write batch either way. A file the association cannot carry gives
    /// [`Error::NoContext`] (or the reason it cannot be read) before anything is sent, and
    /// leaves the association usable.
    pub async fn store_file(&mut self, path: &Path) -> Result<StoreResult, Error> {
        self.usable()?;
        let obj = crate::inspect_file(path).await?;
        let (pc, ts, plan) = self.plan(&obj)?;
        let mut file = tokio::fs::File::open(path).await?;
        file.seek(std::io::SeekFrom::Start(obj.data_offset)).await?;
        // One trip to the blocking pool per batch, not per fragment.
        let mut file = BufReader::with_capacity(WRITE_BATCH, file);
        let id = self.store_command(pc, &obj)?;
        let sent = match plan {
            Plan::AsIs { pad } => self
                .send_data(pc, &[], Some((&mut file, obj.data_length)), pad)
                .await
                .map(|()| obj.data_length + u64::from(pad)),
            Plan::Rewrite(to) => {
                self.send_rewritten(pc, &obj, to, Source::File(&mut file))
                    .await
            }
        };
        self.finish_store(id, sent, obj, ts, plan).await
    }

    /// C-STORE of a file held in memory (as the agent receives them), as [`Association::store_file`].
    pub async fn store_bytes(&mut self, file: &[u8]) -> Result<StoreResult, Error> {
        self.usable()?;
        let obj = crate::inspect(file)?;
        let (pc, ts, plan) = self.plan(&obj)?;
        let data = &file[obj.data_offset as usize..];
        let id = self.store_command(pc, &obj)?;
        let sent = match plan {
            Plan::AsIs { pad } => self
                .send_data(pc, data, None, pad)
                .await
                .map(|()| data.len() as u64 + u64::from(pad)),
            Plan::Rewrite(to) => {
                self.send_rewritten(pc, &obj, to, Source::Memory(data))
                    .await
            }
        };
        self.finish_store(id, sent, obj, ts, plan).await
    }

    /// Rewrites the data set into `to` on the way out, in PDVs of the fragment size (even),
    /// the last one marked last.
    async fn send_rewritten(
        &mut self,
        pc: u8,
        obj: &Object,
        to: crate::uids::Encoding,
        mut source: Source<'_>,
    ) -> Result<u64, Error> {
        let mut t = Transcoder::new(
            uids::syntax(&obj.transfer_syntax),
            to,
            Some(obj.data_length),
        );
        let fragment = self.ul.max_fragment();
        let mut staged: Vec<u8> = Vec::with_capacity(WRITE_BATCH + fragment);
        let mut chunk = vec![0u8; 64 << 10];
        let mut left = obj.data_length;
        let mut sent = 0u64;
        let mut flushed = false;
        let result: Result<(), Error> = async {
            loop {
                let n = if left == 0 {
                    0
                } else {
                    let want = (left as usize).min(chunk.len());
                    source.read(&mut chunk[..want]).await?
                };
                if n == 0 {
                    if left > 0 {
                        return Err(Error::Io(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            format!("the file ended {left} bytes early"),
                        )));
                    }
                    t.finish(&mut staged)?;
                    break;
                }
                left -= n as u64;
                t.push(&chunk[..n], &mut staged)?;
                let mut at = 0;
                let whole = (staged.len().saturating_sub(1) / fragment) * fragment;
                if whole > 0 {
                    self.ul.send_data(pc, &staged[..whole], false)?;
                    at = whole;
                }
                staged.drain(..at);
                sent += at as u64;
                if self.ul.pending_transmit() >= WRITE_BATCH {
                    flushed = true;
                    self.flush(self.opts.dimse_timeout).await?;
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            if flushed {
                // Part of the data set is out: the association cannot carry on.
                self.abort().await;
            } else {
                self.ul.discard_unsent();
            }
            return Err(e);
        }
        self.ul.send_data(pc, &staged, true)?;
        sent += staged.len() as u64;
        self.flush(self.opts.dimse_timeout).await?;
        Ok(sent)
    }

    /// Queues the C-STORE-RQ command; returns its message id.
    fn store_command(&mut self, pc: u8, obj: &Object) -> Result<u16, Error> {
        let id = self.message_id();
        let cmd = Command {
            affected_sop_class: Some(obj.sop_class.clone()),
            command_field: dimse::C_STORE_RQ,
            message_id: Some(id),
            priority: Some(0),
            data_set_type: DATA_SET_PRESENT,
            affected_sop_instance: Some(obj.sop_instance.clone()),
            ..Command::default()
        };
        self.ul.send_command(pc, &cmd)?;
        Ok(id)
    }

    async fn finish_store(
        &mut self,
        id: u16,
        sent: Result<u64, Error>,
        obj: Object,
        ts: String,
        plan: Plan,
    ) -> Result<StoreResult, Error> {
        let bytes = sent?;
        let rsp = self.response(dimse::C_STORE_RSP, id, "C-STORE-RSP").await?;
        let transcoded = ts != obj.transfer_syntax;
        let mut notes = obj.notes;
        if transcoded {
            notes.push(format!(
                "converted from {} to {}",
                uids::transfer_syntax_name(&obj.transfer_syntax),
                uids::transfer_syntax_name(&ts)
            ));
        } else if matches!(plan, Plan::AsIs { pad: true }) {
            notes.push("deflated data padded with one NUL byte to even length".into());
        }
        Ok(StoreResult {
            sop_class: obj.sop_class,
            sop_instance: obj.sop_instance,
            status: Status(rsp.command.status.unwrap_or(0xFFFF)),
            error_comment: rsp.command.error_comment,
            transfer_syntax: ts,
            transcoded,
            bytes,
            notes,
            warnings: obj.warnings,
        })
    }
}
