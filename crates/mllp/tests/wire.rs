//! Nothing on the send path rewrites a message: for any generated message, what a capturing
//! receiver on a real loopback socket gets from [`Connection`] and from [`Pool`] parses to the
//! values that were sent, and is the input byte for byte when its segments end with `\r`.
//!
//! Values hold line feeds as data (raw, as `\X0A\` and as `\.br\`), carriage returns escaped as
//! `\X0D\` (a raw CR always ends a segment), escaped delimiters, and lines that look like
//! segments (`CXR`, `OBX|`) after a line feed, the shape of `corpus/hl7v2/cases/report-with-lf.hl7`.

use std::time::Duration;

use hl7v2::Message;
use mllp::{ClientOptions, Connection, Pool, PoolOptions, SendOptions};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

mod common;

use common::capturing_receiver;

/// How the segments of the rendered message end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    /// `\r` after every segment: the wire form, sent as it is.
    Cr,
    /// `\r` between segments, none after the last.
    CrNoFinal,
    /// `\r\n` after every segment.
    CrLf,
    /// `\n` after every segment (no `\r` anywhere).
    Lf,
}

/// A piece of a logical value and how it is written in the message.
#[derive(Debug, Clone)]
enum Piece {
    Text(&'static str),
    /// A line feed, written raw, as `\X0A\` or as `\.br\`.
    LineFeed(u8),
    /// A carriage return, written `\X0D\`.
    CarriageReturn,
    /// A delimiter, written as its escape.
    Delimiter(u8),
}

type Value = Vec<Piece>;
/// Fields → repetitions → components.
type Segment = (String, Vec<Vec<Vec<Value>>>);

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "Heart size normal.", "CXR", "OBX", "PID", "A1", "x", " ", "  ", "IMPRESSION:", "é",
        ])
        .prop_map(Piece::Text),
        3 => (0..3u8).prop_map(Piece::LineFeed),
        1 => Just(Piece::CarriageReturn),
        1 => prop::sample::select(b"|^~\\&".to_vec()).prop_map(Piece::Delimiter),
    ]
}

fn segment() -> impl Strategy<Value = Segment> {
    let value = prop::collection::vec(piece(), 0..6);
    let component = prop::collection::vec(value, 1..3);
    let repetition = prop::collection::vec(component, 1..3);
    (
        prop::sample::select(vec!["OBX", "NTE", "ZRP", "PID"]),
        prop::collection::vec(repetition, 1..6),
    )
        .prop_map(|(name, fields)| (name.to_owned(), fields))
}

fn style() -> impl Strategy<Value = Style> {
    prop::sample::select(vec![Style::Cr, Style::CrNoFinal, Style::CrLf, Style::Lf])
}

fn encode(v: &Value, out: &mut Vec<u8>) {
    for p in v {
        match p {
            Piece::Text(t) => out.extend_from_slice(t.as_bytes()),
            Piece::LineFeed(0) => out.push(b'\n'),
            Piece::LineFeed(1) => out.extend_from_slice(br"\X0A\"),
            Piece::LineFeed(_) => out.extend_from_slice(br"\.br\"),
            Piece::CarriageReturn => out.extend_from_slice(br"\X0D\"),
            Piece::Delimiter(d) => out.extend_from_slice(match d {
                b'|' => br"\F\",
                b'^' => br"\S\",
                b'~' => br"\R\",
                b'&' => br"\T\",
                _ => br"\E\",
            }),
        }
    }
}

fn logical(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    for p in v {
        match p {
            Piece::Text(t) => out.extend_from_slice(t.as_bytes()),
            Piece::LineFeed(_) => out.push(b'\n'),
            Piece::CarriageReturn => out.push(b'\r'),
            Piece::Delimiter(d) => out.push(*d),
        }
    }
    out
}

fn render(control_id: &str, segs: &[Segment], style: Style) -> Vec<u8> {
    let mut lines = vec![
        format!("MSH|^~\\&|APP|FAC|RCV|RFAC|20240101120000||ORU^R01|{control_id}|P|2.5")
            .into_bytes(),
    ];
    for (name, fields) in segs {
        let mut line = name.as_bytes().to_vec();
        for field in fields {
            line.push(b'|');
            for (ri, rep) in field.iter().enumerate() {
                if ri > 0 {
                    line.push(b'~');
                }
                for (ci, comp) in rep.iter().enumerate() {
                    if ci > 0 {
                        line.push(b'^');
                    }
                    encode(comp, &mut line);
                }
            }
        }
        lines.push(line);
    }
    let term: &[u8] = match style {
        Style::Cr | Style::CrNoFinal => b"\r",
        Style::CrLf => b"\r\n",
        Style::Lf => b"\n",
    };
    let mut out = lines.join(term);
    if style != Style::CrNoFinal {
        out.extend_from_slice(term);
    }
    out
}

/// A segment's name and its fields → repetitions → components, unescaped.
type SegmentValues = (String, Vec<Vec<Vec<Vec<u8>>>>);

/// Every value of every segment, unescaped: what a reader of the message sees.
fn values(m: &Message<'_>) -> Vec<SegmentValues> {
    m.segments()
        .map(|s| {
            let fields = s
                .fields()
                .map(|f| {
                    f.repetitions()
                        .map(|r| r.components().map(|c| c.unescaped().into_owned()).collect())
                        .collect()
                })
                .collect();
            (s.name().to_owned(), fields)
        })
        .collect()
}

#[test]
fn what_the_receiver_gets_is_what_was_sent() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (server, seen) = rt.block_on(capturing_receiver());
    let addr = server.local_addr().to_string();
    let client = ClientOptions {
        ack_timeout: Duration::from_secs(5),
        ..ClientOptions::default()
    };
    let conn = std::cell::RefCell::new(
        rt.block_on(Connection::connect(&addr, client.clone()))
            .unwrap(),
    );
    let pool = Pool::new(PoolOptions {
        client,
        keep_alive: true,
        ..PoolOptions::default()
    });
    let counter = std::cell::Cell::new(0u32);
    let mut runner = TestRunner::new(Config::with_cases(300));
    let strategy = (prop::collection::vec(segment(), 1..5), style());
    runner
        .run(&strategy, |(segs, style)| {
            let n = counter.get() + 1;
            counter.set(n);
            let input = render(&format!("W{n}"), &segs, style);
            let sent = Message::parse(&input)
                .map_err(|e| TestCaseError::fail(format!("input does not parse: {e}")))?;
            if style != Style::Lf {
                // The rule: in a CR or CRLF message every LF is data. So the values read are
                // exactly the generated ones, whatever line followed a line feed.
                prop_assert_eq!(sent.segment_count(), segs.len() + 1);
                for (i, (name, fields)) in segs.iter().enumerate() {
                    let seg = sent.segments().nth(i + 1).unwrap();
                    prop_assert_eq!(seg.name(), name.as_str());
                    for (f, field) in fields.iter().enumerate() {
                        for (r, rep) in field.iter().enumerate() {
                            for (c, comp) in rep.iter().enumerate() {
                                let got = seg.field(f + 1).repetition(r + 1).component(c + 1);
                                let (got, want) = (got.unescaped().into_owned(), logical(comp));
                                prop_assert_eq!(got, want);
                            }
                        }
                    }
                }
            }
            for via_pool in [false, true] {
                let ack = if via_pool {
                    rt.block_on(pool.send(&addr, &input, SendOptions::default()))
                } else {
                    let mut c = conn.borrow_mut();
                    rt.block_on(c.send(&input))
                };
                prop_assert!(ack.is_ok(), "{:?}", ack);
                let got = seen
                    .lock()
                    .unwrap()
                    .pop()
                    .expect("the receiver got nothing");
                let received = Message::parse(&got).map_err(|e| {
                    TestCaseError::fail(format!("received bytes do not parse: {e}"))
                })?;
                prop_assert_eq!(values(&received), values(&sent));
                match style {
                    Style::Cr => prop_assert_eq!(&got, &input),
                    Style::CrNoFinal => {
                        let mut with_final = input.clone();
                        with_final.push(b'\r');
                        prop_assert_eq!(&got, &with_final);
                    }
                    Style::CrLf => {
                        // Only the terminators changed: the CR form of the same segments.
                        let cr = render(&format!("W{n}"), &segs, Style::Cr);
                        prop_assert_eq!(&got, &cr);
                    }
                    Style::Lf => {}
                }
            }
            Ok(())
        })
        .unwrap();
    rt.block_on(server.shutdown(Duration::from_secs(1)));
}
