"""Old private names, kept only for ``tests/tnlm_models/test_safety_data.py``.

The trainer's set-up helpers now live in modules named for what they hold
(:mod:`.datasets`, :mod:`.models`, :mod:`.config`, :mod:`.randomness`, :mod:`.precision`,
:mod:`.runs`); nothing in the package imports this module. Delete it once that test imports
``RawData``, ``label_list_for`` and ``read_raw_data`` from :mod:`.datasets`.
"""

from __future__ import annotations

from .datasets import RawData as _Raw
from .datasets import label_list_for as _label_list
from .datasets import read_raw_data as _read_raw

__all__ = ["_Raw", "_label_list", "_read_raw"]
