"""RobustnessCellLoop: registered where every suite's config looks it up (the end-to-end runs
are in tests/evaluation/robustness/)."""
import importlib

import pytest

from stl_mm.engine.runners import RobustnessCellLoop
from stl_mm.engine.runners.robustness_loop import _json_metrics


@pytest.mark.parametrize('codebase', ['mmpretrain', 'mmseg', 'mmdet'])
def test_registered_in_every_codebase(codebase):
    loops = importlib.import_module(f'{codebase}.registry').LOOPS
    assert loops.get('RobustnessCellLoop') is RobustnessCellLoop


def test_refuses_an_empty_cell_list(tmp_path):
    with pytest.raises(ValueError, match='no cells'):
        RobustnessCellLoop(None, {}, {}, [], str(tmp_path / 'r.json'), {})


def test_records_scalar_metrics_as_floats():
    import numpy as np
    import torch
    assert _json_metrics({'mIoU': np.float32(0.5), 'top1': torch.tensor(75.0), 'n': 3,
                          'per_class': [0.1, 0.2]}) == {'mIoU': 0.5, 'top1': 75.0, 'n': 3.0}
