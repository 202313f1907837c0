"""Data preprocessor of STL: both views normalised, batch mixing on the student only."""
from typing import List, Optional

from mmengine.logging import MMLogger
from mmpretrain.models.utils import ClsDataPreprocessor
from mmpretrain.models.utils.batch_augments import CutMix, Mixup

from stl_mm.registry import register
from .batch_augments import BatchMixRecord, RecordingCutMix, RecordingMixup

#: mmpretrain batch augments and their recording twins (exact types: subclasses such as
#: ``ResizeMix`` mix differently and cannot be recorded).
_RECORDING_TWINS = {Mixup: RecordingMixup, CutMix: RecordingCutMix}


@register('MODELS', codebases=('mmpretrain', ))
class TokenLabelingDataPreprocessor(ClsDataPreprocessor):
    """``ClsDataPreprocessor`` that also carries the teacher view of STL stage 2.

    - The student images (``inputs``) go through mmpretrain's usual steps: BGR to RGB,
      normalisation, padding, stacking and, in training, the batch augments
      (``train_cfg=dict(augments=[dict(type='Mixup', ...), dict(type='CutMix', ...)])`` of
      the classifier), which mix the student images and the class targets.
    - The teacher images (``teacher_inputs`` from
      :class:`~stl_mm.datasets.transforms.PackDualViewInputs`) get the same colour
      conversion, normalisation and padding but are never mixed: the teacher sees the clean
      view.
    - The standard ``Mixup`` / ``CutMix`` are replaced by their recording twins
      (:class:`~stl_mm.models.utils.RecordingMixup`, ``RecordingCutMix``), which mix
      identically and return what they did as a
      :class:`~stl_mm.models.utils.BatchMixRecord` (``batch_mix``), used by
      ``token_label_mix='aligned'``. Other batch augments (e.g. ``ResizeMix``) run
      unchanged but leave ``batch_mix=None``.

    Single-view batches (token labeler, FAN baselines, validation) simply have
    ``teacher_inputs=None``.

    Args:
        **kwargs: Arguments of :class:`mmpretrain.models.utils.ClsDataPreprocessor`
            (``mean``, ``std``, ``to_rgb``, ``num_classes``, ``batch_augments``...).
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        if self.batch_augments is None:
            return
        augments = self.batch_augments.augments
        for position, augment in enumerate(augments):
            twin = _RECORDING_TWINS.get(type(augment))
            if twin is not None:
                augments[position] = twin.from_augment(augment)
            elif augment is not None and not isinstance(augment, (RecordingMixup,
                                                                  RecordingCutMix)):
                MMLogger.get_current_instance().warning(
                    f'TokenLabelingDataPreprocessor: batch augment {type(augment).__name__} '
                    "leaves no BatchMixRecord, so token_label_mix='aligned' cannot follow "
                    'it (batch_mix is None after it runs). Use Mixup / CutMix for aligned '
                    "token-label mixing, or keep token_label_mix='none'.")

    @property
    def recording_augments(self) -> List[Mixup]:
        """The batch augments that leave a :class:`BatchMixRecord`."""
        if self.batch_augments is None:
            return []
        return [augment for augment in self.batch_augments.augments
                if isinstance(augment, (RecordingMixup, RecordingCutMix))]

    def forward(self, data: dict, training: bool = False) -> dict:
        """Normalise both views and mix the student batch.

        Args:
            data: Collated batch with ``inputs``, ``data_samples`` and, for dual-view
                pipelines, ``teacher_inputs``.
            training: Whether to apply the batch augments.

        Returns:
            ``dict(inputs, data_samples, teacher_inputs, batch_mix)``: ``teacher_inputs`` is a
            (N, 3, H, W) tensor or None; ``batch_mix`` is a ``BatchMixRecord`` when Mixup or
            CutMix ran on this batch, else None.
        """
        for augment in self.recording_augments:
            augment.last_record = None
        student = super().forward(data, training)
        teacher_inputs = data.get('teacher_inputs')
        if teacher_inputs is not None:
            teacher_inputs = super().forward(dict(inputs=teacher_inputs), False)['inputs']
        return dict(
            inputs=student['inputs'],
            data_samples=student['data_samples'],
            teacher_inputs=teacher_inputs,
            batch_mix=self._last_batch_mix())

    def _last_batch_mix(self) -> Optional[BatchMixRecord]:
        records = [augment.last_record for augment in self.recording_augments
                   if augment.last_record is not None]
        return records[0] if records else None
