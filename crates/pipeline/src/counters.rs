//! Counters of the pipeline around the IPsec stage: frames per port and
//! direction, and drops that happen outside the IPsec stage.

/// A drop outside the IPsec stage (those have [`bitsgw_ipsec::DropReason`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PipelineDrop {
    /// An Ethernet frame shorter than its header.
    BadFrame,
    /// A worker's queue was full.
    QueueFull,
    /// The port refused to send.
    SendFailed,
    /// No worker is running (fail closed after a worker died).
    WorkerDown,
    /// A network-side packet addressed to the appliance itself that is not
    /// ARP, neighbor discovery or an echo request (no services there).
    LocalRefused,
    /// Routed mode: the next hop did not answer ARP or neighbor
    /// solicitations in time, or too many packets already waited for it.
    NeighborUnresolved,
    /// Routed mode: no route for the destination on the side it leaves on.
    NoRoute,
    /// Routed mode: a frame that is not forwarded: not IP, to a group
    /// address or to another station's MAC, and not for the appliance's
    /// own stack (ARP and neighbor discovery between other stations).
    NotRouted,
    /// The operating system dropped a frame before the port received it
    /// (its socket buffer was full: the receive thread fell behind).
    KernelRx,
    /// An Ethernet frame that carries neither IP (after the VLAN tags
    /// bitsgw walks) nor ARP, and whose EtherType the configuration does
    /// not let pass (see [`crate::layer2`]); also counted by EtherType in
    /// [`PipelineCounters::layer2_dropped`].
    Layer2,
}

impl PipelineDrop {
    /// Every reason, in counter order.
    pub const ALL: [PipelineDrop; 10] = [
        PipelineDrop::BadFrame,
        PipelineDrop::QueueFull,
        PipelineDrop::SendFailed,
        PipelineDrop::WorkerDown,
        PipelineDrop::LocalRefused,
        PipelineDrop::NeighborUnresolved,
        PipelineDrop::NoRoute,
        PipelineDrop::NotRouted,
        PipelineDrop::KernelRx,
        PipelineDrop::Layer2,
    ];

    /// The counter's name.
    pub fn name(self) -> &'static str {
        match self {
            PipelineDrop::BadFrame => "bad_frame",
            PipelineDrop::QueueFull => "queue_full",
            PipelineDrop::SendFailed => "send_failed",
            PipelineDrop::WorkerDown => "worker_down",
            PipelineDrop::LocalRefused => "local_refused",
            PipelineDrop::NeighborUnresolved => "neighbor_unresolved",
            PipelineDrop::NoRoute => "no_route",
            PipelineDrop::NotRouted => "not_routed",
            PipelineDrop::KernelRx => "kernel_rx",
            PipelineDrop::Layer2 => "layer2",
        }
    }
}

/// Frames and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameCount {
    /// Frames.
    pub frames: u64,
    /// Bytes.
    pub bytes: u64,
}

impl FrameCount {
    /// Counts one frame of `len` bytes.
    #[inline]
    pub fn add(&mut self, len: usize) {
        self.frames += 1;
        self.bytes += len as u64;
    }

    /// Adds another count.
    pub fn merge(&mut self, other: &FrameCount) {
        self.frames += other.frames;
        self.bytes += other.bytes;
    }
}

/// The pipeline's own counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipelineCounters {
    /// Frames received on the host port.
    pub host_rx: FrameCount,
    /// Frames sent on the host port.
    pub host_tx: FrameCount,
    /// Frames received on the network port.
    pub net_rx: FrameCount,
    /// Frames sent on the network port.
    pub net_tx: FrameCount,
    /// Non-IP frames (ARP, what the layer-2 policy allows) passed through
    /// unchanged.
    pub non_ip_passed: u64,
    /// Frames consumed by the appliance's own endpoints (ARP, neighbor
    /// discovery, echo requests, anything for its addresses from the host
    /// side).
    pub local_delivered: u64,
    /// Frames one queue received and handed to the queue that owns their
    /// SA (queues mode, [`crate::runner::start_queues`]), counted by the
    /// owner.
    pub handed_over: u64,
    /// [`PipelineDrop::Layer2`] drops by EtherType.
    pub layer2_dropped: crate::layer2::Layer2Drops,
    drops: [u64; PipelineDrop::ALL.len()],
}

impl PipelineCounters {
    /// Counts a drop.
    #[inline]
    pub fn record(&mut self, reason: PipelineDrop) {
        self.drops[reason as usize] += 1;
    }

    /// Counts `n` drops.
    #[inline]
    pub fn record_n(&mut self, reason: PipelineDrop, n: u64) {
        self.drops[reason as usize] += n;
    }

    /// Drops counted for `reason`.
    pub fn drops(&self, reason: PipelineDrop) -> u64 {
        self.drops[reason as usize]
    }

    /// All pipeline drops.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// Adds another set of counters (workers' counters into a total).
    pub fn merge(&mut self, other: &PipelineCounters) {
        self.host_rx.merge(&other.host_rx);
        self.host_tx.merge(&other.host_tx);
        self.net_rx.merge(&other.net_rx);
        self.net_tx.merge(&other.net_tx);
        self.non_ip_passed += other.non_ip_passed;
        self.local_delivered += other.local_delivered;
        self.handed_over += other.handed_over;
        self.layer2_dropped.merge(&other.layer2_dropped);
        for (a, b) in self.drops.iter_mut().zip(other.drops.iter()) {
            *a += b;
        }
    }
}
