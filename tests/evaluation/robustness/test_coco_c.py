"""COCO-C (tools/analysis_tools/test_coco_c.py): where the corruption goes, its per-image seed,
the summary arithmetic, and a resumable run."""
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
from stl_mm.compat.imagecorruptions import corrupt, corruption_seed
from stl_mm.engine.runners import robustness_loop
from stl_mm.evaluation.reports import render_tables
from stl_mm.evaluation.robustness import coco_c

REPO_ROOT = Path(__file__).resolve().parents[3]

FAN_T_CONFIG = REPO_ROOT / 'configs' / 'det' / 'cascade-mask-rcnn_fan-t-hybrid_fpn_ms-3x_coco.py'


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
    corrupted = coco_c.corrupted_dataset(cfg, 'jpeg_compression', 5)

    steps = [step['type'] for step in corrupted.pipeline]
    assert steps[:3] == ['LoadImageFromFile', 'ImageCorruption', 'Resize']
    assert 'ImageCorruption' not in [step['type'] for step in cfg.test_dataloader.dataset.pipeline]

    init_default_scope('mmdet')
    item = DATASETS.build(corrupted)[0]
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


def test_each_image_has_the_common_per_image_seed(synthetic_cfg):
    """Before, every image of a cell shared one reseeding of numpy's global state, so an image's
    noise depended on its position, on the workers and on the ranks."""
    from mmdet.registry import DATASETS
    from mmengine.registry import init_default_scope
    cfg, dataset = synthetic_cfg
    cfg.test_dataloader.dataset.pipeline = cfg.test_dataloader.dataset.pipeline[:1]  # no resize
    init_default_scope('mmdet')
    items = DATASETS.build(coco_c.corrupted_dataset(cfg, 'gaussian_noise', 3, seed=7))
    for index in (1, 0):  # any order
        item = items[index]
        name = Path(item['img_path']).name
        image = mmcv.imread(item['img_path'])
        expected = corrupt(image, 'gaussian_noise', 3, corruption_seed(7, name, 'gaussian_noise',
                                                                       3))
        assert np.array_equal(item['img'], expected), name


def test_corrupted_config_rejects_pipelines_it_cannot_handle(synthetic_cfg):
    cfg, _ = synthetic_cfg
    without_loading = copy.deepcopy(cfg)
    without_loading.test_dataloader.dataset.pipeline = cfg.test_dataloader.dataset.pipeline[1:]
    with pytest.raises(ValueError, match='LoadImageFromFile'):
        coco_c.corrupted_dataset(without_loading, 'fog', 1)
    twice = copy.deepcopy(cfg)
    twice.test_dataloader.dataset = coco_c.corrupted_dataset(cfg, 'fog', 1)
    with pytest.raises(ValueError, match='already contains a corruption step'):
        coco_c.corrupted_dataset(twice, 'fog', 2)


def test_summary_means_retention_and_markdown():
    cells = {
        'clean': dict(metrics={'coco/bbox_mAP': 0.4, 'coco/segm_mAP': 0.3}),
        'fog/1': dict(metrics={'coco/bbox_mAP': 0.3, 'coco/segm_mAP': 0.2}),
        'fog/3': dict(metrics={'coco/bbox_mAP': 0.2, 'coco/segm_mAP': 0.1}),
        'snow/1': dict(metrics={'coco/bbox_mAP': 0.1, 'coco/segm_mAP': 0.15}),
    }
    summary = coco_c.summarize(cells)
    box, mask = summary['bbox_mAP'], summary['segm_mAP']
    assert box['clean'] == 0.4
    assert box['mPC'] == pytest.approx(0.2) and box['rPC'] == pytest.approx(0.5)
    assert box['per_corruption']['fog'] == pytest.approx(dict(mean=0.25, retention=0.625))
    assert box['per_corruption']['snow'] == pytest.approx(dict(mean=0.1, retention=0.25))
    assert mask['mPC'] == pytest.approx(0.15) and mask['rPC'] == pytest.approx(0.5)

    report = render_tables(coco_c.coco_c_tables(cells, summary), digits=1)
    assert '| bbox_mAP | 40.0 | 20.0 | 50.0 |' in report
    assert '| fog | 30.0 | 20.0 | 25.0 | 62.5 |' in report
    assert '| snow | 10.0 | n/a | 10.0 | 25.0 |' in report

    no_clean_signal = coco_c.summarize({**cells, 'clean': dict(metrics={'coco/bbox_mAP': 0.})})
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
    out = tmp_path / 'coco_c' / 'coco_c.json'

    def evaluate():
        from stl_mm.engine.runner_setup import prepare_config
        cfg = prepare_config(str(config_file), str(tmp_path / 'coco_c' / 'logs'))
        return coco_c.evaluate_coco_c(cfg, str(config_file), str(checkpoint), str(out),
                                      ['gaussian_noise'], [1])

    results = evaluate()
    assert set(results['cells']) == {'clean', 'gaussian_noise/1'}
    for cell in results['cells'].values():
        for key in ('coco/bbox_mAP', 'coco/segm_mAP'):
            assert 0. <= cell['metrics'][key] <= 1.
    assert results['inputs']['seed'] == 0
    assert set(results['summary']) == {'bbox_mAP', 'segm_mAP'}
    saved = json.loads(out.read_text())
    assert saved['cells'] == results['cells']
    assert '| gaussian_noise |' in out.with_suffix('.md').read_text()

    def must_not_run(*args, **kwargs):
        raise AssertionError('a finished cell was evaluated again')

    monkeypatch.setattr(robustness_loop, 'TestLoop', must_not_run)
    assert evaluate()['cells'] == results['cells']
    checkpoint.unlink()  # 0.27 GB of random weights
