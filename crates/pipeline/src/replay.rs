//! Deterministic replay: the same pipeline over captured frames, time taken
//! from the captures, control events scheduled at capture times. Running a
//! replay twice gives byte-identical output: nothing reads a clock, and
//! ties between captures are broken by the order the inputs were given.

use crate::gateway::{Gateway, Side, Tap};
use bitsgw_wire::ether::LinkType;
use bitsgw_wire::{PacketBuf, Timestamp};

/// Frames captured on one side.
#[derive(Debug, Clone)]
pub struct ReplayInput {
    /// Where they arrive.
    pub side: Side,
    /// Their link type.
    pub link: LinkType,
    /// The frames with their capture times.
    pub frames: Vec<(Timestamp, Vec<u8>)>,
}

/// A control action at a capture time.
pub struct ScheduledEvent<'a> {
    /// When it happens (before any frame of the same time).
    pub at: Timestamp,
    /// What it does.
    pub action: Box<dyn FnOnce(&mut Gateway) + 'a>,
}

impl core::fmt::Debug for ScheduledEvent<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ScheduledEvent")
            .field("at", &self.at)
            .finish_non_exhaustive()
    }
}

/// What left each port, in order, with the time it left.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayOutput {
    /// Frames sent on the host port.
    pub host: Vec<(Timestamp, Vec<u8>)>,
    /// Frames sent on the network port.
    pub network: Vec<(Timestamp, Vec<u8>)>,
}

/// Runs `inputs` through `gateway` in capture-time order.
pub fn run(
    gateway: &mut Gateway,
    inputs: &[ReplayInput],
    mut events: Vec<ScheduledEvent<'_>>,
    tap: &mut dyn Tap,
) -> ReplayOutput {
    // (time, input, index): a stable merge of the captures.
    let mut order: Vec<(Timestamp, usize, usize)> = inputs
        .iter()
        .enumerate()
        .flat_map(|(i, input)| {
            input
                .frames
                .iter()
                .enumerate()
                .map(move |(j, (t, _))| (*t, i, j))
        })
        .collect();
    order.sort_unstable();
    events.sort_by_key(|e| e.at);
    let mut events = events.into_iter().peekable();
    let mut out = ReplayOutput::default();
    let mut buf = PacketBuf::new();
    // What timers and events make the gateway send (a Binding Update after
    // a movement, its retransmissions) leaves at their time.
    let flush =
        |gateway: &mut Gateway, at: Timestamp, out: &mut ReplayOutput, tap: &mut dyn Tap| {
            gateway.poll_endpoints(
                at,
                &mut |side: Side, f: &[u8]| match side {
                    Side::Host => out.host.push((at, f.to_vec())),
                    Side::Network => out.network.push((at, f.to_vec())),
                },
                tap,
            );
        };
    for (now, i, j) in order {
        // Timers and scheduled events due before this frame.
        loop {
            let timer = gateway.poll_timeout().filter(|t| *t <= now);
            let event = events.peek().map(|e| e.at).filter(|t| *t <= now);
            match (timer, event) {
                (Some(t), Some(e)) if t < e => {
                    gateway.handle_timeout(t);
                    flush(gateway, t, &mut out, &mut *tap);
                }
                (_, Some(_)) => {
                    if let Some(e) = events.next() {
                        (e.action)(gateway);
                        flush(gateway, e.at, &mut out, &mut *tap);
                    }
                }
                (Some(t), None) => {
                    gateway.handle_timeout(t);
                    flush(gateway, t, &mut out, &mut *tap);
                }
                (None, None) => break,
            }
        }
        let input = &inputs[i];
        let frame = &input.frames[j].1;
        if buf.set(frame).is_err() {
            buf = PacketBuf::from_slice(frame);
        }
        let mut emit = |side: Side, f: &[u8]| match side {
            Side::Host => out.host.push((now, f.to_vec())),
            Side::Network => out.network.push((now, f.to_vec())),
        };
        let _ = gateway.handle_frame(input.side, input.link, &mut buf, now, &mut emit, &mut *tap);
    }
    for e in events {
        (e.action)(gateway);
        flush(gateway, e.at, &mut out, &mut *tap);
    }
    out
}
