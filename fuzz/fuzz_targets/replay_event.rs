#![no_main]
//! `bitsgw replay --event SECONDS:COMMAND` (the `bitsgw` binary's
//! `appliance/event.rs`, built here as a module of its own): any text
//! never panics the parser; an accepted event is scheduled within range
//! and names what it acts on as given; a refusal quotes the argument.

#[allow(dead_code)]
#[path = "../../appliance/event.rs"]
mod event;

use event::EventCommand;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let arg = String::from_utf8_lossy(data);
    match event::parse(&arg) {
        Ok(e) => {
            assert!(e.after.as_secs_f64() < 1e9);
            let words: Vec<&str> = arg.split_once(':').map_or(vec![], |(_, c)| c.split_whitespace().collect());
            match e.command {
                EventCommand::RemoveSa(name) => assert_eq!(words, ["remove-sa", name.as_str()]),
                EventCommand::Move { to, keep_old } => {
                    assert_eq!(words[..2], ["move", to.as_str()]);
                    assert_eq!(keep_old, words.len() == 2);
                }
                EventCommand::Reload => assert_eq!(words, ["reload"]),
                EventCommand::Refresh => assert_eq!(words, ["refresh"]),
            }
        }
        Err(m) => assert!(m.starts_with(&format!("--event {arg}:")), "{m}"),
    }
});
