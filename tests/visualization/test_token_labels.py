"""stl_mm.visualization.token_labels: Fig. 2-style figures on real Fashion-MNIST images."""
from pathlib import Path

import matplotlib.image
import pytest
import torch
from fashion_mnist_demo import data_dir, demo_config, teacher_checkpoint  # noqa: F401

from stl_mm.visualization import draw_token_label_figure, visualize_token_labels


def test_figure_of_a_labeler_config_on_clean_test_images(data_dir, teacher_checkpoint,  # noqa: F811
                                                         tmp_path):
    out = tmp_path / 'figure.png'
    written = visualize_token_labels(
        demo_config('fan_demo_token_labeler.py', data_dir), teacher_checkpoint, str(out),
        split='test', indices=[0, 5, 7], foreground_threshold=10)
    assert written == str(out)
    height, width = matplotlib.image.imread(str(out)).shape[:2]
    assert width > height > 0  # three rows of five panels


def test_figure_from_known_logits(tmp_path):
    images = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    images[:, :, 8:24, 8:24] = 200
    logits = torch.zeros(2, 10, 8, 8)
    logits[:, 4, 2:6, 2:6] = 5.
    foreground = torch.zeros(2, 8, 8, dtype=torch.bool)
    foreground[:, 2:6, 2:6] = True
    out = draw_token_label_figure(images, torch.tensor([4, 4]), logits,
                                  str(tmp_path / 'known.png'), foreground=foreground)
    assert out == str(tmp_path / 'known.png')
    height, width = matplotlib.image.imread(out).shape[:2]
    assert width > height > 0


def test_indices_outside_the_split_are_refused(data_dir, teacher_checkpoint):  # noqa: F811
    with pytest.raises(IndexError, match=r'indices must lie in \[0, 10000\)'):
        visualize_token_labels(demo_config('fan_demo_token_labeler.py', data_dir),
                               teacher_checkpoint, 'unused.png', split='test', indices=[10000])
    assert not Path('unused.png').exists()
