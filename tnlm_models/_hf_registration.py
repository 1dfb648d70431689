"""Register "mpobert" with ``transformers`` when its auto classes are imported.

``import tnlm_models`` must stay fast: importing ``transformers``' auto classes costs about a
second and ``PreTrainedModel`` (which ``tnlm_models.hf`` subclasses) about three more. So
registration waits: a ``sys.meta_path`` finder wraps the loaders of ``transformers``'
modules, and once ``transformers.models.auto.configuration_auto`` is imported and no
``transformers`` module is still half-imported (``modeling_utils`` imports the auto module
midway), imports ``tnlm_models.hf``, which registers, and removes itself. When the auto
classes are already imported, registration happens at once. Without ``transformers``
nothing happens.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

__all__ = ["register_when_imported"]

logger = logging.getLogger(__name__)

#: the module whose import makes the auto classes exist
AUTO_CONFIG = "transformers.models.auto.configuration_auto"
_done = False


def _try_register(finished: str = "") -> None:
    """Import ``tnlm_models.hf`` (it registers) once the auto classes are imported and no
    ``transformers`` module but ``finished`` is still executing its import."""
    global _done
    if _done or AUTO_CONFIG not in sys.modules or _transformers_mid_import(finished):
        return
    _done = True
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _Finder)]
    try:
        from . import hf  # noqa: F401  (registers on import)
    except Exception as e:  # never break the user's import of transformers
        logger.warning("could not register MPOBERT with transformers: %s", e)
        logger.debug("registration failure", exc_info=True)


def _transformers_mid_import(finished: str) -> bool:
    """Whether a ``transformers`` module other than ``finished`` is executing its import."""
    return any(
        getattr(getattr(module, "__spec__", None), "_initializing", False)
        for name, module in list(sys.modules.items())
        if name.startswith("transformers") and name != finished
    )


class _Loader(importlib.abc.Loader):
    def __init__(self, inner: Any, name: str) -> None:
        self.inner = inner
        self.name = name

    def __getattr__(self, name: str) -> Any:
        # get_source, is_package, get_resource_reader, ...: the wrapped loader's
        return getattr(self.inner, name)

    def create_module(self, spec: Any) -> ModuleType | None:
        return self.inner.create_module(spec)  # type: ignore[no-any-return]

    def exec_module(self, module: ModuleType) -> None:
        self.inner.exec_module(module)
        _try_register(self.name)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> Any:
        if fullname != "transformers" and not fullname.startswith("transformers."):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(spec.loader, fullname)
                return spec
        return None


def register_when_imported() -> None:
    """Register now if ``transformers``' auto classes are imported, else when they are."""
    if importlib.util.find_spec("transformers") is None:
        return
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
    _try_register()
