from . import metrics  # noqa: F401
from . import reports, robustness, token_label_quality  # noqa: F401
