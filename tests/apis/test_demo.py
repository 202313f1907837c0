"""stl_mm.apis.demo: its sizes, its strict checkpoint loading and its missing-run message."""
import copy

import pytest
import torch
from fashion_mnist_demo import data_dir, demo_config  # noqa: F401

from stl_mm.apis.demo import FULL, QUICK, demo_sizes, load_classifier, run_demo


def test_sizes_of_full_and_quick_runs_with_overrides():
    assert demo_sizes() == FULL and demo_sizes(quick=True) == QUICK
    sizes = demo_sizes(quick=True, train_images=100, epochs=3, teacher_epochs=4)
    assert (sizes.train_images, sizes.epochs, sizes.teacher_epochs) == (100, 3, 4)
    assert sizes.corruption_images == QUICK.corruption_images


@pytest.mark.parametrize('option, overrides', [
    ('--train-images', dict(train_images=-5)),
    ('--train-images', dict(train_images=0)),
    ('--epochs', dict(epochs=1)),
    ('--teacher-epochs', dict(teacher_epochs=0)),
])
def test_sizes_out_of_range_name_their_option(option, overrides):
    with pytest.raises(ValueError, match=f'^{option} must be at least'):
        demo_sizes(**overrides)


def test_classifier_checkpoints_load_strictly(data_dir, tmp_path):  # noqa: F811
    from mmpretrain.registry import MODELS
    cfg = demo_config('fan_demo_baseline.py', data_dir)
    model = MODELS.build(copy.deepcopy(dict(cfg.model, data_preprocessor=cfg.data_preprocessor)))
    # mmengine's EMAHook saves the averaged weights as 'state_dict' and the raw ones, under
    # 'module.', as 'ema_state_dict'.
    averaged = {key: value + 1 for key, value in model.state_dict().items()}
    raw = {f'module.{key}': value for key, value in model.state_dict().items()}
    path = tmp_path / 'epoch_2.pth'
    torch.save({'state_dict': averaged, 'ema_state_dict': dict(raw, steps=torch.tensor(3)),
                'meta': {}}, path)
    loaded = load_classifier(cfg, str(path))
    assert not loaded.training
    # The EMA weights are the ones evaluated.
    key = 'head.head.weight'
    assert torch.equal(loaded.state_dict()[key], averaged[key])

    narrow = model.state_dict()
    narrow[key] = narrow[key][:5]
    torch.save({'state_dict': narrow, 'meta': {}}, path)
    with pytest.raises((RuntimeError, ValueError), match=key):
        load_classifier(cfg, str(path))


def test_skip_training_without_earlier_runs_says_what_to_do(data_dir, tmp_path):  # noqa: F811
    with pytest.raises(FileNotFoundError, match='run the demo without --skip-training'):
        run_demo(str(tmp_path / 'demo'), data_dir, QUICK, skip_training=True, quick=True)
