//! Read values from an HL7 v2 message by path, and acknowledge it.
//!
//! `cargo run -p outpost-examples --example hl7_read [FILE]`

use hl7v2::{AckCode, AckOptions, Message, Timestamp, build_ack, example_adt_a01};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let input = match std::env::args().nth(1) {
        Some(path) => std::fs::read(path)?,
        None => example_adt_a01(chrono::Utc::now()).into_bytes(),
    };
    let msg = Message::parse(&input)?;
    for path in [
        "MSH-9", "MSH-10", "PID-3-1", "PID-3-4", "PID-5-1", "PID-5-2", "PV1-2",
    ] {
        println!("{path:<10} {}", msg.get(path)?.text());
    }
    let sent = Timestamp::parse(msg.get("MSH-7")?.raw())?;
    println!(
        "sent       {} (precision {:?}, offset {:?})",
        sent.naive(),
        sent.precision(),
        sent.offset()
    );
    let ack = build_ack(
        &msg,
        AckCode::AA,
        &AckOptions::new("ACK-1", Timestamp::parse(b"20240101120000")?),
    );
    println!("\nACK:\n{}", Message::parse(&ack)?);
    Ok(())
}
