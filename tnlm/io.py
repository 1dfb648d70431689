"""Save and load MPOs and tensor trains to one ``.npz`` file, bit-exact.

The file holds every core (raw bytes, any dtype including bfloat16), the class, the backend
the object came from, and the truncation report (errors and singular values), so a reload
is indistinguishable from the saved object.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
import zlib
from typing import Any

import numpy as np

from . import backend as B
from .mpo import MPO, TensorTrain
from .truncation import BondTruncation, TruncationReport

__all__ = ["save", "load"]

_FORMAT = "tnlm-train/1"
_BACKENDS = B.HOST_BYTES_BACKENDS
_CLASSES = ("MPO", "TensorTrain")
#: What numpy cannot read from a damaged archive raises (besides ValueError and OSError).
_READ_ERRORS = (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)


def _pack(x: Any) -> tuple[np.ndarray, str]:
    """Raw bytes of ``x`` as a numpy array, and the dtype name to restore it."""
    return B.to_host_bytes(x), B.dtype_name(x)


def _unpack(a: np.ndarray, dtype: str, backend: str, device: Any) -> Any:
    return B.from_host_bytes(a, dtype, backend, device)


def _fspath(path: Any) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike; got {type(path).__name__}")
    out = os.fspath(path)
    if not isinstance(out, str):
        raise TypeError(f"path must be a str or os.PathLike of str; got {out!r}")
    return out


def _write_atomically(path: str, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` into a new temporary file beside ``path`` (a unique name, so nothing of
    the user's is overwritten), fsync, then rename over ``path``; the temporary file is
    removed if anything fails before the rename."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot write {path}: the folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(dir_fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(dir_fd)


def save(obj: MPO | TensorTrain, path: str | os.PathLike[str]) -> None:
    """Write an :class:`MPO` or :class:`TensorTrain` to ``path`` (``.npz``).

    Parameters
    ----------
    obj : MPO or TensorTrain
    path : str or path-like
        Written as given (numpy appends ``.npz`` if missing); an existing file there is
        replaced. The data goes to a new temporary file in the same folder, is flushed to
        disk and renamed into place, so a crash leaves either the old file or the new one,
        never a half-written one, and no other file is touched.

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
    path = _fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    if os.path.isdir(path):
        raise ValueError(f"{path} is a directory; expected a file path for the .npz file")
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
    _write_atomically(path, arrays)


class _MissingFileError(FileNotFoundError, ValueError):
    """:func:`load` of a path that does not exist: a ``FileNotFoundError`` (as ``open``
    raises) that is also a ``ValueError`` (as every other bad input to ``load``)."""


class _Archive:
    """Checked access to an open ``.npz`` file: every missing, mistyped or unreadable entry
    becomes a ``ValueError`` naming the file, the entry and what was expected."""

    def __init__(self, f: Any, path: str) -> None:
        self.f = f
        self.path = path

    def fail(self, what: str) -> ValueError:
        return ValueError(f"{self.path}: {what}; expected a file written by tnlm.save")

    def array(self, key: str, dtype: str) -> np.ndarray:
        """Entry ``key``, holding raw data of the recorded ``dtype`` (int16 for bfloat16)."""
        if key not in self.f.files:
            raise self.fail(f"entry {key!r} is missing")
        try:
            a = self.f[key]
        except _READ_ERRORS as e:
            raise self.fail(f"entry {key!r} cannot be read ({e})") from e
        stored = "int16" if dtype == "bfloat16" else dtype
        if a.dtype.name != stored:
            raise self.fail(f"entry {key!r} has dtype {a.dtype.name} but the metadata says {dtype}")
        return a

    def meta(self) -> dict[str, Any]:
        if "__meta__" not in self.f.files:
            raise ValueError(
                f"{self.path} is not a tnlm file (no '__meta__' entry); expected a file "
                "written by tnlm.save"
            )
        raw = self.array("__meta__", "uint8")
        try:
            meta = json.loads(raw.tobytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise self.fail(f"the metadata is not JSON ({e})") from e
        if not isinstance(meta, dict):
            raise self.fail(f"the metadata is a JSON {type(meta).__name__}, not an object")
        return meta

    def field(self, d: Any, key: str, kind: Any, expected: str, where: str = "") -> Any:
        """``d[key]``, which must be an instance of ``kind`` (bools are not numbers here)."""
        if not isinstance(d, dict) or key not in d:
            raise self.fail(f"metadata {where}has no {key!r} entry")
        v = d[key]
        if not isinstance(v, kind) or (isinstance(v, bool) and bool not in _as_tuple(kind)):
            raise self.fail(f"metadata {where}{key!r} is {v!r}; expected {expected}")
        return v


def _as_tuple(kind: Any) -> tuple[Any, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _resolve_path(path: Any) -> str:
    path = _fspath(path)
    if not os.path.exists(path) and os.path.exists(path + ".npz"):
        path += ".npz"
    if not os.path.exists(path):
        raise _MissingFileError(f"no such file: {path}; expected a .npz written by tnlm.save")
    if os.path.isdir(path):
        raise ValueError(f"{path} is a directory; expected a .npz file written by tnlm.save")
    return path


def load(
    path: str | os.PathLike[str], *, backend: str | None = None, device: Any = None
) -> MPO | TensorTrain:
    """Read what :func:`save` wrote.

    The file is read with ``allow_pickle=False``: nothing in it is ever unpickled, and every
    entry is checked against the metadata before it is used.

    Parameters
    ----------
    path : str or path-like
        The file (``.npz`` is appended if ``path`` does not exist but ``path.npz`` does).
    backend : {"numpy", "torch", "jax"}, optional
        Backend of the returned cores; defaults to the one the object was saved from.
    device : optional
        torch device for the cores (default CPU); any other device with numpy cores raises
        ``ValueError``.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist (the error is also a ``ValueError``, like every other bad
        input to ``load``).
    ValueError
        ``path`` is a directory, not a ``.npz`` archive (a ``.npy`` file, a truncated or
        corrupt zip), or its entries or metadata are not what :func:`save` writes.
    TypeError
        ``path`` is not a str or path-like.
    """
    if backend is not None and backend not in _BACKENDS:
        raise ValueError(f"backend must be 'numpy', 'torch' or 'jax' (or None); got {backend!r}")
    if backend == "numpy" and device is not None and str(device) != "cpu":
        raise ValueError(f"device={device!r} needs backend='torch'; numpy arrays live on the CPU")
    path = _resolve_path(path)
    try:
        f = np.load(path, allow_pickle=False)
    except _READ_ERRORS as e:
        raise ValueError(
            f"{path} is not a readable .npz archive ({e}); expected a file written by tnlm.save"
        ) from e
    if isinstance(f, np.ndarray):
        raise ValueError(
            f"{path} holds a single array (a .npy file); expected a .npz archive written by "
            "tnlm.save"
        )
    with f:
        return _read(_Archive(f, path), backend, device)


def _read(z: _Archive, backend: str | None, device: Any) -> MPO | TensorTrain:
    meta = z.meta()
    fmt = meta.get("format")
    if fmt != _FORMAT:
        raise z.fail(f"unsupported format {fmt!r} (this version reads {_FORMAT})")
    cls_name = z.field(meta, "class", str, "'MPO' or 'TensorTrain'")
    if cls_name not in _CLASSES:
        raise z.fail(f"metadata 'class' is {cls_name!r}; expected 'MPO' or 'TensorTrain'")
    saved_backend = z.field(meta, "backend", str, "'numpy', 'torch' or 'jax'")
    if saved_backend not in _BACKENDS:
        raise z.fail(f"metadata 'backend' is {saved_backend!r}; expected 'numpy', 'torch' or 'jax'")
    be = backend or saved_backend
    if be == "numpy" and device is not None and str(device) != "cpu":
        raise ValueError(
            f"device={device!r} needs backend='torch'; the file holds numpy cores (pass "
            "backend='torch')"
        )
    dev = device if device is not None else "cpu"
    dtypes = z.field(meta, "dtypes", list, "a list of dtype names")
    if not dtypes or not all(isinstance(d, str) for d in dtypes):
        raise z.fail(f"metadata 'dtypes' is {dtypes!r}; expected a non-empty list of dtype names")
    cores = [_unpack(z.array(f"core_{k}", d), d, be, dev) for k, d in enumerate(dtypes)]
    report = None
    rep = z.field(meta, "report", (dict, type(None)), "an object or null")
    if rep is not None:
        norm = z.field(rep, "norm", (int, float), "a number", "report ")
        bonds = []
        for k, b in enumerate(z.field(rep, "bonds", list, "a list", "report ")):
            where = f"report bond {k} "
            rank = z.field(b, "rank", int, "an int", where)
            error = z.field(b, "error", (int, float), "a number", where)
            method = z.field(b, "method", str, "a method name", where)
            has_disc = z.field(b, "discarded", bool, "true or false", where)
            sv = z.field(b, "sv_dtype", str, "a dtype name", where)
            kept = _unpack(z.array(f"kept_{k}", sv), sv, be, dev)
            disc = _unpack(z.array(f"discarded_{k}", sv), sv, be, dev) if has_disc else None
            bonds.append(BondTruncation(rank, float(error), kept, disc, method))
        report = TruncationReport(norm=float(norm), bonds=tuple(bonds))
    try:
        return MPO(cores, report) if cls_name == "MPO" else TensorTrain(cores, report)
    except (TypeError, ValueError) as e:
        raise z.fail(f"the cores do not form a valid {cls_name} ({e})") from e
