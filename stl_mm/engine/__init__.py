from . import hooks  # noqa: F401
from . import runners  # noqa: F401
