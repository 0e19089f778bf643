//! Examples of the Outpost crates used as libraries; run one with
//! `cargo run -p outpost-examples --example NAME`.
