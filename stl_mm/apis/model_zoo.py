"""The model zoo: FAN and STL models by name in mmpretrain's model hub.

``model-index.yml`` (the repository root; ``stl_mm/.mim/`` in a built package) imports one
metafile per family, ``configs/fan/metafile.yml`` and ``configs/stl/metafile.yml``, in the
OpenMMLab format: one entry per config with its name (the config's file name), parameters and
FLOPs (measured by :func:`count_parameters` / :func:`count_flops`), the results the papers
report and, where the authors published a file at a stable address, ``Weights``.
``import stl_mm`` registers them (:func:`register_model_zoo`), so mmpretrain's
``list_models('*fan*')``, ``get_model(name, pretrained=True)``,
``ImageClassificationInferencer(name)`` and ``inference_model(name, ...)`` find them.

Official weights are converted on load. mmpretrain hands ``Weights`` to mmengine's
``load_checkpoint``, which picks a reader by the address's prefix; the FAN release address is
registered here (:func:`load_from_fan_release`): it downloads the file once into torch's hub
cache and loads it with :func:`~stl_mm.models.backbones.fan_checkpoint.load_checkpoint` into the
entry's model (EMA weights first, strict, logged), so mmengine copies weights that fit exactly.
The STL authors published their files on Google Drive pages, no stable download address: their
entries name the page and the converter command instead (``Converted From``, ``Convert``).

Entries without ``Weights`` (no published file, or a Drive page only) refuse
``get_model(name, pretrained=True)``: mmpretrain would only warn and return a randomly
initialised model, which the inferencers (they ask for pretrained weights) then use to predict.
:func:`register_model_zoo` gives their hub entries (in memory, not the metafiles) an address of
the scheme :data:`UNPUBLISHED`, whose reader (:func:`load_from_unpublished`) raises
:class:`UnpublishedWeightsError` saying why and how to get weights.
"""
import os
import os.path as osp
from typing import Any, List, Optional, Sequence

import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.registry import DefaultScope
from mmengine.runner.checkpoint import CheckpointLoader
from modelindex.load_model_index import load as load_model_index
from modelindex.models.Result import Result

from stl_mm.evaluation.reports import markdown_table
from stl_mm.models.backbones.fan_checkpoint import (CheckpointError, CheckpointReadError,
                                                    load_checkpoint)
from stl_mm.utils import REPO_ROOT

__all__ = ['FAN_RELEASE', 'MODEL_INDEX', 'README_MARKERS', 'UNPUBLISHED', 'UnpublishedWeightsError',
           'count_flops', 'count_parameters', 'crop_size', 'download_official',
           'load_from_fan_release', 'load_from_unpublished', 'model_index_path',
           'model_zoo_table', 'readme_table', 'register_model_zoo', 'unpublished_weights_message',
           'zoo_models']

#: Where the FAN authors publish their checkpoints (linked from the NVlabs/FAN README).
FAN_RELEASE = 'https://github.com/zhoudaquan/fully_attentional_network_ckpt/releases/download/'
#: Address scheme of the hub entries without downloadable weights (``<scheme><entry name>``);
#: its reader refuses. It exists only in memory, in mmpretrain's model hub: the metafiles say
#: what was published (no ``Weights``), which is what mim-style readers of them should see.
UNPUBLISHED = 'stl-mm-unpublished://'
MODEL_INDEX = 'model-index.yml'
#: The README's model-zoo table sits between these lines (``tools/misc/model_zoo_table.py``).
README_MARKERS = ('<!-- model-zoo:start -->', '<!-- model-zoo:end -->')
#: Results columns of the table: (metafile dataset, column name).
RESULT_COLUMNS = (('ImageNet-1k', 'IN-1K top-1'), ('ImageNet-C', 'IN-C mCA'),
                  ('ImageNet-A', 'IN-A top-1'), ('ImageNet-R', 'IN-R top-1'))

_registered = False


class UnpublishedWeightsError(CheckpointError):
    """A zoo entry was asked for pretrained weights that were never published at a download
    address."""


def model_index_path() -> str:
    """The model index: the source checkout's (editable installs), else the copy a built
    package carries in ``stl_mm/.mim/`` (``setup.py`` packs it with the configs).

    Raises:
        FileNotFoundError: Neither exists (the install lacks its package data).
    """
    candidates = (osp.join(REPO_ROOT, MODEL_INDEX),
                  osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), '.mim', MODEL_INDEX))
    for path in candidates:
        if osp.isfile(path):
            return path
    raise FileNotFoundError(
        f'The stl_mm model index is missing: none of {list(candidates)} exists. Install '
        'stl_mm from its repository (pip install -e . , or build the wheel there, which packs '
        'model-index.yml and configs/ into stl_mm/.mim).')


def zoo_models() -> List[Any]:
    """The entries of the model index (modelindex ``Model`` objects, configs as written)."""
    index = load_model_index(model_index_path())
    index.build_models_with_collections()
    return list(index.models)


def register_model_zoo() -> None:
    """Registers the zoo with mmpretrain's ``ModelHub`` and the FAN release and
    :data:`UNPUBLISHED` readers with mmengine's ``CheckpointLoader``; later calls do nothing.

    ``get_model(name, pretrained=True)`` loads an entry's ``Weights`` when it has one, and
    otherwise only warns ('Unable to find pre-defined checkpoint') and returns a random model.
    The hub entry's ``weights`` is the one value that path reads, so entries without weights
    get an :data:`UNPUBLISHED` address there: ``pretrained=True`` then raises
    :class:`UnpublishedWeightsError`, while ``pretrained=False`` and ``pretrained=<file>``
    never read it. The hub keeps its entries in ``ModelHub._models_dict`` and has no public
    way to change one (``ModelHub.get`` returns a copy). Likewise ``inference_model(name)``
    picks its inferencer from the entry's result tasks: entries with no published results
    get an empty Image Classification result there (the metafiles stay as published).
    """
    global _registered
    if _registered:
        return
    from mmpretrain.apis import ModelHub
    path = model_index_path()
    root = osp.dirname(path)
    ModelHub.register_model_index(path, config_prefix=root)
    # The hub's entries are the parsed metafile entries: pick ours by their metafile's folder
    # rather than parsing the index a second time on every import.
    ours = [entry for entry in ModelHub._models_dict.values()
            if osp.abspath(entry.filepath).startswith(root + os.sep)]
    for entry in ours:
        if not entry.weights:
            entry.weights = UNPUBLISHED + entry.name
        if not entry.results:
            entry.results = [Result(task='Image Classification', dataset='ImageNet-1k',
                                    metrics={})]
    CheckpointLoader.register_scheme(prefixes=FAN_RELEASE, loader=load_from_fan_release)
    CheckpointLoader.register_scheme(prefixes=UNPUBLISHED, loader=load_from_unpublished)
    _registered = True


def unpublished_weights_message(model: Any) -> str:
    """Why a zoo entry without ``Weights`` has none to download, and how to get weights.

    Args:
        model: A zoo entry (modelindex ``Model``) without ``Weights``.
    """
    name = model.name
    converted = model.data.get('Converted From')
    if converted:
        command = model.data['Convert']
        return (f'{name} has no weights to download: the STL authors published its file only '
                f"on a Google Drive page ({converted['Weights']}), not at a download address. "
                f'Download the file from that page, convert it ({command}) and load the '
                f"result: get_model('{name}', pretrained='{command.split()[-1]}').")
    who = ('the FAN authors published no file for it (its link in the NVlabs/FAN README is '
           'empty)' if model.in_collection == 'FAN' else
           'the STL authors published no file for this config (NVlabs/STL README)')
    return (f'{name} has no weights to download: {who}. Train it (python tools/train.py '
            f"{model.config}) and load your checkpoint: get_model('{name}', "
            f"pretrained='work_dirs/{name}/epoch_N.pth'); an official FAN / STL file of it "
            'converts with python tools/model_converters/fan_to_stl_mm.py FILE '
            f"{name}.pth. get_model('{name}') builds it randomly initialised.")


def load_from_unpublished(filename: str, map_location: Optional[str] = None) -> dict:
    """mmengine checkpoint reader of :data:`UNPUBLISHED` addresses: refuses.

    Args:
        filename: ``<UNPUBLISHED><zoo entry name>``, the hub ``weights`` of an entry without
            downloadable weights.
        map_location: Unused.

    Raises:
        UnpublishedWeightsError: Always, with :func:`unpublished_weights_message`.
    """
    name = filename[len(UNPUBLISHED):]
    models = [model for model in zoo_models() if model.name == name and not model.weights]
    if len(models) != 1:
        raise UnpublishedWeightsError(
            f'{filename} names no model-zoo entry without weights; pass a local checkpoint '
            'file as pretrained=, or a zoo name (mmpretrain.list_models("*fan*")).')
    raise UnpublishedWeightsError(unpublished_weights_message(models[0]))


def download_official(url: str) -> str:
    """The local copy of an official checkpoint, downloaded once into torch's hub cache
    (``<torch.hub.get_dir()>/checkpoints``, where mmengine keeps its downloads too).

    Raises:
        CheckpointReadError: The download failed; the message says where to put the file.
    """
    path = osp.join(torch.hub.get_dir(), 'checkpoints', osp.basename(url))
    if not osp.isfile(path):
        print_log(f'Downloading {url} to {path}', logger='current')
        try:
            torch.hub.download_url_to_file(url, path)
        except Exception as error:  # noqa: B902  (network errors come in many types)
            raise CheckpointReadError(
                url, f'the download failed ({type(error).__name__}: {error}); download it by '
                f'hand and save it as {path}') from error
    return path


def load_from_fan_release(filename: str, map_location: Optional[str] = None) -> dict:
    """mmengine checkpoint reader of the FAN release address: the zoo entry's model with the
    official file loaded by :func:`load_checkpoint` (EMA weights first, strict, logged).

    Args:
        filename: A release address, the ``Weights`` of one zoo entry.
        map_location: Unused: the weights are read on the CPU (as mmpretrain asks).

    Raises:
        CheckpointReadError: The address is no zoo entry's, the download failed, or the file
            cannot be read.
        CheckpointMismatchError: The file does not fit the entry's model.

    Returns:
        ``{'state_dict': weights in the stl_mm layout, 'meta': {'zoo_model', 'source'}}``.
    """
    from mmpretrain.apis import get_model
    names = [model.name for model in zoo_models() if model.weights == filename]
    if len(names) != 1:
        raise CheckpointReadError(
            filename, f'it is the weights of {len(names)} model-zoo entries, not one; download '
            'it and load it with stl_mm.models.backbones.fan_checkpoint.load_checkpoint, or '
            'pass the name of a zoo entry (mmpretrain.list_models("*fan*")).')
    model = get_model(names[0])
    report = load_checkpoint(model, download_official(filename))
    return dict(state_dict=model.state_dict(), meta=dict(zoo_model=names[0], source=report.source))


def _build_model(cfg: Config, device: str = 'cpu') -> torch.nn.Module:
    from mmpretrain.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmpretrain'), torch.device(device):
        return MODELS.build(cfg.model)


def count_parameters(cfg: Config) -> int:
    """Parameters of a config's model (built on the meta device: no memory, no init)."""
    return sum(param.numel() for param in _build_model(cfg, 'meta').parameters())


def crop_size(cfg: Config) -> int:
    """Side of the square crop of the config's test pipeline."""
    crops = [step['crop_size'] for step in cfg.test_dataloader.dataset.pipeline
             if step['type'] == 'CenterCrop']
    if len(crops) != 1 or not isinstance(crops[0], int):
        raise ValueError('The test pipeline needs one CenterCrop with an int crop_size; got '
                         f'{crops}.')
    return crops[0]


def count_flops(cfg: Config) -> int:
    """FLOPs (multiply-accumulates, all ops) of a config's class prediction at its test crop:
    the backbone and the class head, as :func:`stl_mm.analysis.flops.count_flops` counts them
    (the token head of STL models is not run to predict)."""
    from stl_mm.analysis.flops import count_flops as count_arch_flops
    size = crop_size(cfg)
    return count_arch_flops(cfg.model.backbone.arch, (size, size), dense=False)['flops']


def _metric(model: Any, dataset: str) -> Optional[float]:
    for result in model.results or []:
        if result.dataset == dataset:
            values = list(result.metrics.values())
            if len(values) != 1:
                raise ValueError(f'{model.name}: {dataset} needs one metric, got {values}.')
            return values[0]
    return None


def _weights_cell(model: Any) -> str:
    if model.weights:
        return f'[official]({model.weights})'
    if model.data.get('Converted From'):
        return f"[published]({model.data['Converted From']['Weights']}), convert"
    return '-'


def model_zoo_table(models: Optional[Sequence[Any]] = None) -> str:
    """The README's model-zoo table (Markdown), one row per zoo entry."""
    header = ['model', 'config', 'params (M)', 'GFLOPs', 'size',
              *(column for _, column in RESULT_COLUMNS), 'reported by', 'weights']
    rows = []
    for model in models if models is not None else zoo_models():
        metadata = model.metadata.data
        results = [_metric(model, dataset) for dataset, _ in RESULT_COLUMNS]
        rows.append([
            model.name, f'[config]({model.config})', metadata['Parameters'] / 1e6,
            metadata['FLOPs'] / 1e9, metadata['Resolution'],
            *('-' if value is None else f'{value:.1f}' for value in results),
            model.data['Reported By'] if any(value is not None for value in results) else '-',
            _weights_cell(model)])
    return markdown_table(header, rows)


def readme_table(text: str, readme: str = 'README.md') -> str:
    """The model-zoo table between :data:`README_MARKERS` in a README's text.

    Raises:
        ValueError: The markers are missing, repeated or out of order.
    """
    start, end = README_MARKERS
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise ValueError(f'{readme} needs one line {start} and, after it, one line {end} around '
                         'the model-zoo table; put them there and paste the output of '
                         'python tools/misc/model_zoo_table.py between them.')
    return text[text.index(start) + len(start):text.index(end)].strip()
