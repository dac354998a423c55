# The two entry points of the README. Both run scripts/setup.sh first, which
# installs whatever is missing and returns at once when nothing is.
.PHONY: run test setup

setup:
	@scripts/setup.sh

# Build, then start the lab: namespaces, the example policies, live traffic.
run: setup
	cargo build --release
	target/release/tollgate lab

# Build, then everything CI checks: formatting, lints (host crates and the
# BPF program, which only builds for the BPF target), the whole test suite,
# and a 30 s fuzzing smoke of each fuzz target (userspace/fuzz).
test: setup
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	cargo +nightly clippy -p tollgate-ebpf --target bpfel-unknown-none -Z build-std=core --target-dir target/bpf-clippy -- -D warnings
	cargo nextest run --no-fail-fast
	scripts/fuzz-smoke.sh
