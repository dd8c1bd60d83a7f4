#!/usr/bin/env bash
# Scale-out of `capgate serve --workers N` on one host with 16 or more cores (CPU only):
# workers 1, 2, 4, 8 pinned to cores 0..N-1, `capgate bench` on the other cores,
# VerifyBatch (256 per call) and unary Verify. Run from anywhere:
#   benchmarks/device/scale.sh [--seconds 15] [--workers 1,2,4,8] [--out FILE]
# Prints a Markdown table for benchmarks/README.md and writes the figures as JSON
# (default: benchmarks/device/scale-results.json).
set -euo pipefail
cd "$(dirname "$0")/../.."
make .venv/.installed >/dev/null
exec .venv/bin/python benchmarks/device/scale.py --out benchmarks/device/scale-results.json "$@"
