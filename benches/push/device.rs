//! The MLLP device of the four-process shape (`push_roundtrip --role device`): an `mllp` server
//! on one thread that answers every message with the ACK its MSH-15/16 ask for (AA), and counts.
//!
//! Prints `LISTENING host:port` once bound. On each `COUNT` line on stdin it prints
//! `COUNT <messages> <acks> <failed>`: messages received, ACKs handed to the connection, replies
//! that could not be written. It exits when stdin closes.

use std::io::BufRead;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mllp::{Request, Server, ServerOptions, acks_for};

#[derive(Default)]
struct Counts {
    messages: AtomicU64,
    acks: AtomicU64,
    failed: AtomicU64,
}

/// Runs the device until stdin closes.
pub fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    let server = rt.block_on(async move {
        Server::bind(
            "127.0.0.1:0",
            ServerOptions::default(),
            move |req: Request| {
                let c = c.clone();
                async move {
                    c.messages.fetch_add(1, Ordering::Relaxed);
                    let acks = match req.message() {
                        Ok(m) => acks_for(&m, false),
                        Err(_) => Vec::new(),
                    };
                    for ack in acks {
                        // Counted before the write: the caller may hold its answer before this
                        // task runs again.
                        c.acks.fetch_add(1, Ordering::Relaxed);
                        if req.reply(&ack).await.is_err() {
                            c.failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            },
        )
        .await
        .expect("device: bind")
    });
    println!("LISTENING {}", server.local_addr());
    // The runtime serves on this thread only while something blocks on it; stdin is read on
    // another thread.
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if line.trim() == "COUNT" {
                println!(
                    "COUNT {} {} {}",
                    counts.messages.load(Ordering::Relaxed),
                    counts.acks.load(Ordering::Relaxed),
                    counts.failed.load(Ordering::Relaxed)
                );
            }
        }
        let _ = done_tx.send(());
    });
    rt.block_on(async {
        let _ = done_rx.await;
    });
}
