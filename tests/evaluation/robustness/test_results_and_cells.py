"""The results file (what the numbers came from, atomic writes) and the check of a corrupted
cell against the clean set."""
import json
from collections import Counter

import pytest
from mmengine.config import Config

from stl_mm.evaluation.reports import Table, csv_table, render_tables
from stl_mm.evaluation.robustness.cells import check_cell, count_note
from stl_mm.evaluation.robustness.results import (RobustnessResults, checkpoint_sha256,
                                                  config_sha256)

INPUTS = dict(suite='demo', checkpoint_sha256='a' * 64,
              data=dict(in_c=dict(root='/data/in-c', mode='files')))


def test_identical_inputs_resume_and_other_inputs_are_refused_by_name(tmp_path):
    path = str(tmp_path / 'results.json')
    results = RobustnessResults(path, INPUTS, 'pass another --out', about=dict(config='a.py'))
    results.record('fog/1', dict(metrics={'top1': 50.0}))
    assert not list(tmp_path.glob('.tmp-*'))
    resumed = RobustnessResults(path, INPUTS, 'pass another --out')
    assert resumed.cells == {'fog/1': dict(metrics={'top1': 50.0})}
    assert resumed.pending(['fog/1', 'fog/2']) == ['fog/2']
    other = dict(INPUTS, data=dict(in_c=dict(root='/data/in-c', mode='on_the_fly')))
    with pytest.raises(SystemExit) as refused:
        RobustnessResults(path, other, 'pass another --out')
    message = str(refused.value)
    assert "data.in_c.mode: recorded 'files', now 'on_the_fly'" in message
    assert 'pass another --out to start fresh' in message and 'in_c.root' not in message


def test_unreadable_or_foreign_files_are_refused(tmp_path):
    path = tmp_path / 'results.json'
    path.write_text('{"cells": {')
    with pytest.raises(SystemExit, match='Cannot read the results file'):
        RobustnessResults(str(path), INPUTS, 'delete it')
    path.write_text(json.dumps(dict(checkpoint='/x.pth', suites={})))
    with pytest.raises(SystemExit, match='not a stl_mm.robustness/1 results file'):
        RobustnessResults(str(path), INPUTS, 'delete it')


def test_fingerprints_follow_content(tmp_path):
    first, second = tmp_path / 'a.pth', tmp_path / 'b.pth'
    first.write_bytes(b'weights')
    second.write_bytes(b'weights')
    assert checkpoint_sha256(str(first)) == checkpoint_sha256(str(second))
    second.write_bytes(b'other weights')
    assert checkpoint_sha256(str(first)) != checkpoint_sha256(str(second))
    with pytest.raises(SystemExit, match='does not exist'):
        checkpoint_sha256(str(tmp_path / 'missing.pth'))
    cfg = dict(model=dict(type='A'), work_dir='x', launcher='none')
    assert config_sha256(cfg) == config_sha256(dict(cfg, work_dir='y', launcher='pytorch'))
    assert config_sha256(cfg) != config_sha256(dict(cfg, model=dict(type='B')))
    assert config_sha256(Config(cfg)) == config_sha256(cfg)
    assert config_sha256(Config(cfg)) != config_sha256(Config(dict(cfg, model=dict(type='B'))))


def test_check_cell_names_what_is_missing():
    clean = Counter({'n01': 2, 'n02': 2, 'n03': 1})
    assert check_cell('cell fog/1', clean, Counter(clean), 'class folders', 'Fix it.') is None
    with pytest.raises(SystemExit) as refused:
        check_cell('cell fog/1', clean, Counter({'n01': 2, 'n02': 1, 'n09': 1}),
                   'class folders', 'Fix it.')
    message = str(refused.value)
    assert message.startswith('cell fog/1 does not match the clean set: 4 of 5 images; ')
    assert '1 class folders missing (n03)' in message
    assert '1 class folders not in the clean set (n09)' in message
    assert 'n02: 1 of 2' in message and 'Fix it.' in message and '--allow-incomplete' in message
    note = check_cell('cell fog/1', clean, Counter({'n01': 2}), 'class folders', 'Fix it.',
                      allow_incomplete=True)
    assert note.startswith('cell fog/1 does not match')
    assert count_note(dict(num_samples=2, expected_samples=5)) == ' (2/5 images)'
    assert count_note(dict(num_samples=5, expected_samples=5)) == ''


def test_one_renderer_for_markdown_text_and_csv():
    table = Table('Overview', ['model', 'top-1'], [['fan', 71.234], ['vit', None]])
    assert render_tables([table]) == ('## Overview\n\n| model | top-1 |\n| :-- | --: |\n'
                                      '| fan | 71.23 |\n| vit | n/a |\n')
    text = render_tables([table], style='text')
    assert text.startswith('Overview\nmodel  top-1\n')
    assert csv_table(table.header, table.rows) == 'model,top-1\nfan,71.23\nvit,n/a\n'
