"""The one results file of every robustness suite, and what its numbers came from.

A results file is JSON::

    {"format": "stl_mm.robustness/1",
     "about": {"checkpoint": path, "config": path, ...},
     "inputs": {"suite": ..., "checkpoint": {"path", "sha256"}, "config": {"path", "sha256"},
                "data": {<name>: {"root", "mode"}}, ...},
     "selection": {"corruptions": [...], "severities": [...]},
     "cells": {<cell name>: {"metrics": {...}, "num_samples": n, "expected_samples": n}},
     "summary": {...}}

``inputs`` says what the numbers came from: the checkpoint by content (SHA-256), the config by
the content of the parts that decide the numbers (``about`` keeps both paths for the reader:
a moved or renamed but identical file resumes), every data root
with its mode (``files`` or ``on_the_fly``), and the suite's own settings (seed, EMA, ...). A run
resumes a file only when its inputs are identical; any difference is refused with the keys
that differ and how to start fresh, so cells of two checkpoints or two data trees never mix.

The set of cells may grow: a rerun with the same inputs and more corruptions or severities
reuses the recorded cells and adds the new ones (each cell's images and seeds do not depend on
which other cells run). ``selection`` is the set the latest summary covers.

Every write is atomic (:func:`~stl_mm.evaluation.reports.write_json`), and only the main
process writes.
"""
import json
import os.path as osp
from typing import Any, Dict, List, Optional

from mmengine.dist import is_main_process

from stl_mm.evaluation.reports import write_json
from stl_mm.utils import file_sha256, json_differences, json_sha256, read_results_json

__all__ = ['RESULTS_FORMAT', 'RobustnessResults', 'checkpoint_sha256', 'config_sha256',
           'data_source']

RESULTS_FORMAT = 'stl_mm.robustness/1'
#: The parts of a config that decide the numbers of an evaluation.
CONFIG_KEYS = ('model', 'data_preprocessor', 'test_dataloader.dataset', 'test_evaluator')


def checkpoint_sha256(path: str) -> str:
    """The checkpoint fingerprint: the SHA-256 of its content, not its path."""
    if not osp.isfile(path):
        raise SystemExit(f'Checkpoint {path} does not exist.')
    return file_sha256(path)


def _plain(value: Any) -> Any:
    return value.to_dict() if hasattr(value, 'to_dict') else value


def config_sha256(cfg: Any) -> str:
    """SHA-256 of the config entries that decide the numbers (:data:`CONFIG_KEYS`).

    Launcher, work directory and logging are left out, so a resumed run may use another
    number of processes or another work directory.
    """
    parts = {}
    for key in CONFIG_KEYS:
        node: Any = cfg
        for part in key.split('.'):
            # mmengine's Config is no Mapping, but has get() like its ConfigDicts.
            node = node.get(part) if hasattr(node, 'get') else None
        parts[key] = _plain(node)
    return json_sha256(parts)


def data_source(root: Optional[str], mode: str = 'files', **details: Any) -> dict:
    """How the results file records one data input: absolute root and mode."""
    if mode not in ('files', 'on_the_fly', 'in_memory'):
        raise ValueError(f"mode must be 'files', 'on_the_fly' or 'in_memory', got {mode!r}.")
    return dict(root=None if root is None else osp.abspath(root), mode=mode, **details)


class RobustnessResults:
    """The results file of one suite: read, checked against this run's inputs, updated.

    Args:
        path: The JSON file (created on the first write).
        inputs: What this run's numbers come from (JSON-serialisable, see the module doc).
        fresh_hint: How the user starts afresh, e.g. ``'pass another --out or delete it'``.
        about: Informational entries (paths), rewritten on every write and never compared.

    Raises:
        SystemExit: The file is not a results file of this format, or its inputs differ.
    """

    def __init__(self, path: str, inputs: dict, fresh_hint: str,
                 about: Optional[dict] = None) -> None:
        self.path, self.fresh_hint, self.about = path, fresh_hint, dict(about or {})
        self.inputs = json.loads(json.dumps(inputs))  # what JSON gives back: lists, str keys
        self.data: Dict[str, Any] = dict(format=RESULTS_FORMAT, inputs=self.inputs, cells={})
        if osp.isfile(path):
            self.data = self._read()

    def _read(self) -> dict:
        try:
            saved = read_results_json(self.path, RESULTS_FORMAT)
        except ValueError as error:
            raise SystemExit(f'{error}; {self.fresh_hint} to start fresh.')
        differences = json_differences(saved.get('inputs'), self.inputs)
        if differences:
            raise SystemExit(
                f'{self.path} holds results of other inputs, so this run would mix numbers of '
                'two evaluations:\n  ' + '\n  '.join(differences) +
                f'\n{self.fresh_hint} to start fresh; only a rerun with identical inputs '
                'resumes.')
        saved.setdefault('cells', {})
        return saved

    @property
    def cells(self) -> Dict[str, dict]:
        """Finished cells by name."""
        return self.data['cells']

    def pending(self, names: List[str]) -> List[str]:
        """The names not recorded yet, in order."""
        return [name for name in names if name not in self.cells]

    def record(self, name: str, cell: dict) -> None:
        """Add one finished cell and write the file."""
        self.cells[name] = cell
        self.write()

    def reload(self) -> None:
        """Read what the main process wrote (other ranks call this after a barrier)."""
        if osp.isfile(self.path):
            self.data = self._read()

    def write(self, summary: Optional[dict] = None, selection: Optional[dict] = None) -> None:
        """Write the file (main process only), with the summary and selection when given."""
        if selection is not None:
            self.data['selection'] = selection
        if summary is not None:
            self.data['summary'] = summary
        self.data['about'] = self.about
        if is_main_process():
            write_json(self.data, self.path)
