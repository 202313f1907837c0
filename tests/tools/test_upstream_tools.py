"""The upstream OpenMMLab tools (``<pkg>/.mim/tools``, run unchanged in a subprocess) on our
configs: FLOPs with attention, browsing dual-view and detection data, log analysis, segmentation
FLOPs and speed."""
import json
import math
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import mmdet
import mmpretrain
import mmseg
import numpy as np
import pytest
import torch
from mmengine.analysis import FlopAnalyzer
from mmengine.analysis.print_helper import _format_size
from mmengine.config import Config
from mmengine.logging import MessageHub
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS as SEG_MODELS
from packaging.requirements import Requirement
from PIL import Image

import stl_mm  # noqa: F401
from det_synthetic_coco import make_synthetic_coco
from stl_mm.analysis.flops import count_flops
from stl_mm.models.backbones import FAN
from synthetic_cityscapes import make_cityscapes, tiny_segmentation_config
from tiny_image_folder import make_image_folder

REPO = Path(__file__).resolve().parents[2]
TINY_CLS_CONFIG = REPO / 'tests' / 'data' / 'configs' / 'tiny_fan_cls.py'
SEG_CONFIG = REPO / 'configs' / 'seg' / 'segformer_fan-t-hybrid_8xb1-160k_cityscapes-1024x1024.py'
DET_CONFIG = REPO / 'configs' / 'det' / 'cascade-mask-rcnn_fan-t-hybrid_fpn_ms-3x_coco.py'


def _tool(package, relative: str) -> str:
    return str(Path(package.__file__).parent / '.mim' / 'tools' / relative)


def _run(*args: str) -> str:
    # The environment (PYTHONPATH with this checkout) is inherited, so the tools import this
    # checkout's stl_mm through the configs' custom_imports.
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600,
                            cwd=REPO)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    return log


def _printed(name: str, log: str) -> str:
    return re.search(rf'^{name}: (\S+)', log, re.MULTILINE).group(1)


def test_mmpretrain_get_flops_counts_attention():
    """The stock counter skipped scaled_dot_product_attention: the tool printed 0.886G."""
    log = _run(_tool(mmpretrain, 'analysis_tools/get_flops.py'),
               str(REPO / 'configs' / 'fan' / 'fan_t_hybrid_in1k.py'), '--shape', '112')
    # The tool counts extract_feat, i.e. our counter's classifier without its 192 x 1000 head.
    ours = count_flops('fan_tiny_8_p4_hybrid', (112, 112), dense=False)['flops'] - 192 * 1000
    analyzer = FlopAnalyzer(FAN('tiny-hybrid').eval(), torch.zeros(1, 3, 112, 112))
    analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    without_attention = analyzer.total() - analyzer.by_operator()['scaled_dot_product_attention']
    assert _printed('Flops', log) == _format_size(ours) == '0.894G'
    assert _format_size(without_attention) == '0.886G'


def test_installed_matplotlib_meets_the_tools_pin():
    pin = next(Requirement(line) for line in (REPO / 'requirements' / 'tools.txt').read_text()
               .splitlines() if line.startswith('matplotlib'))
    assert pin.specifier.contains(version('matplotlib')), (
        f"matplotlib {version('matplotlib')} is installed, requirements/tools.txt pins {pin}: "
        "mmpretrain's browse_dataset.py fails on 3.11 (see there). Run make install.")


def _panel_rows(image_file: Path) -> int:
    """Image panels stacked in the rightmost column of a browse_dataset figure: runs of rows
    where that column is mostly image, not the figure's pure white background (the test's
    images are dark, which keeps the augmentations off pure white)."""
    pixels = np.asarray(Image.open(image_file).convert('RGB'))
    width = pixels.shape[1]
    column = pixels[:, int(width * 0.96):int(width * 0.99)]
    is_image = (column != 255).any(axis=2).mean(axis=1) > 0.5
    return int(np.count_nonzero(is_image[1:] & ~is_image[:-1]) + is_image[0])


@pytest.mark.parametrize('mode', ['transformed', 'pipeline'])
def test_mmpretrain_browse_dataset_shows_both_views_of_a_student_config(tmp_path, mode):
    """It drew only the student view: one panel where the student config has two views."""
    images = make_image_folder(tmp_path / 'img', classes=('dark', ), per_class=1)
    config = tmp_path / 'student.py'
    config.write_text(
        f"_base_ = '{REPO / 'configs' / 'stl' / 'fan_t_student.py'}'\n"
        "train_dataloader = dict(dataset=dict(_delete_=True, type='CustomDataset',\n"
        f"    data_root='{images}', pipeline={{{{_base_.train_pipeline}}}}))\n")
    out = tmp_path / 'out'
    _run(_tool(mmpretrain, 'visualization/browse_dataset.py'), str(config), '--output-dir',
         str(out), '--not-show', '--mode', mode, '--show-number', '1')
    # transformed: student over teacher; pipeline: the last column, after LoadImageFromFile.
    assert _panel_rows(out / '0.png') == 2


def _tiny_training_log(tmp_path: Path) -> Path:
    """scalars.json of 2 epochs x 2 iterations of tools/train.py on the tiny classifier."""
    root = make_image_folder(tmp_path / 'img', per_class=2)
    work_dir = tmp_path / 'work'
    _run('tools/train.py', str(TINY_CLS_CONFIG), '--work-dir', str(work_dir), '--cfg-options',
         *[f'{loader}.dataset.data_root={root}'
           for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')])
    scalars, = work_dir.glob('*/vis_data/scalars.json')
    return scalars


def test_mmpretrain_analyze_logs_on_a_training_log(tmp_path):
    scalars = _tiny_training_log(tmp_path)
    records = [json.loads(line) for line in scalars.read_text().splitlines()]
    train_times = [record['time'] for record in records if 'loss' in record]
    assert len(train_times) == 4
    tool = _tool(mmpretrain, 'analysis_tools/analyze_logs.py')
    log = _run(tool, 'cal_train_time', str(scalars))
    assert f'average iter time: {np.mean(train_times):.4f} s/iter' in log
    assert 'nan' not in log
    curve = tmp_path / 'curve.png'
    log = _run(tool, 'plot_curve', str(scalars), '--keys', 'loss', 'loss_token',
               'accuracy/top1', '--out', str(curve))
    assert f'save curve to: {curve}' in log
    assert Image.open(curve).size == (1200, 700)  # the default 12*7 inches at 100 dpi


def _seg_model(cfg: Config) -> torch.nn.Module:
    init_default_scope('mmseg')
    return SEG_MODELS.build(cfg.model)


def test_mmseg_get_flops(tmp_path):
    """mmseg's tool passed input_shape and inputs; mmengine 0.10.7 raised ValueError."""
    log = _run(_tool(mmseg, 'analysis_tools/get_flops.py'), str(SEG_CONFIG), '--shape', '64',
               '128', '--cfg-options', 'model.data_preprocessor.size=(64,128)')
    model = _seg_model(Config.fromfile(str(SEG_CONFIG))).eval()
    model.auxiliary_head = None
    analyzer = FlopAnalyzer(model, torch.zeros(1, 3, 64, 128))
    analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    assert _printed('Flops', log) == _format_size(analyzer.total())
    assert _printed('Params', log) == _format_size(sum(p.numel() for p in model.parameters()))


def test_mmseg_benchmark_prints_a_real_fps(tmp_path):
    """The tool times batches 6..200 of the test loader and prints nan for fewer than 200:
    three tiny images are repeated. The checkpoint holds mmengine's message hub, which
    torch.load refuses under weights_only=True without stl_mm.compat.checkpoint."""
    make_cityscapes(tmp_path / 'city')
    cfg = tiny_segmentation_config(SEG_CONFIG, tmp_path / 'city', tmp_path / 'work')
    cfg.model.backbone.arch = dict(embed_dims=64, depth=2, num_heads=4, cls_attn_layers=1,
                                   hybrid_stem=dict(depths=[1, 1], dims=[32, 48]))
    cfg.model.decode_head.update(in_channels=[32, 48, 64, 64], channels=32)
    cfg.test_dataloader.dataset = dict(type='RepeatDataset', times=67,
                                       dataset=cfg.test_dataloader.dataset)
    config = tmp_path / 'bench.py'
    cfg.dump(str(config))
    hub = MessageHub.get_instance('test_mmseg_benchmark')
    hub.update_scalar('train/loss', 1.0)
    checkpoint = tmp_path / 'iter_2.pth'
    torch.save(dict(meta=dict(iter=2), state_dict=_seg_model(cfg).state_dict(),
                    message_hub=hub.state_dict()), checkpoint)
    log = _run(_tool(mmseg, 'analysis_tools/benchmark.py'), str(config), str(checkpoint),
               '--work-dir', str(tmp_path / 'bench'), '--log-interval', '100')
    assert f'Loads checkpoint by local backend from path: {checkpoint}' in log
    result, = (tmp_path / 'bench').glob('fps_*.json')
    fps = json.loads(result.read_text())['average_fps']
    assert math.isfinite(fps) and fps > 0
    assert f'Overall fps: {fps:.2f} img / s' in log


def _tiny_det_config(tmp_path: Path) -> Path:
    """Our detection config on the synthetic COCO tree; small test images and proposals."""
    data = make_synthetic_coco(tmp_path / 'coco', num_images=2)
    config = tmp_path / 'det.py'
    config.write_text(
        f"_base_ = '{DET_CONFIG}'\n"
        f"data = dict(data_root='{data['data_root']}/', ann_file='{data['ann_file']}',\n"
        f"            data_prefix=dict(img='{data['img_prefix']}'))\n"
        "test_pipeline = [dict(type='LoadImageFromFile'),\n"
        "    dict(type='Resize', scale=(96, 64), keep_ratio=True),\n"
        "    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),\n"
        "    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape',\n"
        "                                          'img_shape', 'scale_factor'))]\n"
        "train_dataloader = dict(num_workers=0, persistent_workers=False, dataset=data)\n"
        "val_dataloader = dict(num_workers=0, persistent_workers=False,\n"
        "                      dataset=dict(pipeline=test_pipeline, **data))\n"
        "model = dict(backbone=dict(init_cfg=None), test_cfg=dict(\n"
        "    rpn=dict(nms_pre=50, max_per_img=8), rcnn=dict(max_per_img=4)))\n")
    return config


def test_mmdet_get_flops(tmp_path):
    """A top-level `head_norm_cfg` sent the tool down its single-bbox_head SyncBN path:
    TypeError: list indices must be integers or slices, not str."""
    config = _tiny_det_config(tmp_path)
    log = _run(_tool(mmdet, 'analysis_tools/get_flops.py'), str(config), '--num-images', '1')
    assert 'Compute type: dataloader: load a picture from the dataset' in log
    assert 'Input shape: (64, 96)' in log
    assert _printed('Params', log) == '66.686M'
    assert _printed('Flops', log).endswith('G')
    for path in (REPO / 'configs' / 'det').rglob('*.py'):
        assert 'head_norm_cfg' not in Config.fromfile(str(path)), path


def test_mmdet_browse_dataset(tmp_path):
    out = tmp_path / 'out'
    _run(_tool(mmdet, 'analysis_tools/browse_dataset.py'), str(_tiny_det_config(tmp_path)),
         '--output-dir', str(out), '--not-show')
    drawn = sorted(out.iterdir())
    assert [path.name for path in drawn] == ['000001.png', '000002.png']
    # Our multi-scale training pipeline resizes the 64x96 images to a short side of 480..800.
    assert all(480 <= min(Image.open(path).size) <= 800 for path in drawn)
