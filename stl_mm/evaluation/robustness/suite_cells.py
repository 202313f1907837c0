"""What every suite of the classification battery builds its cells from: the cell context, the
suite's dataset with the model's test pipeline, and a cell whose pending data is read up front
(:mod:`stl_mm.evaluation.robustness.imagenet` and the suites of their own modules use them)."""
import copy
from typing import Any, Dict, FrozenSet, List, NamedTuple, Optional, Sequence

from mmengine.config import Config

__all__ = ['CellContext', 'CELL_META_KEYS', 'transform_type', 'suite_pipeline', 'suite_dataset',
           'scan_dataset', 'checked_cell']

CELL_META_KEYS = ('corruption', 'severity', 'real_labels')


class CellContext(NamedTuple):
    """What a suite's cell builder gets besides the suite's name.

    Attributes:
        cfg: The model config (its test pipeline is adapted per suite).
        specs: Every suite's spec (``read_suite_specs``).
        selection: The run's choices: ``suites``, ``corruptions``, ``severities``,
            ``v2_variants`` and those of any added suite.
        on_the_fly: The suites whose data is made at load time (their on-the-fly spec).
        allow_incomplete: ImageNet-C cells that do not match the clean set are evaluated.
        pending: The cell names not in the results file yet.
    """
    cfg: Config
    specs: Dict[str, dict]
    selection: Dict[str, Any]
    on_the_fly: FrozenSet[str]
    allow_incomplete: bool
    pending: Sequence[str]


def transform_type(transform: dict) -> str:
    """A pipeline step's type as a name (a class given directly included)."""
    step_type = transform.get('type', '')
    return step_type if isinstance(step_type, str) else step_type.__name__


def suite_pipeline(model_pipeline: Sequence[dict], corruption_pipeline: Sequence[dict] = (),
                   keys: Sequence[str] = ()) -> List[dict]:
    """The model's test pipeline, with the cell keys (and ``keys``) packed and optional
    corruption steps inserted right after image loading."""
    pipeline = [copy.deepcopy(dict(transform)) for transform in model_pipeline]
    pack = [t for t in pipeline if transform_type(t).split('.')[-1].startswith('Pack')]
    if not pack:
        raise ValueError('The model config\'s test pipeline has no PackInputs step; the '
                         'robustness suites need one to carry corruption and severity.')
    from mmpretrain.datasets.transforms import PackInputs
    meta_keys = tuple(pack[-1].get('meta_keys', PackInputs.DEFAULT_META_KEYS))
    added = tuple(dict.fromkeys(k for k in (*CELL_META_KEYS, *keys) if k not in meta_keys))
    pack[-1]['meta_keys'] = meta_keys + added
    if corruption_pipeline:
        position = _load_step(pipeline, 'On-the-fly corruptions go right after image loading') + 1
        pipeline[position:position] = [dict(t) for t in corruption_pipeline]
    return pipeline


def _load_step(pipeline: Sequence[dict], why: str) -> int:
    loads = [i for i, t in enumerate(pipeline) if 'LoadImage' in transform_type(t)]
    if not loads:
        raise ValueError(f'{why}, but the model\'s test pipeline has no LoadImageFromFile step.')
    return loads[0]


def suite_dataset(cfg: Config, spec: dict, keys: Sequence[str] = (),
                  loader: Optional[str] = None, **cell_arguments) -> dict:
    """A cell's dataset: the suite's dataset with ``cell_arguments`` and the model's test
    pipeline (:func:`suite_pipeline` with the spec's ``corruption_pipeline``).

    Args:
        cfg: The model config.
        spec: The suite's entry in the suites file.
        keys: Sample keys packed for the cell's own metric (e.g. ``sequence`` and ``frame``).
        loader: A transform type that replaces the image loading step (e.g.
            ``LoadSequenceFrame``).
        **cell_arguments: Arguments of the suite's dataset for this cell.
    """
    model_dataset = cfg.test_dataloader['dataset']
    if 'pipeline' not in model_dataset:
        raise ValueError('The model config\'s test_dataloader.dataset has no pipeline; use a '
                         'config with a plain (unwrapped) test dataset.')
    pipeline = suite_pipeline(model_dataset['pipeline'], spec.get('corruption_pipeline', ()),
                              keys)
    if loader is not None:
        pipeline[_load_step(pipeline, f'{loader} replaces image loading')] = dict(type=loader)
    dataset = dict(copy.deepcopy(spec['dataset']), **cell_arguments)
    dataset['pipeline'] = pipeline
    dataset.setdefault('test_mode', True)
    return dataset


def scan_dataset(dataset: dict):
    """The dataset of a config, built without its pipeline (reads the file list only)."""
    from mmpretrain.registry import DATASETS
    return DATASETS.build(dict(dataset, pipeline=[]))


def checked_cell(context: CellContext, title: str, suite: str, name: str, dataset: dict,
                 evaluator: Optional[dict] = None) -> dict:
    """One cell of a suite; its data is read now when it is pending, so a missing or malformed
    tree stops the run before anything is evaluated.

    Args:
        context: The run's cell context.
        title: What the data is, in the message.
        suite: The suite (for the ``--data-root`` hint).
        name: The cell's name.
        dataset: The cell's dataset config (:func:`suite_dataset`).
        evaluator: The cell's own evaluator, if not the battery's accuracy.
    """
    if name in context.pending:
        try:
            scan_dataset(dataset)
        except (FileNotFoundError, ValueError) as error:
            raise SystemExit(
                f'{title} cannot be read: {error}\nSet its data root in the suites file '
                f'(configs/robustness/suites.py) or for this run with --data-root '
                f'{suite}=PATH, or leave the suite out of --suites.')
    cell = dict(name=name, dataset=dataset)
    if evaluator is not None:
        cell['evaluator'] = evaluator
    return cell
