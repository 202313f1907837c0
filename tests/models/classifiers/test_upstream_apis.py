"""mmpretrain's own APIs on TokenLabelingClassifier: FeatureExtractor and get_model."""
import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmpretrain.apis import FeatureExtractor
from mmpretrain.registry import MODELS

import stl_mm  # noqa: F401

CONFIG = (Path(__file__).resolve().parents[3] / 'configs' / 'stl' / 'demo' /
          'fan_demo_token_labeler.py')


@pytest.fixture(scope='module')
def extractor(tmp_path_factory) -> FeatureExtractor:
    cfg = Config.fromfile(str(CONFIG))
    torch.manual_seed(0)
    # A copy: building mmpretrain's batch augments appends to the config's probs list.
    model = MODELS.build(copy.deepcopy(cfg.model))
    model.init_weights()
    path = tmp_path_factory.mktemp('extract') / 'labeler.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)
    return FeatureExtractor(cfg, pretrained=str(path), device='cpu')


def test_feature_extractor_gives_the_class_token_features(extractor):
    """``stage='pre_logits'`` is the (C,) vector per image before the class layer (it was the
    ``(cls_feat, patch_map)`` pair)."""
    images = [np.random.default_rng(i).integers(0, 256, (28, 28, 3), dtype=np.uint8)
              for i in range(2)]
    cfg = Config.fromfile(str(CONFIG))
    arch = cfg.demo_fan_arch
    width, grid = arch['embed_dims'], cfg.img_size // arch['patch_size']
    feats = extractor(images, batch_size=2, stage='pre_logits')
    assert len(feats) == 2 and all(f.shape == (width, ) for f in feats)
    (cls_feat, patch_map), = extractor(images[1], stage='backbone')[0]
    assert cls_feat.shape == (width, ) and patch_map.shape == (width, grid, grid)
    torch.testing.assert_close(feats[1], cls_feat)
    # The same vector as extract_feat on the preprocessed image; the class layer on it gives
    # the model's tensor-mode logits.
    model = extractor.model
    packed = [extractor.pipeline(dict(img=image)) for image in images]
    with torch.no_grad():
        inputs = model.data_preprocessor(dict(inputs=[p['inputs'] for p in packed]),
                                         False)['inputs']
        expected = model.extract_feat(inputs, stage='pre_logits')
        logits = model(inputs)
    torch.testing.assert_close(torch.stack(feats), expected)
    torch.testing.assert_close(model.head.head(expected), logits)


def test_mmengine_flop_counter_traces_the_classifier():
    """FlopAnalyzer traces ``model(x)``; a ``(logits, None)`` output cannot be traced."""
    from mmengine.analysis import get_model_complexity_info
    cfg = Config.fromfile(str(CONFIG.with_name('fan_demo_baseline.py')))
    model = MODELS.build(copy.deepcopy(cfg.model)).eval()
    image = torch.zeros(1, 3, cfg.img_size, cfg.img_size)
    info = get_model_complexity_info(model, inputs=(image, ), show_table=False, show_arch=False)
    assert info['flops'] > 0
    assert info['params'] == sum(p.numel() for p in model.parameters())
