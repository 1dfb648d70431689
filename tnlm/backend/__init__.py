"""Array backends: per-call dispatch, double-precision numerics, BLAS thread control.

* :mod:`tnlm.backend.dispatch` -- the one place where array libraries differ (numpy, torch,
  jax registered; any other autoray backend through the generic implementations);
* :mod:`tnlm.backend.numerics` -- norms, Gram matrices and residuals in double precision,
  the SVD and QR with one sign convention, seeded sketches;
* :mod:`tnlm.backend.threads` -- the one-thread BLAS limit of numpy sweeps, scoped and
  restored;
* :mod:`tnlm.backend.torch_autograd` -- torch backward passes that stay finite at
  degenerate spectra.

The algorithms import this package as ``B`` and call ``B.<helper>``.
"""

from __future__ import annotations

from .dispatch import (
    HOST_BYTES_BACKENDS,
    all_finite,
    astype,
    backend_name,
    cast_like,
    check_float_dtype,
    compute_dtype_name,
    copy,
    device_of,
    dtype_name,
    eigh_desc,
    eye_like,
    from_host_bytes,
    from_numpy,
    has_double,
    is_complex,
    like,
    like_real,
    lu_basis,
    qr_raw,
    real_dtype_eps,
    real_dtype_max_exponent,
    real_dtype_name,
    requires_grad,
    stop_gradient,
    svd_raw,
    svdvals,
    to_host_bytes,
    to_numpy,
    upcast,
    uses_process_blas,
    zeros_like_shape,
)
from .numerics import (
    fix_signs,
    fnorm,
    gram,
    qr,
    randn,
    residual_sq_norm,
    row_sq_norms,
    sq_norm,
    svd,
)
from .threads import (
    BIG_BLAS_FLOPS,
    SMALL_BLAS_WORK,
    blas_threads_for,
    blas_threads_unchanged,
    threads_for,
)

__all__ = [
    "HOST_BYTES_BACKENDS",
    "from_host_bytes",
    "to_host_bytes",
    "all_finite",
    "astype",
    "backend_name",
    "cast_like",
    "check_float_dtype",
    "compute_dtype_name",
    "copy",
    "device_of",
    "dtype_name",
    "eigh_desc",
    "eye_like",
    "from_numpy",
    "has_double",
    "is_complex",
    "like",
    "like_real",
    "lu_basis",
    "qr_raw",
    "real_dtype_eps",
    "real_dtype_max_exponent",
    "real_dtype_name",
    "requires_grad",
    "stop_gradient",
    "svd_raw",
    "svdvals",
    "to_numpy",
    "upcast",
    "uses_process_blas",
    "zeros_like_shape",
    "fix_signs",
    "fnorm",
    "gram",
    "qr",
    "randn",
    "residual_sq_norm",
    "row_sq_norms",
    "sq_norm",
    "svd",
    "BIG_BLAS_FLOPS",
    "SMALL_BLAS_WORK",
    "blas_threads_for",
    "blas_threads_unchanged",
    "threads_for",
]
