//! The fanout programs: which socket of a `PACKET_FANOUT` group (mode
//! `PACKET_FANOUT_CBPF`) takes a frame. The network side's takes ESP by
//! its SPI ([`spi_program`]); the host side's takes IPv4 by the outbound
//! SPD's entries ([`rules_program`]).
//!
//! The kernel's flow hash keeps one SA's frames from one peer on one
//! socket but can not say which: its seed is random. This classic BPF
//! program makes the choice the SA's owner: it reads the SPI of ESP
//! (RFC 4303 2.1) over IPv4 or IPv6, or of ESP in UDP on port 4500
//! (RFC 3948 2.2; a zero non-ESP marker is IKE, not ESP), and returns the
//! queue the table gives it. Frames of an SPI not in the table go to the
//! SPI modulo the group's size (the kernel takes the result modulo the
//! number of sockets); fragments and other IP frames by the XOR of their
//! addresses'
//! last words, so a host pair stays on one socket; anything else to the
//! first. The choice only saves a hand-over: a frame on the wrong socket
//! is still handed to its owner.
//!
//! Loads are relative to the network header (`SKF_NET_OFF`): the kernel
//! runs the program before it pushes the link-layer header back, and the
//! outer VLAN tag is out of the frame by then.

use bitsgw_pipeline::port::SteerRule;

/// SPIs a program steers at most (two instructions each, within the
/// kernel's 4096-instruction limit). Past that, SPIs go by the modulo rule.
pub const MAX_STEERED_SPIS: usize = 2000;

/// The UDP port of ESP in UDP (RFC 3948).
const NAT_T_PORT: u32 = 4500;

const NET: u32 = libc::SKF_NET_OFF as u32;

fn op(code: u32, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

fn ld_abs(size: u32, at: u32) -> libc::sock_filter {
    op(
        libc::BPF_LD | size | libc::BPF_ABS,
        0,
        0,
        NET.wrapping_add(at),
    )
}

fn ld_ind(size: u32, at: u32) -> libc::sock_filter {
    op(
        libc::BPF_LD | size | libc::BPF_IND,
        0,
        0,
        NET.wrapping_add(at),
    )
}

/// X = the IPv4 header's length.
fn ldx_ihl() -> libc::sock_filter {
    op(libc::BPF_LDX | libc::BPF_B | libc::BPF_MSH, 0, 0, NET)
}

fn jeq(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    op(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, jt, jf, k)
}

fn ja(k: u32) -> libc::sock_filter {
    op(libc::BPF_JMP | libc::BPF_JA, 0, 0, k)
}

fn ret_a() -> libc::sock_filter {
    op(libc::BPF_RET | libc::BPF_A, 0, 0, 0)
}

fn ret_k(k: u32) -> libc::sock_filter {
    op(libc::BPF_RET | libc::BPF_K, 0, 0, k)
}

/// A = A XOR (the word at `a`) XOR... : the hash of two address words.
fn xor_words(a: u32, b: u32) -> [libc::sock_filter; 5] {
    [
        ld_abs(libc::BPF_W, a),
        op(libc::BPF_MISC | libc::BPF_TAX, 0, 0, 0),
        ld_abs(libc::BPF_W, b),
        op(libc::BPF_ALU | libc::BPF_XOR | libc::BPF_X, 0, 0, 0),
        ret_a(),
    ]
}

/// The program for `owners` (SPI, queue), in the order given; at most
/// [`MAX_STEERED_SPIS`] of them are steered.
pub fn spi_program(owners: &[(u32, u32)]) -> Vec<libc::sock_filter> {
    // The fixed part; the table starts at TABLE. Conditional jumps are
    // offsets from the next instruction.
    const ESP4: u8 = 7;
    const UDP4: u8 = 10;
    const V6: u8 = 16;
    const DEF4: u8 = 21;
    const DEF6: u8 = 26;
    const RET0: u8 = 31;
    const TABLE: u32 = 32;
    let to = |from: u8, target: u8| target - from - 1;
    let mut p = vec![
        // 0: A = the EtherType.
        op(
            libc::BPF_LD | libc::BPF_H | libc::BPF_ABS,
            0,
            0,
            (libc::SKF_AD_OFF + libc::SKF_AD_PROTOCOL) as u32,
        ),
        jeq(0x0800, 0, to(1, V6)),
        // A fragment (offset or MF set) by its addresses, so every
        // fragment of a datagram reaches one socket to be reassembled.
        ld_abs(libc::BPF_H, 6),
        op(
            libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K,
            to(3, DEF4),
            0,
            0x3fff,
        ),
        ld_abs(libc::BPF_B, 9),
        jeq(50, to(5, ESP4), 0),
        jeq(17, to(6, UDP4), to(6, DEF4)),
        // ESP4: the SPI after the IPv4 header.
        ldx_ihl(),
        ld_ind(libc::BPF_W, 0),
        ja(TABLE - 10),
        // UDP4: ESP in UDP to port 4500, not IKE's zero marker.
        ldx_ihl(),
        ld_ind(libc::BPF_H, 2),
        jeq(NAT_T_PORT, 0, to(12, DEF4)),
        ld_ind(libc::BPF_W, 8),
        jeq(0, to(14, DEF4), 0),
        ja(TABLE - 16),
        // V6: ESP right after the fixed header (a fragment header first
        // makes it not ESP: by the addresses).
        jeq(0x86dd, 0, to(16, RET0)),
        ld_abs(libc::BPF_B, 6),
        jeq(50, 0, to(18, DEF6)),
        ld_abs(libc::BPF_W, 40),
        ja(TABLE - 21),
    ];
    // DEF4: the last words of the IPv4 source and destination.
    p.extend(xor_words(12, 16));
    // DEF6: those of the IPv6 source and destination.
    p.extend(xor_words(20, 36));
    // RET0
    p.push(ret_k(0));
    debug_assert_eq!(p.len(), TABLE as usize);
    for (spi, queue) in owners.iter().take(MAX_STEERED_SPIS) {
        p.push(jeq(*spi, 0, 1));
        p.push(ret_k(*queue));
    }
    p.push(ret_a());
    p
}

/// Rules a program steers by at most (each up to 9 instructions, within
/// the kernel's 4096-instruction limit). Past that, frames go by the hash.
pub const MAX_RULES: usize = 400;

/// The host side's program: an IPv4 frame goes to the queue of the first
/// of `rules` it matches (see [`SteerRule`]); a rule without a queue, no
/// rule, and other frames: by the XOR of the addresses' last words, so a
/// host pair stays on one socket.
pub fn rules_program(rules: &[SteerRule]) -> Vec<libc::sock_filter> {
    // Label HASH4 follows the rules; DEF6 and RET0 as in `spi_program`.
    let mut p = vec![op(
        libc::BPF_LD | libc::BPF_H | libc::BPF_ABS,
        0,
        0,
        (libc::SKF_AD_OFF + libc::SKF_AD_PROTOCOL) as u32,
    )];
    // 1: not IPv4: to the IPv6 check, placed after the rules (patched).
    p.push(jeq(0x0800, 0, 0));
    for rule in rules.iter().take(MAX_RULES) {
        let mut block = Vec::new();
        // Each test jumps to the next rule on failure: offsets patched once
        // the block's length is known (`u8::MAX` marks them).
        for (at, range) in [(12u32, rule.src), (16, rule.dst)] {
            if let Some((lo, hi)) = range {
                block.push(ld_abs(libc::BPF_W, at));
                block.push(op(
                    libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K,
                    0,
                    u8::MAX,
                    lo,
                ));
                block.push(op(
                    libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K,
                    u8::MAX,
                    0,
                    hi,
                ));
            }
        }
        if let Some(proto) = rule.proto {
            block.push(ld_abs(libc::BPF_B, 9));
            block.push(jeq(u32::from(proto), 0, u8::MAX));
        }
        match rule.queue {
            Some(q) => block.push(ret_k(q)),
            None => block.extend(&xor_words(12, 16)),
        }
        let len = block.len();
        for (i, insn) in block.iter_mut().enumerate() {
            // From the instruction after `i` to the one after the block.
            let skip = u8::try_from(len - i - 1).unwrap_or(u8::MAX);
            if insn.jt == u8::MAX {
                insn.jt = skip;
            }
            if insn.jf == u8::MAX {
                insn.jf = skip;
            }
        }
        p.extend(block);
    }
    // HASH4
    p.extend(xor_words(12, 16));
    // V6: the addresses' hash too; anything else to the first socket.
    let v6 = p.len();
    p.push(jeq(0x86dd, 0, 5));
    p.extend(xor_words(20, 36));
    p.push(ret_k(0));
    // Insn 1 jumps to V6: far, so through a `ja` inserted right after it
    // (which moves V6 one on: from 3, 3 + k = v6 + 1).
    let far = u32::try_from(v6 - 2).unwrap_or(0);
    p[1].jf = 0;
    p[1].jt = 1;
    p.insert(2, ja(far));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixed part's jumps land where its labels say, and the table
    /// stays within the kernel's limit however many SPIs there are.
    #[test]
    fn jumps_land_on_their_labels() {
        let p = spi_program(&[(0x1000, 1), (0x2000, 0)]);
        // The three jumps to the table land on its first entry.
        for at in [9usize, 15, 20] {
            assert_eq!(at + 1 + p[at].k as usize, 32, "ja at {at}");
        }
        assert_eq!(p[32].k, 0x1000);
        assert_eq!(p[33].k, 1);
        assert_eq!(p.len(), 32 + 4 + 1);
        let many: Vec<(u32, u32)> = (0..5000).map(|i| (i, i % 2)).collect();
        assert!(spi_program(&many).len() <= 4096);
    }

    /// A rule's failed tests all land on the next rule; the non-IPv4 jump
    /// lands on the IPv6 check.
    #[test]
    fn rule_jumps_land_on_the_next_rule() {
        let rule = SteerRule {
            src: Some((1, 2)),
            dst: Some((3, 4)),
            proto: Some(17),
            queue: Some(1),
        };
        let p = rules_program(&[rule, rule]);
        // 0 ld proto, 1 jeq IPv4 (else 2: ja V6), rule one from 3 to 11.
        assert_eq!(p[1].jt, 1);
        assert_eq!(p[1].jf, 0);
        let first = 3;
        let next = first + 9;
        for (at, insn) in p.iter().enumerate().take(next).skip(first) {
            let is_jump = insn.code as u32 & 0x07 == libc::BPF_JMP;
            if is_jump {
                let miss = if insn.code as u32 & 0xf0 == libc::BPF_JGT {
                    insn.jt
                } else {
                    insn.jf
                };
                assert_eq!(at + 1 + usize::from(miss), next, "jump at {at}");
            }
        }
        assert_eq!(p[next - 1].k, 1, "the rule returns its queue");
        let v6 = 2 + 1 + p[2].k as usize;
        assert_eq!(p[v6].k, 0x86dd);
    }
}
