//! The durable inbound queue: messages from devices, committed to SQLite before the device is
//! acknowledged, sent to the relay in order per channel, kept until the relay answers.
//!
//! Each message gets its callback id when it is queued; a resend after a lost answer carries the
//! same id, and the relay answers a repeated id from its store instead of processing it twice.
//! WAL with `synchronous = NORMAL`: a committed message survives the agent being killed; the last
//! commits before a power cut may not.

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

/// The queue.
#[derive(Debug)]
pub struct Queue {
    db: Mutex<rusqlite::Connection>,
}

fn db(e: rusqlite::Error) -> Error {
    Error::Queue(e.to_string())
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
    pub fn open(path: Option<&Path>) -> Result<Queue, Error> {
        let conn = match path {
            Some(p) => rusqlite::Connection::open(p),
            None => rusqlite::Connection::open_in_memory(),
        }
        .map_err(db)?;
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
        )
        .map_err(db)?;
        // Answered messages are kept a week for inspection, then dropped.
        conn.execute(
            "DELETE FROM queue WHERE state != 'queued' AND done_at < ?1",
            params![(chrono::Utc::now() - chrono::Duration::days(7)).to_rfc3339()],
        )
        .map_err(db)?;
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
        )
        .map_err(db)?;
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
            .map_err(db)
    }

    /// Counts one more attempt.
    pub fn attempted(&self, id: i64) -> Result<(), Error> {
        self.conn()
            .execute(
                "UPDATE queue SET attempts = attempts + 1 WHERE id = ?1",
                params![id],
            )
            .map_err(db)?;
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
            )
            .map_err(db)?;
        Ok(())
    }

    /// Channels that have unanswered messages.
    pub fn channels_with_backlog(&self) -> Result<Vec<String>, Error> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT DISTINCT channel FROM queue WHERE state = 'queued'")
            .map_err(db)?;
        let rows = stmt.query_map([], |r| r.get(0)).map_err(db)?;
        rows.collect::<Result<Vec<String>, _>>().map_err(db)
    }

    /// Unanswered messages.
    pub fn depth(&self) -> Result<i64, Error> {
        self.conn()
            .query_row(
                "SELECT COUNT(*) FROM queue WHERE state = 'queued'",
                [],
                |r| r.get(0),
            )
            .map_err(db)
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
}
