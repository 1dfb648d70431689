"""Save and load MPOs and tensor trains to one ``.npz`` file, bit-exact.

The file holds every core (raw bytes, any dtype including bfloat16), the class, the backend
the object came from, and the truncation report (errors and singular values), so a reload
is indistinguishable from the saved object.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from . import _backend as B
from .mpo import MPO, TensorTrain
from .truncation import BondTruncation, TruncationReport

__all__ = ["save", "load"]

_FORMAT = "tnlm-train/1"


def _pack(x: Any) -> tuple[np.ndarray, str]:
    """Raw bytes of ``x`` as a numpy array, and the dtype name to restore it."""
    name = B.dtype_name(x)
    if B.is_torch(x):
        import torch

        t = x.detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:
            return t.view(torch.int16).numpy(), name
        return t.numpy(), name
    return np.asarray(x), name


def _unpack(a: np.ndarray, dtype: str, backend: str, device: Any) -> Any:
    if backend == "torch":
        import torch

        if dtype == "bfloat16":
            return torch.from_numpy(a.copy()).view(torch.bfloat16).to(device)
        return torch.from_numpy(a.copy()).to(device)
    if dtype == "bfloat16":
        raise ValueError(
            "the file holds bfloat16 cores, which numpy cannot represent; load them with "
            "backend='torch'"
        )
    return a.copy()


def save(obj: MPO | TensorTrain, path: str | os.PathLike[str]) -> None:
    """Write an :class:`MPO` or :class:`TensorTrain` to ``path`` (``.npz``).

    Parameters
    ----------
    obj : MPO or TensorTrain
    path : str or path-like
        Written as given (numpy appends ``.npz`` if missing). The write goes to a temporary
        file first and is renamed into place, so a crash never leaves a half-written file.

    Examples
    --------
    >>> import numpy as np, tnlm, tempfile, os
    >>> mpo = tnlm.mpo_decompose(np.eye(8), ((2, 4), (2, 4)))
    >>> p = os.path.join(tempfile.mkdtemp(), "w.npz")
    >>> tnlm.save(mpo, p)
    >>> back = tnlm.load(p)
    >>> all(np.array_equal(a, b) for a, b in zip(mpo.cores, back.cores))
    True
    """
    if not isinstance(obj, (MPO, TensorTrain)):
        raise TypeError(f"save takes an MPO or a TensorTrain; got {type(obj).__name__}")
    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    arrays: dict[str, np.ndarray] = {}
    dtypes = []
    for k, c in enumerate(obj.cores):
        arrays[f"core_{k}"], name = _pack(c)
        dtypes.append(name)
    meta: dict[str, Any] = {
        "format": _FORMAT,
        "class": type(obj).__name__,
        "backend": obj.backend,
        "dtypes": dtypes,
        "report": None,
    }
    if obj.report is not None:
        bonds = []
        for k, b in enumerate(obj.report.bonds):
            arrays[f"kept_{k}"], _ = _pack(b.kept)
            has_disc = b.discarded is not None
            if has_disc:
                arrays[f"discarded_{k}"], _ = _pack(b.discarded)
            bonds.append(
                {
                    "rank": b.rank,
                    "error": b.error,
                    "method": b.method,
                    "discarded": has_disc,
                    "sv_dtype": B.dtype_name(b.kept),
                }
            )
        meta["report"] = {"norm": obj.report.norm, "bonds": bonds}
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)  # type: ignore[arg-type]
    os.replace(tmp, path)


def load(
    path: str | os.PathLike[str], *, backend: str | None = None, device: Any = None
) -> MPO | TensorTrain:
    """Read what :func:`save` wrote.

    Parameters
    ----------
    path : str or path-like
    backend : {"numpy", "torch"}, optional
        Backend of the returned cores; defaults to the one the object was saved from.
    device : optional
        torch device for the cores (default CPU).
    """
    path = os.fspath(path)
    if not os.path.exists(path) and os.path.exists(path + ".npz"):
        path += ".npz"
    with np.load(path, allow_pickle=False) as f:
        if "__meta__" not in f:
            raise ValueError(f"{path} is not a tnlm file (no metadata entry)")
        meta = json.loads(bytes(f["__meta__"]).decode())
        if meta.get("format") != _FORMAT:
            raise ValueError(
                f"{path}: unsupported format {meta.get('format')!r}; expected {_FORMAT}"
            )
        be = backend or meta["backend"]
        if be not in ("numpy", "torch"):
            raise ValueError(f"backend must be 'numpy' or 'torch'; got {be!r}")
        dev = device if device is not None else "cpu"
        cores = [_unpack(f[f"core_{k}"], d, be, dev) for k, d in enumerate(meta["dtypes"])]
        report = None
        if meta["report"] is not None:
            bonds = []
            for k, b in enumerate(meta["report"]["bonds"]):
                kept = _unpack(f[f"kept_{k}"], b["sv_dtype"], be, dev)
                disc = (
                    _unpack(f[f"discarded_{k}"], b["sv_dtype"], be, dev) if b["discarded"] else None
                )
                bonds.append(BondTruncation(b["rank"], b["error"], kept, disc, b["method"]))
            report = TruncationReport(norm=meta["report"]["norm"], bonds=tuple(bonds))
    if meta["class"] == "MPO":
        return MPO(cores, report)
    return TensorTrain(cores, report)
