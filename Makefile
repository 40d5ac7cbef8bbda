# bitsgw: the commands the README gives.
CARGO ?= cargo

.PHONY: all build test test-deps lint fmt deb demo walkthrough check-policies peer-selftest bench bench-e2e bench-syscalls bench-goals fuzz fuzz-bounded soak clean

all: build

build:
	$(CARGO) build --workspace --all-targets

# Installs what the tests need (tshark, a scapy virtualenv, iproute2,
# nftables, iperf3, ping, ethtool) if missing, then runs formatting and lint
# checks (clippy also compiles the benches and fuzz-free targets) and every
# test: unit, end to end, lab (network namespaces, needs root), scapy/tshark
# interoperability, and every fuzz target for a few seconds.
test: test-deps lint
	$(CARGO) test --workspace
	$(MAKE) check-policies
	$(MAKE) fuzz-bounded

test-deps:
	./scripts/setup-test-deps.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	@# The mobility stage depends on the IPsec query API's crate and not on
	@# the IPsec stage's, so the compiler refuses any other use of IPsec;
	@# this keeps the dependency from coming back.
	@if $(CARGO) tree -q -p bitsgw-mobility -e normal --depth 1 | grep -E 'bitsgw-ipsec v'; then \
		echo "crates/mobility depends on bitsgw-ipsec; it may depend on bitsgw-ipsec-query only" >&2; exit 1; fi
	@# The IPsec crate is sans-IO: it parses policy text, and the appliance
	@# reads the files (appliance/config/policy_file.rs).
	@if grep -rnE 'std::fs|std::os::unix::fs|File::|OpenOptions' crates/ipsec/src; then \
		echo "crates/ipsec/src touches the file system; read files in the appliance and pass text" >&2; exit 1; fi

fmt:
	$(CARGO) fmt --all

# Every policy file in policies/ must validate.
check-policies:
	$(CARGO) build -q --bin bitsgw
	@for f in policies/*.json; do ./target/debug/bitsgw check $$f >/dev/null || exit 1; echo "policy ok: $$f"; done

# The independent peer's own self-test (scapy against tshark), slower.
peer-selftest: test-deps
	./tests/peer/selftest.sh

# The Debian package, from a release build: target/debian/bitsgw_*.deb
# with the binary, the bitsgw@.service unit, man pages and shell
# completions made from the command line, the example configurations and
# policies under /usr/share/doc/bitsgw. Its test (tests/deb.rs, part of
# make test) packages the debug build instead, to spare a release build.
deb: test-deps
	$(CARGO) build --release --bin bitsgw
	./target/release/bitsgw generate-docs target/docs
	$(CARGO) deb --no-build --strip --output target/debian/
	lintian target/debian/bitsgw_*.deb

# The whole story in network namespaces (needs root): a mobile host behind
# an mn appliance moving between IPv6, public IPv4 and a NAT, a home agent,
# a correspondent; traces, captures and logs kept in target/lab.
demo: test-deps
	$(CARGO) build --release --bin bitsgw
	./target/release/bitsgw lab mobility --keep target/lab

# The seeds' IPsec configurations at work on their own, with a capture
# tshark can read.
walkthrough:
	$(CARGO) run -q --example seed_walkthrough -- --pcap target/seed-walkthrough.pcap

# Criterion benches (about 11 minutes) and heap allocations per packet;
# figures go in BENCHMARKS.md.
bench:
	$(CARGO) bench --bench esp -- --warm-up-time 1 --measurement-time 3
	$(CARGO) bench --bench lookup -- --warm-up-time 1 --measurement-time 3
	python3 scripts/bench_table.py
	$(CARGO) bench --bench alloc

# iperf3 TCP between two hosts in network namespaces: bare path, two
# bitsgw gateways with BYPASS policies, the same with ESP AES-GCM-128
# tunnel mode, strongSwan, and DPDK's ipsec-secgw in bitsgw's places
# (built from Debian's dpdk-doc, which --bench tries to install; that row
# is skipped with a message without it); a table with ratios (needs root,
# skips without).
bench-e2e:
	./scripts/setup-test-deps.sh --bench
	$(CARGO) test --release --test bench_e2e -- --ignored --nocapture --test-threads=1

# System time, user time and system calls per packet of the two
# gateways of bench-e2e (perf stat software events and tracepoints), with
# their AF_PACKET ports sending one send(2) per frame, one sendmmsg(2) per
# burst, and that past the qdisc, and with AF_XDP ports (the cargo feature
# af-xdp); about six minutes, as root.
bench-syscalls:
	./scripts/setup-test-deps.sh --bench
	$(CARGO) test --release --features af-xdp --test bench_syscalls -- --ignored --nocapture --test-threads=1

# Every performance goal of BENCHMARKS.md measured in one sitting (the
# criterion benches' ceilings and SAD, allocations, `bitsgw bench` with
# workers, run to completion and queues, and bench-e2e), then the goal
# table with its ratios; about 15 minutes on a quiet machine, as root.
bench-goals:
	./scripts/bench_goals.sh

# Ten million frames, valid and hostile mixed, through the threaded runner
# with three workers: no panic, flat resident memory, counters that
# reconcile exactly (crates/pipeline/tests/soak.rs; a 200 000-frame run of
# it is part of `make test`).
soak:
	$(CARGO) test -p bitsgw-pipeline --test soak -- --ignored --nocapture soak_full

# The long fuzz runs (cargo-fuzz, with AddressSanitizer), SECONDS per target.
SECONDS ?= 60
fuzz:
	./scripts/fuzz.sh $(SECONDS)

# Every fuzz target for a few seconds, part of make test: a target that no
# longer builds, or an input that crashes one, fails the tests.
FUZZ_BOUNDED_SECONDS ?= 5
fuzz-bounded:
	FUZZ_SANITIZER=none ./scripts/fuzz.sh $(FUZZ_BOUNDED_SECONDS)

clean:
	$(CARGO) clean
