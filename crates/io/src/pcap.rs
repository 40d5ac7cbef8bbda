//! Capture files, through the pcap-file crate: what `bitsgw replay` reads
//! its input from and writes its output to.
//!
//! [`PcapReader`] reads pcap (microsecond and nanosecond) and pcapng files
//! with link types Ethernet (1), raw IP (101, and 228/229 for IPv4/IPv6
//! only) and Linux cooked capture (113, whose IP packets are returned as raw
//! IP). [`PcapWriter`] writes nanosecond pcap. Timestamps are
//! [`Timestamp`]s: nanoseconds since the Unix epoch, exactly as stored.
//!
//! A damaged file gives [`PortError::BadCapture`] naming the file and the
//! record, never a panic.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bitsgw_wire::Timestamp;
use pcap_file::pcap::{PcapHeader, PcapPacket};
use pcap_file::pcapng::{blocks::interface_description::InterfaceDescriptionOption, Block};
use pcap_file::{DataLink, PcapError, TsResolution};

use crate::{LinkType, PortError};

/// The pcapng Section Header Block type, which starts every pcapng file.
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

/// Length of a Linux cooked capture (SLL) header.
const SLL_HEADER: usize = 16;

/// Largest frame [`PcapWriter`] accepts (the snapshot length it declares).
pub const SNAPLEN: u32 = 262_144;

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// How a capture's frames map to a [`LinkType`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// Frames are what the link type says.
    Plain(LinkType),
    /// Linux cooked capture: a 16-byte header, then the network packet.
    LinuxSll,
}

impl Framing {
    fn of(link: DataLink) -> Option<Framing> {
        match link {
            DataLink::ETHERNET => Some(Framing::Plain(LinkType::Ethernet)),
            DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => {
                Some(Framing::Plain(LinkType::RawIp))
            }
            DataLink::LINUX_SLL => Some(Framing::LinuxSll),
            _ => None,
        }
    }

    fn link_type(self) -> LinkType {
        match self {
            Framing::Plain(link) => link,
            Framing::LinuxSll => LinkType::RawIp,
        }
    }
}

/// A pcapng interface: its link type and timestamp units.
#[derive(Debug, Clone, Copy)]
struct Interface {
    link: DataLink,
    /// `if_tsresol`: bit 7 clear, 10^-n seconds; set, 2^-n seconds.
    tsresol: u8,
    /// `if_tsoffset`, seconds added to every timestamp.
    tsoffset: u64,
}

impl Interface {
    /// Nanoseconds since the epoch of a timestamp of `ticks` units.
    fn nanos(&self, ticks: u64) -> Option<u64> {
        let ticks = u128::from(ticks);
        let n = u32::from(self.tsresol & 0x7f);
        let nanos = if self.tsresol & 0x80 == 0 {
            if n <= 9 {
                ticks.checked_mul(10u128.pow(9 - n))?
            } else {
                ticks / 10u128.checked_pow(n - 9)?
            }
        } else {
            ticks.checked_mul(1_000_000_000)? >> n.min(127)
        };
        let offset = u128::from(self.tsoffset).checked_mul(u128::from(NANOS_PER_SEC))?;
        u64::try_from(nanos.checked_add(offset)?).ok()
    }
}

/// Where a capture is read from: a file, or bytes already in memory.
type Source = Box<dyn Read + Send>;

enum Format {
    Pcap {
        reader: pcap_file::pcap::PcapReader<Source>,
        nanosecond: bool,
    },
    PcapNg {
        reader: pcap_file::pcapng::PcapNgReader<Source>,
        interfaces: Vec<Interface>,
        /// The timestamp of the last packet, for Simple Packet Blocks,
        /// which carry none.
        last: Timestamp,
    },
}

/// Reads the packets of a pcap or pcapng capture file.
pub struct PcapReader {
    path: String,
    format: Format,
    framing: Framing,
    /// Records read so far, for error messages.
    records: u64,
    skipped: u64,
}

impl core::fmt::Debug for PcapReader {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PcapReader")
            .field("path", &self.path)
            .field("framing", &self.framing)
            .field("records", &self.records)
            .finish()
    }
}

impl PcapReader {
    /// Opens a capture file and reads its header (for pcapng, up to the
    /// first interface description).
    pub fn open(path: &Path) -> Result<Self, PortError> {
        let name = path.display().to_string();
        let file = File::open(path).map_err(|source| PortError::CaptureIo {
            file: name.clone(),
            source,
        })?;
        Self::from_reader(name, Box::new(file))
    }

    /// Reads a capture from `source`, named `name` in errors (a file's
    /// path, or what the bytes are).
    pub fn from_reader(name: String, mut source: Box<dyn Read + Send>) -> Result<Self, PortError> {
        let mut magic = [0u8; 4];
        match source.read_exact(&mut magic) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(PortError::BadCapture {
                    file: name,
                    problem: "too short to be a capture file".into(),
                });
            }
            Err(source) => return Err(PortError::CaptureIo { file: name, source }),
        }
        // The readers below want the whole file from its first byte.
        let source: Source = Box::new(io::Cursor::new(magic).chain(source));
        if magic == PCAPNG_MAGIC {
            Self::open_pcapng(name, source)
        } else {
            let reader = pcap_file::pcap::PcapReader::new(source)
                .map_err(|e| convert(&name, "file header", e))?;
            let header = reader.header();
            let framing = Framing::of(header.datalink).ok_or_else(|| PortError::BadCapture {
                file: name.clone(),
                problem: format!("unsupported link type {}", u32::from(header.datalink)),
            })?;
            Ok(PcapReader {
                path: name,
                format: Format::Pcap {
                    reader,
                    nanosecond: header.ts_resolution == TsResolution::NanoSecond,
                },
                framing,
                records: 0,
                skipped: 0,
            })
        }
    }

    fn open_pcapng(name: String, file: Source) -> Result<Self, PortError> {
        let mut reader = pcap_file::pcapng::PcapNgReader::new(file)
            .map_err(|e| convert(&name, "section header", e))?;
        let mut records = 0;
        let mut interfaces = Vec::new();
        // Packets refer to interfaces described before them: read blocks
        // up to the first description to learn the capture's link type.
        let first = loop {
            records += 1;
            match reader.next_block() {
                None => {
                    return Err(PortError::BadCapture {
                        file: name,
                        problem: "no interface description block".into(),
                    })
                }
                Some(Err(e)) => return Err(convert(&name, &format!("block {records}"), e)),
                Some(Ok(Block::InterfaceDescription(idb))) => {
                    let iface = interface(&idb);
                    interfaces.push(iface);
                    break iface;
                }
                Some(Ok(Block::EnhancedPacket(_) | Block::SimplePacket(_) | Block::Packet(_))) => {
                    return Err(PortError::BadCapture {
                        file: name,
                        problem: format!(
                            "block {records}: packet before any interface description"
                        ),
                    })
                }
                Some(Ok(_)) => {}
            }
        };
        let framing = Framing::of(first.link).ok_or_else(|| PortError::BadCapture {
            file: name.clone(),
            problem: format!("unsupported link type {}", u32::from(first.link)),
        })?;
        Ok(PcapReader {
            path: name,
            format: Format::PcapNg {
                reader,
                interfaces,
                last: Timestamp::ZERO,
            },
            framing,
            records,
            skipped: 0,
        })
    }

    /// What the packets start with. Linux cooked captures give raw IP.
    pub fn link_type(&self) -> LinkType {
        self.framing.link_type()
    }

    /// Packets passed over because they have no place in this link type:
    /// non-IP packets of a Linux cooked capture.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// The next packet and its timestamp, `None` at the end of the file.
    /// A packet captured shorter than it was (snapshot length) is returned
    /// as captured.
    pub fn next_packet(&mut self) -> Result<Option<(Timestamp, Vec<u8>)>, PortError> {
        loop {
            let Some((ts, data)) = self.next_record()? else {
                return Ok(None);
            };
            match self.framing {
                Framing::Plain(_) => return Ok(Some((ts, data))),
                Framing::LinuxSll => {
                    if data.len() < SLL_HEADER {
                        return Err(self.bad(format!(
                            "record {}: {} bytes, shorter than a Linux cooked header",
                            self.records,
                            data.len()
                        )));
                    }
                    match u16::from_be_bytes([data[14], data[15]]) {
                        0x0800 | 0x86dd => return Ok(Some((ts, data[SLL_HEADER..].to_vec()))),
                        _ => self.skipped += 1,
                    }
                }
            }
        }
    }

    fn bad(&self, problem: String) -> PortError {
        PortError::BadCapture {
            file: self.path.clone(),
            problem,
        }
    }

    /// The next packet record as stored, with its timestamp.
    fn next_record(&mut self) -> Result<Option<(Timestamp, Vec<u8>)>, PortError> {
        match &mut self.format {
            Format::Pcap { reader, nanosecond } => {
                self.records += 1;
                let what = format!("record {}", self.records);
                let raw = match reader.next_raw_packet() {
                    None => return Ok(None),
                    Some(Err(e)) => return Err(convert(&self.path, &what, e)),
                    Some(Ok(raw)) => raw,
                };
                let frac = if *nanosecond {
                    Some(u64::from(raw.ts_frac)).filter(|&ns| ns < NANOS_PER_SEC)
                } else {
                    Some(u64::from(raw.ts_frac))
                        .filter(|&us| us < 1_000_000)
                        .map(|us| us * 1000)
                };
                let Some(frac) = frac else {
                    return Err(PortError::BadCapture {
                        file: self.path.clone(),
                        problem: format!("{what}: timestamp fraction {} out of range", raw.ts_frac),
                    });
                };
                let ts = Timestamp(u64::from(raw.ts_sec) * NANOS_PER_SEC + frac);
                Ok(Some((ts, raw.data.into_owned())))
            }
            Format::PcapNg {
                reader,
                interfaces,
                last,
            } => loop {
                self.records += 1;
                let what = format!("block {}", self.records);
                let (iface, ticks, data) = match reader.next_block() {
                    None => return Ok(None),
                    Some(Err(e)) => return Err(convert(&self.path, &what, e)),
                    Some(Ok(Block::SectionHeader(_))) => {
                        interfaces.clear();
                        continue;
                    }
                    Some(Ok(Block::InterfaceDescription(idb))) => {
                        interfaces.push(interface(&idb));
                        continue;
                    }
                    Some(Ok(Block::EnhancedPacket(epb))) => {
                        // pcap-file stores the raw tick count as nanoseconds;
                        // the interface's resolution is applied below.
                        let ticks = u64::try_from(epb.timestamp.as_nanos()).unwrap_or(u64::MAX);
                        (epb.interface_id, Some(ticks), epb.data.into_owned())
                    }
                    Some(Ok(Block::Packet(pb))) => (
                        u32::from(pb.interface_id),
                        Some(pb.timestamp),
                        pb.data.into_owned(),
                    ),
                    Some(Ok(Block::SimplePacket(spb))) => (0, None, spb.data.into_owned()),
                    Some(Ok(_)) => continue,
                };
                let Some(desc) = usize::try_from(iface).ok().and_then(|i| interfaces.get(i)) else {
                    return Err(PortError::BadCapture {
                        file: self.path.clone(),
                        problem: format!("{what}: packet of undescribed interface {iface}"),
                    });
                };
                if Framing::of(desc.link) != Some(self.framing) {
                    return Err(PortError::BadCapture {
                        file: self.path.clone(),
                        problem: format!(
                            "{what}: interface {iface} has link type {}, unlike the capture's first interface",
                            u32::from(desc.link)
                        ),
                    });
                }
                let ts = match ticks {
                    None => *last,
                    Some(ticks) => match desc.nanos(ticks) {
                        Some(ns) => Timestamp(ns),
                        None => {
                            return Err(PortError::BadCapture {
                                file: self.path.clone(),
                                problem: format!("{what}: timestamp out of range"),
                            })
                        }
                    },
                };
                *last = ts;
                return Ok(Some((ts, data)));
            },
        }
    }
}

fn interface(
    idb: &pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock<'_>,
) -> Interface {
    let mut iface = Interface {
        link: idb.linktype,
        tsresol: 6,
        tsoffset: 0,
    };
    for option in &idb.options {
        match option {
            InterfaceDescriptionOption::IfTsResol(r) => iface.tsresol = *r,
            InterfaceDescriptionOption::IfTsOffset(o) => iface.tsoffset = *o,
            _ => {}
        }
    }
    iface
}

/// A pcap-file error while reading `what` of `file`, as a [`PortError`].
fn convert(file: &str, what: &str, e: PcapError) -> PortError {
    let bad = |problem: String| PortError::BadCapture {
        file: file.to_owned(),
        problem: format!("{what}: {problem}"),
    };
    match e {
        PcapError::IncompleteBuffer => bad("truncated".into()),
        PcapError::IoError(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            bad("truncated (the file ends inside it, or it is impossibly large)".into())
        }
        PcapError::IoError(source) => PortError::CaptureIo {
            file: file.to_owned(),
            source,
        },
        PcapError::InvalidField(field) => bad(format!("invalid field: {field}")),
        other => bad(other.to_string()),
    }
}

/// The file under a [`PcapWriter`], shared with pcap-file's writer so that
/// it can be flushed (pcap-file gives no access to its writer).
#[derive(Debug, Clone)]
struct Sink(Arc<Mutex<BufWriter<File>>>);

impl Sink {
    fn lock(&self) -> MutexGuard<'_, BufWriter<File>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.lock().write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.lock().write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.lock().flush()
    }
}

/// Writes packets to a nanosecond-resolution pcap file. Call
/// [`PcapWriter::flush`] at the end: dropping the writer flushes too, but
/// can not report an error.
pub struct PcapWriter {
    path: String,
    sink: Sink,
    writer: pcap_file::pcap::PcapWriter<Sink>,
    written: u64,
}

impl core::fmt::Debug for PcapWriter {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PcapWriter")
            .field("path", &self.path)
            .field("written", &self.written)
            .finish()
    }
}

impl PcapWriter {
    /// Creates (or truncates) `path` and writes the file header.
    pub fn create(path: &Path, link: LinkType) -> Result<Self, PortError> {
        let name = path.display().to_string();
        let file = File::create(path).map_err(|source| PortError::CaptureIo {
            file: name.clone(),
            source,
        })?;
        Self::with_file(name, file, link)
    }

    /// Creates `path` as a fresh file only its owner can read (mode 0600),
    /// for captures of cleartext: whatever was at the path, a symbolic
    /// link included, is replaced, never written through
    /// ([`crate::process::create_private_file`]).
    pub fn create_private(path: &Path, link: LinkType) -> Result<Self, PortError> {
        let name = path.display().to_string();
        let file =
            crate::process::create_private_file(path).map_err(|source| PortError::CaptureIo {
                file: name.clone(),
                source,
            })?;
        Self::with_file(name, file, link)
    }

    fn with_file(name: String, file: File, link: LinkType) -> Result<Self, PortError> {
        let sink = Sink(Arc::new(Mutex::new(BufWriter::new(file))));
        let header = PcapHeader {
            snaplen: SNAPLEN,
            datalink: match link {
                LinkType::Ethernet => DataLink::ETHERNET,
                LinkType::RawIp => DataLink::RAW,
            },
            ts_resolution: TsResolution::NanoSecond,
            endianness: pcap_file::Endianness::native(),
            ..PcapHeader::default()
        };
        let writer = pcap_file::pcap::PcapWriter::with_header(sink.clone(), header)
            .map_err(|e| convert(&name, "file header", e))?;
        Ok(PcapWriter {
            path: name,
            sink,
            writer,
            written: 0,
        })
    }

    /// Appends one packet with its timestamp (nanoseconds since the epoch,
    /// up to the year 2106, which pcap's 32-bit seconds can hold).
    pub fn write(&mut self, ts: Timestamp, frame: &[u8]) -> Result<(), PortError> {
        let what = format!("packet {}", self.written + 1);
        let bad = |problem: String| PortError::BadCapture {
            file: self.path.clone(),
            problem: format!("{what}: {problem}"),
        };
        let len = u32::try_from(frame.len())
            .ok()
            .filter(|&len| len <= SNAPLEN)
            .ok_or_else(|| {
                bad(format!(
                    "{} bytes, more than the {SNAPLEN}-byte snapshot length",
                    frame.len()
                ))
            })?;
        if ts.0 / NANOS_PER_SEC > u64::from(u32::MAX) {
            return Err(bad(format!(
                "timestamp {} ns is past what pcap can hold",
                ts.0
            )));
        }
        let packet = PcapPacket::new(Duration::from_nanos(ts.0), len, frame);
        self.writer
            .write_packet(&packet)
            .map_err(|e| convert(&self.path, &what, e))?;
        self.written += 1;
        Ok(())
    }

    /// Writes everything buffered to the file.
    pub fn flush(&mut self) -> Result<(), PortError> {
        self.sink.flush().map_err(|source| PortError::CaptureIo {
            file: self.path.clone(),
            source,
        })
    }

    /// Packets written so far.
    pub fn written(&self) -> u64 {
        self.written
    }
}
