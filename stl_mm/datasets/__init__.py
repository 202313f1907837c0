from . import transforms  # noqa: F401
from .batch_mix import (BatchMixRecord, RecordingCutMix, RecordingMixup,  # noqa: F401
                        mix_token_targets)
from .data_preprocessor import TokenLabelingDataPreprocessor  # noqa: F401
from . import robustness  # noqa: F401
from . import grayscale  # noqa: F401
