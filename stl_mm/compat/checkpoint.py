"""Let mmengine 0.10.7 load its own checkpoints under torch >= 2.6.

torch 2.6 made ``torch.load(weights_only=True)`` the default, and mmengine 0.10.7 calls
``torch.load`` without that argument. Safe loading then refuses the few non-tensor objects that
mmengine itself writes into a checkpoint (the message hub's ``HistoryBuffer`` and the numpy arrays
and scalars inside it). Rather than turning safe loading off, we allow-list exactly those globals,
plus ``argparse.Namespace``, which timm's checkpoint saver (used by the official FAN/STL code)
stores under ``args``. Every other pickled global is still refused.

``HistoryBuffer`` also pickles its registry of statistics methods, each as
``getattr(HistoryBuffer, 'min')``. Allowing the builtin ``getattr`` would open every attribute of
every allowed object, so the name ``builtins.getattr`` is instead bound to
:func:`_history_buffer_method`, which resolves those lookups and nothing else.
"""
import argparse
import pickle
from typing import Callable, List

import numpy as np
import torch
from mmengine.logging import HistoryBuffer


def _numpy_globals() -> List:
    """numpy objects that pickled arrays and scalars reference, under both module paths.

    Checkpoints written with numpy 1 name ``numpy.core.multiarray``; numpy 2 renamed the module
    to ``numpy._core.multiarray``. Both names map to the same functions.
    """
    multiarray = np._core.multiarray
    allowed = [np.ndarray, np.dtype, multiarray._reconstruct, multiarray.scalar]
    for old_name in ('_reconstruct', 'scalar'):
        allowed.append((getattr(multiarray, old_name), f'numpy.core.multiarray.{old_name}'))
    # Each concrete dtype has its own class (numpy.dtypes.Float64DType, ...).
    for scalar_type in (np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64,
                        np.uint8, np.bool_):
        allowed.append(type(np.dtype(scalar_type)))
    return allowed


def _history_buffer_method(owner: type, name: str) -> Callable:
    """``getattr`` for unpickling, limited to HistoryBuffer's statistics methods."""
    registered = {'min', 'max', 'current', 'mean', *HistoryBuffer._statistics_methods}
    if owner is HistoryBuffer and name in registered:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'stl_mm refuses getattr({owner!r}, {name!r}) while loading a checkpoint with '
        'weights_only=True: only HistoryBuffer statistics methods are allowed.')


MMENGINE_CHECKPOINT_GLOBALS = [
    HistoryBuffer, argparse.Namespace, *_numpy_globals(),
    (_history_buffer_method, 'builtins.getattr'), (_history_buffer_method, '__builtin__.getattr')
]
torch.serialization.add_safe_globals(MMENGINE_CHECKPOINT_GLOBALS)
