//! An MLLP sender: send the example ADT^A01 through a pool and print the acknowledgement.
//!
//! `cargo run -p outpost-examples --example mllp_sender [HOST:PORT]`

use mllp::{Pool, PoolOptions, SendOptions};

#[tokio::main]
async fn main() -> Result<(), mllp::Error> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:2575".into());
    let pool = Pool::new(PoolOptions::default());
    let message = hl7v2::example_adt_a01(chrono::Utc::now());
    match pool
        .send(&addr, message.as_bytes(), SendOptions::default())
        .await
    {
        Ok(ack) => println!(
            "{}: {}",
            ack.code(),
            String::from_utf8_lossy(ack.bytes()).replace('\r', "\n")
        ),
        Err(mllp::Error::Negative { description, .. }) => eprintln!("rejected: {description}"),
        Err(e) => return Err(e),
    }
    Ok(())
}
