//! Any bytes and delimiters: the escape codec never panics, the token layer rewrites its input
//! exactly, and unescape inverts escape.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, value)) = data.split_first() else {
        return;
    };
    let pool = *b"|^~\\&#*:!@%$";
    let rot = usize::from(pick) % pool.len();
    let p: Vec<u8> = pool.iter().cycle().skip(rot).take(6).copied().collect();
    let d = hl7v2::Delimiters {
        field: p[0],
        component: p[1],
        repetition: p[2],
        escape: p[3],
        // A three-character MSH-2 has no subcomponent separator (and then no truncation).
        subcomponent: (pick & 0x40 == 0).then_some(p[4]),
        truncation: (pick & 0xC0 == 0x80).then_some(p[5]),
    };
    let mut out = Vec::new();
    for t in hl7v2::EscapeTokens::new(value, d) {
        t.write(&d, &mut out);
    }
    assert_eq!(out, value);
    let escaped = hl7v2::escape(value, &d);
    assert_eq!(hl7v2::unescape(&escaped, &d).as_ref(), value);
});
