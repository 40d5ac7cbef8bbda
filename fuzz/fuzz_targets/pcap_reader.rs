#![no_main]
//! The capture reader `bitsgw replay` takes its input from: any bytes,
//! read as a pcap or pcapng file to the end, never panic, and every
//! failure is an error naming the capture. The packets it returns are
//! never longer than the record that carried them.

use bitsgw_io::pcap::PcapReader;
use bitsgw_io::PortError;
use libfuzzer_sys::fuzz_target;

/// More records than any input here can hold: a reader that stops making
/// progress is a bug, not a long capture.
const MAX_RECORDS: usize = 1 << 16;

fuzz_target!(|data: &[u8]| {
    let name = "fuzz.pcap".to_string();
    let named = |e: &PortError| e.to_string().contains("fuzz.pcap");
    let mut reader = match PcapReader::from_reader(name, Box::new(std::io::Cursor::new(data.to_vec()))) {
        Ok(r) => r,
        Err(e) => {
            assert!(named(&e), "{e}");
            return;
        }
    };
    for _ in 0..MAX_RECORDS {
        match reader.next_packet() {
            Ok(Some((_, frame))) => assert!(frame.len() <= data.len()),
            Ok(None) => return,
            Err(e) => {
                assert!(named(&e), "{e}");
                return;
            }
        }
    }
    panic!("{MAX_RECORDS} records from {} bytes", data.len());
});
