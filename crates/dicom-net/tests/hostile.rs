//! A hostile SCP: PDU length fields of 4 GB, in the association answer and in a response. The
//! SCU refuses them before reading a body, aborts, and says why.

use std::time::{Duration, Instant};

use dicom_net::pdu::{self, Associate, Pdu, PresentationContext, UserInfo};
use dicom_net::{Association, Error, Options, Proposal, uids};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn ac() -> Vec<u8> {
    let mut out = Vec::new();
    pdu::encode(
        &Pdu::AssociateAc(Associate {
            called_ae: "EVIL".into(),
            calling_ae: "OUTPOST".into(),
            application_context: uids::APPLICATION_CONTEXT.into(),
            presentation_contexts: vec![PresentationContext {
                id: 1,
                abstract_syntax: String::new(),
                transfer_syntaxes: vec![uids::IMPLICIT_VR_LE.into()],
                result: 0,
            }],
            user: UserInfo {
                max_length: Some(16384),
                implementation_class_uid: "1.2.3".into(),
                ..UserInfo::default()
            },
        }),
        &mut out,
    );
    out
}

/// Reads one PDU (header and body) from the SCU.
async fn read_pdu(s: &mut TcpStream) -> Vec<u8> {
    let mut head = [0u8; 6];
    s.read_exact(&mut head).await.unwrap();
    let len = u32::from_be_bytes([head[2], head[3], head[4], head[5]]) as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.unwrap();
    [head.to_vec(), body].concat()
}

/// An SCP that runs `script` on the accepted socket; returns its address and what it saw last.
async fn evil(
    script: fn(TcpStream) -> tokio::task::JoinHandle<Vec<u8>>,
) -> (String, tokio::task::JoinHandle<Vec<u8>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let h = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        script(s).await.unwrap()
    });
    (addr, h)
}

#[tokio::test]
async fn four_gigabyte_association_answer_is_refused() {
    let (addr, scp) = evil(|mut s| {
        tokio::spawn(async move {
            read_pdu(&mut s).await;
            s.write_all(&[2, 0, 0xFF, 0xFF, 0xFF, 0xFF]).await.unwrap();
            // What the SCU sends next: an A-ABORT, then it closes.
            let mut rest = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
            rest
        })
    })
    .await;
    let started = Instant::now();
    let err = Association::connect(&addr, &Options::default(), &[Proposal::verification()])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::PduTooLarge {
                size: 4_294_967_295,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    let after = scp.await.unwrap();
    assert_eq!(
        after.first(),
        Some(&7),
        "expected an A-ABORT, got {after:?}"
    );
}

#[tokio::test]
async fn four_gigabyte_response_is_refused_and_the_association_ends() {
    let (addr, scp) = evil(|mut s| {
        tokio::spawn(async move {
            read_pdu(&mut s).await;
            s.write_all(&ac()).await.unwrap();
            read_pdu(&mut s).await; // the C-ECHO-RQ
            s.write_all(&[4, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0])
                .await
                .unwrap();
            let mut rest = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
            rest
        })
    })
    .await;
    let mut a = Association::connect(&addr, &Options::default(), &[Proposal::verification()])
        .await
        .unwrap();
    let err = a.echo().await.unwrap_err();
    // Over the 256 KiB this side advertised: refused from the header alone.
    assert!(
        matches!(err, Error::PduTooLarge { max: 262_144, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("PDU too large"));
    let after = scp.await.unwrap();
    assert_eq!(
        after.first(),
        Some(&7),
        "expected an A-ABORT, got {after:?}"
    );
    assert!(
        a.echo()
            .await
            .unwrap_err()
            .to_string()
            .contains("no longer usable")
    );
}
