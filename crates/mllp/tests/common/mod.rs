//! An MLLP receiver that keeps what it gets, for the mllp tests and, through `#[path]`, the
//! CLI's HL7 case tests.

use std::sync::{Arc, Mutex};

use mllp::{Request, Server, ServerOptions, acks_for};

/// What a capturing receiver got: each message's bytes as they arrived.
pub type Seen = Arc<Mutex<Vec<Vec<u8>>>>;

/// An MLLP receiver on 127.0.0.1:0 that keeps every message's bytes as they arrived and
/// acknowledges it (AA).
pub async fn capturing_receiver() -> (Server, Seen) {
    let seen: Seen = Arc::default();
    let s2 = seen.clone();
    let server = Server::bind(
        "127.0.0.1:0",
        ServerOptions::default(),
        move |req: Request| {
            let seen = s2.clone();
            async move {
                seen.lock().unwrap().push(req.bytes().to_vec());
                for ack in acks_for(&req.message().unwrap(), false) {
                    req.reply(&ack).await.unwrap();
                }
            }
        },
    )
    .await
    .unwrap();
    (server, seen)
}
