"""Per-call backend dispatch: the one place where array libraries differ.

Every helper here looks at its array argument on each call (``autoray.infer_backend``, as
quimb and autoray do; there is no global backend switch) and runs the implementation
registered for that library, or the generic one written with autoray, which serves any
library autoray knows (jax, cupy, ...). The algorithms in tnlm call these helpers and never
ask which library an array comes from.

Registered specialisations, and why they exist:

* numpy: LAPACK through scipy with a fallback driver (``gesdd`` -> ``gesvd``) and the BLAS
  thread lending of :mod:`tnlm.backend.threads`;
* torch: device placement, ``detach`` / lazy conjugate views, and the autograd functions
  of :mod:`tnlm.backend.torch_autograd` (finite backward passes at degenerate spectra);
* jax: ``jax.lax.stop_gradient`` to read concrete values under ``jax.grad``,
  ``jax.scipy.linalg.lu``, and double precision only where ``jax_enable_x64`` is on.

Dtypes are handled by name ("float32", "complex128", "bfloat16", ...), which is
backend-neutral (``autoray.get_dtype_name``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import autoray as ar
import numpy as np

from .._types import Array
from .threads import threads_for

__all__ = [
    "register",
    "dispatching",
    "backend_name",
    "dtype_name",
    "is_complex",
    "real_dtype_name",
    "compute_dtype_name",
    "check_float_dtype",
    "real_dtype_eps",
    "real_dtype_max_exponent",
    "astype",
    "cast_like",
    "upcast",
    "has_double",
    "uses_process_blas",
    "to_numpy",
    "from_numpy",
    "like",
    "like_real",
    "zeros_like_shape",
    "eye_like",
    "copy",
    "all_finite",
    "device_of",
    "requires_grad",
    "stop_gradient",
    "svd_raw",
    "qr_raw",
    "eigh_desc",
    "svdvals",
    "lu_basis",
    "HOST_BYTES_BACKENDS",
    "to_host_bytes",
    "from_host_bytes",
]

log = logging.getLogger(__name__)

#: Implementations by (operation, backend name); backend ``GENERIC`` serves every other one.
_REGISTRY: dict[tuple[str, str], Callable[..., Any]] = {}
GENERIC = "*"


def register(op: str, *backends: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``fn`` as operation ``op`` for ``backends`` (default: generic)."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        for b in backends or (GENERIC,):
            _REGISTRY[op, b] = fn
        return fn

    return deco


def dispatching(op: str, doc: str) -> Callable[..., Any]:
    """A function ``f(x, *args, **kwargs)`` that runs operation ``op`` for ``x``'s backend."""

    def f(x: Array, *args: Any, **kwargs: Any) -> Any:
        impl = _REGISTRY.get((op, ar.infer_backend(x))) or _REGISTRY.get((op, GENERIC))
        if impl is None:  # pragma: no cover - every op has a generic implementation
            raise TypeError(f"no implementation of {op} for {ar.infer_backend(x)} arrays")
        return impl(x, *args, **kwargs)

    f.__name__ = f.__qualname__ = op
    f.__doc__ = doc
    return f


# --------------------------------------------------------------------------------------------
# names and dtypes (backend-neutral, by dtype name)
# --------------------------------------------------------------------------------------------


def backend_name(x: Array) -> str:
    """Name of the array library of ``x`` ("numpy", "torch", "jax", ...)."""
    return str(ar.infer_backend(x))


def dtype_name(x: Array) -> str:
    """Backend-neutral dtype name: 'float32', 'complex128', 'bfloat16', ..."""
    return str(x.dtype).replace("torch.", "")  # numpy and jax: numpy's name


def is_complex(x: Array) -> bool:
    return dtype_name(x).startswith("complex")


_REAL_OF = {"complex64": "float32", "complex128": "float64"}


def real_dtype_name(x: Array) -> str:
    """The real dtype of ``x``'s dtype (float32 for complex64, ...)."""
    name = dtype_name(x)
    return _REAL_OF.get(name, name)


def compute_dtype_name(x: Array) -> str:
    """The dtype linear algebra runs in for ``x``: half precision is computed in float32."""
    name = dtype_name(x)
    return "float32" if name in ("float16", "bfloat16") else name


def check_float_dtype(x: Array, name: str) -> None:
    """Raise ``TypeError`` unless ``x`` has a floating or complex dtype.

    Integer and boolean arrays are *not* promoted: a decomposition of an integer matrix is
    floating point, and tnlm never changes a dtype behind the caller's back.
    """
    dt = dtype_name(x)
    if not dt.startswith(("float", "complex", "bfloat")):
        raise TypeError(
            f"{name} has dtype {dt}; expected a floating or complex dtype "
            f"(float32, float64, complex64, complex128, ...). Integer and boolean arrays are "
            f"not promoted automatically: cast explicitly, e.g. {name}.astype(float) or "
            f"{name}.double()."
        )


#: (eps, maxexp) of the real dtypes numpy has no finfo for.
_FINFO = {"bfloat16": (2.0**-7, 128)}


def real_dtype_eps(x: Array) -> float:
    """Machine epsilon of the real dtype of ``x`` (float32 for complex64, etc.)."""
    name = real_dtype_name(x)
    return _FINFO[name][0] if name in _FINFO else float(np.finfo(np.dtype(name)).eps)


def real_dtype_max_exponent(x: Array) -> int:
    """``finfo.maxexp`` of the real dtype of ``x``: its values are below ``2**maxexp``
    (1024 for float64, 128 for float32 and bfloat16, 16 for float16)."""
    name = real_dtype_name(x)
    return _FINFO[name][1] if name in _FINFO else int(np.finfo(np.dtype(name)).maxexp)


def astype(x: Array, name: str) -> Array:
    """``x`` in the dtype called ``name`` (no copy when it already is)."""
    return x if dtype_name(x) == name else ar.astype(x, name)


def cast_like(x: Array, ref: Array) -> Array:
    """``x`` in ``ref``'s dtype (no copy when it already is)."""
    return astype(x, dtype_name(ref))


has_double = dispatching(
    "has_double", "Whether ``x``'s backend computes in float64 (jax: only with x64 enabled)."
)


@register("has_double")
def _has_double(x: Array) -> bool:
    return True


@register("has_double", "jax")
def _jax_has_double(x: Array) -> bool:
    import jax

    return bool(jax.config.read("jax_enable_x64"))


def upcast(x: Array) -> Array:
    """``x`` in double precision (float32 -> float64, complex64 -> complex128); other dtypes
    (already double), and backends without double precision, are returned as they are."""
    name = dtype_name(x)
    wide = {"float32": "float64", "complex64": "complex128"}.get(name)
    if wide is None or not has_double(x):
        return x
    return ar.astype(x, wide)


uses_process_blas = dispatching(
    "uses_process_blas",
    "Whether ``x``'s linear algebra runs on the process's BLAS through threadpoolctl's "
    "reach (numpy/scipy); torch and jax have their own thread pools, which tnlm leaves alone.",
)


@register("uses_process_blas")
def _no_process_blas(x: Array) -> bool:
    return False


@register("uses_process_blas", "numpy")
def _numpy_process_blas(x: Array) -> bool:
    return True


# --------------------------------------------------------------------------------------------
# conversion and creation
# --------------------------------------------------------------------------------------------

to_numpy = dispatching(
    "to_numpy",
    "A numpy copy/view of ``x`` without autograd history (moved to host; half precision of "
    "torch and jax as float32).",
)


@register("to_numpy", "numpy")
def _numpy_to_numpy(x: Array) -> np.ndarray:
    return np.asarray(x)


@register("to_numpy")
def _generic_to_numpy(x: Array) -> np.ndarray:
    return np.asarray(ar.to_numpy(x))


@register("to_numpy", "torch")
def _torch_to_numpy(x: Array) -> np.ndarray:
    t = x.detach().cpu().resolve_conj().resolve_neg()  # lazy conj views (MPO.H) have no numpy
    if t.dtype.is_floating_point and t.dtype.itemsize < 4:
        t = t.float()
    return t.numpy()  # type: ignore[no-any-return]


@register("to_numpy", "jax")
def _jax_to_numpy(x: Array) -> np.ndarray:
    import jax

    try:
        a = np.asarray(jax.lax.stop_gradient(x))
    except jax.errors.TracerArrayConversionError as e:
        raise TypeError(
            "tnlm needs the values of this jax array (ranks, norms and reports depend on the "
            "data) but it is abstract, as inside jax.jit or jax.vmap; expected a concrete "
            "array: call tnlm outside jit/vmap (jax.grad and jax.jvp are supported)"
        ) from e
    return a.astype(np.float32) if a.dtype.itemsize < 4 and a.dtype.kind not in "biuc" else a


from_numpy = dispatching(
    "from_numpy",
    "``from_numpy(ref, data)``: numpy ``data`` as an array like ``ref`` (backend, dtype, device).",
)


@register("from_numpy", "numpy")
def _numpy_from_numpy(ref: Array, data: Any) -> Array:
    return np.asarray(data, dtype=ref.dtype)


@register("from_numpy", "torch")
def _torch_from_numpy(ref: Array, data: Any) -> Array:
    import torch

    return torch.as_tensor(np.asarray(data), dtype=ref.dtype, device=ref.device)


@register("from_numpy")
def _generic_from_numpy(ref: Array, data: Any) -> Array:
    name = dtype_name(ref)
    a = np.asarray(data)
    if not name.startswith("complex") and a.dtype.kind == "c":
        a = a.real
    return astype(ar.do("asarray", a, like=backend_name(ref)), name)


def like(data: Any, ref: Array) -> Array:
    """``data`` (numpy array or nested lists) as an array like ``ref`` (backend, dtype, device)."""
    return from_numpy(ref, data)


def like_real(data: Any, ref: Array) -> Array:
    """``data`` as an array of ``ref``'s *real* dtype (float32 for complex64, ...), backend
    and device."""
    return from_numpy(zeros_like_shape((0,), ref, real_dtype_name(ref)), data)


_zeros = dispatching("zeros", "``zeros(ref, shape, dtype_name)``.")


@register("zeros")
def _generic_zeros(ref: Array, shape: tuple[int, ...], name: str) -> Array:
    be = backend_name(ref)
    return ar.do("zeros", shape, like=be, dtype=ar.to_backend_dtype(name, like=be))


@register("zeros", "torch")
def _torch_zeros(ref: Array, shape: tuple[int, ...], name: str) -> Array:
    import torch

    return torch.zeros(shape, dtype=getattr(torch, name), device=ref.device)


def zeros_like_shape(shape: tuple[int, ...], ref: Array, dtype: str | None = None) -> Array:
    """Zeros of ``shape`` like ``ref`` (backend, device; ``ref``'s dtype unless ``dtype``)."""
    return _zeros(ref, shape, dtype or dtype_name(ref))


_eye = dispatching("eye", "``eye(ref, n)``: the n x n identity like ``ref``.")


@register("eye")
def _generic_eye(ref: Array, n: int) -> Array:
    be = backend_name(ref)
    return ar.do("eye", n, like=be, dtype=ar.to_backend_dtype(dtype_name(ref), like=be))


@register("eye", "torch")
def _torch_eye(ref: Array, n: int) -> Array:
    import torch

    return torch.eye(n, dtype=ref.dtype, device=ref.device)


def eye_like(n: int, ref: Array) -> Array:
    """The n x n identity like ``ref`` (backend, dtype, device)."""
    return _eye(ref, n)


copy = dispatching("copy", "A copy of ``x`` that shares no storage with it (torch: ``clone``).")


@register("copy")
def _generic_copy(x: Array) -> Array:
    return ar.do("copy", x)


@register("copy", "torch")
def _torch_copy(x: Array) -> Array:
    return x.clone()


def all_finite(x: Array) -> bool:
    """Whether every entry of ``x`` is finite."""
    return bool(ar.do("all", ar.do("isfinite", x)))


def device_of(x: Array) -> Any:
    return getattr(x, "device", "cpu")


# --------------------------------------------------------------------------------------------
# autograd
# --------------------------------------------------------------------------------------------

requires_grad = dispatching(
    "requires_grad",
    "Whether autodiff records operations on ``x`` (a torch tensor that requires grad; a "
    "jax tracer, as inside ``jax.grad``).",
)


@register("requires_grad")
def _generic_requires_grad(x: Array) -> bool:
    return bool(getattr(x, "requires_grad", False))


@register("requires_grad", "jax")
def _jax_requires_grad(x: Array) -> bool:
    import jax

    return isinstance(x, jax.core.Tracer)


stop_gradient = dispatching(
    "stop_gradient",
    "``x`` without autograd history (torch: ``detach()``; jax: ``lax.stop_gradient``).",
)


@register("stop_gradient")
def _generic_stop_gradient(x: Array) -> Array:
    return x


@register("stop_gradient", "torch")
def _torch_stop_gradient(x: Array) -> Array:
    return x.detach()


@register("stop_gradient", "jax")
def _jax_stop_gradient(x: Array) -> Array:
    import jax

    return jax.lax.stop_gradient(x)


# --------------------------------------------------------------------------------------------
# LAPACK drivers (no sign convention here: see tnlm.backend.numerics.svd / qr)
# --------------------------------------------------------------------------------------------

svd_raw = dispatching(
    "svd_raw",
    "Thin SVD ``(u, s, vh)`` of a 2-D ``a`` by the backend's driver (numpy: gesdd, then "
    "gesvd if it fails to converge).",
)


def _scipy_svd(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import scipy.linalg as sla

    try:
        return sla.svd(a, full_matrices=False, lapack_driver="gesdd", check_finite=False)
    except (np.linalg.LinAlgError, ValueError):
        log.warning("gesdd did not converge on a %s matrix; retrying with gesvd", a.shape)
        return sla.svd(a, full_matrices=False, lapack_driver="gesvd", check_finite=False)


@register("svd_raw", "numpy")
def _numpy_svd(a: Array) -> tuple[Array, Array, Array]:
    an = np.asarray(a)
    with threads_for(12.0 * max(an.shape) * min(an.shape) ** 2):
        return _scipy_svd(an)


@register("svd_raw", "torch")
def _torch_svd(a: Array) -> tuple[Array, Array, Array]:
    import torch

    from .torch_autograd import safe_linalg

    if a.requires_grad:
        return safe_linalg()[0].apply(a)  # type: ignore[no-any-return]
    try:
        return torch.linalg.svd(a, full_matrices=False)  # type: ignore[no-any-return]
    except RuntimeError:  # torch.linalg.LinAlgError subclasses RuntimeError
        log.warning("torch SVD did not converge on a %s matrix; retrying with gesvd", a.shape)
        if a.is_cuda:
            return torch.linalg.svd(a, full_matrices=False, driver="gesvd")  # type: ignore[no-any-return]
        u, s, vh = _scipy_svd(to_numpy(a))  # resolves lazy conj views (MPO.H cores)
        return (
            torch.as_tensor(u, device=a.device),
            torch.as_tensor(s, device=a.device),
            torch.as_tensor(vh, device=a.device),
        )


@register("svd_raw")
def _generic_svd(a: Array) -> tuple[Array, Array, Array]:
    u, s, vh = ar.do("linalg.svd", a, full_matrices=False)
    return u, s, vh


qr_raw = dispatching("qr_raw", "Reduced QR ``(q, r)`` of a 2-D ``a`` by the backend's driver.")


@register("qr_raw", "numpy")
def _numpy_qr(a: Array) -> tuple[Array, Array]:
    import scipy.linalg as sla

    an = np.asarray(a)
    with threads_for(2.0 * an.shape[0] * an.shape[1] * min(an.shape)):
        q, r = sla.qr(an, mode="economic", check_finite=False)
    return q, r


@register("qr_raw", "torch")
def _torch_qr(a: Array) -> tuple[Array, Array]:
    import torch

    from .torch_autograd import safe_linalg

    if a.requires_grad and a.shape[0] >= a.shape[1]:
        q, r = safe_linalg()[2].apply(a)
    else:
        q, r = torch.linalg.qr(a, mode="reduced")
    return q, r


@register("qr_raw")
def _generic_qr(a: Array) -> tuple[Array, Array]:
    q, r = ar.do("linalg.qr", a)
    return q, r


eigh_desc = dispatching(
    "eigh_desc",
    """Eigen-decomposition of a Hermitian matrix, eigenvalues in *descending* order.

    Returns ``(w, v)``: real ``w`` of shape (m,), ``v`` of shape (m, m) with ``a @ v = v * w``.
    """,
)


@register("eigh_desc", "numpy")
def _numpy_eigh_desc(a: Array) -> tuple[Array, Array]:
    import scipy.linalg as sla

    an = np.asarray(a)
    with threads_for(9.0 * an.shape[0] ** 3):
        w, v = sla.eigh(an, check_finite=False, driver="evd")
    return w[::-1], np.ascontiguousarray(v[:, ::-1])


@register("eigh_desc", "torch")
def _torch_eigh_desc(a: Array) -> tuple[Array, Array]:
    import torch

    from .torch_autograd import safe_linalg

    w, v = safe_linalg()[1].apply(a) if a.requires_grad else torch.linalg.eigh(a)
    return torch.flip(w, dims=(0,)), torch.flip(v, dims=(1,))


@register("eigh_desc")
def _generic_eigh_desc(a: Array) -> tuple[Array, Array]:
    w, v = ar.do("linalg.eigh", a)
    return w[::-1], v[:, ::-1]


svdvals = dispatching("svdvals", "Singular values of ``a`` (descending, real), without vectors.")


@register("svdvals", "numpy")
def _numpy_svdvals(a: Array) -> Array:
    import scipy.linalg as sla

    an = np.asarray(a)
    try:
        with threads_for(4.0 * max(an.shape) * min(an.shape) ** 2):
            return sla.svd(an, compute_uv=False, check_finite=False)
    except (np.linalg.LinAlgError, ValueError):
        log.warning("gesdd did not converge on a %s matrix; retrying with gesvd", an.shape)
        return sla.svd(an, compute_uv=False, check_finite=False, lapack_driver="gesvd")


@register("svdvals", "torch")
def _torch_svdvals(a: Array) -> Array:
    import torch

    return torch.linalg.svdvals(a)


@register("svdvals")
def _generic_svdvals(a: Array) -> Array:
    return ar.do("linalg.svd", a, compute_uv=False)


lu_basis = dispatching(
    "lu_basis",
    """``P L`` of a partially pivoted LU factorisation of a tall ``a`` (m, k): a
    well-conditioned basis of ``a``'s column space, cheaper than QR (no orthogonality). The
    normaliser between power iterations of a randomized SVD (Halko et al. 2011, Sec. 4.5).""",
)


@register("lu_basis", "numpy")
def _numpy_lu_basis(a: Array) -> Array:
    import scipy.linalg as sla

    return sla.lu(np.asarray(a), permute_l=True, check_finite=False)[0]


@register("lu_basis", "torch")
def _torch_lu_basis(a: Array) -> Array:
    import torch

    p, lower, _ = torch.linalg.lu(a)
    return p @ lower


@register("lu_basis", "jax")
def _jax_lu_basis(a: Array) -> Array:
    import jax.scipy.linalg as jsl

    return jsl.lu(a, permute_l=True)[0]


@register("lu_basis")
def _generic_lu_basis(a: Array) -> Array:
    # no LU in autoray's common set: QR spans the same columns (orthonormal, at twice the cost)
    return qr_raw(a)[0]


# --------------------------------------------------------------------------------------------
# raw bytes for files (tnlm.io)
# --------------------------------------------------------------------------------------------

#: Backends :func:`from_host_bytes` can build arrays of.
HOST_BYTES_BACKENDS = ("numpy", "torch", "jax")

to_host_bytes = dispatching(
    "to_host_bytes",
    "The exact data of ``x`` as a numpy array (bfloat16 as its int16 bit pattern).",
)


@register("to_host_bytes")
def _generic_to_host_bytes(x: Array) -> np.ndarray:
    a = np.asarray(ar.to_numpy(stop_gradient(x)))
    return a.view(np.int16) if dtype_name(x) == "bfloat16" else a


@register("to_host_bytes", "torch")
def _torch_to_host_bytes(x: Array) -> np.ndarray:
    import torch

    # resolve lazy conjugate/negative views (MPO.H) first: they have no numpy form
    t = x.detach().cpu().resolve_conj().resolve_neg().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy()  # type: ignore[no-any-return]
    return t.numpy()  # type: ignore[no-any-return]


def from_host_bytes(a: np.ndarray, dtype: str, backend: str, device: Any) -> Array:
    """Inverse of :func:`to_host_bytes`: ``a`` (raw data of dtype ``dtype``) as a new array of
    ``backend`` (one of ``HOST_BYTES_BACKENDS``) on ``device``."""
    return _FROM_HOST_BYTES[backend](a, dtype, device)


def _numpy_from_host_bytes(a: np.ndarray, dtype: str, device: Any) -> Array:
    if dtype == "bfloat16":
        raise ValueError(
            "the file holds bfloat16 cores, which numpy cannot represent; load them with "
            "backend='torch' or backend='jax'"
        )
    return a.copy()


def _torch_from_host_bytes(a: np.ndarray, dtype: str, device: Any) -> Array:
    import torch

    if dtype == "bfloat16":
        return torch.from_numpy(a.copy()).view(torch.bfloat16).to(device)
    return torch.from_numpy(a.copy()).to(device)


def _jax_from_host_bytes(a: np.ndarray, dtype: str, device: Any) -> Array:
    import jax
    import jax.numpy as jnp

    if dtype in ("float64", "complex128") and not jax.config.read("jax_enable_x64"):
        raise ValueError(
            f"the file holds {dtype} cores, which jax stores only with x64 enabled; expected "
            "jax.config.update('jax_enable_x64', True) before loading (or backend='numpy')"
        )
    if dtype == "bfloat16":
        a = a.view(jnp.bfloat16)
    out = jnp.asarray(a.copy())
    return out if device is None or str(device) == "cpu" else jax.device_put(out, device)


_FROM_HOST_BYTES = {
    "numpy": _numpy_from_host_bytes,
    "torch": _torch_from_host_bytes,
    "jax": _jax_from_host_bytes,
}
