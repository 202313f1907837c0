"""tools/test_coco_c.py: where Corrupt goes, the summary arithmetic, and a resumable run."""
import copy
import json
from pathlib import Path

import mmcv
import numpy as np
import pytest
import torch
from mmengine.config import Config

import stl_mm  # noqa: F401  (patches imagecorruptions, registers FAN)
from det_synthetic_coco import fit_to_synthetic_coco, make_synthetic_coco
from script_loader import load_script

REPO_ROOT = Path(__file__).resolve().parents[2]

FAN_T_CONFIG = REPO_ROOT / 'configs' / 'det' / 'cascade-mask-rcnn_fan-t-hybrid_fpn_ms-3x_coco.py'


tool = load_script(REPO_ROOT / 'tools' / 'test_coco_c.py', 'test_coco_c_tool')


@pytest.fixture
def synthetic_cfg(tmp_path):
    dataset = make_synthetic_coco(tmp_path / 'coco', num_images=2)
    cfg = fit_to_synthetic_coco(Config.fromfile(FAN_T_CONFIG), dataset, str(tmp_path / 'work'))
    return cfg, dataset


def test_corrupt_acts_on_the_loaded_image_before_resizing(synthetic_cfg):
    import imagecorruptions
    from mmdet.registry import DATASETS
    from mmengine.registry import init_default_scope
    cfg, dataset = synthetic_cfg
    corrupted = tool.corrupted_test_config(cfg, 'jpeg_compression', 5)

    steps = [step['type'] for step in corrupted.test_dataloader.dataset.pipeline]
    assert steps[:3] == ['LoadImageFromFile', 'Corrupt', 'Resize']
    assert 'Corrupt' not in [step['type'] for step in cfg.test_dataloader.dataset.pipeline]

    init_default_scope('mmdet')
    item = DATASETS.build(corrupted.test_dataloader.dataset)[0]
    image = mmcv.imread(Path(dataset['data_root']) / dataset['img_prefix'] / '000001.png')
    test_scale = cfg.test_dataloader.dataset.pipeline[1].scale
    # JPEG compression is deterministic and depends on the channel order and the resolution.
    corrupt_then_resize = mmcv.imrescale(
        imagecorruptions.corrupt(image, corruption_name='jpeg_compression', severity=5),
        test_scale)
    resize_then_corrupt = imagecorruptions.corrupt(
        mmcv.imrescale(image, test_scale), corruption_name='jpeg_compression', severity=5)
    got = item['inputs'].permute(1, 2, 0).numpy()
    assert got.shape == corrupt_then_resize.shape
    assert np.array_equal(got, corrupt_then_resize)
    assert not np.array_equal(got, resize_then_corrupt)


def test_corrupted_config_rejects_pipelines_it_cannot_handle(synthetic_cfg):
    cfg, _ = synthetic_cfg
    without_loading = copy.deepcopy(cfg)
    without_loading.test_dataloader.dataset.pipeline = cfg.test_dataloader.dataset.pipeline[1:]
    with pytest.raises(ValueError, match='LoadImageFromFile'):
        tool.corrupted_test_config(without_loading, 'fog', 1)
    twice = tool.corrupted_test_config(cfg, 'fog', 1)
    with pytest.raises(ValueError, match='already contains Corrupt'):
        tool.corrupted_test_config(twice, 'fog', 2)


def test_summary_means_retention_and_markdown():
    cells = {
        'clean': dict(metrics={'coco/bbox_mAP': 0.4, 'coco/segm_mAP': 0.3}),
        'fog/1': dict(metrics={'coco/bbox_mAP': 0.3, 'coco/segm_mAP': 0.2}),
        'fog/3': dict(metrics={'coco/bbox_mAP': 0.2, 'coco/segm_mAP': 0.1}),
        'snow/1': dict(metrics={'coco/bbox_mAP': 0.1, 'coco/segm_mAP': 0.15}),
    }
    summary = tool.summarize(cells)
    box, mask = summary['bbox_mAP'], summary['segm_mAP']
    assert box['clean'] == 0.4
    assert box['mPC'] == pytest.approx(0.2) and box['rPC'] == pytest.approx(0.5)
    assert box['per_corruption']['fog'] == pytest.approx(dict(mean=0.25, retention=0.625))
    assert box['per_corruption']['snow'] == pytest.approx(dict(mean=0.1, retention=0.25))
    assert mask['mPC'] == pytest.approx(0.15) and mask['rPC'] == pytest.approx(0.5)

    report = tool.markdown_report(
        dict(config='configs/det/x.py', checkpoint='x.pth', cells=cells, summary=summary))
    assert '| bbox_mAP | 40.0 | 20.0 | 50.0 |' in report
    assert '| fog | 30.0 | 20.0 | 25.0 | 62.5 |' in report
    assert '| snow | 10.0 | – | 10.0 | 25.0 |' in report

    no_clean_signal = tool.summarize({**cells, 'clean': dict(metrics={'coco/bbox_mAP': 0.})})
    assert no_clean_signal['bbox_mAP']['rPC'] is None
    assert no_clean_signal['segm_mAP']['clean'] is None


def test_one_corruption_cell_end_to_end_then_resume(synthetic_cfg, tmp_path, monkeypatch):
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    cfg, _ = synthetic_cfg
    config_file = tmp_path / 'fan_t_synthetic.py'
    cfg.dump(str(config_file))
    init_default_scope('mmdet')
    detector = MODELS.build(cfg.model)
    detector.init_weights()
    checkpoint = tmp_path / 'detector.pth'
    torch.save(dict(state_dict=detector.state_dict()), checkpoint)
    out_dir = tmp_path / 'coco_c'
    argv = [str(config_file), str(checkpoint), '--corruptions', 'gaussian_noise',
            '--severities', '1', '--out-dir', str(out_dir)]

    results = tool.main(argv)
    assert set(results['cells']) == {'clean', 'gaussian_noise/1'}
    for cell in results['cells'].values():
        for key in ('coco/bbox_mAP', 'coco/segm_mAP'):
            assert 0. <= cell['metrics'][key] <= 1.
    assert results['cells']['gaussian_noise/1']['seed'] == tool.cell_seed(0, 'gaussian_noise', 1)
    assert set(results['summary']) == {'bbox_mAP', 'segm_mAP'}
    saved = json.loads((out_dir / 'coco_c.json').read_text())
    assert saved['cells'] == results['cells']
    assert '| gaussian_noise |' in (out_dir / 'coco_c.md').read_text()

    def must_not_run(*args, **kwargs):
        raise AssertionError('a finished cell was evaluated again')

    monkeypatch.setattr(tool, 'build_runner', must_not_run)
    monkeypatch.setattr(tool, '_test_cell', must_not_run)
    assert tool.main(argv)['cells'] == results['cells']
    checkpoint.unlink()  # 0.27 GB of random weights
