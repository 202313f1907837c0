#!/usr/bin/env bash
# Usage: tools/dist_train.sh CONFIG GPUS [train.py args...]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT on every node.
# Without GPUs, GPUS CPU processes train with the gloo backend.
set -euo pipefail
exec "$(dirname "$0")/dist_launch.sh" "$2" train.py "$1" "${@:3}"
