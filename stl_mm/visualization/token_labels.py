"""Fig. 2-style figures of a token labeler's (teacher's) token labels, as in the STL paper.

One row per image: the image, the binary token-label map (tokens labelled as the image's
class), the tertiary map (tokens labelled as the class with high / low confidence, other
tokens), the tokens a hard Gumbel-softmax draw labels as the class, and the histogram of the
teacher's confidence in the labels of the class's tokens versus the other tokens.

Works for any dataset config and any teacher checkpoint: a stage-1 config with its checkpoint,
a stage-2 config whose FrozenTeacherHook describes the teacher (``hook_teacher=True``), or an
official STL teacher checkpoint (converted on the fly). With a foreground threshold (images of
objects on a black background, e.g. Fashion-MNIST) the ground-truth foreground is outlined and
the histogram counts foreground tokens only, so it splits into correct and wrong foreground
labels. The command line is ``tools/visualization/visualize_token_labels.py``.
"""
import os
import os.path as osp
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.colors import ListedColormap
from mmengine.config import Config

from stl_mm.apis.token_labeler import build_view_dataset, collect_views, load_token_labeler
from stl_mm.evaluation.token_label_quality import (foreground_pixels, foreground_tokens,
                                                   token_labels)

__all__ = ['BINARY_MAP', 'draw_token_label_figure', 'draw_token_map', 'pyplot', 'save_figure',
           'visualize_token_labels']

#: Tokens labelled as the class (yellow) or not (dark blue).
BINARY_MAP = ListedColormap(['#1f1f7a', '#f2d024'])


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
    plt = pyplot()
    labels, confidences = token_labels(token_logits, 'argmax')
    gumbel_labels, _ = token_labels(token_logits, 'gumbel', tau=tau, seed=gumbel_seed)
    as_class = labels == classes.view(-1, 1, 1)
    gumbel_as_class = gumbel_labels == classes.view(-1, 1, 1)
    tertiary = torch.where(as_class, 1 + (confidences >= confidence_threshold).long(),
                           torch.zeros_like(labels))
    height, width = images.shape[-2:]
    if foreground is not None:
        # Token foreground at pixel resolution, for the outline.
        outlines = F.interpolate(foreground[:, None].float(), size=(height, width),
                                 mode='nearest')[:, 0].numpy()
    tertiary_map = ListedColormap(['#1f1f7a', '#3fa34d', '#f2d024'])

    rows = len(images)
    figure, axes = plt.subplots(rows, 5, figsize=(13, 2.6 * rows + (0.5 if title else 0)),
                                squeeze=False)
    for row in range(rows):
        name = class_names[int(classes[row])] if class_names else str(int(classes[row]))
        image = images[row].permute(1, 2, 0).numpy()
        panels = [
            (None, None, f'{name}'),
            (as_class[row], BINARY_MAP, 'labelled as class (argmax)'),
            (tertiary[row], tertiary_map, f'confident (p>={confidence_threshold:g}) / '
             'unconfident'),
            (gumbel_as_class[row], BINARY_MAP, 'Gumbel-selected as class'),
        ]
        for column, (token_map, colormap, label) in enumerate(panels):
            draw_token_map(axes[row, column], image, token_map, colormap, label,
                           outline=outlines[row] if foreground is not None else None)
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
    return save_figure(figure, out_file, title)


def pyplot():
    """``matplotlib.pyplot`` on the file-only Agg backend (no display needed)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def draw_token_map(axis,
                   image: np.ndarray,
                   token_map: Optional[torch.Tensor],
                   colormap,
                   title: str,
                   vmin: float = 0.,
                   vmax: Optional[float] = None,
                   outline: Optional[np.ndarray] = None) -> None:
    """One panel: the image with a map over its tokens laid over it, stretched to the image.

    Args:
        axis: Matplotlib axes.
        image: (H, W, 3) uint8 RGB.
        token_map: (h, w) map of the tokens, drawn as blocks; None draws the image alone.
        colormap: Matplotlib colormap (or its name) of the map.
        title: Panel title.
        vmin: Map value of the colormap's first colour.
        vmax: Map value of its last colour; defaults to the last index of a listed colormap
            (a map of categories 0..N-1).
        outline: Optional (H, W) 0/1 mask outlined in white (e.g. the ground-truth foreground).
    """
    height, width = image.shape[:2]
    extent = (0, width, height, 0)
    axis.imshow(image, extent=extent)
    if token_map is not None:
        axis.imshow(token_map.numpy(), cmap=colormap, vmin=vmin,
                    vmax=colormap.N - 1 if vmax is None else vmax, alpha=0.65, extent=extent,
                    interpolation='nearest')
        if outline is not None:
            axis.contour(outline, levels=[0.5], colors='white', linewidths=0.8, extent=extent,
                         origin='upper')
    axis.set_title(title, fontsize=8)
    axis.set_xticks([])
    axis.set_yticks([])


def save_figure(figure, out_file: str, title: Optional[str] = None) -> str:
    """Title, lay out and write a figure to a PNG (making its folder), then close it.

    Returns:
        ``out_file``.
    """
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(out_file)), exist_ok=True)
    figure.savefig(out_file, dpi=100)
    pyplot().close(figure)
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
    """Make the Fig. 2-style PNG of the token labels of ``indices`` of a split.

    Args:
        config: Config (or its path) with the dataset and the token labeler model.
        checkpoint: Token labeler checkpoint (mmengine or official).
        out_file: PNG path.
        split: ``'train'``, ``'val'`` or ``'test'``.
        indices: Dataset indices of the images, one row each.
        view: One of :data:`~stl_mm.apis.token_labeler.VIEWS`.
        hook_teacher: Use the model of the config's FrozenTeacherHook.
        foreground_threshold: Pixel value (0-255) above which a pixel is foreground (objects on
            a black background only); None draws no ground-truth foreground.
        confidence_threshold: Class tokens with a confidence at or above it are "confident".
        tau: Gumbel-softmax temperature.
        seed: Augmentation and Gumbel seed.
        device: Torch device.

    Returns:
        ``out_file``.
    """
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
