"""The one cell loop of every robustness suite (ImageNet-C/A/R, Cityscapes-C, COCO-C)."""
import copy
from typing import Dict, List, Optional, Union

import torch
from mmengine.dist import barrier
from mmengine.runner import BaseLoop, TestLoop

from stl_mm.evaluation.robustness.results import RobustnessResults
from stl_mm.registry import register

__all__ = ['RobustnessCellLoop']


def _json_metrics(metrics: Dict) -> Dict[str, float]:
    """The scalar metrics, as floats (the results file is JSON)."""
    scalars = {}
    for key, value in metrics.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        try:
            scalars[key] = float(value)
        except (TypeError, ValueError):
            continue  # per-class lists and the like are not summarised
    return scalars


@register('LOOPS')
class RobustnessCellLoop(BaseLoop):
    """Evaluate a list of cells with one runner's model, recording each as it finishes.

    Each cell is a complete dataset config that replaces ``dataloader.dataset`` (batch size,
    sampler and workers stay those of the config); each gets mmengine's ``TestLoop`` with a fresh
    evaluator built from the cell's ``evaluator`` or, failing that, the config's
    ``test_evaluator`` (a suite measuring something else than accuracy, e.g. ImageNet-P's flip
    rates, brings its own metric). After a cell finishes, the main process
    adds it to the results file (atomically); cells already there are skipped, so an interrupted
    run resumes.

    Args:
        runner: The runner (its model holds the checkpoint's weights).
        dataloader: The config's test dataloader.
        evaluator: The config's test evaluator.
        cells: ``[{'name': str, 'dataset': dict, 'expected_samples': int or None,
            'evaluator': dict (optional)}]``.
        results_file: The suite's results file.
        inputs: What the numbers come from (see :mod:`stl_mm.evaluation.robustness.results`).
        fresh_hint: How the user starts a fresh file (the tool's option).
        about: Informational entries of the results file (paths).
        fp16: Run the model in fp16, as ``TestLoop`` does.
    """

    def __init__(self, runner, dataloader: Union[dict, object], evaluator, cells: List[dict],
                 results_file: str, inputs: dict, fresh_hint: str = 'delete it',
                 about: Optional[dict] = None, fp16: bool = False) -> None:
        if not cells:
            raise ValueError('RobustnessCellLoop got no cells to run.')
        self.results = RobustnessResults(results_file, inputs, fresh_hint, about)
        self._dataloader_cfg = copy.deepcopy(dataloader)
        self._evaluator_cfg = evaluator
        self.cells = [cell for cell in cells if cell['name'] not in self.results.cells]
        self.fp16 = fp16
        super().__init__(runner, self._cell_dataloader((self.cells or cells)[0]))

    def _cell_dataloader(self, cell: dict) -> dict:
        return dict(self._dataloader_cfg, dataset=copy.deepcopy(cell['dataset']))

    def run(self) -> Dict[str, dict]:
        """Evaluate every pending cell; returns every recorded cell by name."""
        for index, cell in enumerate(self.cells):
            dataloader = self.dataloader if index == 0 else self._cell_dataloader(cell)
            self.runner.logger.info(f'Robustness cell {cell["name"]} '
                                    f'({index + 1} of {len(self.cells)} pending)')
            cell_loop = TestLoop(self.runner, dataloader,
                                 cell.get('evaluator', self._evaluator_cfg), self.fp16)
            # Hooks (the logger) read the current dataloader through runner.test_loop.
            self.dataloader = cell_loop.dataloader
            metrics = cell_loop.run()
            expected: Optional[int] = cell.get('expected_samples')
            self.results.record(cell['name'], dict(
                metrics=_json_metrics(metrics), num_samples=len(cell_loop.dataloader.dataset),
                expected_samples=expected))
        barrier()
        self.results.reload()
        return self.results.cells
