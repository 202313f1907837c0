"""What every robustness suite does around the cell loop: fingerprint the inputs, build one
runner with the checkpoint, run the pending cells, and write the summary and tables."""
import copy
import os.path as osp
from typing import Callable, Dict, List, Optional, Sequence

from mmengine.config import Config
from mmengine.dist import is_main_process

from stl_mm.evaluation.reports import Table, render_tables, write_text
from stl_mm.evaluation.robustness.results import (RobustnessResults, checkpoint_sha256,
                                                  config_sha256)

__all__ = ['suite_results', 'run_cells', 'finish']


def suite_results(path: str, cfg: Config, config: str, checkpoint: str, fresh_hint: str,
                  **inputs) -> RobustnessResults:
    """The results file of a run, refused when it holds numbers of other inputs.

    Args:
        path: The results JSON.
        cfg: The resolved config (its numbers-deciding entries are fingerprinted).
        config: The config file, recorded for the reader.
        checkpoint: The checkpoint file, fingerprinted by content.
        fresh_hint: How the user starts a fresh file.
        **inputs: The suite's own inputs: ``suite``, ``data``, seeds, EMA choice, ...
    """
    inputs = dict(inputs, checkpoint_sha256=checkpoint_sha256(checkpoint),
                  config_sha256=config_sha256(cfg))
    about = dict(checkpoint=osp.abspath(checkpoint), config=osp.abspath(config))
    return RobustnessResults(path, inputs, fresh_hint, about)


def run_cells(cfg: Config, checkpoint: str, cells: List[dict], results: RobustnessResults,
              use_ema: bool = True) -> Dict[str, dict]:
    """Evaluate the cells not in ``results`` with one runner (none is built when all are done).

    Args:
        cfg: The model config; its test dataloader, evaluator and ``test_cfg.fp16`` are used.
        checkpoint: Loaded with :func:`~stl_mm.engine.runner_setup.build_test_runner`.
        cells: ``[{'name', 'dataset', 'expected_samples'}]`` (see ``RobustnessCellLoop``).
        results: The results file.
        use_ema: Which weights of a checkpoint holding both.

    Returns:
        Every recorded cell by name.
    """
    pending = [cell for cell in cells if cell['name'] not in results.cells]
    if not pending:
        print(f'[robustness] every cell is already in {results.path}; nothing to evaluate.')
        return results.cells
    from stl_mm.engine.runner_setup import build_test_runner
    cfg = copy.deepcopy(cfg)
    cfg.test_cfg = dict(type='RobustnessCellLoop', cells=pending, results_file=results.path,
                        inputs=results.inputs, fresh_hint=results.fresh_hint,
                        about=results.about,
                        fp16=bool((cfg.get('test_cfg') or {}).get('fp16', False)))
    build_test_runner(cfg, checkpoint, use_ema).test()
    results.reload()
    return results.cells


def finish(results: RobustnessResults, summary: dict, selection: dict, title: str,
           tables: Sequence[Table], notes: Sequence[str] = (),
           extra_outputs: Optional[Callable[[str], None]] = None, digits: int = 2) -> str:
    """Write the summary into the results file and the Markdown report beside it.

    Returns:
        The Markdown report (also printed by the main process).
    """
    results.write(summary, selection)
    markdown = f'# {title}\n\n' + ''.join(f'{note}\n\n' for note in notes) + render_tables(
        tables, digits=digits)
    if is_main_process():
        write_text(markdown, osp.splitext(results.path)[0] + '.md')
        if extra_outputs is not None:
            extra_outputs(osp.splitext(results.path)[0])
        print(render_tables(tables, style='text', digits=digits))
        print(f'[robustness] results: {results.path} and {osp.splitext(results.path)[0]}.md')
    return markdown
