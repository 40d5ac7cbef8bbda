#![no_main]
//! The control socket's protocol (the `bitsgw` binary's
//! `appliance/control_request.rs`, built here as a module of its own): the
//! input, cut into pieces as a client might send it, is framed into one
//! line that never holds more than MAX_LINE octets; the line either parses
//! into a request that reads back the same from its own JSON, or is
//! refused with a reason; nothing panics.

#[allow(dead_code)]
#[path = "../../appliance/control_request.rs"]
mod control_request;

use control_request::{ControlRequest, Framed, LineFramer, MAX_LINE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte sets the piece size, the rest is what the client sends.
    let Some((&size, input)) = data.split_first() else {
        return;
    };
    let mut framer = LineFramer::default();
    let mut framed = Framed::More;
    for piece in input.chunks(usize::from(size).max(1)) {
        framed = framer.push(piece);
        assert!(framer.line().len() <= MAX_LINE);
        if framed != Framed::More {
            break;
        }
    }
    if framed == Framed::Line {
        assert!(!framer.line().contains(&b'\n'));
    }
    // Whatever was collected (a line, or what a client closed on).
    match ControlRequest::parse(framer.line()) {
        Ok(req) => {
            let again = ControlRequest::parse(req.to_json().to_string().as_bytes());
            assert_eq!(again, Ok(req));
        }
        Err(reason) => assert!(!reason.is_empty()),
    }
});
