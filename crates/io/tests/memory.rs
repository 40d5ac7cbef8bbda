//! In-memory ports: what is injected is received in order, what is sent is
//! collected, and closing ends reception once the queue is drained.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bitsgw_io::{LinkType, Port, PortError, RECV_TIMEOUT};
use bitsgw_wire::buf::{DEFAULT_CAPACITY, DEFAULT_HEADROOM};
use bitsgw_wire::PacketBuf;

#[test]
fn inject_receive_send_collect_close() {
    let (mut port, handle) = bitsgw_io::memory("m0", LinkType::RawIp);
    assert_eq!(port.rx.name(), "m0");
    assert_eq!(port.rx.link_type(), LinkType::RawIp);
    assert_eq!(port.tx.link_type(), LinkType::RawIp);

    let mut buf = PacketBuf::new();
    // Nothing queued: a timeout, not an error, and not much longer than
    // the documented wait.
    let start = Instant::now();
    assert!(!port.rx.recv(&mut buf).unwrap());
    assert!(start.elapsed() < RECV_TIMEOUT + Duration::from_millis(500));

    handle.inject(vec![1, 2, 3]);
    handle.inject(&[4, 5][..]);
    assert_eq!(handle.pending(), 2);
    assert!(port.rx.recv(&mut buf).unwrap());
    assert_eq!(buf.data(), &[1, 2, 3]);
    assert_eq!(buf.headroom(), DEFAULT_HEADROOM);
    assert!(port.rx.recv(&mut buf).unwrap());
    assert_eq!(buf.data(), &[4, 5]);

    port.tx.send(&[9, 9]).unwrap();
    port.tx.send(&[8]).unwrap();
    assert_eq!(handle.sent(), vec![vec![9, 9], vec![8]]);
    assert_eq!(handle.take_sent(), vec![vec![9, 9], vec![8]]);
    assert!(handle.sent().is_empty());

    // Closing: queued frames are still delivered, then Closed, every time.
    handle.inject(vec![7]);
    handle.close();
    assert!(port.rx.recv(&mut buf).unwrap());
    assert_eq!(buf.data(), &[7]);
    for _ in 0..2 {
        match port.rx.recv(&mut buf) {
            Err(PortError::Closed { port }) => assert_eq!(port, "m0"),
            other => panic!("expected Closed, got {other:?}"),
        }
    }
    // Output still in flight after close is collected.
    port.tx.send(&[6]).unwrap();
    assert_eq!(handle.sent(), vec![vec![6]]);
}

#[test]
fn a_waiting_receiver_wakes_on_inject_and_close() {
    let (port, handle) = bitsgw_io::memory("m1", LinkType::Ethernet);
    let Port { mut rx, tx: _tx } = port;
    let receiver = std::thread::spawn(move || {
        let mut buf = PacketBuf::new();
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match rx.recv(&mut buf) {
                Ok(true) => got.push(buf.data().to_vec()),
                Ok(false) => assert!(Instant::now() < deadline, "no close seen"),
                Err(PortError::Closed { .. }) => return got,
                Err(e) => panic!("{e}"),
            }
        }
    });
    for i in 0..100u8 {
        handle.inject(vec![i; 60]);
    }
    handle.close();
    let got = receiver.join().unwrap();
    assert_eq!(got.len(), 100);
    assert!(got.iter().enumerate().all(|(i, f)| f == &vec![i as u8; 60]));
}

#[test]
fn an_oversized_frame_is_an_error_and_the_port_goes_on() {
    let (mut port, handle) = bitsgw_io::memory("m2", LinkType::Ethernet);
    handle.inject(vec![0u8; DEFAULT_CAPACITY + 1]);
    handle.inject(vec![1u8; 64]);
    let mut buf = PacketBuf::new();
    match port.rx.recv(&mut buf) {
        Err(PortError::FrameTooLarge { port, len, .. }) => {
            assert_eq!(port, "m2");
            assert_eq!(len, DEFAULT_CAPACITY + 1);
        }
        other => panic!("expected FrameTooLarge, got {other:?}"),
    }
    assert!(port.rx.recv(&mut buf).unwrap());
    assert_eq!(buf.data(), &[1u8; 64][..]);
}
