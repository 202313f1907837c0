"""tools/visualize_token_labels.py on real Fashion-MNIST images and a small FAN teacher."""
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from script_loader import load_script

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_CONFIGS = REPO_ROOT / 'configs' / 'stl' / 'demo'


visualize = load_script(REPO_ROOT / 'tools' / 'visualize_token_labels.py',
                        'stl_mm_tool_visualize_token_labels')
prepare = load_script(REPO_ROOT / 'tools' / 'prepare_fashion_mnist.py',
                      'stl_mm_tool_prepare_fashion_mnist')


@pytest.fixture(scope='module')
def data_dir() -> str:
    path = REPO_ROOT / 'data' / 'fashion_mnist'
    prepare.prepare_fashion_mnist(str(path))
    return str(path)


def _config(name: str, data_dir: str) -> Config:
    cfg = Config.fromfile(str(DEMO_CONFIGS / name))
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader]['dataset']['data_prefix'] = data_dir
    return cfg


@pytest.fixture(scope='module')
def teacher_checkpoint(tmp_path_factory, data_dir) -> str:
    """A randomly initialised demo token labeler saved as an mmengine checkpoint."""
    from mmpretrain.registry import MODELS
    cfg = _config('fan_demo_token_labeler.py', data_dir)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    path = tmp_path_factory.mktemp('teacher') / 'epoch_1.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)
    return str(path)


def _png_size(path: Path):
    import matplotlib.image
    return matplotlib.image.imread(str(path)).shape


def test_figure_of_a_labeler_config_on_clean_test_images(data_dir, teacher_checkpoint, tmp_path):
    out = tmp_path / 'figure.png'
    written = visualize.visualize_token_labels(
        _config('fan_demo_token_labeler.py', data_dir), teacher_checkpoint, str(out),
        split='test', indices=[0, 5, 7], foreground_threshold=10)
    assert written == str(out)
    height, width = _png_size(out)[:2]
    assert width > height > 0  # three rows of five panels


def test_views_of_a_stage2_config_share_their_geometry(data_dir, teacher_checkpoint):
    cfg = _config('fan_demo_student.py', data_dir)
    model = visualize.load_token_labeler(cfg, teacher_checkpoint, hook_teacher=True)
    dataset = visualize.build_view_dataset(cfg, 'test', 'teacher')
    outputs = visualize.collect_views(model, dataset, [0, 1, 2, 3], ['teacher', 'student'])
    teacher, student = outputs['images']['teacher'], outputs['images']['student']
    assert teacher.shape == student.shape == (4, 3, 32, 32) and teacher.dtype == torch.uint8
    assert outputs['token_logits']['teacher'].shape == (4, 10, 8, 8)
    labels = [int(dataset.get_data_info(i)['gt_label']) for i in range(4)]
    assert outputs['classes'].tolist() == labels
    # Seeded: the same call gives the same views.
    again = visualize.collect_views(model, dataset, [0, 1, 2, 3], ['teacher'])
    assert torch.equal(again['images']['teacher'], teacher)
    # The teacher view stays a grey garment on black (no photometric change): its three
    # channels are equal and most of its border is background.
    assert torch.equal(teacher[:, 0], teacher[:, 1])
    border = torch.cat([teacher[:, 0, 0], teacher[:, 0, -1]], dim=1).float()
    assert (border <= 10).float().mean() > 0.5


def test_command_line_with_the_hook_teacher(data_dir, teacher_checkpoint, tmp_path):
    out = tmp_path / 'cli.png'
    visualize.main([
        str(DEMO_CONFIGS / 'fan_demo_student.py'), teacher_checkpoint, '--hook-teacher',
        '--split', 'test', '--view', 'student', '--indices', '3', '4', '--foreground-threshold',
        '10', '--out', str(out), '--cfg-options', f'test_dataloader.dataset.data_prefix={data_dir}',
        f'train_dataloader.dataset.data_prefix={data_dir}'
    ])
    assert out.read_bytes()[:4] == b'\x89PNG'


def test_figure_from_known_logits(tmp_path):
    images = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    images[:, :, 8:24, 8:24] = 200
    logits = torch.zeros(2, 10, 8, 8)
    logits[:, 4, 2:6, 2:6] = 5.
    foreground = torch.zeros(2, 8, 8, dtype=torch.bool)
    foreground[:, 2:6, 2:6] = True
    out = visualize.draw_token_label_figure(images, torch.tensor([4, 4]), logits,
                                            str(tmp_path / 'known.png'), foreground=foreground)
    pixels = np.asarray(_png_size(Path(out)))
    assert pixels[0] > 0


def test_clear_errors(data_dir, teacher_checkpoint):
    labeler = _config('fan_demo_token_labeler.py', data_dir)
    with pytest.raises(KeyError, match='no FrozenTeacherHook'):
        visualize.load_token_labeler(labeler, teacher_checkpoint, hook_teacher=True)
    with pytest.raises(ValueError, match='DualView'):
        visualize.build_view_dataset(labeler, 'test', 'teacher')
    with pytest.raises(IndexError, match='indices'):
        visualize.visualize_token_labels(labeler, teacher_checkpoint, 'unused.png',
                                         split='test', indices=[10000])
    baseline = _config('fan_demo_baseline.py', data_dir)
    with pytest.raises(ValueError, match='no token head'):
        visualize.load_token_labeler(baseline, teacher_checkpoint)
