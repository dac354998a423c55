#!/usr/bin/env bash
# The fuzzing smoke of CI (`make test`): builds the cargo-fuzz targets of
# userspace/fuzz (only that with --build-only) and runs each for
# FUZZ_SECONDS (default 30) from a copy of its committed corpus, so the run never writes into the repository. Fails
# on any crash, panic, timeout or memory blow-up; the input that did it is
# kept in userspace/fuzz/artifacts/TARGET/ (ignored by git), and cargo-fuzz
# prints how to reproduce and minimise it.
#
# Needs nightly and cargo-fuzz (scripts/setup.sh installs both). A longer
# session of one target: README.md, "Fuzzing".
set -euo pipefail

log() { printf 'fuzz-smoke: %s\n' "$*"; }

root="$(cd "$(dirname "$0")/.." && pwd)"
fuzz_dir="$root/userspace/fuzz"
seconds="${FUZZ_SECONDS:-30}"

# Target and its largest input: a few policy files, one datagram (the
# server reads at most 1025 bytes), a policy and a few packets, one DNS
# message (the forwarder reads at most 4096 bytes).
targets=(
  "policy_check 8192"
  "ntp_request 1100"
  "packet_model 4096"
  "dns_message 4096"
)
# Every target runs under these: at most 1 GiB of memory (for the process,
# and so for any one allocation: libFuzzer's -malloc_limit_mb defaults to
# it) and 10 s for one input.
limits=(-rss_limit_mb=1024 -timeout=10)

# The smoke builds at opt-level 1, not the profile's 3: the same code and
# checks (sanitizer, coverage, debug assertions), a third less build time on
# CI's two cores, and 30 s of each target need no speed. A longer session
# (README, "Fuzzing") builds with the profile as it is.
export CARGO_PROFILE_RELEASE_OPT_LEVEL="${FUZZ_OPT_LEVEL:-1}"

work="$(mktemp -d "${TMPDIR:-/tmp}/tollgate-fuzz.XXXXXX")"
trap 'rm -rf "$work"' EXIT

cd "$fuzz_dir"
log "building the fuzz targets (cargo +nightly fuzz build)"
start=$(date +%s)
cargo +nightly fuzz build
log "built in $(($(date +%s) - start)) s"
# `make test` builds them first, beside the suites (--build-only).
if [ "${1:-}" = "--build-only" ]; then
  exit 0
fi

failed=()
for entry in "${targets[@]}"; do
  read -r target max_len <<<"$entry"
  cp -r "corpus/$target" "$work/$target"
  flags=(-max_total_time="$seconds" -max_len="$max_len" "${limits[@]}" -print_final_stats=1)
  log "running: cargo +nightly fuzz run $target <copy of corpus/$target> -- ${flags[*]}"
  if cargo +nightly fuzz run "$target" "$work/$target" -- "${flags[@]}" >"$work/$target.log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$target.log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$work/$target.log")
    rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$work/$target.log")
    log "$target: ok, $runs runs, $rate execs/s, peak RSS $rss MB"
  else
    failed+=("$target")
    log "$target: FAILED; its report:"
    # From the first sign of the failure on (a panic's message comes before
    # the sanitizer's report), or the end of the log.
    awk '/panicked at|==ERROR:|ERROR: libFuzzer/ { found = 1 } found' "$work/$target.log" |
      head -n 150 >&2
    grep -qE 'panicked at|==ERROR:|ERROR: libFuzzer' "$work/$target.log" ||
      tail -n 80 "$work/$target.log" >&2
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  log "failed: ${failed[*]}; the inputs are in userspace/fuzz/artifacts/"
  exit 1
fi
log "all targets ok"
