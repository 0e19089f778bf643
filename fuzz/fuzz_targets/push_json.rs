//! Any bytes as a `$push` request body: never a panic; accepted requests satisfy the limits.
#![no_main]

use agent_protocol::{MAX_WAIT_TIMEOUT_MS, PushRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = PushRequest::from_json(data, 1 << 20) {
        assert!(!p.body.is_empty() && !p.content_type.is_empty() && !p.destination.is_empty());
        assert!(p.wait_timeout <= MAX_WAIT_TIMEOUT_MS);
    }
});
