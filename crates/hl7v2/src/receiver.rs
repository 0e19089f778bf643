//! What a receiver owes the sender of a message it accepted: the acknowledgements the original
//! and enhanced modes ask for ([`acks_for`]; the reject of input that does not parse is
//! [`build_reject`](crate::build_reject)). The caller passes the time; nothing here reads a
//! clock.

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};

use crate::{AckCondition, AckMode, AckOptions, Message, Outcome, Precision, Timestamp, build_ack};

/// Options for an acknowledgement sent at `now`: MSH-7 in UTC to the millisecond, MSH-10 a
/// control ID unique within the process (the milliseconds of `now`, then a counter), MSA-3
/// `text` or the code's default.
pub fn ack_options_at(now: &DateTime<Utc>, text: Option<String>) -> AckOptions {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let control_id = format!("{}{:04}", now.timestamp_millis(), n % 10_000);
    let mut opts = AckOptions::new(
        control_id,
        Timestamp::from_datetime(now, Precision::Fraction(3)),
    );
    opts.text = text;
    opts
}

/// The acknowledgements a receiver owes for a message it accepted, built at `now`: in original
/// mode an AA; in enhanced mode (MSH-15/16 valued, or `enhanced` forced for senders that do not
/// set them) a CA and then an AA, each only if MSH-15/MSH-16 ask for it (HL7 v2.5 §2.9).
pub fn acks_for(msg: &Message<'_>, enhanced: bool, now: &DateTime<Utc>) -> Vec<Vec<u8>> {
    let mode = match AckMode::of(msg) {
        AckMode::Original if enhanced => AckMode::Enhanced {
            accept: AckCondition::Always,
            application: AckCondition::Never,
        },
        mode => mode,
    };
    [
        mode.commit_ack(Outcome::Accepted),
        mode.application_ack(Outcome::Accepted),
    ]
    .into_iter()
    .flatten()
    .map(|code| build_ack(msg, code, &ack_options_at(now, None)))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-03-01T12:00:00.250Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn msa1(ack: &[u8]) -> String {
        Message::parse(ack)
            .unwrap()
            .get("MSA-1")
            .unwrap()
            .text()
            .into_owned()
    }

    #[test]
    fn original_mode_owes_one_aa_stamped_with_the_given_time() {
        let msg = Message::parse(b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|M1|P|2.5\rPID|1").unwrap();
        let acks = acks_for(&msg, false, &at());
        assert_eq!(acks.len(), 1);
        assert_eq!(msa1(&acks[0]), "AA");
        let ack = Message::parse(&acks[0]).unwrap();
        assert_eq!(ack.get("MSH-7").unwrap().text(), "20240301120000.250+0000");
        assert!(
            ack.get("MSH-10")
                .unwrap()
                .text()
                .starts_with("1709294400250")
        );
    }

    #[test]
    fn enhanced_mode_follows_msh_15_and_16() {
        let both = Message::parse(b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|M1|P|2.5|||AL|AL").unwrap();
        let codes: Vec<String> = acks_for(&both, false, &at())
            .iter()
            .map(|a| msa1(a))
            .collect();
        assert_eq!(codes, ["CA", "AA"]);
        let forced = Message::parse(b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|M1|P|2.5").unwrap();
        let codes: Vec<String> = acks_for(&forced, true, &at())
            .iter()
            .map(|a| msa1(a))
            .collect();
        assert_eq!(codes, ["CA"]);
        let acks = acks_for(&both, false, &at());
        assert_ne!(
            Message::parse(&acks[0])
                .unwrap()
                .get("MSH-10")
                .unwrap()
                .text(),
            Message::parse(&acks[1])
                .unwrap()
                .get("MSH-10")
                .unwrap()
                .text()
        );
    }
}
