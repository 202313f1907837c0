"""Draw the token labels of a token labeler (teacher) as in Fig. 2 of the STL paper.

One row per image: the image, the binary token-label map (tokens labelled as the image's
class), the tertiary map (tokens labelled as the class with high / low confidence, other
tokens), the tokens a hard Gumbel-softmax draw labels as the class, and the histogram of the
teacher's confidence in the labels of the class's tokens versus the other tokens.

Works for any dataset config and any teacher checkpoint: a stage-1 config with its checkpoint,
a stage-2 config whose FrozenTeacherHook describes the teacher (``--hook-teacher``), or an
official STL teacher checkpoint (converted on the fly).

With ``--foreground-threshold`` (images of objects on a black background, e.g. Fashion-MNIST)
the ground-truth foreground is outlined and the histogram counts foreground tokens only, so it
splits into correct and wrong foreground labels.

Examples:
    python tools/visualize_token_labels.py configs/stl/fan_t_token_labeler.py \
        work_dirs/fan_t_token_labeler/epoch_350.pth --split val --indices 0 1 2 3
    python tools/visualize_token_labels.py configs/stl/demo/fan_demo_student.py \
        work_dirs/demo/stage1_token_labeler/epoch_6.pth --hook-teacher --split test \
        --view teacher --foreground-threshold 10 --out token_labels.png
"""
import argparse
import copy
import os
import os.path as osp
import random
import sys
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import stl_mm  # noqa: E402,F401  (registers every module)
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from stl_mm.evaluation.token_label_quality import (  # noqa: E402
    foreground_pixels, foreground_tokens, token_labels)

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


def load_token_labeler(cfg: Config, checkpoint: str, hook_teacher: bool = False,
                       device: str = 'cpu') -> nn.Module:
    """Build the token labeler and load its weights (EMA weights when the file has them).

    Args:
        cfg: The config.
        checkpoint: mmengine or official (timm layout) checkpoint of the token labeler.
        hook_teacher: Build the model of the config's FrozenTeacherHook instead of
            ``cfg.model``.
        device: Torch device.
    """
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    from stl_mm.engine.hooks import FrozenTeacherHook
    model_cfg = copy.deepcopy(find_teacher_hook(cfg)['model'] if hook_teacher else cfg.model)
    if not hook_teacher:
        # The classifier's own data preprocessor normalises the views.
        model_cfg.setdefault('data_preprocessor', cfg.get('data_preprocessor'))
        if model_cfg.get('mode') == 'student':
            model_cfg['mode'] = 'labeler'  # inference only: no teacher needed
    if model_cfg.get('head', {}).get('with_token_head', True) is False:
        raise ValueError('This model has no token head (with_token_head=False), so it makes no '
                         'token labels; pass a token labeler (stage-1) config and checkpoint.')
    model = FrozenTeacherHook(model=model_cfg, checkpoint=checkpoint).build_teacher()
    if hook_teacher:
        from mmpretrain.registry import MODELS
        model.data_preprocessor = MODELS.build(copy.deepcopy(cfg.data_preprocessor))
    return model.to(device).eval()


def build_view_dataset(cfg: Config, split: str, view: str):
    """The split's dataset with the pipeline that makes ``view``.

    Args:
        cfg: The config.
        split: ``'train'``, ``'val'`` or ``'test'`` (the ``<split>_dataloader`` dataset).
        view: One of :data:`VIEWS`.
    """
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    from mmpretrain.registry import DATASETS
    if split not in SPLITS or view not in VIEWS:
        raise ValueError(f'split must be one of {SPLITS} and view one of {VIEWS}; got '
                         f'{split!r}, {view!r}.')
    loader = cfg.get(f'{split}_dataloader')
    if loader is None:
        raise KeyError(f'The config has no {split}_dataloader; choose another --split.')
    dataset_cfg = copy.deepcopy(loader['dataset'])
    if view == 'clean':
        test_loader = cfg.get('test_dataloader') or cfg.get('val_dataloader')
        pipeline = copy.deepcopy(test_loader['dataset']['pipeline'])
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
    preprocessor = model.data_preprocessor
    bgr_input = bool(getattr(preprocessor, '_channel_conversion', False))
    device = next(model.parameters()).device
    classes, images, logits = [], {view: [] for view in views}, {view: [] for view in views}
    for start in range(0, len(indices), batch_size):
        packed = [dataset[int(index)] for index in indices[start:start + batch_size]]
        samples = [item['data_samples'] for item in packed]
        classes.append(torch.cat([sample.gt_label for sample in samples]))
        for view in views:
            key = _VIEW_KEYS[view]
            if key not in packed[0]:
                raise KeyError(f"The pipeline made no {key!r} for view {view!r}.")
            raw = torch.stack([item[key] for item in packed])
            normalised = preprocessor(dict(inputs=[image for image in raw],
                                           data_samples=samples), False)['inputs']
            output = model(normalised.to(device), mode='tensor')
            token_logits = output[-1] if isinstance(output, (tuple, list)) else output
            if token_logits is None or token_logits.dim() != 4:
                raise TypeError('The model returned no token logits (N, K, h, w).')
            images[view].append(raw.flip(1) if bgr_input and raw.shape[1] == 3 else raw)
            logits[view].append(token_logits.float().cpu())
    return dict(classes=torch.cat(classes),
                images={view: torch.cat(images[view]) for view in views},
                token_logits={view: torch.cat(logits[view]) for view in views})


def draw_token_label_figure(images: torch.Tensor,
                            classes: torch.Tensor,
                            token_logits: torch.Tensor,
                            out_file: str,
                            class_names: Optional[Sequence[str]] = None,
                            foreground: Optional[torch.Tensor] = None,
                            confidence_threshold: float = 0.5,
                            tau: float = 1.0,
                            gumbel_seed: int = 0,
                            title: Optional[str] = None) -> str:
    """Draw the Fig. 2-style panels of each image into a PNG.

    Args:
        images: (N, 3, H, W) uint8 RGB.
        classes: Ground-truth classes (N,).
        token_logits: Teacher token logits (N, K, h, w).
        out_file: PNG path.
        class_names: Names of the K classes.
        foreground: Optional bool token foreground (N, h, w): outlined on the maps, and the
            histogram then counts foreground tokens only (correct vs wrong labels).
        confidence_threshold: Class tokens with a confidence at or above it are "confident".
        tau: Gumbel-softmax temperature.
        gumbel_seed: Seed of the Gumbel draw.
        title: Figure title.

    Returns:
        ``out_file``.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    labels, confidences = token_labels(token_logits, 'argmax')
    gumbel_labels, _ = token_labels(token_logits, 'gumbel', tau=tau, seed=gumbel_seed)
    as_class = labels == classes.view(-1, 1, 1)
    gumbel_as_class = gumbel_labels == classes.view(-1, 1, 1)
    tertiary = torch.where(as_class, 1 + (confidences >= confidence_threshold).long(),
                           torch.zeros_like(labels))
    height, width = images.shape[-2:]
    extent = (0, width, height, 0)
    if foreground is not None:
        # Token foreground at pixel resolution, for the outline.
        outlines = F.interpolate(foreground[:, None].float(), size=(height, width),
                                 mode='nearest')[:, 0].numpy()
    binary_map = ListedColormap(['#1f1f7a', '#f2d024'])
    tertiary_map = ListedColormap(['#1f1f7a', '#3fa34d', '#f2d024'])

    rows = len(images)
    figure, axes = plt.subplots(rows, 5, figsize=(13, 2.6 * rows + (0.5 if title else 0)),
                                squeeze=False)
    for row in range(rows):
        name = class_names[int(classes[row])] if class_names else str(int(classes[row]))
        image = images[row].permute(1, 2, 0).numpy()
        panels = [
            (None, None, f'{name}'),
            (as_class[row], binary_map, 'labelled as class (argmax)'),
            (tertiary[row], tertiary_map, f'confident (p>={confidence_threshold:g}) / '
             'unconfident'),
            (gumbel_as_class[row], binary_map, 'Gumbel-selected as class'),
        ]
        for column, (token_map, colormap, label) in enumerate(panels):
            axis = axes[row, column]
            axis.imshow(image, extent=extent)
            if token_map is not None:
                axis.imshow(token_map.numpy(), cmap=colormap, vmin=0,
                            vmax=colormap.N - 1, alpha=0.65, extent=extent,
                            interpolation='nearest')
                if foreground is not None:
                    axis.contour(outlines[row], levels=[0.5], colors='white', linewidths=0.8,
                                 extent=extent, origin='upper')
            axis.set_title(label, fontsize=8)
            axis.set_xticks([])
            axis.set_yticks([])
        counted = foreground[row] if foreground is not None else torch.ones_like(as_class[row])
        correct = confidences[row][as_class[row] & counted].numpy()
        wrong = confidences[row][~as_class[row] & counted].numpy()
        axis = axes[row, 4]
        bins = np.linspace(0, 1, 11)
        kind = 'foreground ' if foreground is not None else ''
        axis.hist([correct, wrong], bins=bins, color=['#f2d024', '#c0392b'],
                  label=[f'{kind}labelled as class', f'{kind}other class'])
        axis.set_xlabel('teacher confidence', fontsize=8)
        axis.tick_params(labelsize=7)
        axis.legend(fontsize=6)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(out_file)), exist_ok=True)
    figure.savefig(out_file, dpi=100)
    plt.close(figure)
    return out_file


def visualize_token_labels(config: Union[str, Config],
                           checkpoint: str,
                           out_file: str,
                           split: str = 'val',
                           indices: Sequence[int] = (0, 1, 2, 3),
                           view: str = 'clean',
                           hook_teacher: bool = False,
                           foreground_threshold: Optional[float] = None,
                           confidence_threshold: float = 0.5,
                           tau: float = 1.0,
                           seed: int = 0,
                           device: str = 'cpu') -> str:
    """Make the Fig. 2-style PNG for ``indices`` of a split (see the module docstring)."""
    cfg = config if isinstance(config, Config) else Config.fromfile(config)
    model = load_token_labeler(cfg, checkpoint, hook_teacher, device)
    dataset = build_view_dataset(cfg, split, view)
    indices = list(indices)
    if not indices or max(indices) >= len(dataset) or min(indices) < 0:
        raise IndexError(f'indices must lie in [0, {len(dataset)}) for the {split} split, got '
                         f'{indices}.')
    # The teacher view's geometry is the student view's: its mask serves both.
    mask_view = 'teacher' if view == 'student' else view
    views = sorted({view, mask_view} if foreground_threshold is not None else {view})
    outputs = collect_views(model, dataset, indices, views, seed=seed)
    token_logits = outputs['token_logits'][view]
    foreground = None
    if foreground_threshold is not None:
        pixels = foreground_pixels(outputs['images'][mask_view], foreground_threshold)
        foreground = foreground_tokens(pixels, token_logits.shape[-2:])
    class_names = (dataset.metainfo or {}).get('classes')
    return draw_token_label_figure(
        outputs['images'][view], outputs['classes'], token_logits, out_file,
        class_names=class_names, foreground=foreground,
        confidence_threshold=confidence_threshold, tau=tau, gumbel_seed=seed,
        title=f'{osp.basename(checkpoint)} on {split} ({view} view)')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='config with the dataset (and the token labeler model)')
    parser.add_argument('checkpoint', help='token labeler checkpoint (mmengine or official)')
    parser.add_argument('--out', default='token_labels.png', help='PNG to write')
    parser.add_argument('--split', choices=SPLITS, default='val')
    parser.add_argument('--indices', type=int, nargs='+', default=[0, 1, 2, 3])
    parser.add_argument('--view', choices=VIEWS, default='clean',
                        help='clean: test pipeline; teacher / student: the two views of a '
                        'DualView training pipeline')
    parser.add_argument('--hook-teacher', action='store_true',
                        help="use the model of the config's FrozenTeacherHook")
    parser.add_argument('--foreground-threshold', type=float, default=None,
                        help='pixel value (0-255) above which a pixel is foreground (objects '
                        'on a black background only)')
    parser.add_argument('--confidence-threshold', type=float, default=0.5)
    parser.add_argument('--tau', type=float, default=1.0, help='Gumbel-softmax temperature')
    parser.add_argument('--seed', type=int, default=0, help='augmentation and Gumbel seed')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. data_root=...')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    path = visualize_token_labels(
        cfg, args.checkpoint, args.out, split=args.split, indices=args.indices, view=args.view,
        hook_teacher=args.hook_teacher, foreground_threshold=args.foreground_threshold,
        confidence_threshold=args.confidence_threshold, tau=args.tau, seed=args.seed,
        device=args.device)
    print(f'Token-label figure written to {path}')


if __name__ == '__main__':
    main()
