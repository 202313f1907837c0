"""Run a token labeler (a STL teacher) on the views a config's pipelines make.

Shared by the token-label figure (:mod:`stl_mm.visualization.token_labels`), the attention
maps (:mod:`stl_mm.visualization.attention`, which loads any classifier with
:func:`load_classifier` and reads image files with :func:`load_image_files`) and the demo's
token-label quality (:mod:`stl_mm.apis.demo`). The labeler is built and loaded by
:meth:`~stl_mm.engine.hooks.FrozenTeacherHook.build_teacher`, the one way a teacher is made:
from a stage-1 config and its checkpoint, from the ``FrozenTeacherHook`` of a stage-2 config
(``hook_teacher=True``), or from an official STL teacher checkpoint (converted on the fly).
"""
import copy
import os.path as osp
import random
from typing import Dict, List, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
from mmcv.transforms import Compose
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmpretrain.registry import DATASETS, MODELS, TRANSFORMS

from stl_mm.engine.hooks import FrozenTeacherHook
from stl_mm.models.classifiers import token_logits_of

__all__ = ['SPLITS', 'VIEWS', 'find_teacher_hook', 'load_classifier', 'load_token_labeler',
           'has_token_head', 'clean_pipeline', 'load_image_files', 'build_view_dataset',
           'collect_views', 'model_inputs']

SPLITS = ('train', 'val', 'test')
#: Views: ``clean`` runs the split's test pipeline; ``teacher`` and ``student`` run the config's
#: training pipeline, which must make both views (DualView).
VIEWS = ('clean', 'teacher', 'student')
_VIEW_KEYS = {'clean': 'inputs', 'teacher': 'teacher_inputs', 'student': 'inputs'}


def find_teacher_hook(cfg: Config) -> dict:
    """The ``FrozenTeacherHook`` config of a stage-2 config (in default or custom hooks)."""
    hooks = list((cfg.get('default_hooks') or {}).values()) + list(cfg.get('custom_hooks') or [])
    for hook in hooks:
        if isinstance(hook, dict) and hook.get('type') == 'FrozenTeacherHook':
            return hook
    raise KeyError('The config has no FrozenTeacherHook; drop --hook-teacher to use the '
                   "config's own model as the token labeler.")


def load_classifier(cfg: Config, checkpoint: str, hook_teacher: bool = False,
                    device: str = 'cpu') -> nn.Module:
    """Build the config's classifier and load its weights (EMA weights when the file has them).

    Any classifier, with or without a token head (the attention visualiser takes every FAN);
    :func:`load_token_labeler` is this plus the check that the model makes token labels.

    Args:
        cfg: The config.
        checkpoint: mmengine or official (timm layout) checkpoint of the model.
        hook_teacher: Build the model of the config's FrozenTeacherHook instead of
            ``cfg.model``.
        device: Torch device.

    Returns:
        The frozen model in eval mode, with the config's data preprocessor.
    """
    model_cfg = _model_config(cfg, hook_teacher)
    model = FrozenTeacherHook(model=model_cfg, checkpoint=checkpoint).build_teacher()
    if hook_teacher:
        model.data_preprocessor = MODELS.build(copy.deepcopy(cfg.data_preprocessor))
    return model.to(device).eval()


def load_token_labeler(cfg: Config, checkpoint: str, hook_teacher: bool = False,
                       device: str = 'cpu') -> nn.Module:
    """Build the token labeler and load its weights (EMA weights when the file has them).

    Args:
        cfg: The config.
        checkpoint: mmengine or official (timm layout) checkpoint of the token labeler.
        hook_teacher: Build the model of the config's FrozenTeacherHook instead of
            ``cfg.model``.
        device: Torch device.

    Returns:
        The frozen labeler in eval mode, with the config's data preprocessor.

    Raises:
        ValueError: The model has no token head.
    """
    if _model_config(cfg, hook_teacher).get('head', {}).get('with_token_head', True) is False:
        raise ValueError('This model has no token head (with_token_head=False), so it makes no '
                         'token labels; pass a token labeler (stage-1) config and checkpoint.')
    return load_classifier(cfg, checkpoint, hook_teacher, device)


def has_token_head(model: nn.Module) -> bool:
    """Whether ``model`` (a built classifier) makes token logits."""
    return bool(getattr(getattr(model, 'head', None), 'with_token_head', False))


def _model_config(cfg: Config, hook_teacher: bool) -> dict:
    """The model config :func:`load_classifier` builds, set up for inference."""
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    model_cfg = copy.deepcopy(find_teacher_hook(cfg)['model'] if hook_teacher else cfg.model)
    if not hook_teacher:
        # The classifier's own data preprocessor normalises the views.
        model_cfg.setdefault('data_preprocessor', cfg.get('data_preprocessor'))
        if model_cfg.get('mode') == 'student':
            model_cfg['mode'] = 'labeler'  # inference only: no teacher needed
    return model_cfg


def clean_pipeline(cfg: Config) -> List[dict]:
    """The steps of the config's test pipeline (of its val pipeline without a test loader)."""
    loader = cfg.get('test_dataloader') or cfg.get('val_dataloader')
    if loader is None:
        raise KeyError('The config has neither a test_dataloader nor a val_dataloader, so it '
                       'says no test pipeline; use a config with one.')
    return copy.deepcopy(loader['dataset']['pipeline'])


def load_image_files(cfg: Config, paths: Sequence[str]) -> List[dict]:
    """The packed ``inputs`` / ``data_samples`` of image files through the test pipeline.

    :func:`model_inputs` turns a batch of them into model inputs.

    Raises:
        FileNotFoundError: A path is not a file.
        ValueError: The test pipeline does not start by reading a file.
    """
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    missing = [path for path in paths if not osp.isfile(path)]
    if missing:
        raise FileNotFoundError(f'No such image file: {", ".join(missing)}.')
    steps = clean_pipeline(cfg)
    if not steps or 'LoadImage' not in str(steps[0].get('type')):
        raise ValueError(f'The test pipeline starts with {steps[0] if steps else "nothing"}, not '
                         'a LoadImageFromFile step, so it cannot read image files; use a config '
                         'whose test pipeline reads files.')
    pipeline = Compose([TRANSFORMS.build(step) for step in steps])
    return [pipeline(dict(img_path=path)) for path in paths]


def build_view_dataset(cfg: Config, split: str, view: str):
    """The split's dataset with the pipeline that makes ``view``.

    Args:
        cfg: The config.
        split: ``'train'``, ``'val'`` or ``'test'`` (the ``<split>_dataloader`` dataset).
        view: One of :data:`VIEWS`.
    """
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    if split not in SPLITS or view not in VIEWS:
        raise ValueError(f'split must be one of {SPLITS} and view one of {VIEWS}; got '
                         f'{split!r}, {view!r}.')
    loader = cfg.get(f'{split}_dataloader')
    if loader is None:
        raise KeyError(f'The config has no {split}_dataloader; choose another --split.')
    dataset_cfg = copy.deepcopy(loader['dataset'])
    if view == 'clean':
        pipeline = clean_pipeline(cfg)
    else:
        pipeline = copy.deepcopy(cfg.train_dataloader['dataset']['pipeline'])
        if view == 'teacher' and not any(step.get('type') == 'DualView' for step in pipeline):
            raise ValueError("view 'teacher' needs a training pipeline with DualView (a "
                             'stage-2 config); use --view clean or student here.')
    dataset_cfg['pipeline'] = pipeline
    dataset_cfg.pop('indices', None)
    return DATASETS.build(dataset_cfg)


@torch.no_grad()
def collect_views(model: nn.Module, dataset, indices: Sequence[int], views: Sequence[str],
                  batch_size: int = 256, seed: int = 0) -> Dict[str, Union[torch.Tensor, Dict]]:
    """Run the token labeler on views of the given images.

    ``views`` must be made by ``dataset``'s pipeline: ``'clean'`` or ``'student'`` (the packed
    ``inputs``) and ``'teacher'`` (``teacher_inputs``); random augmentation is seeded.

    Returns:
        ``classes`` (N,), and per view ``images[view]`` (N, 3, H, W) uint8 RGB as the model
        saw them before normalisation and ``token_logits[view]`` (N, K, h, w).
    """
    random.seed(seed)
    np.random.seed(seed)
    classes, images, logits = [], {view: [] for view in views}, {view: [] for view in views}
    for start in range(0, len(indices), batch_size):
        packed = [dataset[int(index)] for index in indices[start:start + batch_size]]
        classes.append(torch.cat([item['data_samples'].gt_label for item in packed]))
        for view in views:
            key = _VIEW_KEYS[view]
            if key not in packed[0]:
                raise KeyError(f"The pipeline made no {key!r} for view {view!r}.")
            raw, normalised = model_inputs(model, packed, key)
            images[view].append(raw)
            logits[view].append(token_logits_of(model, normalised).float().cpu())
    return dict(classes=torch.cat(classes),
                images={view: torch.cat(images[view]) for view in views},
                token_logits={view: torch.cat(logits[view]) for view in views})


def model_inputs(model: nn.Module, packed: Sequence[dict],
                 key: str = 'inputs') -> Tuple[torch.Tensor, torch.Tensor]:
    """The images of packed pipeline outputs as drawn and as the model takes them.

    Args:
        model: The classifier; its data preprocessor normalises the images.
        packed: Pipeline outputs (``inputs``, ``data_samples``, maybe ``teacher_inputs``).
        key: The image key, e.g. ``'inputs'`` or ``'teacher_inputs'``.

    Returns:
        (N, 3, H, W) uint8 RGB images before normalisation and the normalised batch on the
        model's device.
    """
    preprocessor = model.data_preprocessor
    raw = torch.stack([item[key] for item in packed])
    normalised = preprocessor(dict(inputs=[image for image in raw],
                                   data_samples=[item.get('data_samples') for item in packed]),
                              False)['inputs']
    # The pipeline packs BGR; a preprocessor that converts to RGB says so.
    bgr_input = bool(getattr(preprocessor, '_channel_conversion', False))
    rgb = raw.flip(1) if bgr_input and raw.shape[1] == 3 else raw
    return rgb, normalised.to(next(model.parameters()).device)
