# The two entry points of the README. Both run scripts/setup.sh first, which
# installs whatever is missing and returns at once when nothing is.
.PHONY: run test setup deb

setup:
	@scripts/setup.sh

# Build, then start the lab: namespaces, the example policies, live traffic.
run: setup
	cargo build --release -p tollgate
	target/release/tollgate lab

# Build, then everything CI checks: formatting, lints (host crates and the
# BPF program, which only builds for the BPF target), the whole test suite,
# and a 30 s fuzzing smoke of each fuzz target (userspace/fuzz). nextest's
# setup script (.config/nextest.toml) builds the tollgate binary the suites
# run after it has built them, so the suites never run a stale one. The fuzz
# targets build at the lowest CPU priority while the suites run (much of a
# suite's time is spent waiting on namespaces, clients and timers), and run
# after them: CI stays within its 30 minutes on two cores.
test: setup
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	cargo +nightly clippy -p tollgate-ebpf --target bpfel-unknown-none -Z build-std=core --target-dir target/bpf-clippy -- -D warnings
	nice -n 19 scripts/fuzz-smoke.sh --build-only >target/fuzz-build.log 2>&1 & fuzz=$$!; \
	  cargo nextest run --no-fail-fast; tests=$$?; \
	  wait $$fuzz || { cat target/fuzz-build.log; exit 1; }; \
	  cat target/fuzz-build.log; exit $$tests
	scripts/fuzz-smoke.sh

# Debian packages: target/debian/tollgate_<version>_<arch>.deb for this host,
# and for arm64 when the aarch64 cross toolchain is installed (see
# docs/operations.md#building-the-package). Man pages and completions are
# generated from the host's binary into <cargo output>/pkg/ first (where
# cargo-deb looks for target/release/ assets); cargo-deb then packages
# without building again (`--no-build`).
ARM64_TARGET := aarch64-unknown-linux-gnu
deb: setup
	cargo build --release -p tollgate
	$(MAKE) --no-print-directory pkg-generated OUT=target/release
	cargo deb -p tollgate --no-build
	@if command -v aarch64-linux-gnu-gcc >/dev/null && \
	    rustup target list --installed | grep -qx '$(ARM64_TARGET)'; then \
	  echo "deb: building arm64"; \
	  CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
	    cargo build --release -p tollgate --target $(ARM64_TARGET) && \
	  cargo deb -p tollgate --no-build --target $(ARM64_TARGET); \
	else \
	  echo "deb: skipping arm64: needs gcc-aarch64-linux-gnu and \`rustup target add $(ARM64_TARGET)\` (docs/operations.md#building-the-package)"; \
	fi
	@ls -l target/debian/*.deb target/$(ARM64_TARGET)/debian/*.deb 2>/dev/null || true

# Man pages and shell completions into $(OUT)/pkg, from the clap definition
# (the host's binary: the same for every architecture).
.PHONY: pkg-generated
pkg-generated:
	rm -rf $(OUT)/pkg
	target/release/tollgate man --dir $(OUT)/pkg/man
	gzip -9n $(OUT)/pkg/man/*.1
	mkdir -p $(OUT)/pkg/completions
	target/release/tollgate completions bash > $(OUT)/pkg/completions/tollgate
	target/release/tollgate completions zsh > $(OUT)/pkg/completions/_tollgate
	target/release/tollgate completions fish > $(OUT)/pkg/completions/tollgate.fish
