"""High-level entry points: run a token labeler on a config's views, and the Fashion-MNIST demo.

The demo lives in :mod:`stl_mm.apis.demo` (imported on demand: it pulls in the figure code).
"""
from .token_labeler import (SPLITS, VIEWS, build_view_dataset, collect_views,
                            find_teacher_hook, load_token_labeler)

__all__ = ['SPLITS', 'VIEWS', 'build_view_dataset', 'collect_views', 'find_teacher_hook',
           'load_token_labeler']
