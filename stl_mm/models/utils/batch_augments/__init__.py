from .batch_mix import BatchMixRecord, RecordingCutMix, RecordingMixup, mix_token_targets

__all__ = ['BatchMixRecord', 'RecordingCutMix', 'RecordingMixup', 'mix_token_targets']
