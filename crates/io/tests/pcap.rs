//! Capture files: what is written reads back exactly, pcapng and Linux
//! cooked captures read as documented, and damaged files give BadCapture
//! naming the file, never a panic.

#![allow(clippy::unwrap_used)]

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bitsgw_io::pcap::{PcapReader, PcapWriter};
use bitsgw_io::{LinkType, PortError};
use bitsgw_wire::Timestamp;
use pcap_file::pcap::{PcapHeader, PcapPacket};
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::{DataLink, TsResolution};

/// A file in the temporary directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str) -> TempFile {
        TempFile(std::env::temp_dir().join(format!("bitsgw-io-{}-{tag}", std::process::id())))
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn frames() -> Vec<(Timestamp, Vec<u8>)> {
    vec![
        (Timestamp(1_700_000_000_123_456_789), vec![0x45; 20]),
        (Timestamp(1_700_000_000_123_456_790), (0..=255).collect()),
        (Timestamp(1), vec![0x60; 1500]),
        (Timestamp(0), Vec::new()),
        (Timestamp(4_294_967_295_999_999_999), vec![1; 9000]),
    ]
}

fn read_all(path: &Path) -> Result<Vec<(Timestamp, Vec<u8>)>, PortError> {
    let mut r = PcapReader::open(path)?;
    let mut out = Vec::new();
    while let Some(p) = r.next_packet()? {
        out.push(p);
    }
    Ok(out)
}

fn assert_bad_capture_naming(result: Result<impl std::fmt::Debug, PortError>, path: &Path) {
    match result {
        Err(e @ PortError::BadCapture { .. }) => {
            let PortError::BadCapture { file, .. } = &e else {
                unreachable!()
            };
            assert_eq!(file, &path.display().to_string());
            assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        }
        other => panic!("expected BadCapture for {}, got {other:?}", path.display()),
    }
}

#[test]
fn write_then_read_back_both_link_types_with_exact_timestamps() {
    for link in [LinkType::Ethernet, LinkType::RawIp] {
        let f = TempFile::new(&format!("rt-{link:?}.pcap"));
        let mut w = PcapWriter::create(f.path(), link).unwrap();
        for (ts, frame) in frames() {
            w.write(ts, &frame).unwrap();
        }
        w.flush().unwrap();
        assert_eq!(w.written(), 5);
        drop(w);
        let r = PcapReader::open(f.path()).unwrap();
        assert_eq!(r.link_type(), link);
        assert_eq!(read_all(f.path()).unwrap(), frames());
    }
}

#[test]
fn writer_refuses_what_pcap_can_not_hold() {
    let f = TempFile::new("refuse.pcap");
    let mut w = PcapWriter::create(f.path(), LinkType::RawIp).unwrap();
    assert_bad_capture_naming(w.write(Timestamp(u64::MAX), &[0x45; 20]), f.path());
    assert_bad_capture_naming(w.write(Timestamp(1), &vec![0; 300_000]), f.path());
    // The writer is still usable.
    w.write(Timestamp(5), &[0x45; 20]).unwrap();
    w.flush().unwrap();
    assert_eq!(
        read_all(f.path()).unwrap(),
        vec![(Timestamp(5), vec![0x45; 20])]
    );
}

#[test]
fn microsecond_pcap_and_linux_cooked_captures() {
    // A classic microsecond pcap of Linux cooked frames: an IPv4 packet, an
    // ARP frame (skipped) and an IPv6 packet.
    let f = TempFile::new("sll.pcap");
    let header = PcapHeader {
        datalink: DataLink::LINUX_SLL,
        ts_resolution: TsResolution::MicroSecond,
        ..PcapHeader::default()
    };
    let mut w =
        pcap_file::pcap::PcapWriter::with_header(std::fs::File::create(f.path()).unwrap(), header)
            .unwrap();
    let sll = |proto: u16, body: &[u8]| {
        let mut v = vec![0, 4, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0];
        v.extend_from_slice(&proto.to_be_bytes());
        v.extend_from_slice(body);
        v
    };
    let packets = [
        (Duration::new(10, 250_000), sll(0x0800, &[0x45; 28])),
        (Duration::new(11, 0), sll(0x0806, &[0; 28])),
        (Duration::new(12, 999_999_000), sll(0x86dd, &[0x60; 48])),
    ];
    for (ts, data) in &packets {
        w.write_packet(&PcapPacket::new(*ts, data.len() as u32, data))
            .unwrap();
    }
    drop(w);
    let mut r = PcapReader::open(f.path()).unwrap();
    assert_eq!(r.link_type(), LinkType::RawIp);
    assert_eq!(
        r.next_packet().unwrap(),
        Some((Timestamp(10_000_250_000), vec![0x45; 28]))
    );
    assert_eq!(
        r.next_packet().unwrap(),
        Some((Timestamp(12_999_999_000), vec![0x60; 48]))
    );
    assert_eq!(r.next_packet().unwrap(), None);
    assert_eq!(r.skipped(), 1);
}

/// A pcapng file with one interface of `link` and timestamp resolution
/// option `tsresol`, holding `(ticks, data)` packets.
fn write_pcapng(path: &Path, link: DataLink, tsresol: Option<u8>, packets: &[(u64, Vec<u8>)]) {
    let mut w = PcapNgWriter::new(std::fs::File::create(path).unwrap()).unwrap();
    let options = tsresol
        .map(|r| vec![InterfaceDescriptionOption::IfTsResol(r)])
        .unwrap_or_default();
    w.write_pcapng_block(InterfaceDescriptionBlock {
        linktype: link,
        snaplen: 0,
        options,
    })
    .unwrap();
    for (ticks, data) in packets {
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: 0,
            // pcap-file writes the duration's nanoseconds as the raw tick
            // count, whatever the interface's resolution.
            timestamp: Duration::from_nanos(*ticks),
            original_len: data.len() as u32,
            data: Cow::Borrowed(data),
            options: vec![],
        })
        .unwrap();
    }
}

#[test]
fn pcapng_with_default_and_explicit_timestamp_resolutions() {
    let f = TempFile::new("us.pcapng");
    write_pcapng(
        f.path(),
        DataLink::ETHERNET,
        None,
        &[(1_700_000_000_000_001, vec![0xee; 60])],
    );
    let mut r = PcapReader::open(f.path()).unwrap();
    assert_eq!(r.link_type(), LinkType::Ethernet);
    assert_eq!(
        r.next_packet().unwrap(),
        Some((Timestamp(1_700_000_000_000_001_000), vec![0xee; 60]))
    );
    assert_eq!(r.next_packet().unwrap(), None);

    let f = TempFile::new("ns.pcapng");
    write_pcapng(
        f.path(),
        DataLink::RAW,
        Some(9),
        &[
            (1_700_000_000_123_456_789, vec![0x45; 20]),
            (7, vec![0x60; 40]),
        ],
    );
    assert_eq!(
        read_all(f.path()).unwrap(),
        vec![
            (Timestamp(1_700_000_000_123_456_789), vec![0x45; 20]),
            (Timestamp(7), vec![0x60; 40])
        ]
    );

    // Binary resolution: 2^-10 s ticks.
    let f = TempFile::new("bin.pcapng");
    write_pcapng(
        f.path(),
        DataLink::IPV4,
        Some(0x80 | 10),
        &[(1024 + 512, vec![0x45; 20])],
    );
    assert_eq!(
        read_all(f.path()).unwrap(),
        vec![(Timestamp(1_500_000_000), vec![0x45; 20])]
    );
}

#[test]
fn unsupported_link_type_is_a_bad_capture() {
    let f = TempFile::new("wifi.pcapng");
    write_pcapng(f.path(), DataLink::IEEE802_11, None, &[(1, vec![0; 30])]);
    assert_bad_capture_naming(PcapReader::open(f.path()), f.path());
}

#[test]
fn missing_file_is_an_io_error_naming_it() {
    let path = std::env::temp_dir().join("bitsgw-io-no-such-file.pcap");
    match PcapReader::open(&path) {
        Err(e @ PortError::CaptureIo { .. }) => {
            assert!(e.to_string().contains("bitsgw-io-no-such-file.pcap"), "{e}")
        }
        other => panic!("expected CaptureIo, got {other:?}"),
    }
}

#[test]
fn garbage_and_truncated_files_are_bad_captures_never_panics() {
    let f = TempFile::new("garbage.pcap");

    for garbage in [
        &b""[..],
        &b"\xd4\xc3"[..],
        &b"this is not a capture file at all, just some text\n"[..],
    ] {
        std::fs::write(f.path(), garbage).unwrap();
        assert_bad_capture_naming(read_all(f.path()), f.path());
    }

    // A record that claims more bytes than the file holds.
    let good = TempFile::new("good.pcap");
    let mut w = PcapWriter::create(good.path(), LinkType::Ethernet).unwrap();
    for (i, len) in [20usize, 31, 40].into_iter().enumerate() {
        w.write(Timestamp(1_000_000_007 * i as u64), &vec![i as u8; len])
            .unwrap();
    }
    w.flush().unwrap();
    drop(w);
    let bytes = std::fs::read(good.path()).unwrap();
    std::fs::write(f.path(), &bytes[..bytes.len() - 1]).unwrap();
    assert_bad_capture_naming(read_all(f.path()), f.path());

    // Every truncation of a pcap and a pcapng file either reads a prefix of
    // the packets or fails with BadCapture.
    let ng = TempFile::new("good.pcapng");
    write_pcapng(
        ng.path(),
        DataLink::ETHERNET,
        Some(9),
        &[(5, vec![0xaa; 70]), (6, vec![0xbb; 61])],
    );
    for source in [good.path(), ng.path()] {
        let bytes = std::fs::read(source).unwrap();
        let all = read_all(source).unwrap();
        for cut in 0..bytes.len() {
            std::fs::write(f.path(), &bytes[..cut]).unwrap();
            match read_all(f.path()) {
                Ok(got) => assert!(all.starts_with(&got), "cut {cut}"),
                Err(e) => assert_bad_capture_naming(Err::<(), _>(e), f.path()),
            }
        }
        // Corrupting any single byte may change the packets, but must not
        // panic or give any error other than BadCapture.
        for at in 0..bytes.len().min(120) {
            for value in [0x00, 0xff] {
                let mut corrupt = bytes.clone();
                corrupt[at] = value;
                std::fs::write(f.path(), &corrupt).unwrap();
                if let Err(e) = read_all(f.path()) {
                    assert_bad_capture_naming(Err::<(), _>(e), f.path());
                }
            }
        }
    }
}
