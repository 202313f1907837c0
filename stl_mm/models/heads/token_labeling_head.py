"""Classification head with a class-token classifier and a per-token classifier."""
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmpretrain.evaluation.metrics import Accuracy
from mmpretrain.models.heads import ClsHead
from mmpretrain.structures import DataSample

from stl_mm.registry import register

#: Weight of the token logits in the official evaluation variant.
TOKEN_LOGITS_EVAL_WEIGHT = 0.5


@register(codebases=('mmpretrain', ))
class TokenLabelingHead(ClsHead):
    """Class logits from the class token and token logits from every patch token.

    The two linear layers are named as in the official FAN / STL models (``head`` and
    ``aux_head``), so official checkpoints map onto this head one to one.

    The backbone must return ``((cls_feat, patch_map),)`` as :class:`~stl_mm.models.FAN`
    does: ``cls_feat`` (N, C) and ``patch_map`` (N, C, H, W).

    ``forward`` returns ``(cls_logits, token_logits)``; :meth:`pre_logits` the (N, C)
    class-token features, as mmpretrain's heads do (``extract_feat(stage='pre_logits')``);
    :meth:`class_and_patch_features` both feature tensors.

    Prediction returns the softmax of the class logits. With ``eval_with_token_logits=True``
    it uses the official evaluation variant instead: ``cls_logits + 0.5 * max over tokens of
    the token logits`` (per class), which needs the token head.

    Args:
        num_classes: Number of classes K.
        in_channels: Feature channels C of the backbone. Leave it out (None) inside a
            :class:`~stl_mm.models.classifiers.TokenLabelingClassifier`: it takes the width
            from its backbone (:meth:`fit_to_backbone`), and a width set by hand must match.
        with_token_head: Build ``aux_head`` (needed by the token-labeling modes). Defaults
            to True.
        eval_with_token_logits: Predict with the official ``cls + 0.5 * max token`` variant.
            Defaults to False.
        loss: Class loss config (any mmpretrain loss taking class indices or soft scores, as
            made by Mixup / CutMix). Defaults to ``LabelSmoothLoss`` with smoothing 0.1,
            mode ``'original'``: ``(1 - eps) * y + eps / K``.
        topk: Top-k accuracy when ``cal_acc``. Defaults to ``(1, )``.
        cal_acc: Report training accuracy (pointless with Mixup / CutMix). Defaults to False.
        init_cfg: Initialisation; defaults to truncated normal std 0.02, zero bias, as in FAN.
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: Optional[int] = None,
                 with_token_head: bool = True,
                 eval_with_token_logits: bool = False,
                 loss: dict = dict(
                     type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
                 topk: Sequence[int] = (1, ),
                 cal_acc: bool = False,
                 init_cfg: Optional[dict] = dict(
                     type='TruncNormal', layer='Linear', std=0.02, bias=0.)) -> None:
        super().__init__(loss=loss, topk=topk, cal_acc=cal_acc, init_cfg=init_cfg)
        if num_classes <= 0:
            raise ValueError(f'TokenLabelingHead: num_classes must be positive, got {num_classes}.')
        if in_channels is None:
            raise ValueError('TokenLabelingHead: in_channels is not set. Inside a '
                             'TokenLabelingClassifier it comes from the backbone; a head built '
                             'on its own needs in_channels=<feature width of the backbone>.')
        if eval_with_token_logits and not with_token_head:
            raise ValueError('TokenLabelingHead: eval_with_token_logits=True needs the token '
                             'head; set with_token_head=True.')
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.with_token_head = with_token_head
        self.eval_with_token_logits = eval_with_token_logits
        self.head = nn.Linear(in_channels, num_classes)
        self.aux_head = nn.Linear(in_channels, num_classes) if with_token_head else None

    @staticmethod
    def fit_to_backbone(head: Union[dict, nn.Module],
                        backbone: nn.Module) -> Union[dict, nn.Module]:
        """The head config with ``in_channels`` set to the backbone's feature width.

        A config without ``in_channels`` gets the backbone's ``num_features`` (FAN's embedding
        width); one that sets it (or a built head) must match it.

        Args:
            head: The head config, or a built head.
            backbone: The built backbone; returned unchanged when it has no ``num_features``.

        Returns:
            ``head``, with ``in_channels`` filled in when it was a config without it.

        Raises:
            ValueError: ``in_channels`` differs from the backbone's feature width.
        """
        width = getattr(backbone, 'num_features', None)
        given = head.in_channels if isinstance(head, nn.Module) else head.get('in_channels')
        if width is None:
            return head
        if given is None:
            return dict(head, in_channels=width)
        if given != width:
            raise ValueError(
                f'TokenLabelingHead: in_channels={given}, but the backbone '
                f'{type(backbone).__name__} gives {width}-channel features. Drop '
                'head.in_channels from the config (the classifier takes it from the backbone) '
                f'or set it to {width}.')
        return head

    def pre_logits(self, feats: Sequence) -> torch.Tensor:
        """The (N, C) class-token features the class classifier sees.

        mmpretrain's contract: ``model.extract_feat(inputs, stage='pre_logits')`` and its
        ``FeatureExtractor`` give the feature vector before the final linear layer, as
        ``VisionTransformerClsHead.pre_logits`` does. The patch features the token head
        uses come with :meth:`class_and_patch_features`.
        """
        return self.class_and_patch_features(feats)[0]

    def class_and_patch_features(self, feats: Sequence) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(cls_feat (N, C), patch_map (N, C, H, W))`` of the last backbone output."""
        last = feats[-1]
        if not (isinstance(last, (tuple, list)) and len(last) == 2):
            raise TypeError(
                'TokenLabelingHead expects the backbone to return ((cls_feat, patch_map),) '
                '(FAN with dense=False); got a last output of type '
                f'{type(last).__name__}.')
        if last[0].shape[-1] != self.in_channels:
            raise ValueError(f'TokenLabelingHead: features have {last[0].shape[-1]} channels, '
                             f'the head was built for in_channels={self.in_channels}; leave '
                             'in_channels out of the head config so that the classifier takes '
                             "it from the backbone, or set it to the backbone's width.")
        return last[0], last[1]

    def forward(self, feats: Sequence) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Compute class logits (N, K) and token logits (N, K, H, W) (None without token head)."""
        cls_feat, patch_map = self.class_and_patch_features(feats)
        return self.head(cls_feat), self._token_logits(patch_map)

    def _token_logits(self, patch_map: torch.Tensor) -> Optional[torch.Tensor]:
        """Token logits (N, K, H, W) of a patch map, or None without the token head."""
        if self.aux_head is None:
            return None
        return self.aux_head(patch_map.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def class_loss(self, logits: torch.Tensor, data_samples: List[DataSample]) -> torch.Tensor:
        """Class loss of any (N, K) logits against the (smoothed, possibly mixed) class target."""
        if 'gt_score' in data_samples[0]:
            # Mixup / CutMix turn the labels into soft scores.
            target = torch.stack([sample.gt_score for sample in data_samples])
        else:
            target = torch.cat([sample.gt_label for sample in data_samples])
        return self.loss_module(logits, target, avg_factor=logits.size(0))

    def loss(self, feats: Sequence, data_samples: List[DataSample], **kwargs) -> dict:
        """Class-token loss only (the token losses are added by the classifier)."""
        cls_logits, _ = self(feats)
        losses = dict(loss_cls=self.class_loss(cls_logits, data_samples))
        if self.cal_acc:
            losses.update(self.accuracy(cls_logits, data_samples))
        return losses

    def accuracy(self, cls_logits: torch.Tensor, data_samples: List[DataSample]) -> dict:
        """Top-k training accuracy (needs hard labels, i.e. no Mixup / CutMix)."""
        if 'gt_score' in data_samples[0]:
            raise ValueError('TokenLabelingHead: cal_acc=True needs hard labels; disable it '
                             'when Mixup / CutMix turn labels into scores.')
        target = torch.cat([sample.gt_label for sample in data_samples])
        # No score threshold: these are logits, not probabilities (one result per k).
        accuracies = Accuracy.calculate(cls_logits, target, topk=self.topk, thrs=(None, ))
        return {f'accuracy_top-{k}': acc[0] for k, acc in zip(self.topk, accuracies)}

    def predict(self,
                feats: Sequence,
                data_samples: Optional[List[Optional[DataSample]]] = None) -> List[DataSample]:
        """Predict class scores (see the class docstring for ``eval_with_token_logits``)."""
        return self._get_predictions(self.prediction_logits(feats), data_samples)

    def prediction_logits(self, feats: Sequence) -> torch.Tensor:
        """The (N, K) logits used for prediction (the token head only runs when they use it)."""
        cls_feat, patch_map = self.class_and_patch_features(feats)
        cls_logits = self.head(cls_feat)
        if not self.eval_with_token_logits:
            return cls_logits
        token_logits = self._token_logits(patch_map)
        return cls_logits + TOKEN_LOGITS_EVAL_WEIGHT * token_logits.flatten(2).amax(dim=2)
