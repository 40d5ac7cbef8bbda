//! Thin, checked wrappers around the libc calls the ports need. Every
//! `unsafe` block of the crate's system ports lives here or next to the
//! call it serves, each with the reason it is sound.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// `PACKET_IGNORE_OUTGOING` from `<linux/if_packet.h>` (Linux 4.20), which
/// the libc crate does not define.
pub(crate) const PACKET_IGNORE_OUTGOING: libc::c_int = 23;

/// An `ifreq` naming `name`, every other byte zero.
pub(crate) fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "interface name must be 1 to {} bytes without NUL",
                libc::IFNAMSIZ - 1
            ),
        ));
    }
    // SAFETY: `ifreq` is a C struct of integers, byte arrays and a union of
    // those and a raw pointer; all-zero bytes are a valid value of each.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

/// A new `AF_PACKET` raw socket with protocol 0: it receives nothing until
/// it is bound to an interface and a protocol.
pub(crate) fn packet_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; the result is checked below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a descriptor socket(2) just returned to us, owned by
    // nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A UDP socket, only for interface ioctls (which any socket can carry,
/// and which need no privilege on this kind).
pub(crate) fn control_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; the result is checked below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a descriptor socket(2) just returned to us, owned by
    // nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sets an integer socket option.
pub(crate) fn set_int_option(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    set_option(fd, level, name, &value)
}

/// Sets a socket option whose value is `value` (the C type the option
/// takes; the kernel refuses a value of the wrong size).
fn set_option<T>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: the option value points to a live `T` and the length passed
    // is its size; the kernel only reads that many bytes.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets the classic BPF program of the `PACKET_FANOUT_CBPF` group `fd`
/// is in (`PACKET_FANOUT_DATA`); it replaces the group's last one.
pub(crate) fn set_fanout_program(
    fd: BorrowedFd<'_>,
    program: &mut [libc::sock_filter],
) -> io::Result<()> {
    let len = libc::c_ushort::try_from(program.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "fanout program too long"))?;
    let fprog = libc::sock_fprog {
        len,
        filter: program.as_mut_ptr(),
    };
    // The kernel copies `len` instructions from `filter` during the call,
    // while `program` is borrowed and alive.
    set_option(fd, libc::SOL_PACKET, libc::PACKET_FANOUT_DATA, &fprog)
}

/// Reads and clears the socket's pending error (`SO_ERROR`).
pub(crate) fn take_socket_error(fd: BorrowedFd<'_>) -> io::Result<Option<io::Error>> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are live locals; `len` holds the size of
    // `value`, so the kernel writes at most that many bytes into it.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((value != 0).then(|| io::Error::from_raw_os_error(value)))
}

/// The ARPHRD hardware type of interface `name` in the socket's network
/// namespace.
pub(crate) fn hardware_type(fd: BorrowedFd<'_>, name: &str) -> io::Result<u16> {
    let mut req = ifreq(name)?;
    // SAFETY: SIOCGIFHWADDR reads the name from and writes a `sockaddr`
    // into the `ifreq` we pass, which is live and of the size the kernel
    // expects for this request.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: after a successful SIOCGIFHWADDR the kernel has written the
    // `ifru_hwaddr` member of the union; reading it is reading initialised
    // plain data.
    Ok(unsafe { req.ifr_ifru.ifru_hwaddr.sa_family })
}

/// Waits until `fd` is readable or `timeout` passes. `Ok(true)` if it is
/// readable (or has an error or hang-up to report), `Ok(false)` on timeout
/// or on a signal.
pub(crate) fn poll_readable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    poll_events(fd, timeout).map(|revents| revents != 0)
}

/// Waits until `fd` is readable or `timeout` passes; returns what `poll`
/// reported (`POLLIN`, `POLLERR`, `POLLHUP`, `POLLNVAL`), 0 on timeout or
/// on a signal.
pub(crate) fn poll_events(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<libc::c_short> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `pfd` is one live, initialised `pollfd` and we pass a count
    // of 1.
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(err);
    }
    Ok(if rc > 0 { pfd.revents } else { 0 })
}

/// The index of interface `name` in the calling thread's network namespace.
pub(crate) fn interface_index(name: &str) -> io::Result<libc::c_int> {
    let c_name = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name contains NUL"))?;
    // SAFETY: `c_name` is a live NUL-terminated string; the call only reads
    // it.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    libc::c_int::try_from(index)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "interface index out of range"))
}

/// The index of interface `name` in the network namespace of socket `fd`
/// (which need not be the calling thread's).
pub(crate) fn interface_index_of(fd: BorrowedFd<'_>, name: &str) -> io::Result<libc::c_int> {
    let mut req = ifreq(name)?;
    // SAFETY: SIOCGIFINDEX reads the name from and writes an `int` into
    // the `ifreq` we pass, which is live and of the size the kernel
    // expects for this request.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFINDEX, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: after a successful SIOCGIFINDEX the kernel has written the
    // `ifru_ifindex` member of the union; reading it is reading
    // initialised plain data.
    Ok(unsafe { req.ifr_ifru.ifru_ifindex })
}

/// Binds an `AF_PACKET` socket to every protocol (`ETH_P_ALL`) on one
/// interface: from here on it receives that interface's frames.
pub(crate) fn bind_packet_socket(fd: BorrowedFd<'_>, ifindex: libc::c_int) -> io::Result<()> {
    // SAFETY: `sockaddr_ll` is a C struct of integers and a byte array;
    // all-zero bytes are a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as libc::c_ushort;
    addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    addr.sll_ifindex = ifindex;
    // SAFETY: the address points to a live `sockaddr_ll` and the length
    // passed is its size; bind(2) only reads it.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Puts the interface in promiscuous mode for as long as the socket is
/// open (`PACKET_MR_PROMISC` membership, which the kernel drops with the
/// socket, so nothing is left behind if the appliance dies).
pub(crate) fn add_promiscuous_membership(
    fd: BorrowedFd<'_>,
    ifindex: libc::c_int,
) -> io::Result<()> {
    let mreq = libc::packet_mreq {
        mr_ifindex: ifindex,
        mr_type: libc::PACKET_MR_PROMISC as libc::c_ushort,
        mr_alen: 0,
        mr_address: [0; 8],
    };
    set_option(fd, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq)
}

/// Sets a socket buffer size (`SO_RCVBUF` or `SO_SNDBUF`), above the
/// system's `rmem_max`/`wmem_max` when allowed (`SO_*BUFFORCE`, which
/// needs `CAP_NET_ADMIN`), else as large as the limit lets it be.
pub(crate) fn set_buffer_size(fd: BorrowedFd<'_>, receive: bool, bytes: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let (force, plain) = if receive {
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF)
    } else {
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF)
    };
    set_int_option(fd, libc::SOL_SOCKET, force, value)
        .or_else(|_| set_int_option(fd, libc::SOL_SOCKET, plain, value))
}

/// Sets how long a blocking send may wait (`SO_SNDTIMEO`).
pub(crate) fn set_send_timeout(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_usec: libc::suseconds_t::from(timeout.subsec_micros()),
    };
    set_option(fd, libc::SOL_SOCKET, libc::SO_SNDTIMEO, &tv)
}

/// Receives one frame from a packet socket into `space` without blocking.
/// `Ok(None)` if nothing is waiting (or a signal came first); otherwise the
/// frame's full length, which is larger than `space` if it was cut
/// (`MSG_TRUNC`), and, with `PACKET_AUXDATA` on, the VLAN tag the kernel
/// took out of the frame, if it did.
pub(crate) fn recv_packet_nowait(
    fd: BorrowedFd<'_>,
    space: &mut [u8],
) -> io::Result<Option<(usize, Option<VlanTag>)>> {
    /// Room for one `tpacket_auxdata` control message, aligned for its
    /// header.
    #[repr(C, align(8))]
    struct Control([u8; 64]);
    let mut control = Control([0; 64]);
    let mut iov = libc::iovec {
        iov_base: space.as_mut_ptr().cast(),
        iov_len: space.len(),
    };
    // SAFETY: `msghdr` is a C struct of integers and raw pointers; all-zero
    // bytes are a valid value (null name, no control buffer yet).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = control.0.len() as _;
    // SAFETY: `msg` points to one live iovec over `space` (exclusively
    // borrowed) and to the live `control` buffer, with their true lengths;
    // the kernel writes at most that much into each.
    let n = unsafe {
        libc::recvmsg(
            fd.as_raw_fd(),
            &mut msg,
            libc::MSG_DONTWAIT | libc::MSG_TRUNC,
        )
    };
    if n < 0 {
        let err = io::Error::last_os_error();
        return match err.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
            _ => Err(err),
        };
    }
    let mut tag = None;
    // SAFETY: CMSG_LEN is arithmetic on its argument; it touches no memory.
    let aux_len =
        unsafe { libc::CMSG_LEN(std::mem::size_of::<libc::tpacket_auxdata>() as u32) } as usize;
    // SAFETY: `msg` was filled by a successful recvmsg(2): CMSG_FIRSTHDR
    // and CMSG_NXTHDR walk its control buffer, returning null at its end.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        // SAFETY: a non-null pointer from CMSG_FIRSTHDR/CMSG_NXTHDR points
        // to a whole `cmsghdr` inside `control`.
        let header = unsafe { &*cmsg };
        if header.cmsg_level == libc::SOL_PACKET
            && header.cmsg_type == libc::PACKET_AUXDATA
            && header.cmsg_len as usize >= aux_len
        {
            // SAFETY: the message is a `tpacket_auxdata` (its level, type
            // and length say so) inside `control`; the read is unaligned
            // because nothing promises the data's alignment.
            let aux = unsafe {
                std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::tpacket_auxdata>())
            };
            tag = stripped_tag(aux.tp_status, aux.tp_vlan_tci, aux.tp_vlan_tpid);
        }
        // SAFETY: as above; `cmsg` is a header of `msg`'s control buffer.
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }
    Ok(Some((n as usize, tag)))
}

/// Sends one datagram, blocking at most for the socket's send timeout.
/// Returns how many bytes the kernel took.
pub(crate) fn send(fd: BorrowedFd<'_>, frame: &[u8]) -> io::Result<usize> {
    // SAFETY: the kernel reads at most `frame.len()` bytes from `frame`,
    // which is live for the call.
    let n = unsafe { libc::send(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Sends up to [`SEND_BATCH`] datagrams with one `sendmmsg(2)`, blocking
/// at most for the socket's send timeout. Returns how many the kernel
/// took, in order; an error only when it took none (the error is the
/// first datagram's).
pub(crate) fn send_batch(fd: BorrowedFd<'_>, frames: &[&[u8]]) -> io::Result<usize> {
    let n = frames.len().min(SEND_BATCH);
    // SAFETY: all-zero is a valid iovec (null, 0) and mmsghdr (no name, no
    // control data, no iovecs).
    let mut iov: [libc::iovec; SEND_BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut msgs: [libc::mmsghdr; SEND_BATCH] = unsafe { std::mem::zeroed() };
    for (i, frame) in frames[..n].iter().enumerate() {
        iov[i].iov_base = frame.as_ptr().cast_mut().cast();
        iov[i].iov_len = frame.len();
        msgs[i].msg_hdr.msg_iov = &mut iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: `msgs[..n]` each point at one iovec of `iov`, which points at
    // a frame of `frames`; all outlive the call, and the kernel only reads
    // the frames (and writes `msg_len` into `msgs`).
    let sent = unsafe { libc::sendmmsg(fd.as_raw_fd(), msgs.as_mut_ptr(), n as libc::c_uint, 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sent as usize)
}

/// The most datagrams one [`send_batch`] passes to the kernel.
pub(crate) const SEND_BATCH: usize = 64;

/// Frames the kernel dropped for lack of room in the socket's receive
/// buffer since the last call (`PACKET_STATISTICS`, which the read
/// resets).
pub(crate) fn take_packet_drops(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut stats = libc::tpacket_stats {
        tp_packets: 0,
        tp_drops: 0,
    };
    let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: `stats` and `len` are live locals; `len` holds the size of
    // `stats`, so the kernel writes at most that many bytes into it.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&mut stats as *mut libc::tpacket_stats).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u64::from(stats.tp_drops))
}

/// The hardware (MAC) address of interface `name`, if it has a 6-byte one.
pub(crate) fn hardware_address(fd: BorrowedFd<'_>, name: &str) -> io::Result<Option<[u8; 6]>> {
    let mut req = ifreq(name)?;
    // SAFETY: as in `hardware_type`: SIOCGIFHWADDR writes a `sockaddr` into
    // the live `ifreq` we pass.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: after a successful SIOCGIFHWADDR the kernel has written the
    // `ifru_hwaddr` member of the union; reading it is reading initialised
    // plain data.
    let hw = unsafe { req.ifr_ifru.ifru_hwaddr };
    if hw.sa_family != libc::ARPHRD_ETHER {
        return Ok(None);
    }
    let mut mac = [0u8; 6];
    for (dst, &src) in mac.iter_mut().zip(hw.sa_data.iter()) {
        *dst = src as u8;
    }
    Ok(Some(mac))
}

/// `PACKET_COPY_THRESH` from `<linux/if_packet.h>`, which the libc crate
/// does not define.
const PACKET_COPY_THRESH: libc::c_int = 7;

/// A receive ring (`PACKET_MMAP`, `TPACKET_V2`): frame slots the kernel
/// fills and hands over by setting `TP_STATUS_USER` in the slot's header,
/// which we give back by setting `TP_STATUS_KERNEL`. Receiving a frame
/// costs no system call while slots are full.
///
/// A frame longer than a slot is cut in the slot; with
/// `PACKET_COPY_THRESH` the kernel also queues the whole frame on the
/// socket and marks the slot `TP_STATUS_COPY`, and the frame is then read
/// from the socket (see `Documentation/networking/packet_mmap.rst`).
#[derive(Debug)]
pub(crate) struct RxRing {
    base: std::ptr::NonNull<u8>,
    len: usize,
    frame_size: usize,
    frames: usize,
    head: usize,
}

// SAFETY: the mapping is owned by this value alone (nothing else holds the
// pointer) and is valid from any thread; the kernel side synchronises
// through the status words, which are accessed atomically.
unsafe impl Send for RxRing {}

/// A VLAN tag as it stands in a frame: TPID and TCI, in network order.
pub(crate) type VlanTag = [u8; 4];

/// The tag the kernel took out of a received frame, from the status and
/// the TCI and TPID fields of a `tpacket2_hdr` or `tpacket_auxdata`.
///
/// Linux strips the outer 802.1Q or 802.1ad tag of a received frame
/// before packet sockets see it (in software, `skb_vlan_untag`, or by the
/// NIC's VLAN receive offload) and reports it beside the frame. Older
/// kernels leave `TP_STATUS_VLAN_TPID_VALID` unset: the tag was 802.1Q.
fn stripped_tag(status: u32, tci: u16, tpid: u16) -> Option<VlanTag> {
    if status & libc::TP_STATUS_VLAN_VALID == 0 {
        return None;
    }
    let tpid = if status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
        tpid
    } else {
        0x8100
    };
    let [t0, t1] = tpid.to_be_bytes();
    let [c0, c1] = tci.to_be_bytes();
    Some([t0, t1, c0, c1])
}

/// One filled slot of an [`RxRing`].
#[derive(Debug)]
pub(crate) enum RingFrame<'a> {
    /// The whole frame, in the slot, and the VLAN tag the kernel took out
    /// of it, if it did: the tag goes back after the MAC addresses.
    Whole(&'a [u8], Option<VlanTag>),
    /// The frame was longer than the slot; it is queued on the socket in
    /// full.
    Copied,
    /// The frame was longer than the slot and is not queued anywhere: `len`
    /// octets were on the wire.
    Cut { len: usize },
}

impl RxRing {
    /// Maps a ring of `frames` slots of `frame_size` octets (a multiple of
    /// 16 that divides the page-multiple block size) on a packet socket
    /// that is not bound yet.
    pub(crate) fn new(fd: BorrowedFd<'_>, frame_size: usize, frames: usize) -> io::Result<RxRing> {
        const BLOCK: usize = 1 << 17;
        let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_owned());
        if frame_size < libc::TPACKET2_HDRLEN
            || !frame_size.is_multiple_of(libc::TPACKET_ALIGNMENT)
            || !BLOCK.is_multiple_of(frame_size)
            || frames == 0
            || !frames.is_multiple_of(BLOCK / frame_size)
        {
            return Err(invalid("receive ring geometry"));
        }
        set_int_option(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_VERSION,
            libc::tpacket_versions::TPACKET_V2 as libc::c_int,
        )?;
        set_int_option(fd, libc::SOL_PACKET, PACKET_COPY_THRESH, 1)?;
        let len = frame_size * frames;
        let c_uint = |n: usize| libc::c_uint::try_from(n).map_err(|_| invalid("receive ring size"));
        let req = libc::tpacket_req {
            tp_block_size: c_uint(BLOCK)?,
            tp_block_nr: c_uint(len / BLOCK)?,
            tp_frame_size: c_uint(frame_size)?,
            tp_frame_nr: c_uint(frames)?,
        };
        set_option(fd, libc::SOL_PACKET, libc::PACKET_RX_RING, &req)?;
        // SAFETY: a fresh shared mapping of the ring the kernel just made
        // for this socket, at an address the kernel picks; nothing else in
        // this process refers to that range.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = std::ptr::NonNull::new(addr.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned a null mapping"))?;
        Ok(RxRing {
            base,
            len,
            frame_size,
            frames,
            head: 0,
        })
    }

    /// The status word of slot `index`.
    fn status(&self, index: usize) -> &std::sync::atomic::AtomicU32 {
        // SAFETY: `index < frames`, so the slot lies inside the mapping,
        // which lives as long as `self`; a slot starts on a 16-octet
        // boundary (a page plus a multiple of the slot size), so its first
        // field, the `u32` status, is aligned. The kernel writes the word
        // concurrently, hence the atomic view.
        unsafe {
            &*self
                .base
                .as_ptr()
                .add(index * self.frame_size)
                .cast::<std::sync::atomic::AtomicU32>()
        }
    }

    /// The frame in the slot at the head, if the kernel has filled it; to
    /// be given back with [`RxRing::release`] before the next call.
    pub(crate) fn peek(&self) -> io::Result<Option<RingFrame<'_>>> {
        let status = self
            .status(self.head)
            .load(std::sync::atomic::Ordering::Acquire);
        if status & libc::TP_STATUS_USER == 0 {
            return Ok(None);
        }
        // SAFETY: the slot is inside the mapping and aligned (see
        // `status`); with `TP_STATUS_USER` set (read with acquire ordering
        // above) the kernel has written the header and the frame and does
        // not touch the slot until we hand it back.
        let slot = unsafe {
            std::slice::from_raw_parts(
                self.base.as_ptr().add(self.head * self.frame_size),
                self.frame_size,
            )
        };
        // `struct tpacket2_hdr`: status, len, snaplen (u32), mac, net
        // (u16), sec, nsec (u32), vlan_tci, vlan_tpid (u16), in host byte
        // order.
        let u32_at = |at: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&slot[at..at + 4]);
            u32::from_ne_bytes(b) as usize
        };
        let (len, snaplen) = (u32_at(4), u32_at(8));
        let u16_at = |at: usize| u16::from_ne_bytes([slot[at], slot[at + 1]]);
        let mac = usize::from(u16_at(12));
        let tag = stripped_tag(status, u16_at(24), u16_at(26));
        if status & libc::TP_STATUS_COPY != 0 {
            return Ok(Some(RingFrame::Copied));
        }
        if snaplen < len {
            return Ok(Some(RingFrame::Cut { len }));
        }
        match slot.get(mac..mac + snaplen) {
            Some(frame) => Ok(Some(RingFrame::Whole(frame, tag))),
            None => Err(io::Error::other("receive ring slot out of bounds")),
        }
    }

    /// Gives the slot at the head back to the kernel and moves on.
    pub(crate) fn release(&mut self) {
        self.status(self.head)
            .store(libc::TP_STATUS_KERNEL, std::sync::atomic::Ordering::Release);
        self.head = (self.head + 1) % self.frames;
    }
}

impl Drop for RxRing {
    fn drop(&mut self) {
        // SAFETY: `base` and `len` are the mapping made in `new`, unmapped
        // once, here; no slice into it outlives `self`.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}
