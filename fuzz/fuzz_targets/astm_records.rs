//! Any bytes as an E1394 message: parse, walk the tree, read every field as text; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = astm::Message::parse(data) else {
        return;
    };
    let _ = m.is_complete();
    let tree = m.tree();
    let _ = tree.patients.iter().map(|p| p.orders.len()).sum::<usize>();
    for r in m.records() {
        for n in 0..=r.field_count() + 1 {
            let _ = r.field_text(n);
            let _ = r.component(n, 2);
            let _ = r.repeat(n, 3);
        }
    }
    let d = m.delimiters();
    let esc = astm::escape(data, &d);
    let back = astm::unescape(&esc, &d);
    let expected: Vec<u8> = data
        .iter()
        .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b })
        .collect();
    assert_eq!(back.as_ref(), expected.as_slice());
});
