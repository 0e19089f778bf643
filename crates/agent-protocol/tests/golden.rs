//! Every fixture in `tests/golden/` (Medplum's JSON, field order from its sources) decodes and
//! encodes back to the same bytes.

use agent_protocol::{AgentMessage, DEFAULT_MAX_MESSAGE, Decoded, Direction, Error};

fn fixtures() -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn every_fixture_round_trips_byte_for_byte() {
    let all = fixtures();
    assert!(all.len() >= 18);
    for (name, json) in all {
        for dir in [Direction::ToServer, Direction::ToAgent] {
            let Decoded::Message(msg) =
                AgentMessage::decode(json.as_bytes(), dir, DEFAULT_MAX_MESSAGE).unwrap()
            else {
                panic!("{name}: decoded as unknown");
            };
            assert_eq!(msg.to_json(), json, "{name}");
            assert!(
                json.contains(&format!("\"type\":\"{}\"", msg.kind())),
                "{name}"
            );
        }
    }
}

#[test]
fn push_fields() {
    let json = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/transmit_request_push.json"
    ))
    .unwrap();
    let Decoded::Message(AgentMessage::TransmitRequest(t)) =
        AgentMessage::decode(json.as_bytes(), Direction::ToAgent, DEFAULT_MAX_MESSAGE).unwrap()
    else {
        panic!()
    };
    assert_eq!(t.remote, "mllp://10.0.0.5:2575?encoding=windows-1252");
    assert!(t.body.contains("\rPID|1"));
    assert!(t.channel.is_none() && t.access_token.is_none());
}

#[test]
fn deprecated_names_depend_on_direction() {
    let m = |json: &str, d| match AgentMessage::decode(json.as_bytes(), d, DEFAULT_MAX_MESSAGE)
        .unwrap()
    {
        Decoded::Message(m) => m.kind(),
        Decoded::Unknown { kind, .. } => panic!("unknown {kind}"),
    };
    let transmit = r#"{"type":"transmit","remote":"r","contentType":"c","body":"b"}"#;
    assert_eq!(m(transmit, Direction::ToServer), "agent:transmit:request");
    assert_eq!(m(transmit, Direction::ToAgent), "agent:transmit:response");
    assert_eq!(
        m(
            r#"{"type":"connect","accessToken":"t","agentId":"a"}"#,
            Direction::ToServer
        ),
        "agent:connect:request"
    );
    assert_eq!(
        m(r#"{"type":"connected"}"#, Direction::ToAgent),
        "agent:connect:response"
    );
    assert_eq!(
        m(
            r#"{"type":"push","remote":"r","contentType":"c","body":"b"}"#,
            Direction::ToAgent
        ),
        "agent:transmit:request"
    );
}

#[test]
fn unknown_type_is_not_an_error() {
    let d = AgentMessage::decode(
        br#"{"type":"agent:teleport:request","callback":"Agent/1-2"}"#,
        Direction::ToAgent,
        1024,
    )
    .unwrap();
    assert_eq!(
        d,
        Decoded::Unknown {
            kind: "agent:teleport:request".into(),
            callback: Some("Agent/1-2".into())
        }
    );
    // but "connected" means nothing to a server
    assert!(matches!(
        AgentMessage::decode(br#"{"type":"connected"}"#, Direction::ToServer, 1024).unwrap(),
        Decoded::Unknown { .. }
    ));
}

#[test]
fn malformed_and_oversized() {
    for bad in [
        &b"not json"[..],
        b"{}",
        b"[]",
        b"{\"type\":1}",
        b"{\"type\":\"agent:heartbeat:response\",\"version\":5}",
    ] {
        assert!(
            matches!(
                AgentMessage::decode(bad, Direction::ToServer, 1024),
                Err(Error::Json(_))
            ),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    let big = format!(r#"{{"type":"agent:error","body":"{}"}}"#, "x".repeat(2000));
    assert_eq!(
        AgentMessage::decode(big.as_bytes(), Direction::ToServer, 1024).unwrap_err(),
        Error::TooLarge {
            size: big.len(),
            max: 1024
        }
    );
}

#[test]
fn legacy_status_field() {
    let d = AgentMessage::decode(br#"{"type":"agent:transmit:response","remote":"r","contentType":"c","status":"error","body":"boom"}"#, Direction::ToServer, 1024).unwrap();
    let Decoded::Message(AgentMessage::TransmitResponse(r)) = d else {
        panic!()
    };
    assert!(r.is_error());
}
