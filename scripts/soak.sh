#!/usr/bin/env bash
# The soak example for a set time (default 10 minutes), in release.
#
#   scripts/soak.sh [DURATION] [more soak flags]     e.g. scripts/soak.sh 10m --rate 1000
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-10m}"
shift || true
cargo run --release -p examples --example soak -- --duration "$duration" "$@"
