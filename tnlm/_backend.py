"""Former home of the backend helpers, kept as an alias of :mod:`tnlm.backend` for code
outside the package that still imports it (``benchmarks/``); tnlm itself imports
:mod:`tnlm.backend`."""

from __future__ import annotations

from .backend import *  # noqa: F403
from .backend import __all__ as __all__
