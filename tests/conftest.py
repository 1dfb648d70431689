"""Shared test fixtures: array backends, dtypes, constructed test matrices, hypothesis profiles.

Every array test takes the ``backend`` fixture (numpy, torch and jax) and usually ``dtype``
(float32, float64, complex64, complex128), so it runs on each combination. ``backend`` makes
arrays in its library and checks that results came back in that library with the expected
dtype: a torch or jax test fails if anything silently became numpy (or changed dtype). The jax
backend turns on ``jax_enable_x64`` (once, before it makes an array), since without it jax has
no float64 or complex128; torch and jax are skipped, visibly, where they are not installed.

Hypothesis profiles: "ci" is deterministic (derandomized, modest example counts), "dev" explores
more. "ci" is loaded when the environment variable ``CI`` is set, else "dev";
``HYPOTHESIS_PROFILE`` overrides both.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=12,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "dev",
    max_examples=40,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)

DTYPES = ("float32", "float64", "complex64", "complex128")


# --------------------------------------------------------------------------------------------
# backends
# --------------------------------------------------------------------------------------------


def enable_jax_x64() -> None:
    """Turn on jax's double precision (float64, complex128) for the test session.

    Without it jax silently makes float32 of every float64 request. It is a process-wide
    switch that only widens what jax can represent, so turning it on once, before the first
    jax array of the session, is safe for every later jax test.
    """
    import jax

    if not jax.config.read("jax_enable_x64"):
        jax.config.update("jax_enable_x64", True)


@dataclass(frozen=True)
class Backend:
    """Make arrays in one library (numpy, torch or jax) and check that results stay in it."""

    name: str

    @property
    def dtypes(self) -> tuple[str, ...]:
        """Dtype names this backend supports (all three support all of DTYPES)."""
        return DTYPES

    def native_dtype(self, dtype: str) -> Any:
        if self.name == "torch":
            import torch

            return getattr(torch, dtype)
        if self.name == "jax":
            import jax.numpy as jnp

            return jnp.dtype(dtype)
        return np.dtype(dtype)

    def asarray(self, a: Any, dtype: str) -> Any:
        """``a`` (numpy data) as an array of this backend with ``dtype``."""
        a = np.asarray(a)
        if dtype == "bfloat16" or np.dtype(dtype).kind != "c":
            a = a.real
        if self.name == "torch":
            import torch

            return torch.as_tensor(np.array(a, order="C")).to(self.native_dtype(dtype))
        if self.name == "jax":
            import jax.numpy as jnp

            return jnp.asarray(np.array(a, order="C"), dtype=self.native_dtype(dtype))
        return np.array(a, dtype=dtype, order="C")

    def to_numpy(self, x: Any) -> np.ndarray:
        """A float64/complex128 numpy copy of ``x`` (any backend)."""
        if self.name == "torch" and not isinstance(x, (np.ndarray, np.generic)):
            import torch

            t = x.detach().cpu().resolve_conj().resolve_neg()
            t = t.to(torch.complex128 if t.dtype.is_complex else torch.float64)
            return t.numpy()
        a = np.asarray(x)  # numpy, and jax (concrete arrays convert directly)
        return a.astype(np.complex128 if a.dtype.kind == "c" else np.float64)

    def spectral(
        self, rows: int, cols: int, seed: int, decay: float, dtype: str, scale: float = 1.0
    ) -> tuple[Any, np.ndarray]:
        """A constructed-spectrum matrix in this backend and dtype, and its exact values as a
        float64/complex128 numpy oracle (after rounding to ``dtype``)."""
        w = self.asarray(spectral_matrix(rows, cols, seed, decay, dtype, scale), dtype)
        return w, self.to_numpy(w)

    def check(self, x: Any, dtype: str) -> None:
        """Assert that ``x`` is an array of this backend with ``dtype``."""
        if self.name == "torch":
            import torch

            assert isinstance(x, torch.Tensor), f"expected a torch.Tensor, got {type(x)}"
            assert x.dtype == self.native_dtype(dtype), f"dtype {x.dtype}, expected {dtype}"
        elif self.name == "jax":
            import jax

            assert isinstance(x, jax.Array), f"expected a jax.Array, got {type(x)}"
            assert x.dtype == self.native_dtype(dtype), f"dtype {x.dtype}, expected {dtype}"
        else:
            assert isinstance(x, (np.ndarray, np.generic)), f"expected numpy, got {type(x)}"
            assert np.dtype(x.dtype) == np.dtype(dtype), f"dtype {x.dtype}, expected {dtype}"


@pytest.fixture(scope="session", params=["numpy", "torch", "jax"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "torch":
        pytest.importorskip("torch")
    if request.param == "jax":
        pytest.importorskip("jax")
        enable_jax_x64()
    return Backend(request.param)


#: The tests whose jax parametrisation runs by default: fixed-shape tests of bad input,
#: contract, decompose, io, planning, promotions and shared cores. jax compiles each
#: operation anew for every array shape, so the hypothesis tests, which draw new shapes per
#: example, cost about 8 s of CPU per case on jax against a fraction of a second on numpy
#: (measured for issue 10, section 4); the algebra they check is covered on jax, at fixed
#: shapes, by tests/tnlm/test_backend_jax.py. ``TNLM_TEST_JAX=all`` runs the jax
#: parametrisation of every test.
#: tests/tnlm/test_backend_jax.py checks that each name here is a test taking ``backend``.
JAX_SUBSET: frozenset[str] = frozenset(
    {
        "test_bad_input.py::test_non_finite_entries",
        "test_bad_input.py::test_integer_and_boolean_dtypes_are_not_promoted",
        "test_bad_input.py::test_mismatched_neighbouring_cores",
        "test_contract_factorize.py::test_contract_explicit_path_and_spaces",
        "test_decompose.py::test_auto_picks_randomized_svd_on_a_large_unfolding",
        "test_interop_io.py::test_save_load_tensor_train_and_unreported",
        "test_planning.py::test_chosen_contraction_equals_the_dense_product",
        "test_safety_algebra.py::test_negation_and_subtraction_keep_the_dtype",
        "test_safety_algebra.py::test_trains_of_different_backend_or_dtype",
        "test_safety_algebra.py::test_saved_and_loaded_objects_round_trip",
        "test_safety_numerics.py::test_tol_is_honoured_by_the_computed_cores",
        "test_shared_decompose.py::test_recovers_matrices_that_share_a_core",
    }
)


def _jax_runs_all() -> bool:
    return os.environ.get("TNLM_TEST_JAX", "").strip().lower() == "all"


def _subset_key(item: pytest.Item) -> str:
    return f"{Path(str(item.fspath)).name}::{getattr(item, 'originalname', item.name)}"


def pytest_report_header(config: pytest.Config) -> str:
    if _jax_runs_all():
        return "jax backend: every test (TNLM_TEST_JAX=all)"
    return (
        f"jax backend: {len(JAX_SUBSET)} representative tests (tests/conftest.py JAX_SUBSET); "
        "the jax cases of the others are deselected: TNLM_TEST_JAX=all runs them"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the jax cases of tests outside ``JAX_SUBSET`` (unless TNLM_TEST_JAX=all)."""
    if _jax_runs_all():
        return
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        is_jax = callspec is not None and callspec.params.get("backend") == "jax"
        (drop if is_jax and _subset_key(item) not in JAX_SUBSET else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session", params=DTYPES)
def dtype(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session", params=("float32", "float64"))
def real_dtype(request: pytest.FixtureRequest) -> str:
    return request.param


# --------------------------------------------------------------------------------------------
# tolerances
# --------------------------------------------------------------------------------------------


def eps_of(dtype: str) -> float:
    """Machine epsilon of the real part of ``dtype``."""
    if dtype == "bfloat16":
        return 2.0**-7
    return float(np.finfo(np.dtype(dtype)).eps)


def real_of(dtype: str) -> str:
    return {"complex64": "float32", "complex128": "float64"}.get(dtype, dtype)


def atol(dtype: str, size: int, scale: float, c: float = 10.0) -> float:
    """Absolute rounding allowance ``c * eps * sqrt(size) * scale`` for a result of ``size``
    entries computed from data of norm ``scale`` in ``dtype``."""
    return c * eps_of(dtype) * math.sqrt(max(size, 1)) * scale


# --------------------------------------------------------------------------------------------
# constructed test data (explicit seeds, private generators)
# --------------------------------------------------------------------------------------------


def random_orthonormal(rng: np.random.Generator, m: int, k: int, complex_: bool) -> np.ndarray:
    """``m x k`` matrix with orthonormal columns (Haar-like, from a QR of a Gaussian)."""
    a = rng.standard_normal((m, k))
    if complex_:
        a = a + 1j * rng.standard_normal((m, k))
    q, r = np.linalg.qr(a)
    d = np.diagonal(r)
    return q * (d / np.abs(d))[None, :]


def spectral_matrix(
    rows: int, cols: int, seed: int, decay: float, dtype: str = "float64", scale: float = 1.0
) -> np.ndarray:
    """``U diag(s) V^H`` with ``s_k = scale * exp(-decay * k)``: a matrix whose singular
    values are chosen (distinct, decaying), with random orthonormal factors from ``seed``."""
    rng = np.random.default_rng(seed)
    k = min(rows, cols)
    cplx = dtype != "bfloat16" and np.dtype(dtype).kind == "c"
    u = random_orthonormal(rng, rows, k, cplx)
    v = random_orthonormal(rng, cols, k, cplx)
    s = scale * np.exp(-decay * np.arange(k))
    return (u * s[None, :]) @ v.conj().T


def spectral_tensor(dims: Sequence[int], seed: int, decay: float, dtype: str) -> np.ndarray:
    """A tensor of shape ``dims`` whose unfolding at the middle has a constructed spectrum."""
    dims = tuple(dims)
    h = len(dims) // 2 if len(dims) > 1 else 1
    rows, cols = math.prod(dims[:h]), math.prod(dims[h:])
    return spectral_matrix(rows, cols, seed, decay, dtype).reshape(dims)


def full_ranks(dims: Sequence[int]) -> tuple[int, ...]:
    """``r_k = min(prod_{m<=k} d_m, prod_{m>k} d_m)`` for k = 1..n-1."""
    return tuple(
        min(math.prod(dims[: k + 1]), math.prod(dims[k + 1 :])) for k in range(len(dims) - 1)
    )


def interleave(w: np.ndarray, row_dims: Sequence[int], col_dims: Sequence[int]) -> np.ndarray:
    """``W`` as the tensor the MPO factorises: axes ``(i_1 j_1, ..., i_n j_n)`` merged."""
    n = len(row_dims)
    t = np.asarray(w).reshape(tuple(row_dims) + tuple(col_dims))
    t = t.transpose([ax for k in range(n) for ax in (k, n + k)])
    return t.reshape([i * j for i, j in zip(row_dims, col_dims)])


def unfolding_spectra(t: np.ndarray) -> list[np.ndarray]:
    """Singular values of every unfolding ``(d_1..d_k) x (d_{k+1}..d_n)``, k = 1..n-1
    (numpy's SVD: the oracle)."""
    dims = t.shape
    return [
        np.linalg.svd(t.reshape(math.prod(dims[: k + 1]), -1), compute_uv=False)
        for k in range(len(dims) - 1)
    ]


# --------------------------------------------------------------------------------------------
# hypothesis strategies (drawn inside tests with st.data(), via the ``tn`` fixture)
# --------------------------------------------------------------------------------------------

#: Largest factor per core for n cores: keeps every test matrix below ~6,600 entries.
_MAX_FACTOR = {1: 4, 2: 4, 3: 4, 4: 3}


@st.composite
def mpo_shapes(draw: Any, min_cores: int = 1, max_cores: int = 4) -> tuple[tuple[int, ...], ...]:
    """``(row_dims, col_dims)``: n in [min_cores, max_cores] cores, factors 1..4."""
    n = draw(st.integers(min_cores, max_cores))
    f = st.integers(1, _MAX_FACTOR[n])
    rows = tuple(draw(st.lists(f, min_size=n, max_size=n)))
    cols = tuple(draw(st.lists(f, min_size=n, max_size=n)))
    return rows, cols


seeds = st.integers(0, 2**32 - 1)
decays = st.floats(0.05, 1.5)


class _Namespace:
    """Helpers reachable from tests as ``tn.<name>``."""

    Backend = Backend
    JAX_SUBSET = JAX_SUBSET
    enable_jax_x64 = staticmethod(enable_jax_x64)
    mpo_shapes = staticmethod(mpo_shapes)
    seeds = seeds
    decays = decays
    spectral_matrix = staticmethod(spectral_matrix)
    spectral_tensor = staticmethod(spectral_tensor)
    random_orthonormal = staticmethod(random_orthonormal)
    full_ranks = staticmethod(full_ranks)
    interleave = staticmethod(interleave)
    unfolding_spectra = staticmethod(unfolding_spectra)
    eps_of = staticmethod(eps_of)
    real_of = staticmethod(real_of)
    atol = staticmethod(atol)


@pytest.fixture(scope="session")
def tn() -> _Namespace:
    return _Namespace()


# ---------------------------------------------------------------------------------------------
# Real data (../shared/data or $TNLM_DATA): required under CI, a visible skip elsewhere
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder of the real data sets (see ../shared/data/README.md).

    Taken from ``$TNLM_DATA``, else ``../shared/data`` beside the repository. Missing data
    fails the test when ``CI`` is set (CI always has it) and skips it, with the reason shown
    by ``-ra``, on a user's machine without it.
    """
    root = Path(os.environ.get("TNLM_DATA", Path(__file__).resolve().parents[1] / "../shared/data"))
    if not (root / "README.md").is_file():
        msg = f"real data folder not found at {root}; set TNLM_DATA to the shared data folder"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return root.resolve()
