#!/usr/bin/env bash
# Installs everything Tollgate's build, lab and test suite use, on Debian 12
# with rustup. Idempotent: a second run checks and returns in about a second.
#
#   Debian packages  iproute2, ethtool (the NTP load bench's drop counters),
#                    iputils-ping, curl, nftables, bpftool,
#                    xdp-tools (xdp-filter for the benchmark),
#                    binutils (objdump: the benchmark counts the JITed
#                    instructions), linux-perf (the benchmark samples the
#                    instructions each path runs),
#                    chrony + ntpsec-ntpdate + sntp (real NTP
#                    clients and the reference server), prometheus (promtool),
#                    netsniff-ng (trafgen), iperf3, git, systemd
#                    (systemd-analyze verifies the unit in deploy/),
#                    dpkg-dev (dpkg-shlibdeps: the package's dependencies)
#                    and lintian (checks the package; `make deb`,
#                    tests/tests/package.rs)
#   Rust             nightly rust-src (BPF target build-std), bpf-linker built
#                    against rustc's own libLLVM, cargo-nextest, cargo-fuzz
#                    (nightly, for userspace/fuzz), cargo-deb, rustfmt, clippy
#   Kernel           bpffs mounted at /sys/fs/bpf
set -euo pipefail

log() { printf 'setup: %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
  echo "setup: must run as root (installs packages, mounts bpffs)" >&2
  exit 1
fi

packages=(iproute2 ethtool iputils-ping curl nftables bpftool xdp-tools binutils linux-perf chrony ntpsec-ntpdate sntp prometheus netsniff-ng iperf3 dnsutils dnsmasq-base git systemd dpkg-dev lintian)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  # Never let a package start its daemon here: chronyd would try to set the
  # clock. policy-rc.d is the Debian switch for that; keep an existing one.
  guard=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    guard=/usr/sbin/policy-rc.d
  fi
  apt-get update -qq
  # --no-install-recommends: netsniff-ng recommends the ntpsec daemon, which
  # would remove chrony.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ -n "$guard" ] && rm -f "$guard"
fi

if ! rustup toolchain list | grep -q '^nightly'; then
  log "installing the nightly toolchain (BPF target)"
  rustup toolchain install nightly --profile minimal
fi
for c in rust-src clippy; do
  if ! rustup component list --toolchain nightly --installed | grep -q "^$c"; then
    log "adding $c to nightly (BPF target build and lints)"
    rustup component add "$c" --toolchain nightly
  fi
done
for c in rustfmt clippy; do
  if ! rustup component list --installed | grep -q "^$c"; then
    log "adding $c"
    rustup component add "$c"
  fi
done

if ! command -v bpf-linker >/dev/null || ! bpf-linker --version | grep -q ' 0\.13\.'; then
  log "building bpf-linker 0.13 against rustc's libLLVM (about a minute)"
  sysroot_lib="$(rustc +nightly --print sysroot)/lib"
  llvm_lib=$(basename "$(ls "$sysroot_lib"/libLLVM-*.so | head -n1)" .so)
  llvm_lib=${llvm_lib#lib}
  llvm_major=$(echo "$llvm_lib" | sed -E 's/^LLVM-([0-9]+).*/\1/')
  RUSTFLAGS="-L $sysroot_lib -l dylib=$llvm_lib -C link-arg=-Wl,-rpath,$sysroot_lib" \
    cargo +nightly install --quiet --locked bpf-linker --version '^0.13' \
      --no-default-features --features "llvm-$llvm_major,no-llvm-linking"
fi

if ! command -v cargo-nextest >/dev/null; then
  log "installing cargo-nextest"
  cargo install --quiet --locked cargo-nextest
fi

if ! command -v cargo-fuzz >/dev/null; then
  log "installing cargo-fuzz (the fuzzing smoke, scripts/fuzz-smoke.sh)"
  cargo install --quiet --locked cargo-fuzz
fi
if ! command -v cargo-deb >/dev/null; then
  log "installing cargo-deb (make deb)"
  cargo install --quiet --locked cargo-deb
fi

if ! mountpoint -q /sys/fs/bpf; then
  log "mounting bpffs at /sys/fs/bpf"
  mount -t bpf bpf /sys/fs/bpf
fi
