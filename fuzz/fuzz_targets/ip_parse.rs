#![no_main]

use bitsgw_wire::ip;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = ip::parse(data) {
        assert!(m.header_len <= m.total_len);
        assert!(m.total_len <= data.len());
        let _ = (m.src_range(), m.dst_range(), m.is_later_fragment());
        let _ = m.fixed_header_len(data);
    }
    let _ = ip::traffic_class(data);
    let mut copy = data.to_vec();
    ip::set_total_len(&mut copy, data.len());
    if let Ok(m) = ip::parse(&copy) {
        assert!(m.total_len <= copy.len());
    }
});
