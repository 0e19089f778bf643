//! An MLLP device that acknowledges what it gets.

use std::sync::{Arc, Mutex};

/// An MLLP device on `addr` (`127.0.0.1:0` for any free port; `local_addr()` says which) that
/// records each message's control id (MSH-10) in `seen` and answers with the
/// acknowledgements the message asks for (AA).
pub async fn ack_device(addr: &str, seen: Arc<Mutex<Vec<String>>>) -> mllp::Server {
    mllp::Server::bind(
        addr,
        mllp::ServerOptions::default(),
        move |req: mllp::Request| {
            let seen = seen.clone();
            async move {
                let msg = req.message().unwrap();
                seen.lock()
                    .unwrap()
                    .push(msg.control_id().text().into_owned());
                for ack in mllp::acks_for(&msg, false) {
                    let _ = req.reply(&ack).await;
                }
            }
        },
    )
    .await
    .unwrap()
}
