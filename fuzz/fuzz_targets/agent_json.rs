//! Any bytes as an agent WebSocket message, both directions: never a panic; a decoded message
//! encodes to JSON that decodes to the same message.
#![no_main]

use agent_protocol::{AgentMessage, Decoded, Direction};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for dir in [Direction::ToServer, Direction::ToAgent] {
        if let Ok(Decoded::Message(m)) = AgentMessage::decode(data, dir, 1 << 20) {
            let json = m.to_json();
            let again = AgentMessage::decode(json.as_bytes(), dir, usize::MAX)
                .expect("our own JSON decodes");
            assert_eq!(again, Decoded::Message(m));
        }
    }
});
