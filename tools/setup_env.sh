#!/usr/bin/env bash
# Creates (or completes) the virtual environment at $VENV with the pinned stl_mm stack.
# Safe to re-run: finished steps are skipped by pip, and the mmcv wheel is cached by pip.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3.11}
C=requirements/constraints.txt

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

echo "[setup] build tools"
"${PIP[@]}" install -q -c "$C" "setuptools" wheel ninja packaging
echo "[setup] torch + torchvision (exact pins: never the local CPU-only torch wheel)"
"${PIP[@]}" install -q -c "$C" torch torchvision
"$VENV/bin/python" -c "import torch, torchvision; print('[setup] torch', torch.__version__, 'torchvision', torchvision.__version__)"

if ! "$VENV/bin/python" -c "import mmcv.ops" 2>/dev/null; then
  echo "[setup] mmcv 2.1.0 with ops, built from source (12-17 min on 2 cores the first time; pip caches the wheel)"
  MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-2} "${PIP[@]}" install -c "$C" --no-build-isolation mmengine mmcv
fi

echo "[setup] OpenMMLab codebases and the rest"
"${PIP[@]}" install -q -c "$C" -r requirements/runtime.txt -r requirements/tests.txt
echo "[setup] optional extras the tests cover: ONNX export (deploy.txt), upstream tools (tools.txt)"
"${PIP[@]}" install -q -c "$C" -r requirements/deploy.txt -r requirements/tools.txt
"${PIP[@]}" install -q -c "$C" --no-deps --no-build-isolation -e .
# Fashion-MNIST for the demo: Debian's dataset-fashion-mnist where apt is available,
# otherwise mmpretrain's download (tools/demo.py retries if this step could not finish).
"$VENV/bin/python" tools/dataset_converters/prepare_fashion_mnist.py || echo "[setup] Fashion-MNIST not prepared; tools/demo.py will retry"
"$VENV/bin/python" - <<'PY'
import torch, torchvision, mmcv, mmcv.ops, mmengine, mmpretrain, mmseg, mmdet
import onnxruntime, pytorch_grad_cam  # the optional extras the tests cover
print('[setup] ok: torch', torch.__version__, '| torchvision', torchvision.__version__,
      '| mmcv', mmcv.__version__, '| mmengine', mmengine.__version__, '| mmpretrain',
      mmpretrain.__version__, '| mmseg', mmseg.__version__, '| mmdet', mmdet.__version__)
PY
