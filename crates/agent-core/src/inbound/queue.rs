//! The durable inbound queue: messages from devices, committed to SQLite before the device is
//! acknowledged, sent to the relay in order per channel, kept until the relay answers.
//!
//! Each message gets its callback id when it is queued; a resend after a lost answer carries the
//! same id, and the relay answers a repeated id from its store instead of processing it twice.
//! WAL with `synchronous = NORMAL`: a committed message survives the agent being killed; the last
//! commits before a power cut may not.
//!
//! A message the relay keeps refusing (`agent:error`: Medplum's "Channel not found", a Bot
//! error) is moved to the dead letters after the configured number of errors
//! ([`Queue::fail`], [`Queue::dead_letter`]): state `dead`, with the last reason. Dead letters
//! are kept until they are sent again ([`Queue::retry_dead_letter`]); the channel moves on.
//!
//! At open the file is checked (`PRAGMA quick_check`); a damaged file is refused
//! ([`Error::QueueDamaged`], with the recovery step) rather than half used.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{OptionalExtension, params};

use crate::Error;

/// One queued message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// Sequence number (arrival order).
    pub id: i64,
    /// The agent channel it came in on.
    pub channel: String,
    /// The device's address.
    pub remote: String,
    /// Its content type.
    pub content_type: String,
    /// The message, as text.
    pub body: String,
    /// The callback id it is sent to the relay with.
    pub callback: String,
    /// Attempts to send it so far.
    pub attempts: i64,
}

/// A message moved aside after too many errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The message (`id` is what [`Queue::retry_dead_letter`] takes).
    pub message: Queued,
    /// Errors it got.
    pub failures: i64,
    /// The last error.
    pub reason: String,
    /// When the device sent it (RFC 3339).
    pub received_at: String,
    /// When it was moved aside (RFC 3339).
    pub dead_at: String,
}

/// The queue.
#[derive(Debug)]
pub struct Queue {
    db: Mutex<rusqlite::Connection>,
}

const SELECT: &str =
    "SELECT id, channel, remote, content_type, body, callback, attempts FROM queue";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Queued> {
    Ok(Queued {
        id: r.get(0)?,
        channel: r.get(1)?,
        remote: r.get(2)?,
        content_type: r.get(3)?,
        body: r.get(4)?,
        callback: r.get(5)?,
        attempts: r.get(6)?,
    })
}

impl Queue {
    /// Opens (creating) the queue file; `None` keeps it in memory (tests).
    ///
    /// # Errors
    ///
    /// [`Error::QueueDamaged`] when the file fails its integrity check (or is not a database);
    /// [`Error::Queue`] when it cannot be opened or created.
    pub fn open(path: Option<&Path>) -> Result<Queue, Error> {
        let conn = match path {
            Some(p) => rusqlite::Connection::open(p),
            None => rusqlite::Connection::open_in_memory(),
        }?;
        if let Some(p) = path {
            check(&conn, p)?;
        }
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             CREATE TABLE IF NOT EXISTS queue (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 channel TEXT NOT NULL,
                 remote TEXT NOT NULL,
                 content_type TEXT NOT NULL,
                 body TEXT NOT NULL,
                 callback TEXT NOT NULL UNIQUE,
                 received_at TEXT NOT NULL,
                 state TEXT NOT NULL DEFAULT 'queued',
                 attempts INTEGER NOT NULL DEFAULT 0,
                 status_code INTEGER,
                 response TEXT,
                 done_at TEXT
             );
             CREATE INDEX IF NOT EXISTS queue_pending ON queue (state, channel, id);",
        )?;
        // Columns added after the first release: a queue file written by an older agent gets
        // them (the error for one that has them already is the expected answer).
        for column in ["failures INTEGER NOT NULL DEFAULT 0", "reason TEXT"] {
            match conn.execute(&format!("ALTER TABLE queue ADD COLUMN {column}"), []) {
                Ok(_) => {}
                Err(rusqlite::Error::SqliteFailure(_, Some(m)))
                    if m.contains("duplicate column") => {}
                Err(e) => return Err(e.into()),
            }
        }
        // Answered messages are kept a week for inspection, then dropped; dead letters stay
        // until they are sent again.
        conn.execute(
            "DELETE FROM queue WHERE state IN ('done', 'failed') AND done_at < ?1",
            params![(chrono::Utc::now() - chrono::Duration::days(7)).to_rfc3339()],
        )?;
        Ok(Queue {
            db: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, rusqlite::Connection> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Commits a message; when this returns, it survives a crash.
    pub fn push(
        &self,
        agent_id: &str,
        channel: &str,
        remote: &str,
        content_type: &str,
        body: &str,
    ) -> Result<Queued, Error> {
        let callback = format!("Agent/{agent_id}-{}", uuid::Uuid::new_v4());
        let conn = self.conn();
        conn.execute(
            "INSERT INTO queue (channel, remote, content_type, body, callback, received_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                channel,
                remote,
                content_type,
                body,
                callback,
                chrono::Utc::now().to_rfc3339()
            ],
        )?;
        Ok(Queued {
            id: conn.last_insert_rowid(),
            channel: channel.to_owned(),
            remote: remote.to_owned(),
            content_type: content_type.to_owned(),
            body: body.to_owned(),
            callback,
            attempts: 0,
        })
    }

    /// The oldest unanswered message of a channel.
    pub fn next(&self, channel: &str) -> Result<Option<Queued>, Error> {
        self.conn()
            .query_row(
                &format!("{SELECT} WHERE state = 'queued' AND channel = ?1 ORDER BY id LIMIT 1"),
                params![channel],
                row,
            )
            .optional()
            .map_err(Error::from)
    }

    /// Replaces what a queued message will be sent as (a DICOM instance, once its Binary is
    /// uploaded); its callback and place in the queue stay.
    pub fn rewrite(&self, id: i64, content_type: &str, body: &str) -> Result<(), Error> {
        self.conn().execute(
            "UPDATE queue SET content_type = ?1, body = ?2 WHERE id = ?3",
            params![content_type, body, id],
        )?;
        Ok(())
    }

    /// Counts one more attempt.
    pub fn attempted(&self, id: i64) -> Result<(), Error> {
        self.conn().execute(
            "UPDATE queue SET attempts = attempts + 1 WHERE id = ?1",
            params![id],
        )?;
        Ok(())
    }

    /// Records the relay's answer (`state` `done`, or `failed` for a permanent refusal).
    pub fn finish(&self, id: i64, failed: bool, status: u16, response: &str) -> Result<(), Error> {
        self.conn()
            .execute(
                "UPDATE queue SET state = ?1, status_code = ?2, response = ?3, done_at = ?4 WHERE id = ?5",
                params![
                    if failed { "failed" } else { "done" },
                    status,
                    response,
                    chrono::Utc::now().to_rfc3339(),
                    id
                ],
            )?;
        Ok(())
    }

    /// Counts one error answer (`reason`) for message `id`; the errors so far.
    pub fn fail(&self, id: i64, reason: &str) -> Result<u32, Error> {
        let conn = self.conn();
        conn.execute(
            "UPDATE queue SET failures = failures + 1, reason = ?1 WHERE id = ?2",
            params![reason, id],
        )?;
        let n: i64 = conn.query_row(
            "SELECT failures FROM queue WHERE id = ?1",
            params![id],
            |r| r.get(0),
        )?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// Moves message `id` to the dead letters with `reason`; its channel moves on.
    pub fn dead_letter(&self, id: i64, reason: &str) -> Result<(), Error> {
        self.conn().execute(
            "UPDATE queue SET state = 'dead', reason = ?1, done_at = ?2 WHERE id = ?3",
            params![reason, chrono::Utc::now().to_rfc3339(), id],
        )?;
        Ok(())
    }

    /// The dead letters, oldest first.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, Error> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, channel, remote, content_type, body, callback, attempts, failures,
                    COALESCE(reason, ''), received_at, COALESCE(done_at, '')
             FROM queue WHERE state = 'dead' ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(DeadLetter {
                message: row(r)?,
                failures: r.get(7)?,
                reason: r.get(8)?,
                received_at: r.get(9)?,
                dead_at: r.get(10)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Puts dead letter `id` back in its channel's queue, with its errors forgotten and the
    /// same callback; `Ok(None)` when there is no such dead letter, else its channel. It goes
    /// before the channel's later messages (it came first).
    pub fn retry_dead_letter(&self, id: i64) -> Result<Option<String>, Error> {
        let conn = self.conn();
        let channel: Option<String> = conn
            .query_row(
                "SELECT channel FROM queue WHERE id = ?1 AND state = 'dead'",
                params![id],
                |r| r.get(0),
            )
            .optional()?;
        if channel.is_some() {
            conn.execute(
                "UPDATE queue SET state = 'queued', failures = 0, done_at = NULL WHERE id = ?1",
                params![id],
            )?;
        }
        Ok(channel)
    }

    /// Channels that have unanswered messages.
    pub fn channels_with_backlog(&self) -> Result<Vec<String>, Error> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT DISTINCT channel FROM queue WHERE state = 'queued'")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<Vec<String>, _>>()?)
    }

    /// Unanswered messages.
    pub fn depth(&self) -> Result<i64, Error> {
        self.conn()
            .query_row(
                "SELECT COUNT(*) FROM queue WHERE state = 'queued'",
                [],
                |r| r.get(0),
            )
            .map_err(Error::from)
    }
}

impl Queue {
    /// Unanswered messages per channel (channels with none are absent).
    pub fn depth_by_channel(&self) -> Result<std::collections::BTreeMap<String, i64>, Error> {
        self.count_by_channel("queued")
    }

    /// Dead letters per channel.
    ///
    /// # Errors
    ///
    /// [`Error::Queue`] when the file cannot be read.
    pub fn dead_by_channel(&self) -> Result<std::collections::BTreeMap<String, i64>, Error> {
        self.count_by_channel("dead")
    }

    fn count_by_channel(
        &self,
        state: &str,
    ) -> Result<std::collections::BTreeMap<String, i64>, Error> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT channel, COUNT(*) FROM queue WHERE state = ?1 GROUP BY channel")?;
        let rows = stmt.query_map([state], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// `PRAGMA quick_check` on the file: `Err` unless it says `ok`.
fn check(conn: &rusqlite::Connection, path: &Path) -> Result<(), Error> {
    let damaged = |detail: String| Error::QueueDamaged {
        path: path.to_owned(),
        detail,
    };
    let mut problems = Vec::new();
    let checked = conn.prepare("PRAGMA quick_check").and_then(|mut stmt| {
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        for row in rows.take(5) {
            problems.push(row?);
        }
        Ok(())
    });
    match checked {
        Ok(()) if problems == ["ok"] => Ok(()),
        Ok(()) => Err(damaged(problems.join("; "))),
        // Not a database at all, or one whose header cannot be read.
        Err(e @ rusqlite::Error::SqliteFailure(f, _))
            if matches!(
                f.code,
                rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt
            ) =>
        {
            Err(damaged(e.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_per_channel_and_survives_reopen() {
        let dir = std::env::temp_dir().join(format!("outpost-queue-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("q.sqlite");
        {
            let q = Queue::open(Some(&path)).unwrap();
            let a = q.push("ag", "c1", "r", "t", "first").unwrap();
            q.push("ag", "c2", "r", "t", "other").unwrap();
            q.push("ag", "c1", "r", "t", "second").unwrap();
            assert_eq!(q.next("c1").unwrap().unwrap().body, "first");
            q.attempted(a.id).unwrap();
            q.finish(a.id, false, 200, "ACK").unwrap();
            assert_eq!(q.next("c1").unwrap().unwrap().body, "second");
            assert!(a.callback.starts_with("Agent/ag-"));
        }
        let q = Queue::open(Some(&path)).unwrap();
        assert_eq!(q.depth().unwrap(), 2);
        let mut chans = q.channels_with_backlog().unwrap();
        chans.sort();
        assert_eq!(chans, ["c1", "c2"]);
        assert_eq!(q.next("c1").unwrap().unwrap().body, "second");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn dead_letters_step_aside_and_come_back() {
        let q = Queue::open(None).unwrap();
        let a = q.push("ag", "c1", "r", "t", "first").unwrap();
        q.push("ag", "c1", "r", "t", "second").unwrap();
        assert_eq!(q.fail(a.id, "Channel not found").unwrap(), 1);
        assert_eq!(q.fail(a.id, "Channel not found").unwrap(), 2);
        q.dead_letter(a.id, "Channel not found").unwrap();
        assert_eq!(q.next("c1").unwrap().unwrap().body, "second");
        let dead = q.dead_letters().unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(
            (dead[0].failures, dead[0].reason.as_str()),
            (2, "Channel not found")
        );
        assert_eq!(q.retry_dead_letter(a.id).unwrap().as_deref(), Some("c1"));
        assert_eq!(q.retry_dead_letter(a.id).unwrap(), None);
        let again = q.next("c1").unwrap().unwrap();
        assert_eq!((again.body.as_str(), again.callback), ("first", a.callback));
        assert!(q.dead_letters().unwrap().is_empty());
    }

    #[test]
    fn a_damaged_file_is_refused_with_the_recovery_step() {
        let dir = std::env::temp_dir().join(format!("outpost-queue-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("q.sqlite");
        {
            let q = Queue::open(Some(&path)).unwrap();
            for i in 0..200 {
                q.push("ag", "c1", "r", "t", &"x".repeat(500 + i)).unwrap();
            }
        }
        // Overwrite pages in the middle of the file (not the header): the rows cannot be read.
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid..mid + 8192].fill(0xA5);
        std::fs::write(&path, &bytes).unwrap();
        let e = Queue::open(Some(&path)).unwrap_err();
        assert!(matches!(e, Error::QueueDamaged { .. }), "{e}");
        assert!(e.to_string().contains("move the file aside"), "{e}");
        // Not a database at all.
        std::fs::write(&path, b"this is not sqlite at all, but long enough to have a header....................................................").unwrap();
        assert!(matches!(
            Queue::open(Some(&path)).unwrap_err(),
            Error::QueueDamaged { .. }
        ));
        let _ = std::fs::remove_dir_all(dir);
    }
}
