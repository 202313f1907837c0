#!/usr/bin/env bash
# Usage: tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args...]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT on every node.
set -euo pipefail
exec "$(dirname "$0")/dist_launch.sh" "$3" test.py "$1" "$2" "${@:4}"
