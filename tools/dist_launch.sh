#!/usr/bin/env bash
# Usage: tools/dist_launch.sh PROCESSES TOOL [tool args...]: what dist_train.sh and
# dist_test.sh share. Runs tools/TOOL with torch.distributed.run and --launcher pytorch.
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT on every node.
set -euo pipefail
PROCESSES=$1
TOOL=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python}

PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" \
"$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$PROCESSES" --master_port="$PORT" \
    "$ROOT/tools/$TOOL" "${@:3}" --launcher pytorch
