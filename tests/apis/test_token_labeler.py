"""stl_mm.apis.token_labeler: a teacher built by FrozenTeacherHook, run on a config's views."""
import pytest
import torch
from fashion_mnist_demo import data_dir, demo_config, teacher_checkpoint  # noqa: F401

from stl_mm.apis.token_labeler import build_view_dataset, collect_views, load_token_labeler


def test_views_of_a_stage2_config_share_their_geometry(data_dir, teacher_checkpoint):  # noqa: F811
    cfg = demo_config('fan_demo_student.py', data_dir)
    model = load_token_labeler(cfg, teacher_checkpoint, hook_teacher=True)
    dataset = build_view_dataset(cfg, 'test', 'teacher')
    outputs = collect_views(model, dataset, [0, 1, 2, 3], ['teacher', 'student'])
    teacher, student = outputs['images']['teacher'], outputs['images']['student']
    size, grid = cfg.img_size, cfg.img_size // cfg.demo_fan_arch['patch_size']
    assert teacher.shape == student.shape == (4, 3, size, size) and teacher.dtype == torch.uint8
    assert outputs['token_logits']['teacher'].shape == (4, cfg.num_classes, grid, grid)
    labels = [int(dataset.get_data_info(i)['gt_label']) for i in range(4)]
    assert outputs['classes'].tolist() == labels
    # Seeded: the same call gives the same views.
    again = collect_views(model, dataset, [0, 1, 2, 3], ['teacher'])
    assert torch.equal(again['images']['teacher'], teacher)
    # The teacher view stays a grey garment on black (no photometric change): its three
    # channels are equal and most of its border is background.
    assert torch.equal(teacher[:, 0], teacher[:, 1])
    border = torch.cat([teacher[:, 0, 0], teacher[:, 0, -1]], dim=1).float()
    assert (border <= 10).float().mean() > 0.5


def test_the_labeler_is_the_frozen_teacher_with_the_checkpoint_weights(
        data_dir, teacher_checkpoint):  # noqa: F811
    cfg = demo_config('fan_demo_token_labeler.py', data_dir)
    model = load_token_labeler(cfg, teacher_checkpoint)
    saved = torch.load(teacher_checkpoint, weights_only=True)['state_dict']
    assert model.state_dict().keys() == saved.keys()
    assert all(torch.equal(model.state_dict()[key], value) for key, value in saved.items())
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_a_teacher_checkpoint_of_another_shape_is_refused(
        data_dir, teacher_checkpoint, tmp_path):  # noqa: F811
    saved = torch.load(teacher_checkpoint, weights_only=True)
    saved['state_dict']['head.head.weight'] = saved['state_dict']['head.head.weight'][:5]
    narrow = tmp_path / 'five_classes.pth'
    torch.save(saved, narrow)
    with pytest.raises((RuntimeError, ValueError), match='head.head.weight'):
        load_token_labeler(demo_config('fan_demo_token_labeler.py', data_dir), str(narrow))


def test_clear_errors(data_dir, teacher_checkpoint):  # noqa: F811
    labeler = demo_config('fan_demo_token_labeler.py', data_dir)
    with pytest.raises(KeyError, match='no FrozenTeacherHook'):
        load_token_labeler(labeler, teacher_checkpoint, hook_teacher=True)
    with pytest.raises(ValueError, match='DualView'):
        build_view_dataset(labeler, 'test', 'teacher')
    with pytest.raises(ValueError, match='split must be one of'):
        build_view_dataset(labeler, 'holdout', 'clean')
    baseline = demo_config('fan_demo_baseline.py', data_dir)
    with pytest.raises(ValueError, match='no token head'):
        load_token_labeler(baseline, teacher_checkpoint)
