//! An MLLP listener: print each message's type and patient, acknowledge it.
//!
//! `cargo run -p outpost-examples --example mllp_listener [PORT]`

use mllp::{Request, Server, ServerOptions, acks_for};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port = std::env::args().nth(1).unwrap_or_else(|| "2575".into());
    let server = Server::bind(
        &format!("0.0.0.0:{port}"),
        ServerOptions::default(),
        |req: Request| async move {
            let Ok(msg) = req.message() else { return };
            let get = |path| {
                msg.get(path)
                    .map(|v| v.text().into_owned())
                    .unwrap_or_default()
            };
            println!(
                "{} from {}: {} {}, patient {}",
                get("MSH-10"),
                req.peer(),
                get("MSH-9-1"),
                get("MSH-9-2"),
                get("PID-5")
            );
            for ack in acks_for(&msg, false) {
                let _ = req.reply(&ack).await;
            }
        },
    )
    .await?;
    println!("listening on {}", server.local_addr());
    tokio::signal::ctrl_c().await?;
    server.shutdown(std::time::Duration::from_secs(5)).await;
    Ok(())
}
