//! A half-open flood (RFC 7296 2.6): 20 000 IKE_SA_INIT requests from
//! 20 000 spoofed source addresses and ports, none of which answers a
//! cookie, at one responder (the appliance's limits: cookies from 64
//! half-open IKE SAs on, at most 1024). The responder switches to
//! stateless COOKIE answers at its threshold, its half-open IKE SAs and
//! the memory it holds stop growing there, a legitimate initiator that
//! answers the cookie still establishes in the middle of the flood, and
//! after the half-open timeout nothing of the flood is left. The figures
//! (half-open peak, octets held per half-open IKE SA, live octets through
//! the flood) are printed; BENCHMARKS.md records them.
//!
//! The one test of this file runs alone in its binary, so the counting
//! allocator (stats_alloc, every thread) sees little else.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/peers.rs"]
mod peers;

use bitsgw_ike::wire::NotifyType;
use bitsgw_ike::{Endpoint, Event, Timestamp, Transmit};
use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The octets allocated and not freed, by every thread (stats_alloc
/// counts a reallocation's growth as allocated, its shrinking as freed).
fn live() -> isize {
    let s = GLOBAL.stats();
    isize::try_from(s.bytes_allocated).unwrap() - isize::try_from(s.bytes_deallocated).unwrap()
}

const IKE: &str = "aes128gcm16-prfsha256-ecp256";
const ESP: &str = "aes128gcm16";
const COOKIE_THRESHOLD: usize = 64;
const MAX_HALF_OPEN: usize = 1024;
const FLOOD: u32 = 20_000;

/// An initiator or the responder, with the appliance's limits.
fn endpoint(initiator: bool) -> Endpoint {
    Endpoint::new(peers::endpoint(
        initiator,
        IKE,
        ESP,
        COOKIE_THRESHOLD,
        MAX_HALF_OPEN,
    ))
    .unwrap()
}

/// The spoofed source of flood message `k`: one of 254 addresses of
/// 203.0.113.0/24, a port of its own.
fn source(k: u32) -> SocketAddr {
    let host = u8::try_from(k % 254 + 1).unwrap();
    let port = u16::try_from(1024 + k / 254).unwrap();
    SocketAddr::new(Ipv4Addr::new(203, 0, 113, host).into(), port)
}

/// Flood message `k`: `template` with an initiator SPI of its own (the
/// responder keys half-open state by source and SPI).
fn flood_message(template: &[u8], k: u32) -> Vec<u8> {
    let mut m = template.to_vec();
    m[..8].copy_from_slice(&(u64::from(k) + 1).to_be_bytes());
    m
}

struct Flood {
    rsp: Endpoint,
    ra: SocketAddr,
    template: Vec<u8>,
    now: Timestamp,
    sent: u32,
    /// Answers to flood sources (dropped: nobody is there), and the
    /// legitimate initiator's datagrams in each direction.
    to_flood: u64,
    to_legit: Vec<Transmit>,
    half_open_peak: usize,
}

impl Flood {
    /// Sends the next flood message; the answers go nowhere.
    fn one(&mut self, legit: SocketAddr) {
        let m = flood_message(&self.template, self.sent);
        self.rsp
            .handle_datagram(self.now, source(self.sent), self.ra, &m);
        self.sent += 1;
        self.now = self.now.saturating_add(Duration::from_micros(50));
        while let Some(t) = self.rsp.poll_transmit() {
            if t.remote == legit {
                self.to_legit.push(t);
            } else {
                self.to_flood += 1;
            }
        }
        self.half_open_peak = self.half_open_peak.max(self.rsp.half_open_count());
    }
}

#[test]
fn a_half_open_flood_gets_cookies_holds_bounded_state_and_a_legitimate_peer_connects() {
    let ra: SocketAddr = "198.51.100.1:500".parse().unwrap();
    let legit_addr: SocketAddr = "192.0.2.1:500".parse().unwrap();
    let mut template_source = endpoint(true);
    template_source
        .initiate(Timestamp::ZERO, "192.0.2.200:500".parse().unwrap(), ra)
        .unwrap();
    let template = template_source.poll_transmit().unwrap().contents;
    let base = live();
    let mut f = Flood {
        rsp: endpoint(false),
        ra,
        template,
        now: Timestamp::from_secs(1),
        sent: 0,
        to_flood: 0,
        to_legit: Vec::new(),
        half_open_peak: 0,
    };
    let empty = live();
    // Up to the threshold every request is answered with state.
    while f.sent < u32::try_from(COOKIE_THRESHOLD).unwrap() {
        f.one(legit_addr);
    }
    assert_eq!(f.rsp.half_open_count(), COOKIE_THRESHOLD);
    assert_eq!(f.rsp.counters().sent(NotifyType::Cookie), 0);
    let at_threshold = live();
    let per_half_open = (at_threshold - empty) / isize::try_from(COOKIE_THRESHOLD).unwrap();
    while f.sent < 1_000 {
        f.one(legit_addr);
    }
    let after_1k = live();
    // The legitimate initiator, in the middle of the flood: its requests
    // and the responder's answers take turns with flood messages.
    let mut legit = endpoint(true);
    legit.initiate(f.now, legit_addr, ra).unwrap();
    let mut legit_up = false;
    while f.sent < FLOOD / 2 || !legit_up {
        f.one(legit_addr);
        if let Some(t) = legit.poll_transmit() {
            f.rsp.handle_datagram(f.now, t.local, t.remote, &t.contents);
        }
        while let Some(t) = f.rsp.poll_transmit() {
            f.to_legit.push(t);
        }
        for t in f.to_legit.drain(..) {
            legit.handle_datagram(f.now, t.local, t.remote, &t.contents);
        }
        while let Some(e) = legit.poll_event() {
            if let Event::ChildSaEstablished(_) = e {
                legit_up = true;
            }
            assert!(!matches!(e, Event::IkeSaDown { .. }), "{e:?}");
        }
        assert!(f.sent < FLOOD, "the legitimate initiator never got through");
    }
    // It answered a cookie: two IKE_SA_INIT requests.
    assert_eq!(legit.counters().requests_sent.ike_sa_init, 2);
    let mid = live();
    while f.sent < FLOOD {
        f.one(legit_addr);
    }
    let after_flood = live();
    // The threshold holds: the flood kept exactly the first 64 half-open
    // IKE SAs, everything else got a stateless COOKIE; the legitimate
    // initiator's was the 65th until its IKE_AUTH.
    assert_eq!(f.half_open_peak, COOKIE_THRESHOLD + 1);
    assert_eq!(f.rsp.half_open_count(), COOKIE_THRESHOLD);
    assert_eq!(f.rsp.ike_sa_count(), COOKIE_THRESHOLD + 1);
    let cookies = u64::from(FLOOD) - u64::try_from(COOKIE_THRESHOLD).unwrap();
    // The legitimate initiator's first request got one too.
    assert_eq!(f.rsp.counters().sent(NotifyType::Cookie), cookies + 1);
    assert_eq!(f.to_flood, u64::from(FLOOD));
    // Memory: the flood's second half, 10 000 requests, holds nothing
    // more (stateless cookies); the first half after the threshold holds
    // no more than the legitimate initiator and its IKE SA on both sides.
    let second_half = after_flood - mid;
    assert!(
        second_half.abs() < 4096,
        "{second_half} octets more during the flood's second half"
    );
    assert!(
        mid - after_1k < 64 * 1024,
        "{} octets more while the legitimate peer connected",
        mid - after_1k
    );
    // Abandoned exchanges leave no state behind after their timeout; the
    // legitimate IKE SA stays.
    // The first expires 30 s after it came, the last 64 x 50 us later.
    assert_eq!(f.rsp.poll_timeout(), Some(Timestamp::from_secs(31)));
    let expiry = Timestamp::from_secs(32);
    f.rsp.handle_timeout(expiry);
    assert_eq!(f.rsp.half_open_count(), 0);
    assert_eq!(f.rsp.ike_sa_count(), 1);
    assert_eq!(
        f.rsp.counters().half_open_expired,
        u64::try_from(COOKIE_THRESHOLD).unwrap()
    );
    // Nothing of the first flood message is remembered either: sent again
    // it makes a new half-open IKE SA, not a resent answer.
    let first = flood_message(&f.template, 0);
    f.rsp.handle_datagram(expiry, source(0), ra, &first);
    assert_eq!(f.rsp.counters().responses_resent, 0);
    assert_eq!(f.rsp.half_open_count(), 1);
    eprintln!(
        "flood: {FLOOD} IKE_SA_INIT from {FLOOD} sources; half-open peak {}; \
         {per_half_open} octets held per half-open IKE SA; \
         live octets above the empty responder: at the threshold {}, after 1000 {}, \
         after {FLOOD} (the legitimate initiator and its IKE SA on both sides included) {}; responder alone {}",
        f.half_open_peak,
        at_threshold - empty,
        after_1k - empty,
        after_flood - empty,
        empty - base,
    );
}
