#![no_main]

use bitsgw_ipsec::config::parse_policy;
use bitsgw_ipsec::{IpsecStage, StageConfig};
use bitsgw_wire::Timestamp;
use libfuzzer_sys::fuzz_target;

const FILE: &str = "fuzz-policy.json";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_policy(text, FILE) {
        Err(e) => assert!(e.to_string().starts_with(FILE), "{e}"),
        Ok(set) => {
            let mut stage = IpsecStage::new(StageConfig::default());
            if let Err(e) = set.apply(&mut stage, Timestamp::ZERO) {
                assert!(e.to_string().starts_with(FILE), "{e}");
            }
        }
    }
});
