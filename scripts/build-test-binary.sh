#!/bin/sh
# nextest's setup script (.config/nextest.toml): builds the `tollgate` binary
# the integration suites run, after nextest has built the suites and before
# any of them runs, and hands its path to them as TOLLGATE_BIN (through the
# file nextest names in NEXTEST_ENV). The path is the one cargo reports, so
# it follows CARGO_TARGET_DIR and any other cargo configuration; the build is
# a no-op when nothing changed. The suites fail when TOLLGATE_BIN is unset
# (tests/src/lib.rs, "The binary under test"). The binary has the test-only
# `fault-injection` feature, as the suites' library does (tests/Cargo.toml):
# one build of the library serves both, and a daemon test injects a fault.
set -eu

: "${NEXTEST_ENV:?run by cargo nextest as a setup script, not by hand}"

# One JSON message per line; the bin target's artifact is the only one with
# an executable (the library's and the build script's are null).
exe=$("${CARGO:-cargo}" build --quiet -p tollgate --features fault-injection --bin tollgate --message-format json-render-diagnostics |
  sed -n 's/.*"executable":"\([^"]*\/tollgate\)".*/\1/p' | tail -n 1)

if [ -z "$exe" ] || [ ! -x "$exe" ]; then
  echo "build-test-binary: cargo built no tollgate binary" >&2
  exit 1
fi
echo "TOLLGATE_BIN=$exe" >> "$NEXTEST_ENV"
