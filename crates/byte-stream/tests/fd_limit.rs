//! The listener at the file-descriptor limit: this test process lowers its own soft limit and
//! uses up every descriptor. A client that connects then is closed at once (not left hanging in
//! the backlog), the loop does not spin, the condition is logged once, and the listener serves
//! again when descriptors come back. One test in its own binary: the limit is per process.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use byte_stream::{Listener, ListenerOptions};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tracing_subscriber::prelude::*;

/// Counts log events at ERROR and WARN.
#[derive(Clone, Default)]
struct Counter(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Counter {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if *event.metadata().level() <= tracing::Level::WARN {
            self.0
                .lock()
                .unwrap()
                .push(event.metadata().level().to_string());
        }
    }
}

#[test]
fn at_the_descriptor_limit_new_clients_are_closed_at_once_and_logged_once() {
    let logs = Counter::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(logs.clone()));
    let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
    rlimit::setrlimit(rlimit::Resource::NOFILE, 256.min(hard), hard).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let served = Arc::new(AtomicUsize::new(0));
        let counted = served.clone();
        let l = Listener::serve(
            TcpListener::bind("127.0.0.1:0").await.unwrap(),
            ListenerOptions::default(),
            move |mut s: TcpStream, _, _| {
                counted.fetch_add(1, Ordering::SeqCst);
                async move {
                    let mut b = [0u8; 8];
                    while matches!(s.read(&mut b).await, Ok(n) if n > 0) {}
                }
            },
        )
        .unwrap();
        let addr = l.local_addr();
        // Use up every descriptor.
        let mut filler = Vec::new();
        while let Ok(f) = std::fs::File::open("/dev/null") {
            filler.push(f);
        }
        assert!(filler.len() > 10, "the limit leaves room to test");
        let t = Instant::now();
        for _ in 0..10 {
            // One descriptor for the client socket; none left for the listener.
            filler.pop();
            let mut c = TcpStream::connect(addr).await.unwrap();
            let mut b = [0u8; 1];
            let r = tokio::time::timeout(Duration::from_secs(2), c.read(&mut b)).await;
            assert!(
                matches!(r, Ok(Ok(0)) | Ok(Err(_))),
                "client left hanging at the descriptor limit: {r:?}"
            );
            drop(c);
            // Take back what the closed connection freed.
            while let Ok(f) = std::fs::File::open("/dev/null") {
                filler.push(f);
            }
        }
        // Each was closed within the longest pause.
        assert!(t.elapsed() < Duration::from_secs(12), "{:?}", t.elapsed());
        assert_eq!(served.load(Ordering::SeqCst), 0);
        assert!(
            l.stats().closed_at_fd_limit() >= 10,
            "{}",
            l.stats().closed_at_fd_limit()
        );
        // The loop pauses rather than spins while no descriptor can be had: a few failed
        // accepts a second, not thousands.
        let before = l.stats().accept_errors();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let per_second = (l.stats().accept_errors() - before) / 2;
        assert!(per_second <= 5, "{per_second} failed accepts a second");
        // Descriptors come back: served again.
        filler.clear();
        let _c = TcpStream::connect(addr).await.unwrap();
        for _ in 0..100 {
            if served.load(Ordering::SeqCst) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(served.load(Ordering::SeqCst), 1);
        l.shutdown(Duration::from_secs(1)).await;
    });
    let logged = logs.0.lock().unwrap().clone();
    // One line when the condition began, one when it ended.
    assert_eq!(logged, ["ERROR", "WARN"], "{logged:?}");
}
