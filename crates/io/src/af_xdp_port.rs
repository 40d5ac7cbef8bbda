//! AF_XDP ports (cargo feature `af-xdp`, off by default): an `AF_XDP`
//! socket on queue 0 of an Ethernet interface, in copy mode (`XDP_COPY`)
//! behind generic XDP (`XDP_FLAGS_SKB_MODE`), so it works on any driver,
//! veth among them. libxdp (through the xsk-rs crate) attaches its default
//! program, which redirects every frame arriving on the queue to the
//! socket; the kernel's stack no longer sees them.
//!
//! One UMEM of [`FRAMES`] frames per port: half are lent to the kernel
//! for receiving (the fill ring), half belong to the sending half.
//! Receiving copies a frame out of the UMEM into the caller's buffer and
//! gives the frame back to the fill ring a burst at a time; sending copies
//! a frame into a free UMEM frame, stages it, and each flush puts the
//! burst on the TX ring and kicks the kernel with one `sendto` (copy mode
//! transmits in that call). A trial for the fewer-system-calls work: see
//! BENCHMARKS.md, "Fewer system calls per packet"; VLAN tags and interfaces
//! with more than one queue are not handled.

use std::io::{self, Write as _};
use std::time::Duration;

use bitsgw_wire::PacketBuf;
use xsk_rs::config::{BindFlags, FrameSize, SocketConfig, UmemConfig, XdpFlags};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

use crate::{LinkType, Port, PortError, RxPort, TxPort, RECV_TIMEOUT};

/// UMEM frames per port, half for each direction.
const FRAMES: u32 = 4096;
/// Size of a UMEM frame: every frame of a 1500-octet MTU.
const FRAME_SIZE: u32 = 2048;
/// Frames taken from the RX ring, or staged for the TX ring, at a time.
const BURST: usize = 64;

pub(crate) fn open(interface: &str) -> Result<Port, PortError> {
    let err = |source: io::Error| PortError::Open {
        port: interface.to_owned(),
        source,
    };
    let umem_config = UmemConfig::builder()
        .frame_size(FrameSize::new(FRAME_SIZE).map_err(|e| err(io::Error::other(e.to_string())))?)
        .build()
        .map_err(|e| err(io::Error::other(e.to_string())))?;
    let frames = FRAMES
        .try_into()
        .map_err(|_| err(io::Error::other("no UMEM frames")))?;
    let (umem, mut descs) =
        Umem::new(umem_config, frames, false).map_err(|e| err(io::Error::other(e.to_string())))?;
    let socket_config = SocketConfig::builder()
        .bind_flags(BindFlags::XDP_COPY | BindFlags::XDP_USE_NEED_WAKEUP)
        .xdp_flags(XdpFlags::XDP_FLAGS_SKB_MODE)
        .build();
    let name = interface.parse().map_err(|_| {
        err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad interface name",
        ))
    })?;
    // SAFETY: the UMEM is new and this is its only socket, so no other
    // socket's rings share its frames; the socket and its rings keep the
    // UMEM alive.
    let (tx, rx, rings) = unsafe { Socket::new(socket_config, &umem, &name, 0) }
        .map_err(|e| err(io::Error::other(e.to_string())))?;
    let (mut fill, comp) = rings.ok_or_else(|| err(io::Error::other("no fill ring")))?;
    let sending = descs.split_off(descs.len() / 2);
    // SAFETY: the frames are this UMEM's, and none is in any other ring.
    let lent = unsafe { fill.produce(&descs) };
    if lent != descs.len() {
        return Err(err(io::Error::other("the fill ring took too few frames")));
    }
    let empty = descs[0];
    Ok(Port {
        rx: Box::new(AfXdpRx {
            name: interface.to_owned(),
            umem: umem.clone(),
            rx,
            fill,
            taken: vec![empty; BURST].into_boxed_slice(),
            count: 0,
            next: 0,
            dropped_before: 0,
        }),
        tx: Box::new(AfXdpTx {
            name: interface.to_owned(),
            umem,
            tx,
            comp,
            free: sending,
            staged: vec![empty; BURST].into_boxed_slice(),
            count: 0,
            completed: vec![empty; BURST].into_boxed_slice(),
            failed: 0,
        }),
    })
}

struct AfXdpRx {
    name: String,
    umem: Umem,
    rx: RxQueue,
    fill: FillQueue,
    /// Frames taken from the RX ring; `taken[next..count]` are still to
    /// be copied out, `taken[..next]` to go back to the fill ring.
    taken: Box<[FrameDesc]>,
    count: usize,
    next: usize,
    /// The kernel's drop count (`XDP_STATISTICS`) when last reported.
    dropped_before: u64,
}

impl std::fmt::Debug for AfXdpRx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfXdpRx")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl AfXdpRx {
    fn try_recv(&mut self, buf: &mut PacketBuf) -> Result<bool, PortError> {
        if self.next == self.count {
            if self.count > 0 {
                // SAFETY: the frames came from this UMEM's RX ring and
                // were copied out; the kernel gets them back.
                unsafe { self.fill.produce(&self.taken[..self.count]) };
                self.count = 0;
                self.next = 0;
            }
            // SAFETY: the ring is this UMEM's; the descriptors it fills
            // name frames the kernel handed over.
            self.count = unsafe { self.rx.consume(&mut self.taken) };
            if self.count == 0 {
                return Ok(false);
            }
        }
        let desc = &self.taken[self.next];
        self.next += 1;
        // SAFETY: the frame is this UMEM's and ours until it goes back to
        // the fill ring; nothing writes it meanwhile.
        let data = unsafe { self.umem.data(desc) };
        crate::fill(buf, &self.name, data.contents()).map(|()| true)
    }
}

impl RxPort for AfXdpRx {
    fn name(&self) -> &str {
        &self.name
    }

    fn link_type(&self) -> LinkType {
        LinkType::Ethernet
    }

    fn recv(&mut self, buf: &mut PacketBuf) -> Result<bool, PortError> {
        self.recv_within(buf, RECV_TIMEOUT)
    }

    fn recv_within(&mut self, buf: &mut PacketBuf, wait: Duration) -> Result<bool, PortError> {
        if self.try_recv(buf)? {
            return Ok(true);
        }
        let ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
        let readable = self.rx.poll(ms).map_err(|source| PortError::Io {
            port: self.name.clone(),
            source,
        })?;
        if !readable {
            return Ok(false);
        }
        self.try_recv(buf)
    }

    fn recv_nowait(&mut self, buf: &mut PacketBuf) -> Result<bool, PortError> {
        self.try_recv(buf)
    }

    /// Frames the kernel dropped for this socket (no room in the RX ring,
    /// or dropped on the way) since the last call.
    fn take_kernel_drops(&mut self) -> Result<u64, PortError> {
        let stats = self
            .rx
            .fd()
            .xdp_statistics()
            .map_err(|source| PortError::Io {
                port: self.name.clone(),
                source,
            })?;
        let dropped = stats.rx_dropped() + stats.rx_ring_full();
        let new = dropped.saturating_sub(self.dropped_before);
        self.dropped_before = dropped;
        Ok(new)
    }
}

struct AfXdpTx {
    name: String,
    umem: Umem,
    tx: TxQueue,
    comp: CompQueue,
    /// Sending frames neither staged nor with the kernel (its capacity is
    /// every sending frame, so returning frames never allocates).
    free: Vec<FrameDesc>,
    staged: Box<[FrameDesc]>,
    count: usize,
    /// Room for what the completion ring returns.
    completed: Box<[FrameDesc]>,
    failed: u64,
}

impl std::fmt::Debug for AfXdpTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfXdpTx")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl AfXdpTx {
    /// Takes back the frames the kernel has sent.
    fn reclaim(&mut self) {
        loop {
            // SAFETY: the completion ring is this UMEM's; the frames it
            // returns are ours again.
            let n = unsafe { self.comp.consume(&mut self.completed) };
            self.free.extend_from_slice(&self.completed[..n]);
            if n < self.completed.len() {
                break;
            }
        }
    }

    /// Puts the staged frames on the TX ring and kicks the kernel.
    fn push(&mut self) {
        if self.count == 0 {
            return;
        }
        let n = self.count;
        // SAFETY: the staged frames are this UMEM's sending frames, written
        // and in no ring.
        let mut produced = unsafe { self.tx.produce(&self.staged[..n]) };
        if produced == 0 {
            // The ring is full: let the kernel send what it holds.
            let _ = self.tx.wakeup();
            self.reclaim();
            // SAFETY: as above.
            produced = unsafe { self.tx.produce(&self.staged[..n]) };
        }
        if produced == 0 {
            self.failed += n as u64;
            self.free.extend_from_slice(&self.staged[..n]);
        }
        // Copy mode sends in this call; EAGAIN or EBUSY only mean the
        // kernel is still busy with earlier frames, which a later kick
        // sends.
        let _ = self.tx.wakeup();
        self.count = 0;
        self.reclaim();
    }
}

impl TxPort for AfXdpTx {
    fn name(&self) -> &str {
        &self.name
    }

    fn link_type(&self) -> LinkType {
        LinkType::Ethernet
    }

    fn send(&mut self, frame: &[u8]) -> Result<(), PortError> {
        if frame.len() > FRAME_SIZE as usize {
            return Err(PortError::FrameTooLarge {
                port: self.name.clone(),
                len: frame.len(),
                capacity: FRAME_SIZE as usize,
            });
        }
        if self.count == BURST {
            self.push();
        }
        if self.free.is_empty() {
            self.reclaim();
        }
        let Some(mut desc) = self.free.pop() else {
            return Err(PortError::Io {
                port: self.name.clone(),
                source: io::Error::new(io::ErrorKind::WouldBlock, "every UMEM frame is in flight"),
            });
        };
        // SAFETY: the frame is one of this UMEM's sending frames, free, so
        // neither the kernel nor another handle touches it.
        let mut data = unsafe { self.umem.data_mut(&mut desc) };
        let mut cursor = data.cursor();
        cursor.set_pos(0);
        if cursor.write_all(frame).is_err() {
            self.free.push(desc);
            return Err(PortError::FrameTooLarge {
                port: self.name.clone(),
                len: frame.len(),
                capacity: FRAME_SIZE as usize,
            });
        }
        self.staged[self.count] = desc;
        self.count += 1;
        Ok(())
    }

    fn flush(&mut self) -> u64 {
        self.push();
        std::mem::take(&mut self.failed)
    }
}

impl Drop for AfXdpTx {
    /// Nothing staged is lost with the handle.
    fn drop(&mut self) {
        self.push();
    }
}
