#![no_main]
//! The appliance configuration (the `bitsgw` binary's `appliance/config.rs`,
//! built here as a module of its own): any text never panics the parser,
//! and every error names a file. The policy files it refers to are read
//! relative to `examples/configs/`, so mutated examples reach them.

#[allow(dead_code, unused_imports)]
#[path = "../../appliance/config.rs"]
mod config;

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let at = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/configs/fuzz.json");
    if let Err(e) = config::parse(&text, &at) {
        assert!(!e.file.is_empty());
    }
});
