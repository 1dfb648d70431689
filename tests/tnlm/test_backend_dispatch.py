"""One dispatch point for every backend difference, and BLAS thread limits that are scoped
and restored."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import tnlm
from tnlm import truncation
from tnlm.backend import threads

TNLM = Path(tnlm.__file__).resolve().parent

# --------------------------------------------------------------------------------------------
# one dispatch point
# --------------------------------------------------------------------------------------------

#: What an algorithm module would contain if it branched on, or reached into, one backend.
_BACKEND_CODE = re.compile(
    r"is_torch|import torch|import jax|\.detach\(|\.clone\(|torch\.|jax\.|jnp\."
    r"|backend_name\([^)]*\)\s*==|dtype\.kind"
)


@pytest.mark.parametrize(
    "module",
    ["decompose.py", "_tt_ops.py", "truncation.py", "mpo.py", "contract.py", "_checks.py"],
)
def test_algorithms_have_no_backend_branches(module):
    """Backend differences live in tnlm/backend/ only (io.py reads torch files for the CLI's
    sake in cli.py, not here)."""
    text = (TNLM / module).read_text()
    hits = [m.group(0) for m in _BACKEND_CODE.finditer(text)]
    assert hits == [], f"{module} has backend-specific code: {hits}"


def test_io_has_no_backend_branches():
    text = (TNLM / "io.py").read_text()
    assert [m.group(0) for m in _BACKEND_CODE.finditer(text)] == []


# --------------------------------------------------------------------------------------------
# BLAS threads: scoped, restored on error, not leaked by overlapping sweeps
# --------------------------------------------------------------------------------------------


def _blas_counts():
    ctl = threads._thread_controller()
    if ctl is None:
        pytest.skip("threadpoolctl is not installed: tnlm leaves BLAS threads alone")
    libs = ctl.select(user_api="blas").lib_controllers
    if not libs:
        pytest.skip("no BLAS library visible to threadpoolctl")
    return [int(lib.num_threads) for lib in libs]


@pytest.fixture
def two_blas_threads():
    """Every BLAS library at two threads for the test (so that a limit of 1 is visible),
    the counts found before restored afterwards."""
    from threadpoolctl import threadpool_limits

    _blas_counts()
    with threadpool_limits(limits=2, user_api="blas"):
        if max(_blas_counts()) < 2:
            pytest.skip("this BLAS cannot run two threads")
        yield _blas_counts()


def test_thread_limit_is_restored_when_the_sweep_raises(monkeypatch, two_blas_threads):
    seen = []

    def failing_split(*args, **kwargs):
        seen.append(_blas_counts())
        raise RuntimeError("split failed (test)")

    monkeypatch.setattr("tnlm._tt_ops.truncated_split", failing_split)
    w = np.random.default_rng(0).standard_normal((16, 16))
    with pytest.raises(RuntimeError, match="split failed"):
        tnlm.mpo_decompose(w, ((4, 4), (4, 4)), bond_dim=2)
    assert seen == [[1] * len(two_blas_threads)]  # limited inside the sweep
    assert _blas_counts() == two_blas_threads  # restored after the exception


def test_lending_inside_a_sweep_returns_to_one_thread(two_blas_threads):
    with threads.blas_threads_for(True, threads.SMALL_BLAS_WORK):
        with threads.threads_for(threads.BIG_BLAS_FLOPS):
            assert _blas_counts() == two_blas_threads
        with threads.threads_for(threads.BIG_BLAS_FLOPS - 1):
            assert _blas_counts() == [1] * len(two_blas_threads)
        assert _blas_counts() == [1] * len(two_blas_threads)
    assert _blas_counts() == two_blas_threads


def test_blas_threads_unchanged_leaves_the_counts(monkeypatch, two_blas_threads):
    seen = []
    real = truncation.truncated_split

    def spy(*args, **kwargs):
        seen.append(_blas_counts())
        return real(*args, **kwargs)

    monkeypatch.setattr("tnlm._tt_ops.truncated_split", spy)
    w = np.random.default_rng(1).standard_normal((16, 16))
    with tnlm.blas_threads_unchanged():
        tnlm.mpo_decompose(w, ((4, 4), (4, 4)), bond_dim=2)
    assert seen and all(c == two_blas_threads for c in seen)
    seen.clear()
    tnlm.mpo_decompose(w, ((4, 4), (4, 4)), bond_dim=2)  # outside: limited again
    assert seen and all(c == [1] * len(two_blas_threads) for c in seen)
