"""Reading weight files for the ``tnlm`` command: one matrix (``tnlm decompose``) or every
tensor of a file or folder (``tnlm analyze``).

Nothing is unpickled (``.npz`` with ``allow_pickle=False``, ``.pt`` with
``torch.load(weights_only=True)``), every ``.npy``/``.npz`` header is checked against the size
the file really holds before anything is allocated, and ``.safetensors`` files are read with
the safetensors library (which checks the header and the offsets). Bad input raises
:class:`CLIError`, whose message the command prints as one line.
"""

from __future__ import annotations

import math
import os
import pickle
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "CLIError",
    "EXTENSIONS",
    "MAX_LISTED",
    "Stored",
    "load_matrix",
    "one_line",
    "read_matrix",
    "stored_tensors",
    "weight_files",
]

EXTENSIONS = ".npy, .npz, .pt/.pth or .safetensors"
MAX_LISTED = 20  # names listed in one error line before "... and N more"
_DEFLATE_MAX_RATIO = 1032  # deflate never expands data by more than this factor


class CLIError(ValueError):
    """Bad input to the command line: reported as one line on stderr, exit status 2."""


def one_line(message: object) -> str:
    return " ".join(str(message).split())


# --------------------------------------------------------------------------- reading


def _listing(shapes: Mapping[str, tuple[int, ...]]) -> str:
    names = sorted(shapes)
    shown = [f"{k} {'x'.join(map(str, shapes[k])) or 'scalar'}" for k in names[:MAX_LISTED]]
    more = len(names) - len(shown)
    return ", ".join(shown) + (f" ... and {more} more" if more > 0 else "")


def _choose(
    shapes: Mapping[str, tuple[int, ...]], key: str | None, path: str, kind: str
) -> tuple[str, str | None]:
    """The entry to decompose, and a note when it was picked without ``--key``."""
    if key is not None:
        if key not in shapes:
            raise CLIError(
                f"{path} has no {kind} {key!r}; it has: {_listing(shapes)}; name one with --key"
            )
        return key, None
    if not shapes:
        raise CLIError(f"{path} holds no {kind}s; expected a file with one 2-D {kind}")
    if len(shapes) == 1:
        return next(iter(shapes)), None
    two_d = [k for k, s in shapes.items() if len(s) == 2]
    if len(two_d) == 1:
        return two_d[0], (
            f"{path} holds {len(shapes)} {kind}s; using {two_d[0]!r}, the only 2-D one "
            "(name another with --key)"
        )
    raise CLIError(
        f"{path} holds {len(shapes)} {kind}s ({len(two_d)} of them 2-D); name one with "
        f"--key NAME. Available: {_listing(shapes)}"
    )


def _check_declared(path: str, what: str, declared: int, available: int) -> None:
    """Refuse a header that promises more data than the file holds (before allocating it)."""
    if declared > available:
        raise CLIError(
            f"{path} is truncated or corrupt: {what} declares {declared:,} bytes of data but "
            f"only {available:,} bytes follow the header"
        )


def _npy_header(fp: Any, path: str) -> tuple[tuple[int, ...], np.dtype[Any], bool]:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(fp)
        else:
            shape, fortran, dtype = fmt.read_array_header_2_0(fp)
    except (ValueError, EOFError, OSError) as e:
        raise CLIError(f"{path} is not a valid .npy array ({one_line(e)})") from None
    if dtype.hasobject:
        raise CLIError(
            f"{path} holds Python objects (dtype {dtype}), which tnlm never unpickles; "
            "expected a numeric array"
        )
    return tuple(int(d) for d in shape), dtype, fortran


def _read_npy(path: str, size: int) -> Any:
    with open(path, "rb") as f:
        shape, dtype, _ = _npy_header(f, path)
        _check_declared(
            path, f"its header (shape {shape})", math.prod(shape) * dtype.itemsize, size - f.tell()
        )
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as e:
        raise CLIError(f"{path} is not a readable .npy array ({one_line(e)})") from None


def _npz_headers(path: str) -> dict[str, tuple[tuple[int, ...], np.dtype[Any]]]:
    """Shape and dtype of every array in a ``.npz`` archive, each header checked against the
    size the archive really stores (before anything is allocated)."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise CLIError(f"{path} is not a valid .npz archive ({one_line(e)})") from None
    with zf:
        members = {
            i.filename[: -len(".npy")]: i for i in zf.infolist() if i.filename.endswith(".npy")
        }
        if "__meta__" in members:
            raise CLIError(
                f"{path} is an MPO saved by tnlm, not a matrix; read it with tnlm.load, or "
                "pass the dense matrix file"
            )
        headers: dict[str, tuple[tuple[int, ...], np.dtype[Any]]] = {}
        for name, info in members.items():
            try:
                with zf.open(info) as m:
                    shape, dtype, _ = _npy_header(m, f"{path}[{name!r}]")
                    header_len = m.tell()
            except (zipfile.BadZipFile, zlib.error, EOFError) as e:
                raise CLIError(f"{path}: member {info.filename} is corrupt ({e})") from None
            size = info.file_size  # as the archive claims; bounded by what is really stored
            if info.compress_type == zipfile.ZIP_STORED:
                size = min(size, info.compress_size)
            elif info.compress_type == zipfile.ZIP_DEFLATED:
                size = min(size, _DEFLATE_MAX_RATIO * info.compress_size + 1024)
            _check_declared(
                path,
                f"array {name!r} (shape {shape})",
                math.prod(shape) * dtype.itemsize,
                size - header_len,
            )
            headers[name] = shape, dtype
    return headers


def _read_npz(path: str, key: str | None) -> tuple[Any, str, str | None]:
    shapes = {name: shape for name, (shape, _) in _npz_headers(path).items()}
    name, note = _choose(shapes, key, path, "array")
    try:
        with np.load(path, allow_pickle=False) as f:
            return f[name], name, note
    except (ValueError, EOFError, OSError, zipfile.BadZipFile, zlib.error) as e:
        raise CLIError(f"{path}: array {name!r} is unreadable ({one_line(e)})") from None


def _safetensors_headers(path: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{name: (shape, dtype)}`` of a ``.safetensors`` file, read by the safetensors library
    (which checks the header and the data offsets)."""
    try:
        from safetensors import SafetensorError, safe_open
    except ImportError:
        raise CLIError(
            f"reading {path} needs the safetensors package, which is not installed; install "
            "it with: pip install safetensors"
        ) from None
    try:
        with safe_open(path, framework="numpy") as f:
            slices = {k: f.get_slice(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
            return {k: (tuple(sl.get_shape()), sl.get_dtype()) for k, sl in slices.items()}
    except SafetensorError as e:
        raise CLIError(f"{path} is not a valid .safetensors file: {one_line(e)}") from None


def _safetensors_tensor(path: str, name: str, dtype: str) -> Any:
    """Tensor ``name`` of a ``.safetensors`` file as a numpy array; bfloat16 is upcast to
    float32 through torch (exactly), since numpy has no bfloat16."""
    from safetensors import SafetensorError, safe_open

    if dtype == "BF16":
        try:
            import torch  # noqa: F401  (safetensors' "pt" framework reads bfloat16)
        except ImportError:
            raise CLIError(
                f"{path}[{name!r}] is bfloat16, which numpy cannot hold; reading it needs torch, "
                "which is not installed; install it with: pip install 'tnlm[torch]'"
            ) from None
        with safe_open(path, framework="pt") as f:
            return f.get_tensor(name).float().numpy()
    try:
        with safe_open(path, framework="numpy") as f:
            return f.get_tensor(name)
    except (TypeError, AttributeError):  # a dtype numpy has no type for
        raise CLIError(
            f"{path}: tensor {name!r} has dtype {dtype}, which numpy cannot hold; "
            "expected a float, integer or bfloat16 tensor"
        ) from None
    except SafetensorError as e:
        raise CLIError(f"{path} is not a valid .safetensors file: {one_line(e)}") from None


def _read_safetensors(path: str, key: str | None) -> tuple[Any, str, list[str]]:
    """Read one tensor of a ``.safetensors`` file (see :func:`_safetensors_tensor`)."""
    headers = _safetensors_headers(path)
    name, note = _choose({k: shape for k, (shape, _) in headers.items()}, key, path, "tensor")
    dtype = headers[name][1]
    notes = [note] if note else []
    W = _safetensors_tensor(path, name, dtype)
    if dtype == "BF16":
        notes.append(
            f"{path}[{name!r}] is bfloat16, which numpy cannot hold; upcast to float32 (exact)"
        )
    return W, name, notes


def _torch_load(path: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; one-line CLIErrors."""
    try:
        import torch
    except ImportError:
        raise CLIError(
            f"reading {path} needs torch, which is not installed; install it with: "
            "pip install 'tnlm[torch]'"
        ) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        lines = str(e).splitlines()
        why = next(
            (ln for ln in lines if "WeightsUnpickler error:" in ln), lines[0] if lines else ""
        )
        why = why.split("WeightsUnpickler error:")[-1].split(". ")[0].strip()
        raise CLIError(
            f"{path} holds pickled Python objects that tnlm will not load ({why}); tnlm reads "
            ".pt files with torch.load(weights_only=True); expected a tensor or a state dict "
            "of tensors"
        ) from None
    except Exception as e:  # torch.load raises many kinds on a corrupt file (KeyError, ...)
        lines = str(e).splitlines()
        raise CLIError(
            f"{path} is not a readable PyTorch file ({one_line(lines[0] if lines else e)}); "
            "expected a tensor or a state dict saved with torch.save"
        ) from None


def _read_torch(path: str, key: str | None) -> tuple[Any, str | None, str | None]:
    obj = _torch_load(path)
    import torch  # _torch_load has checked that it is installed

    if isinstance(obj, torch.Tensor):
        if key is not None:
            raise CLIError(f"--key {key!r} given, but {path} holds a single tensor, not a dict")
        return obj, None, None
    if not isinstance(obj, dict):
        raise CLIError(
            f"{path} holds a {type(obj).__name__}; expected a tensor or a state dict of tensors"
        )
    by_name = {str(k): v for k, v in obj.items()}  # --key is text; state-dict keys may not be
    shapes = {k: tuple(v.shape) for k, v in by_name.items() if isinstance(v, torch.Tensor)}
    if key is not None and key in by_name and key not in shapes:
        raise CLIError(f"{path}[{key!r}] is a {type(by_name[key]).__name__}, not a tensor")
    name, note = _choose(shapes, key, path, "tensor")
    return by_name[name], name, note


def read_matrix(path: str, key: str | None) -> tuple[Any, str, list[str]]:
    """The 2-D array in ``path``, a label naming it (``path`` or ``path['key']``) and notes
    to print (a tensor picked without ``--key``, a dtype upcast)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a directory; expected a matrix file ({EXTENSIONS})")
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".npy", ".npz", ".pt", ".pth", ".safetensors"):
        raise CLIError(f"unsupported file type {ext!r} for {path}; expected {EXTENSIONS}")
    size = os.path.getsize(path)
    if size == 0:
        raise CLIError(f"{path} is empty (0 bytes); expected a {ext} matrix file")
    name: str | None = None
    notes: list[str] = []
    if ext == ".npy":
        if key is not None:
            raise CLIError(f"--key {key!r} given, but {path} is a .npy file holding one array")
        W = _read_npy(path, size)
    elif ext == ".npz":
        W, name, note = _read_npz(path, key)
        notes += [note] if note else []
    elif ext == ".safetensors":
        W, name, notes = _read_safetensors(path, key)
    else:
        W, name, note = _read_torch(path, key)
        notes += [note] if note else []
    label = path if name is None else f"{path}[{name!r}]"
    shape = tuple(int(d) for d in getattr(W, "shape", ()))
    if len(shape) != 2:
        raise CLIError(f"{label} is a {len(shape)}-D array of shape {shape}; expected a 2-D matrix")
    return W, label, notes


def load_matrix(path: str, key: str | None = None) -> Any:
    """Load a matrix from ``.npy``, ``.npz``, ``.pt``/``.pth`` (tensor or state dict) or
    ``.safetensors`` (``key`` names the array when the file holds several).

    Every header is checked against the file's size before anything is allocated, nothing
    is unpickled, and bfloat16 ``.safetensors`` tensors are upcast to float32.

    Parameters
    ----------
    path : str
        The file; its extension selects the reader.
    key : str, optional
        The array's name in a ``.npz``, ``.pt`` state dict or ``.safetensors`` file. Without
        it a file of several arrays must hold exactly one 2-D array.

    Returns
    -------
    W : array, shape (rows, cols)
        numpy, or torch for ``.pt``/``.pth`` files.

    Raises
    ------
    FileNotFoundError, IsADirectoryError
        ``path`` is missing or a directory.
    ValueError
        The file is empty, corrupt, of an unknown type, holds several arrays and no ``key``,
        or its array is not 2-D.
    """
    return read_matrix(path, key)[0]


# --------------------------------------------------------------------------- reading many


_WEIGHT_EXTENSIONS = (".safetensors", ".npz", ".pt", ".pth", ".npy")
_SAFETENSORS_FLOATS = ("F16", "BF16", "F32", "F64", "C64", "C128")


@dataclass(frozen=True)
class Stored:
    """One stored tensor: where it is, its shape, whether it holds weights (a floating or
    complex dtype), and how to read it (nothing is read until it is analysed)."""

    file: str
    name: str
    shape: tuple[int, ...]
    floating: bool
    load: Callable[[], Any]


def weight_files(path: str) -> tuple[list[str], str | None]:
    """The files ``tnlm analyze`` reads for ``path``, and a note on the choice.

    A file is read itself. In a folder (not recursively) the ``.safetensors`` files are read
    if there are any (weights by design; ``.pt`` files beside them are training state or the
    same weights again); otherwise its ``.npz``, ``.pt``/``.pth`` and ``.npy`` files.
    """
    if not os.path.exists(path):
        raise CLIError(f"no such file or folder: {path}")
    if not os.path.isdir(path):
        ext = os.path.splitext(path)[1].lower()
        if ext not in _WEIGHT_EXTENSIONS:
            raise CLIError(
                f"unsupported file type {ext or '(no extension)'!r} for {path}; expected "
                f"{EXTENSIONS}, or a folder of them"
            )
        return [path], None
    found = sorted(
        os.path.join(path, f)
        for f in os.listdir(path)
        if os.path.splitext(f)[1].lower() in _WEIGHT_EXTENSIONS
        and os.path.isfile(os.path.join(path, f))
    )
    safetensors = [f for f in found if f.lower().endswith(".safetensors")]
    if safetensors:
        others = len(found) - len(safetensors)
        note = (
            f"{path}: read its .safetensors files; {others} other weight file(s) beside them "
            "not read"
            if others
            else None
        )
        return safetensors, note
    if not found:
        raise CLIError(
            f"{path} holds no weight files; expected {EXTENSIONS} files directly in the folder"
        )
    return found, None


def _stored_npz(path: str) -> list[Stored]:
    def loader(name: str) -> Callable[[], Any]:
        def load() -> Any:
            try:
                with np.load(path, allow_pickle=False) as f:
                    return f[name]
            except (ValueError, EOFError, OSError, zipfile.BadZipFile, zlib.error) as e:
                raise CLIError(f"{path}: array {name!r} is unreadable ({one_line(e)})") from None

        return load

    return [
        Stored(path, name, shape, dtype.kind in "fc", loader(name))
        for name, (shape, dtype) in _npz_headers(path).items()
    ]


def _stored_safetensors(path: str) -> list[Stored]:
    def loader(name: str, dtype: str) -> Callable[[], Any]:
        return lambda: _safetensors_tensor(path, name, dtype)

    return [
        Stored(path, k, shape, dtype in _SAFETENSORS_FLOATS, loader(k, dtype))
        for k, (shape, dtype) in _safetensors_headers(path).items()
    ]


def _stored_torch(path: str) -> list[Stored]:
    obj = _torch_load(path)
    import torch  # _torch_load has checked that it is installed

    if isinstance(obj, torch.Tensor):
        obj = {os.path.splitext(os.path.basename(path))[0]: obj}
    if not isinstance(obj, dict):
        raise CLIError(
            f"{path} holds a {type(obj).__name__}; expected a tensor or a state dict of tensors"
        )
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CLIError(f"{path} holds no tensors; expected a tensor or a state dict of tensors")

    def loader(v: Any) -> Callable[[], Any]:
        def load() -> Any:  # numpy has no bfloat16: upcast (exact)
            return v.detach().float() if v.dtype == torch.bfloat16 else v.detach()

        return load

    return [
        Stored(
            path,
            k,
            tuple(int(d) for d in v.shape),
            v.is_floating_point() or v.is_complex(),
            loader(v),
        )
        for k, v in tensors.items()
    ]


def stored_tensors(path: str) -> list[Stored]:
    """Every tensor of one weight file (shapes read, data not yet)."""
    if os.path.getsize(path) == 0:
        raise CLIError(f"{path} is empty (0 bytes); expected a weight file ({EXTENSIONS})")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npy":
        a = _read_npy(path, os.path.getsize(path))
        name = os.path.splitext(os.path.basename(path))[0]
        return [Stored(path, name, tuple(a.shape), a.dtype.kind in "fc", lambda: a)]
    if ext == ".npz":
        return _stored_npz(path)
    if ext == ".safetensors":
        return _stored_safetensors(path)
    return _stored_torch(path)
