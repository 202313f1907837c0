"""tools/test_city_c.py with the FAN-T SegFormer on a tiny synthetic Cityscapes and City-C."""
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.registry import init_default_scope
from script_loader import load_script

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG = REPO_ROOT / 'configs' / 'seg' / 'segformer_fan-t-hybrid_8xb1-160k_cityscapes-1024x1024.py'


synthetic = load_script(REPO_ROOT / 'tests' / 'synthetic_cityscapes.py', 'synthetic_cityscapes')
gen_city_c = load_script(REPO_ROOT / 'tools' / 'gen_city_c.py', 'gen_city_c')
test_city_c = load_script(REPO_ROOT / 'tools' / 'test_city_c.py', 'test_city_c')


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
    assert gen_city_c.main(['--src', str(clean), '--dst', str(city_c), '--corruptions',
                            'gaussian_noise', '--severities', '1', '2', '--workers', '1']) == 0
    return dict(root=root, config=str(config), checkpoint=str(checkpoint), clean=clean,
                city_c=city_c)


def _args(setup, out_dir, city_c=None, *extra):
    return [setup['config'], setup['checkpoint'], '--city-c', str(city_c or setup['city_c']),
            '--corruptions', 'gaussian_noise', '--severities', '1', '2', '--out-dir',
            str(out_dir), *extra]


@pytest.fixture
def image_dirs(monkeypatch):
    """Record the image and label folders of every runner the tool builds."""
    seen = []
    real_build_runner = test_city_c.build_runner

    def spy(cfg):
        prefix = cfg.test_dataloader.dataset.data_prefix
        seen.append((prefix.img_path, prefix.seg_map_path))
        return real_build_runner(cfg)

    monkeypatch.setattr(test_city_c, 'build_runner', spy)
    return seen


def test_evaluates_every_cell_writes_the_tables_and_resumes(setup, tmp_path, image_dirs,
                                                            monkeypatch):
    out_dir = tmp_path / 'results'
    summary = test_city_c.main(_args(setup, out_dir))

    city_c = setup['city_c'].resolve()
    assert image_dirs == [(str(setup['clean'].resolve()), 'gtFine/val'),
                          (str(city_c / 'gaussian_noise' / '1'), 'gtFine/val'),
                          (str(city_c / 'gaussian_noise' / '2'), 'gtFine/val')]
    saved = json.loads((out_dir / 'city_c.json').read_text())
    cells = saved['cells']
    assert set(cells) == {'clean', 'gaussian_noise/1', 'gaussian_noise/2'}
    corrupted = [cells['gaussian_noise/1']['mIoU'], cells['gaussian_noise/2']['mIoU']]
    assert saved['summary'] == summary
    assert summary['clean_mIoU'] == cells['clean']['mIoU']
    assert summary['per_severity_mIoU'] == {'gaussian_noise': {'1': corrupted[0],
                                                               '2': corrupted[1]}}
    assert summary['per_corruption_mIoU']['gaussian_noise'] == pytest.approx(sum(corrupted) / 2)
    assert summary['mean_corrupted_mIoU'] == pytest.approx(sum(corrupted) / 2)
    clean = cells['clean']['mIoU']  # an untrained model: may be 0, then retention is undefined
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
    assert test_city_c.main(_args(setup, out_dir)) == summary
    assert image_dirs == [(str(city_c / 'gaussian_noise' / '2'), 'gtFine/val')]


def test_two_cpu_ranks_give_the_single_process_results(setup, tmp_path):
    """Multi-process evaluation (gloo CPU ranks standing in for GPUs) splits the images and
    gathers the same mIoU per cell as one process; only rank 0 writes the tables."""
    single = test_city_c.main(_args(setup, tmp_path / 'single'))
    out_dir = tmp_path / 'two_ranks'
    env = dict(os.environ, OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get('PYTHONPATH', '')]))
    result = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2',
         '--master_port', '29537', str(REPO_ROOT / 'tools' / 'test_city_c.py'),
         *_args(setup, out_dir), '--launcher', 'pytorch'],
        env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    saved = json.loads((out_dir / 'city_c.json').read_text())
    single_cells = json.loads((tmp_path / 'single' / 'city_c.json').read_text())['cells']
    assert set(saved['cells']) == set(single_cells)
    # The untrained model is right on some pixels of some cells: aAcc, mAcc and mIoU count
    # every labelled pixel, so images lost or counted twice across ranks would change them.
    assert any(metrics['aAcc'] > 0 for metrics in single_cells.values())
    for cell, metrics in single_cells.items():
        assert saved['cells'][cell] == pytest.approx(metrics), cell
    assert saved['summary']['mean_corrupted_mIoU'] == pytest.approx(single['mean_corrupted_mIoU'])
    assert (out_dir / 'city_c.csv').is_file() and (out_dir / 'city_c.md').is_file()


def test_refuses_a_city_c_tree_of_clean_copies(setup, tmp_path, image_dirs):
    fake = tmp_path / 'fake-c'
    for severity in ('1', '2'):
        shutil.copytree(setup['clean'], fake / 'gaussian_noise' / severity)
    with pytest.raises(SystemExit, match='byte-identical'):
        test_city_c.main(_args(setup, tmp_path / 'out', fake))

    # One clean copy among corrupted files is found when every file is checked.
    shutil.rmtree(fake)
    shutil.copytree(setup['city_c'], fake)
    copied = sorted((fake / 'gaussian_noise' / '2').rglob('*.png'))[-1]
    shutil.copyfile(setup['clean'] / copied.relative_to(fake / 'gaussian_noise' / '2'), copied)
    with pytest.raises(SystemExit, match='byte-identical'):
        test_city_c.main(_args(setup, tmp_path / 'out', fake, '--check-files', '0'))
    assert image_dirs == []  # refused before evaluating anything, clean included


def test_refuses_missing_or_incomplete_cells(setup, tmp_path, image_dirs):
    partial = tmp_path / 'partial-c'
    shutil.copytree(setup['city_c'] / 'gaussian_noise' / '1', partial / 'gaussian_noise' / '1')
    with pytest.raises(SystemExit, match='does not exist'):
        test_city_c.main(_args(setup, tmp_path / 'out', partial))
    shutil.copytree(setup['city_c'] / 'gaussian_noise' / '2', partial / 'gaussian_noise' / '2')
    next((partial / 'gaussian_noise' / '2').rglob('*.png')).unlink()
    with pytest.raises(SystemExit, match='1 missing'):
        test_city_c.main(_args(setup, tmp_path / 'out', partial))
    assert image_dirs == []


def test_refuses_results_of_another_checkpoint(setup, tmp_path):
    out_dir = tmp_path / 'results'
    out_dir.mkdir()
    (out_dir / 'city_c.json').write_text(json.dumps(dict(
        config=os.path.abspath(setup['config']), checkpoint='/elsewhere/model.pth',
        cells={})))
    with pytest.raises(SystemExit, match='another --out-dir'):
        test_city_c.main(_args(setup, out_dir))


def test_checkpoints_that_do_not_fit_fail_loudly(setup, tmp_path):
    official = tmp_path / 'official_fan_segformer.pth'
    torch.save({'state_dict': {'decode_head.linear_c1.proj.weight': torch.zeros(768, 128)},
                'meta': {}}, official)
    with pytest.raises(SystemExit, match='original SegFormer head'):
        test_city_c.main([setup['config'], str(official), '--city-c', str(setup['city_c']),
                          '--corruptions', 'gaussian_noise', '--severities', '1',
                          '--out-dir', str(tmp_path / 'official')])

    backbone_only = tmp_path / 'backbone_only.pth'
    state = torch.load(setup['checkpoint'], weights_only=True)['state_dict']
    torch.save({'state_dict': {k: v for k, v in state.items() if k.startswith('backbone.')}},
               backbone_only)
    with pytest.raises(RuntimeError, match='decode_head'):
        test_city_c.main([setup['config'], str(backbone_only), '--city-c', str(setup['city_c']),
                          '--corruptions', 'gaussian_noise', '--severities', '1',
                          '--out-dir', str(tmp_path / 'backbone_only')])
