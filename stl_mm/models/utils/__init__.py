from .batch_augments import BatchMixRecord, RecordingCutMix, RecordingMixup, mix_token_targets
from .data_preprocessor import TokenLabelingDataPreprocessor

__all__ = ['BatchMixRecord', 'RecordingCutMix', 'RecordingMixup', 'TokenLabelingDataPreprocessor',
           'mix_token_targets']
