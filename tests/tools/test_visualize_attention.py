"""tools/visualization/visualize_attention.py as a command, on the demo's FAN token labeler."""
import importlib.util
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest
import torch
from fashion_mnist_demo import DEMO_CONFIGS, REPO_ROOT
from mmengine.config import Config
from PIL import Image

TOOL = REPO_ROOT / 'tools' / 'visualization' / 'visualize_attention.py'
CONFIG = DEMO_CONFIGS / 'fan_demo_token_labeler.py'


@pytest.fixture(scope='module')
def labeler_checkpoint(tmp_path_factory) -> str:
    """The demo token labeler (4 FAN blocks of 4 heads, 1 class block), randomly initialised."""
    from mmpretrain.registry import MODELS
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(str(CONFIG)).model)
    model.init_weights()
    path = tmp_path_factory.mktemp('labeler') / 'epoch_1.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)
    return str(path)


def garments(folder) -> list:
    """Two 28 x 28 grey images of a bright shape on black, like Fashion-MNIST's."""
    paths = []
    for index, (top, left) in enumerate([(4, 4), (10, 12)]):
        image = np.zeros((28, 28), np.uint8)
        image[top:top + 14, left:left + 10] = 180
        paths.append(folder / f'garment_{index}.png')
        Image.fromarray(image).save(paths[-1])
    return paths


def test_one_figure_per_image_with_a_panel_per_row_and_head(labeler_checkpoint, tmp_path):
    images = garments(tmp_path)
    out_dir = tmp_path / 'maps'
    finished = subprocess.run([
        sys.executable, str(TOOL), str(CONFIG), labeler_checkpoint, *map(str, images),
        '--out-dir', str(out_dir), '--blocks', '0', '-1', '--heads', '1', '2'
    ], capture_output=True, text=True, cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr
    for image in images:
        out = out_dir / f'{image.stem}_attention.png'
        assert f'Attention figure written to {out}' in finished.stdout
        assert out.read_bytes()[:4] == b'\x89PNG'
        # Rows: blocks 0 and 3 (token mixing), the class block; columns: image, token labels,
        # mean, heads 1 and 2; 2.1 x 2.3 inches a panel (+ 0.4 for the title) at 100 dpi.
        assert matplotlib.image.imread(str(out)).shape[:2] == (3 * 230 + 40, 5 * 210)


def test_received_view_and_bad_arguments(labeler_checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default --out-dir, attention/, would be made here
    # In-process (the tool is a script, not a package module): the errors themselves.
    spec = importlib.util.spec_from_file_location('visualize_attention', TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    main = tool.main
    images = [str(path) for path in garments(tmp_path)]
    main([str(CONFIG), labeler_checkpoint, images[0], '--token-mixing', 'received', '--heads',
          '0', '--out-dir', str(tmp_path / 'received')])
    # Rows: the last block, the class block; columns: image, token labels, mean, head 0.
    out = tmp_path / 'received' / 'garment_0_attention.png'
    assert matplotlib.image.imread(str(out)).shape[:2] == (2 * 230 + 40, 4 * 210)
    with pytest.raises(IndexError, match=r'--blocks must be FAN block indices in \[-4, 4\)'):
        main([str(CONFIG), labeler_checkpoint, *images, '--blocks', '4'])
    size = Config.fromfile(str(CONFIG)).img_size
    with pytest.raises(ValueError,
                       match=f'--query {size} 0 lies outside the {size}x{size} model input'):
        main([str(CONFIG), labeler_checkpoint, *images, '--query', str(size), '0'])
    with pytest.raises(ValueError, match='--query picks the query patch of --token-mixing query'):
        main([str(CONFIG), labeler_checkpoint, *images, '--query', '3', '3', '--token-mixing',
              'received'])
    with pytest.raises(FileNotFoundError, match='No such image file'):
        main([str(CONFIG), labeler_checkpoint, str(tmp_path / 'none.png')])
    assert not (tmp_path / 'attention').exists()  # nothing written on errors
