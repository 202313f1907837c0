"""Cityscapes-C evaluation (tools/analysis_tools/test_city_c.py) with the FAN-T SegFormer on a
tiny synthetic Cityscapes and City-C."""
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import synthetic_cityscapes as synthetic
import torch
from mmengine.registry import init_default_scope

from stl_mm.engine.runner_setup import prepare_config
from stl_mm.engine.runners import robustness_loop
from stl_mm.evaluation.robustness.cityscapes_c import evaluate_city_c
from stl_mm.evaluation.robustness.cityscapes_c_generation import generate_city_c

REPO_ROOT = Path(__file__).resolve().parents[3]
CONFIG = REPO_ROOT / 'configs' / 'seg' / 'segformer_fan-t-hybrid_8xb1-160k_cityscapes-1024x1024.py'
TOOL = REPO_ROOT / 'tools' / 'analysis_tools' / 'test_city_c.py'


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """Synthetic Cityscapes, its City-C (gaussian_noise 1-2), a tiny config and a checkpoint."""
    root = tmp_path_factory.mktemp('city_c')
    data_root = root / 'cityscapes'
    synthetic.make_cityscapes(data_root, {
        'val': ['frankfurt/frankfurt_000000_000294', 'lindau/lindau_000000_000019']})
    cfg = synthetic.tiny_segmentation_config(CONFIG, data_root, root / 'work')
    config = root / 'tiny_segformer_fan.py'
    cfg.dump(str(config))

    from mmengine.model import revert_sync_batchnorm
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    model.init_weights()
    checkpoint = root / 'segformer.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, checkpoint)

    clean = data_root / 'leftImg8bit' / 'val'
    city_c = root / 'cityscapes-c'
    assert generate_city_c(clean, city_c, ['gaussian_noise'], [1, 2]) == 0
    return dict(root=root, config=str(config), checkpoint=str(checkpoint), clean=clean,
                city_c=city_c)


def _args(setup, out_dir, city_c=None, *extra):
    return [setup['config'], setup['checkpoint'], '--city-c', str(city_c or setup['city_c']),
            '--corruptions', 'gaussian_noise', '--severities', '1', '2', '--out-dir',
            str(out_dir), *extra]


def _evaluate(setup, out_dir, city_c=None, checkpoint=None, check_files=16) -> dict:
    """What the tool's main does."""
    cfg = prepare_config(setup['config'], str(Path(out_dir) / 'logs'))
    return evaluate_city_c(cfg, setup['config'], str(checkpoint or setup['checkpoint']),
                           str(city_c or setup['city_c']), str(Path(out_dir) / 'city_c.json'),
                           ['gaussian_noise'], [1, 2], check_files)


@pytest.fixture
def image_dirs(monkeypatch):
    """Record the image and label folders of every cell the loop evaluates."""
    seen = []

    class SpyTestLoop(robustness_loop.TestLoop):

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            prefix = self.dataloader.dataset.data_prefix
            seen.append((prefix['img_path'], prefix['seg_map_path']))

    monkeypatch.setattr(robustness_loop, 'TestLoop', SpyTestLoop)
    return seen


def test_evaluates_every_cell_writes_the_tables_and_resumes(setup, tmp_path, image_dirs):
    out_dir = tmp_path / 'results'
    summary = _evaluate(setup, out_dir)

    city_c = setup['city_c'].resolve()
    data_root = setup['clean'].parents[1]
    assert image_dirs == [(str(setup['clean'].resolve()), str(data_root / 'gtFine/val')),
                          (str(city_c / 'gaussian_noise' / '1'), str(data_root / 'gtFine/val')),
                          (str(city_c / 'gaussian_noise' / '2'), str(data_root / 'gtFine/val'))]
    saved = json.loads((out_dir / 'city_c.json').read_text())
    cells = saved['cells']
    assert set(cells) == {'clean', 'gaussian_noise/1', 'gaussian_noise/2'}
    assert all(cell['num_samples'] == cell['expected_samples'] == 2 for cell in cells.values())
    corrupted = [cells['gaussian_noise/1']['metrics']['mIoU'],
                 cells['gaussian_noise/2']['metrics']['mIoU']]
    assert saved['summary'] == summary
    assert saved['inputs']['data'] == dict(
        clean=dict(root=str(setup['clean'].resolve()), mode='files'),
        city_c=dict(root=str(city_c), mode='files'))
    assert summary['clean_mIoU'] == cells['clean']['metrics']['mIoU']
    assert summary['per_severity_mIoU'] == {'gaussian_noise': {'1': corrupted[0],
                                                               '2': corrupted[1]}}
    assert summary['per_corruption_mIoU']['gaussian_noise'] == pytest.approx(sum(corrupted) / 2)
    assert summary['mean_corrupted_mIoU'] == pytest.approx(sum(corrupted) / 2)
    clean = summary['clean_mIoU']  # an untrained model: may be 0, then retention is undefined
    assert summary['retention'] == (pytest.approx(sum(corrupted) / 2 / clean) if clean else None)

    rows = list(csv.reader((out_dir / 'city_c.csv').open()))
    assert rows[0] == ['corruption', 'severity 1', 'severity 2', 'mIoU', 'retention']
    assert [row[0] for row in rows[1:]] == ['clean', 'gaussian_noise', 'mean over corruptions']
    assert float(rows[2][1]) == pytest.approx(corrupted[0], abs=0.005)
    markdown = (out_dir / 'city_c.md').read_text()
    assert '| gaussian_noise |' in markdown and 'retention' in markdown

    # Finished cells are skipped; a cell missing from the JSON is the only one evaluated.
    del saved['cells']['gaussian_noise/2']
    (out_dir / 'city_c.json').write_text(json.dumps(saved))
    image_dirs.clear()
    assert _evaluate(setup, out_dir) == summary
    assert image_dirs == [(str(city_c / 'gaussian_noise' / '2'), str(data_root / 'gtFine/val'))]


def test_two_cpu_ranks_give_the_single_process_results(setup, tmp_path):
    """Multi-process evaluation (gloo CPU ranks standing in for GPUs) splits the images and
    gathers the same mIoU per cell as one process; only rank 0 writes the tables."""
    single = _evaluate(setup, tmp_path / 'single')
    out_dir = tmp_path / 'two_ranks'
    env = dict(os.environ, OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get('PYTHONPATH', '')]))
    result = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2',
         '--master_port', '29537', str(TOOL),
         *_args(setup, out_dir), '--launcher', 'pytorch'],
        env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    saved = json.loads((out_dir / 'city_c.json').read_text())
    single_cells = json.loads((tmp_path / 'single' / 'city_c.json').read_text())['cells']
    assert set(saved['cells']) == set(single_cells)
    # The untrained model is right on some pixels of some cells: aAcc, mAcc and mIoU count
    # every labelled pixel, so images lost or counted twice across ranks would change them.
    assert any(cell['metrics']['aAcc'] > 0 for cell in single_cells.values())
    for name, cell in single_cells.items():
        assert saved['cells'][name]['metrics'] == pytest.approx(cell['metrics']), name
        assert saved['cells'][name]['num_samples'] == cell['num_samples'] == 2
    assert saved['summary']['mean_corrupted_mIoU'] == pytest.approx(single['mean_corrupted_mIoU'])
    assert (out_dir / 'city_c.csv').is_file() and (out_dir / 'city_c.md').is_file()


def test_refuses_a_city_c_tree_of_clean_copies(setup, tmp_path, image_dirs):
    fake = tmp_path / 'fake-c'
    for severity in ('1', '2'):
        shutil.copytree(setup['clean'], fake / 'gaussian_noise' / severity)
    with pytest.raises(SystemExit, match='byte-identical'):
        _evaluate(setup, tmp_path / 'out', fake)

    # One clean copy among corrupted files is found when every file is checked.
    shutil.rmtree(fake)
    shutil.copytree(setup['city_c'], fake)
    copied = sorted((fake / 'gaussian_noise' / '2').rglob('*.png'))[-1]
    shutil.copyfile(setup['clean'] / copied.relative_to(fake / 'gaussian_noise' / '2'), copied)
    with pytest.raises(SystemExit, match='byte-identical'):
        _evaluate(setup, tmp_path / 'out', fake, check_files=0)
    assert image_dirs == []  # refused before evaluating anything, clean included


def test_refuses_missing_or_incomplete_cells(setup, tmp_path, image_dirs):
    partial = tmp_path / 'partial-c'
    shutil.copytree(setup['city_c'] / 'gaussian_noise' / '1', partial / 'gaussian_noise' / '1')
    with pytest.raises(SystemExit, match='does not exist'):
        _evaluate(setup, tmp_path / 'out', partial)
    shutil.copytree(setup['city_c'] / 'gaussian_noise' / '2', partial / 'gaussian_noise' / '2')
    lost = next((partial / 'gaussian_noise' / '2').rglob('*.png'))
    lost.unlink()
    with pytest.raises(SystemExit, match=rf'1 of 2 images; 1 images missing \([^)]*{lost.name}'):
        _evaluate(setup, tmp_path / 'out', partial)
    assert image_dirs == []


def test_refuses_results_of_other_inputs(setup, tmp_path, image_dirs):
    out_dir = tmp_path / 'results'
    checkpoint = tmp_path / 'segformer.pth'
    shutil.copyfile(setup['checkpoint'], checkpoint)
    _evaluate(setup, out_dir, checkpoint=checkpoint)
    image_dirs.clear()
    # Another City-C tree, even a missing one, is not the tree the cells came from.
    shutil.copytree(setup['city_c'], tmp_path / 'copy-c')
    for other in (tmp_path / 'missing-c', tmp_path / 'copy-c'):
        with pytest.raises(SystemExit, match=r'(?s)data\.city_c\.root: recorded.*another '
                                             r'--out-dir'):
            _evaluate(setup, out_dir, other, checkpoint=checkpoint)
    # Another checkpoint written at the same path.
    state = torch.load(checkpoint, weights_only=True)
    state['meta'] = {'retrained': True}
    torch.save(state, checkpoint)
    with pytest.raises(SystemExit, match='checkpoint_sha256: recorded'):
        _evaluate(setup, out_dir, checkpoint=checkpoint)
    assert image_dirs == []
    # A results file of the old, path-keyed format is not resumed either.
    (out_dir / 'city_c.json').write_text(json.dumps(dict(
        config=setup['config'], checkpoint=setup['checkpoint'], cells={})))
    with pytest.raises(SystemExit, match='not a stl_mm.robustness/1 results file'):
        _evaluate(setup, out_dir)


def test_checkpoints_that_do_not_fit_fail_loudly(setup, tmp_path):
    official = tmp_path / 'official_fan_segformer.pth'
    torch.save({'state_dict': {'decode_head.linear_c1.proj.weight': torch.zeros(768, 128)},
                'meta': {}}, official)
    with pytest.raises(SystemExit, match='original SegFormer head'):
        _evaluate(setup, tmp_path / 'official', checkpoint=official)

    # Needs the strict stl_mm.engine.runner_setup.build_test_runner (issue 13, checkpoints).
    backbone_only = tmp_path / 'backbone_only.pth'
    state = torch.load(setup['checkpoint'], weights_only=True)['state_dict']
    torch.save({'state_dict': {k: v for k, v in state.items() if k.startswith('backbone.')}},
               backbone_only)
    with pytest.raises(Exception, match='decode_head'):
        _evaluate(setup, tmp_path / 'backbone_only', checkpoint=backbone_only)
