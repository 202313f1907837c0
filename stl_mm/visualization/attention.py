"""Attention maps of any FAN, per head and averaged over the heads, over the image.

FAN's claim is that its attention groups the tokens of an object (emerging visual grouping).
Two kinds of attention show it:

* **Class attention** (the ``cls_attn_blocks``): the class token's attention over the patches,
  one distribution per head: where the classifier reads the image from. The patches' share is
  drawn; what is left to 1 is the class token's attention to itself (named in the row title).
* **Token mixing** (the FAN blocks): an (L, L) matrix per head, which cannot be drawn over the
  image whole. Two views of it are: ``'query'``, one row, the distribution of one query patch
  over all patches: the patches it groups with (by default the patch the last class-attention
  block attends to most, so a patch of the object; a chosen pixel otherwise); and
  ``'received'``, the mean of all rows, how much attention each patch receives: the patches
  every token reads, a saliency map. Both sum to 1 over the patches. The entropy of each row
  (how spread a token's attention is) says how much a token mixes but not with which tokens, so
  it shows no grouping and is not drawn.

The softmax weights are recomputed from the attention modules' inputs, captured with forward
pre-hooks, by :meth:`~stl_mm.models.backbones.fan_layers._HeadedAttention.attention_weights`:
the backbone runs ``scaled_dot_product_attention``, which never materialises them. With a
token head the figure shows, next to the attention, the tokens labelled as the predicted class
(as in :mod:`stl_mm.visualization.token_labels`). The command line is
``tools/visualization/visualize_attention.py``.
"""
import os.path as osp
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.config import Config
from mmpretrain.registry import DATASETS

from stl_mm.apis.token_labeler import (has_token_head, load_classifier, load_image_files,
                                       model_inputs)
from stl_mm.models.backbones import FAN
from stl_mm.models.classifiers import token_logits_of
from stl_mm.visualization.token_labels import BINARY_MAP, draw_token_map, pyplot, save_figure

__all__ = ['TOKEN_MIXING_VIEWS', 'AttentionWeights', 'fan_backbone', 'collect_attention',
           'query_token', 'token_mixing_map', 'class_attention_map', 'draw_attention_figure',
           'visualize_attention']

#: How a token-mixing matrix is drawn (see the module docstring).
TOKEN_MIXING_VIEWS = ('query', 'received')
_HEATMAP = 'inferno'


@dataclass
class AttentionWeights:
    """The softmax weights of one attention module on a batch.

    Attributes:
        name: ``'blocks.<i>'`` (token mixing) or ``'cls_attn_blocks.<j>'`` (class attention).
        weights: (N, heads, Lq, L) float; every row sums to 1. Token mixing: Lq = L = h * w
            patches; class attention: Lq = 1 (the class token), L = 1 + h * w (class token
            first).
        grid: (h, w), the patch grid of the keys.
    """
    name: str
    weights: torch.Tensor
    grid: Tuple[int, int]


def fan_backbone(model: nn.Module) -> FAN:
    """The FAN of a classifier (its ``backbone``) or ``model`` itself.

    Raises:
        TypeError: There is no FAN.
    """
    backbone = getattr(model, 'backbone', model)
    if not isinstance(backbone, FAN):
        raise TypeError(f'Attention maps need a FAN backbone; this model has a '
                        f'{type(backbone).__name__}. Use a config whose model.backbone is FAN.')
    return backbone


@torch.no_grad()
def collect_attention(model: nn.Module, inputs: torch.Tensor,
                      blocks: Sequence[int] = (-1, )) -> Tuple[torch.Tensor,
                                                               List[AttentionWeights]]:
    """Run the model once and capture the attention of FAN ``blocks`` and every class block.

    Args:
        model: A classifier with a FAN backbone, or a FAN.
        inputs: The normalised (N, 3, H, W) batch.
        blocks: Indices of the FAN blocks (negative counts from the last) whose token-mixing
            attention is captured.

    Returns:
        The model's output (class logits of a classifier, ``mode='tensor'``) and the weights,
        the FAN blocks' in ``blocks`` order, then the class-attention blocks'.

    Raises:
        IndexError: A block index is outside the backbone's depth.
    """
    backbone = fan_backbone(model)
    depth = len(backbone.blocks)
    wrong = [index for index in blocks if not -depth <= index < depth]
    if wrong or not blocks:
        raise IndexError(f'--blocks must be FAN block indices in [{-depth}, {depth}) (this FAN '
                         f'has {depth} blocks), got {list(blocks)}.')
    chosen = [index % depth for index in blocks]
    grids: Dict[int, Tuple[int, int]] = {}
    captured: Dict[str, torch.Tensor] = {}

    def record_grid(index: int):
        def hook(_module, args):
            grids[index] = tuple(int(side) for side in args[1])
        return hook

    def record_weights(name: str):
        def hook(module, args):
            captured[name] = module.attention_weights(args[0]).cpu()
        return hook

    handles = [block.register_forward_pre_hook(record_grid(index))
               for index, block in enumerate(backbone.blocks)]
    handles += [backbone.blocks[index].attn.register_forward_pre_hook(
        record_weights(f'blocks.{index}')) for index in set(chosen)]
    handles += [block.attn.register_forward_pre_hook(record_weights(f'cls_attn_blocks.{index}'))
                for index, block in enumerate(backbone.cls_attn_blocks)]
    try:
        output = model(inputs, mode='tensor') if model is not backbone else model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    final_grid = backbone.blocks[-1].output_grid(grids[depth - 1])
    maps = [AttentionWeights(f'blocks.{index}', captured[f'blocks.{index}'], grids[index])
            for index in chosen]
    maps += [AttentionWeights(f'cls_attn_blocks.{index}', captured[f'cls_attn_blocks.{index}'],
                              final_grid) for index in range(len(backbone.cls_attn_blocks))]
    return output, maps


def class_attention_map(attention: AttentionWeights) -> torch.Tensor:
    """The class token's attention over the patches: (N, heads, h, w)."""
    weights = attention.weights
    if weights.shape[2] != 1:
        raise ValueError(f'{attention.name} is not a class-attention module (its weights have '
                         f'{weights.shape[2]} queries, not 1).')
    return weights[:, :, 0, 1:].reshape(*weights.shape[:2], *attention.grid)


def query_token(pixel: Tuple[float, float], image_size: Tuple[int, int],
                grid: Tuple[int, int]) -> int:
    """Index of the patch of an (h, w) grid covering pixel (x, y) of an (H, W) image.

    Raises:
        ValueError: The pixel lies outside the image.
    """
    x, y = pixel
    height, width = image_size
    if not (0 <= x < width and 0 <= y < height):
        raise ValueError(f'--query {x:g} {y:g} lies outside the {width}x{height} model input; '
                         'give x in [0, width) and y in [0, height) of the resized image.')
    return int(y * grid[0] // height) * grid[1] + int(x * grid[1] // width)


def token_mixing_map(attention: AttentionWeights, view: str = 'query',
                     queries: Optional[torch.Tensor] = None) -> torch.Tensor:
    """A token-mixing matrix as one map per image and head: (N, heads, h, w).

    Args:
        attention: Token-mixing weights (N, heads, L, L).
        view: ``'query'`` (row ``queries[n]`` of image n) or ``'received'`` (mean of the rows).
        queries: (N,) query patch indices, for ``'query'``.
    """
    weights = attention.weights
    if view == 'query':
        if queries is None:
            raise ValueError("view 'query' needs the query patch of each image.")
        index = queries.view(-1, 1, 1, 1).expand(-1, weights.shape[1], 1, weights.shape[3])
        rows = weights.gather(2, index)[:, :, 0]
    elif view == 'received':
        rows = weights.mean(dim=2)
    else:
        raise ValueError(f'--token-mixing must be one of {TOKEN_MIXING_VIEWS}, got {view!r}.')
    return rows.reshape(*weights.shape[:2], *attention.grid)


def draw_attention_figure(image: torch.Tensor,
                          rows: Sequence[Tuple[str, torch.Tensor, Optional[Tuple[float, float]]]],
                          out_file: str,
                          heads: Optional[Sequence[int]] = None,
                          token_labels: Optional[Tuple[torch.Tensor, str]] = None,
                          title: Optional[str] = None) -> str:
    """Draw attention maps of one image into a PNG: one row per map, one column per head.

    Columns: the image (with the query pixel marked, if any), the token labels (if given),
    the mean over the heads, then each head of ``heads``. Each map has its own colour scale,
    from 0 to its maximum (in its title), so that weak heads stay visible.

    Args:
        image: (3, H, W) uint8 RGB.
        rows: (label, maps (heads, h, w), query pixel (x, y) or None) per row.
        out_file: PNG path.
        heads: Heads drawn one by one (all by default); the mean is over all heads.
        token_labels: (h, w) bool map of the tokens labelled as the predicted class, and its
            panel title.
        title: Figure title.

    Returns:
        ``out_file``.
    """
    plt = pyplot()
    num_heads = max(maps.shape[0] for _, maps, _ in rows)
    heads = list(range(num_heads)) if heads is None else list(heads)
    wrong = [head for head in heads if not 0 <= head < num_heads]
    if wrong:
        raise IndexError(f'--heads must lie in [0, {num_heads}) (the attention has {num_heads} '
                         f'heads), got {wrong}.')
    picture = image.permute(1, 2, 0).numpy()
    lead = 2 if token_labels is not None else 1
    columns = lead + 1 + len(heads)
    figure, axes = plt.subplots(len(rows), columns,
                                figsize=(2.1 * columns, 2.3 * len(rows) + (0.4 if title else 0)),
                                squeeze=False)
    for row, (label, maps, query) in enumerate(rows):
        draw_token_map(axes[row, 0], picture, None, None, label)
        if query is not None:
            axes[row, 0].plot(*query, marker='x', color='cyan', markersize=8, mew=2)
        if token_labels is not None:
            draw_token_map(axes[row, 1], picture, token_labels[0], BINARY_MAP, token_labels[1])
        panels = [('mean of heads', maps.mean(dim=0))]
        panels += [(f'head {head}', maps[head]) for head in heads]
        for column, (name, panel) in enumerate(panels, lead):
            peak = float(panel.max())
            draw_token_map(axes[row, column], picture, panel, _HEATMAP, f'{name} (max {peak:.2g})',
                           vmax=peak if peak > 0 else 1.)
    return save_figure(figure, out_file, title)


def _class_names(cfg: Config) -> Optional[Sequence[str]]:
    """The class names of the config's test dataset type, when it declares them."""
    dataset = (cfg.get('test_dataloader') or cfg.get('val_dataloader') or {}).get('dataset', {})
    names = (dataset.get('metainfo') or {}).get('classes') or dataset.get('classes')
    if names is None and isinstance(dataset.get('type'), str) and dataset['type'] in DATASETS:
        names = getattr(DATASETS.get(dataset['type']), 'METAINFO', {}).get('classes')
    return list(names) if isinstance(names, (list, tuple)) else None


def visualize_attention(config: Union[str, Config],
                        checkpoint: str,
                        images: Sequence[str],
                        out_dir: str,
                        blocks: Sequence[int] = (-1, ),
                        heads: Optional[Sequence[int]] = None,
                        token_mixing: str = 'query',
                        query: Optional[Tuple[float, float]] = None,
                        hook_teacher: bool = False,
                        device: str = 'cpu') -> List[str]:
    """Write one attention figure per image file (``<out_dir>/<image name>_attention.png``).

    Rows: the token-mixing attention of each of ``blocks``, then the class attention of each
    class-attention block; columns as in :func:`draw_attention_figure`.

    Args:
        config: Config (or its path) with the FAN model and a test pipeline that reads files.
        checkpoint: Model checkpoint (mmengine or official).
        images: Image files.
        out_dir: Folder of the PNGs.
        blocks: FAN block indices of the token-mixing rows (default the last).
        heads: Heads drawn one by one (all by default).
        token_mixing: One of :data:`TOKEN_MIXING_VIEWS`.
        query: Query pixel (x, y) of the resized model input for ``'query'``; by default the
            centre of the patch the last class-attention block attends to most (the centre of
            the image without class attention).
        hook_teacher: Use the model of the config's FrozenTeacherHook.
        device: Torch device.

    Returns:
        The PNG paths.
    """
    if token_mixing not in TOKEN_MIXING_VIEWS:
        raise ValueError(f'--token-mixing must be one of {TOKEN_MIXING_VIEWS}, got '
                         f'{token_mixing!r}.')
    if query is not None and token_mixing != 'query':
        raise ValueError(f'--query picks the query patch of --token-mixing query; it means '
                         f'nothing with --token-mixing {token_mixing}: drop one of them.')
    cfg = config if isinstance(config, Config) else Config.fromfile(config)
    model = load_classifier(cfg, checkpoint, hook_teacher, device)
    fan_backbone(model)
    pictures, inputs = model_inputs(model, load_image_files(cfg, images))
    logits, attention = collect_attention(model, inputs, blocks)
    predicted = logits.argmax(dim=1).cpu()
    names = _class_names(cfg) or [str(index) for index in range(logits.shape[1])]
    labels = None
    if has_token_head(model):
        with torch.no_grad():
            labels = token_logits_of(model, inputs).argmax(dim=1).cpu()
    size = tuple(inputs.shape[-2:])
    class_rows = [item for item in attention if item.name.startswith('cls_attn_blocks')]
    class_maps = [class_attention_map(item) for item in class_rows]
    queries_at = _query_pixels(query, size, class_maps[-1] if class_maps else None, len(images))
    paths = []
    for n, path in enumerate(images):
        rows = []
        for item in attention:
            if item.name.startswith('blocks'):
                pixel = queries_at[n] if token_mixing == 'query' else None
                query_index = torch.tensor([query_token(pixel, size, item.grid)]) if pixel else None
                maps = token_mixing_map(AttentionWeights(item.name, item.weights[n:n + 1],
                                                         item.grid), token_mixing, query_index)
                view = 'query patch' if pixel else 'attention received'
                rows.append((f'{item.name} token mixing\n({view})', maps[0], pixel))
            else:
                maps = class_attention_map(item)[n]
                to_self = float(item.weights[n, :, 0, 0].mean())
                rows.append((f'{item.name} class attention\n(to class token {to_self:.2f})',
                             maps, None))
        name = names[int(predicted[n])]
        token_panel = None
        if labels is not None:
            token_panel = (labels[n] == predicted[n], f'token labels: {name}')
        stem = osp.splitext(osp.basename(path))[0]
        paths.append(draw_attention_figure(
            pictures[n], rows, osp.join(out_dir, f'{stem}_attention.png'), heads=heads,
            token_labels=token_panel,
            title=f'{osp.basename(path)}: predicted {name} ({osp.basename(checkpoint)})'))
    return paths


def _query_pixels(query: Optional[Tuple[float, float]], size: Tuple[int, int],
                  class_maps: Optional[torch.Tensor], count: int) -> List[Tuple[float, float]]:
    """The query pixel (x, y) of each of ``count`` images: ``query``, or the centre of the
    patch the class attention (mean of the heads) peaks at, or the image centre."""
    height, width = size
    if query is not None:
        query_token(query, size, (1, 1))  # refuses a pixel outside the image
        return [tuple(query)] * count
    if class_maps is None:
        return [(width / 2, height / 2)] * count
    mean = class_maps.mean(dim=1)
    grid_h, grid_w = mean.shape[-2:]
    peaks = mean.flatten(1).argmax(dim=1)
    return [((int(peak) % grid_w + 0.5) * width / grid_w,
             (int(peak) // grid_w + 0.5) * height / grid_h) for peak in peaks]
