"""TokenLabelingHead: shapes, official names, class loss and prediction variants."""
import pytest
import torch
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import stl_mm  # noqa: F401
from stl_mm.models.heads import TokenLabelingHead

NUM_CLASSES, CHANNELS = 5, 8


def make_feats(batch: int = 2, height: int = 3, width: int = 4):
    return ((torch.randn(batch, CHANNELS), torch.randn(batch, CHANNELS, height, width)), )


def labelled(labels):
    return [DataSample().set_gt_label(label) for label in labels]


def test_shapes_and_official_submodule_names():
    head = MODELS.build(dict(type='TokenLabelingHead', num_classes=NUM_CLASSES,
                             in_channels=CHANNELS))
    cls_logits, token_logits = head(make_feats())
    assert cls_logits.shape == (2, NUM_CLASSES)
    assert token_logits.shape == (2, NUM_CLASSES, 3, 4)
    assert sorted(head.state_dict()) == [
        'aux_head.bias', 'aux_head.weight', 'head.bias', 'head.weight']


def test_logits_come_from_class_token_and_each_patch_token():
    head = TokenLabelingHead(NUM_CLASSES, CHANNELS)
    feats = make_feats()
    cls_feat, patch_map = feats[0]
    cls_logits, token_logits = head(feats)
    torch.testing.assert_close(cls_logits, cls_feat @ head.head.weight.T + head.head.bias)
    row, col = 2, 1
    torch.testing.assert_close(token_logits[:, :, row, col],
                               patch_map[:, :, row, col] @ head.aux_head.weight.T +
                               head.aux_head.bias)


def test_without_token_head():
    head = TokenLabelingHead(NUM_CLASSES, CHANNELS, with_token_head=False)
    cls_logits, token_logits = head(make_feats())
    assert cls_logits.shape == (2, NUM_CLASSES) and token_logits is None
    assert sorted(head.state_dict()) == ['head.bias', 'head.weight']
    with pytest.raises(ValueError, match='with_token_head=True'):
        TokenLabelingHead(NUM_CLASSES, CHANNELS, with_token_head=False,
                          eval_with_token_logits=True)


def test_default_class_loss_is_label_smoothing_0_1():
    head = TokenLabelingHead(NUM_CLASSES, CHANNELS)
    logits = torch.randn(3, NUM_CLASSES)
    labels = torch.tensor([0, 4, 2])
    target = torch.full((3, NUM_CLASSES), 0.1 / NUM_CLASSES)
    target[torch.arange(3), labels] += 0.9
    expected = -(target * logits.log_softmax(1)).sum(1).mean()
    torch.testing.assert_close(head.class_loss(logits, labelled(labels)), expected)
    losses = head.loss(make_feats(3), labelled(labels))
    assert list(losses) == ['loss_cls']


def test_class_loss_accepts_mixed_scores():
    head = TokenLabelingHead(NUM_CLASSES, CHANNELS)
    logits = torch.randn(2, NUM_CLASSES)
    scores = torch.tensor([[0.6, 0.4, 0, 0, 0], [0, 0, 0.3, 0, 0.7]])
    samples = [DataSample().set_gt_score(score) for score in scores]
    target = 0.9 * scores + 0.1 / NUM_CLASSES
    expected = -(target * logits.log_softmax(1)).sum(1).mean()
    torch.testing.assert_close(head.class_loss(logits, samples), expected)


def test_training_accuracy():
    head = TokenLabelingHead(NUM_CLASSES, CHANNELS, cal_acc=True)
    feats = make_feats()
    predicted = head(feats)[0].argmax(1)
    losses = head.loss(feats, labelled(predicted))
    torch.testing.assert_close(losses['accuracy_top-1'], torch.tensor([100.]))


def test_predict_class_scores_and_official_token_variant():
    head = TokenLabelingHead(NUM_CLASSES, CHANNELS)
    feats = make_feats()
    cls_logits, token_logits = head(feats)
    samples = head.predict(feats)
    torch.testing.assert_close(torch.stack([s.pred_score for s in samples]),
                               cls_logits.softmax(1))

    head.eval_with_token_logits = True
    max_token = token_logits.flatten(2).max(dim=2).values
    expected = (cls_logits + 0.5 * max_token).softmax(1)
    samples = head.predict(feats, labelled(torch.tensor([0, 1])))
    torch.testing.assert_close(torch.stack([s.pred_score for s in samples]), expected)
    assert torch.equal(torch.cat([s.pred_label for s in samples]), expected.argmax(1))


def test_wrong_backbone_output_is_a_clear_error():
    head = TokenLabelingHead(NUM_CLASSES, CHANNELS)
    with pytest.raises(TypeError, match=r'\(\(cls_feat, patch_map\),\)'):
        head((torch.randn(2, CHANNELS), ))


def test_in_channels_comes_from_the_backbone_and_a_mismatch_is_refused():
    from stl_mm.models.backbones import FAN
    with torch.device('meta'):
        backbone = FAN('t-hybrid')
    config = dict(type='TokenLabelingHead', num_classes=NUM_CLASSES)
    assert TokenLabelingHead.fit_to_backbone(config, backbone) == dict(config, in_channels=192)
    matching = dict(config, in_channels=192)
    assert TokenLabelingHead.fit_to_backbone(matching, backbone) is matching
    with pytest.raises(ValueError, match='in_channels=448, but the backbone FAN gives '
                       '192-channel features. Drop head.in_channels'):
        TokenLabelingHead.fit_to_backbone(dict(config, in_channels=448), backbone)
    with pytest.raises(ValueError, match='in_channels=8, but the backbone FAN gives 192'):
        TokenLabelingHead.fit_to_backbone(TokenLabelingHead(NUM_CLASSES, CHANNELS), backbone)


def test_head_without_in_channels_or_with_the_wrong_width_says_so():
    with pytest.raises(ValueError, match='in_channels is not set'):
        TokenLabelingHead(NUM_CLASSES)
    head = TokenLabelingHead(NUM_CLASSES, CHANNELS + 1)
    with pytest.raises(ValueError, match=r'features have 8 channels, the head was built for '
                       r'in_channels=9'):
        head(make_feats())


def test_pre_logits_are_the_class_token_features():
    """mmpretrain's pre_logits contract: the (N, C) vector before the class layer (it was the
    ``(cls_feat, patch_map)`` pair)."""
    head = TokenLabelingHead(NUM_CLASSES, CHANNELS)
    feats = make_feats()
    cls_feat, patch_map = feats[0]
    pre_logits = head.pre_logits(feats)
    assert isinstance(pre_logits, torch.Tensor) and pre_logits.shape == (2, CHANNELS)
    assert torch.equal(pre_logits, cls_feat)
    torch.testing.assert_close(head.head(pre_logits), head(feats)[0])
    both = head.class_and_patch_features(feats)
    assert torch.equal(both[0], cls_feat) and torch.equal(both[1], patch_map)


@pytest.mark.parametrize('with_token_head', [True, False])
def test_prediction_logits_without_the_token_variant_are_the_class_logits(with_token_head):
    head = TokenLabelingHead(NUM_CLASSES, CHANNELS, with_token_head=with_token_head)
    feats = make_feats()
    torch.testing.assert_close(head.prediction_logits(feats), head(feats)[0])
