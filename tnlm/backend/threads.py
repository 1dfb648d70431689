"""BLAS thread control for numpy sweeps, scoped and restored.

A TT-SVD over numpy data is a chain of GEMM/QR/eigh/LU calls, most of them thin or small, on
which OpenBLAS's thread start-up and synchronisation cost more than they save. Measured on 2
cores: at 768x768 and 768x3072 (bond 64/16/exact) one thread for everything was 1.0-5x faster
than two, with 5x less spread between repeats; at 4096x4096 bond 16 two threads made a
1024 x 26 QR take 30 ms instead of 1.5 ms, while the 256 x 65536 Gram matrix (4.3 Gflop) is
1.6x faster on two. So a sweep runs with one BLAS thread (:func:`blas_threads_for`) and lends
the caller's threads back to single large operations (:func:`threads_for`).

What is scoped, precisely
-------------------------
OpenBLAS and MKL, as threadpoolctl reaches them, have one *process-wide* thread count: no
thread-local setting exists to change. tnlm therefore guarantees:

* the limit is in force only while at least one sweep runs in the process; when the last
  running sweep ends, normally or by an exception, every BLAS library gets back exactly the
  thread count it had before the first of them began (a reference count under a lock, so
  overlapping sweeps in several threads cannot restore each other's temporary values);
* while a sweep runs, other threads' BLAS calls also run with one thread (the count is
  process-wide); :func:`blas_threads_unchanged` opts a context out of any change;
* torch's thread pool (``torch.set_num_threads``, also process-wide) and jax's are never
  changed: only numpy/scipy data (``dispatch.uses_process_blas``) takes this path.

Without threadpoolctl installed nothing is changed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from typing import Any

__all__ = [
    "SMALL_BLAS_WORK",
    "BIG_BLAS_FLOPS",
    "blas_threads_for",
    "threads_for",
    "blas_threads_unchanged",
]

#: numpy inputs with at least this many elements lend the caller's threads to big operations.
SMALL_BLAS_WORK = 1 << 22

#: Flop count from which one BLAS call gets the caller's threads back during a sweep.
BIG_BLAS_FLOPS = 1 << 28


@lru_cache(maxsize=1)
def _thread_controller() -> Any:
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # optional at run time: without it BLAS keeps its own threading
        return None
    import scipy.linalg  # noqa: F401 -- load scipy's BLAS too, so the controller sees it

    return ThreadpoolController()


#: While a sweep runs in this context: the caller's thread count, lent back to single
#: operations of at least ``BIG_BLAS_FLOPS`` (see :func:`threads_for`).
_LENT_THREADS: ContextVar[int | None] = ContextVar("tnlm_lent_blas_threads", default=None)

#: False inside :func:`blas_threads_unchanged`.
_MAY_LIMIT: ContextVar[bool] = ContextVar("tnlm_may_limit_blas_threads", default=True)


class _ProcessLimit:
    """The process-wide one-thread limit, reference counted over overlapping sweeps.

    The first sweep to start records every BLAS library's thread count and sets 1; the
    last to end restores the recorded counts. Lending (:meth:`lend`) raises the count for one
    call and puts it back to 1 while any sweep is still running.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = 0
        self.saved: list[tuple[Any, int]] = []

    def enter(self, ctl: Any) -> int:
        """Start a sweep; return the thread count the first sweep found (the caller's)."""
        with self.lock:
            if self.active == 0:
                libs = ctl.select(user_api="blas").lib_controllers
                self.saved = [(lib, int(lib.num_threads)) for lib in libs]
                for lib, _ in self.saved:
                    lib.set_num_threads(1)
            self.active += 1
            return max((n for _, n in self.saved), default=1)

    def exit(self) -> None:
        with self.lock:
            self.active -= 1
            if self.active == 0:
                for lib, n in self.saved:
                    lib.set_num_threads(n)
                self.saved = []

    def set_lent(self, n: int | None) -> None:
        """``n`` threads for one call (``None``: back to the sweep's one thread)."""
        with self.lock:
            if self.active == 0:  # every sweep ended meanwhile: the counts are restored
                return
            for lib, _ in self.saved:
                lib.set_num_threads(1 if n is None else n)


_LIMIT = _ProcessLimit()


@contextmanager
def blas_threads_for(uses_process_blas: bool, size: int) -> Iterator[None]:
    """Run a TT sweep with one BLAS thread (numpy data: ``uses_process_blas``), lending the
    caller's threads back to single large operations (:func:`threads_for`) when the data has
    at least ``SMALL_BLAS_WORK`` elements (``size``). The thread counts are restored when the
    last overlapping sweep ends, also on an exception (see the module docstring)."""
    ctl = _thread_controller() if uses_process_blas and _MAY_LIMIT.get() else None
    if ctl is None:
        yield
        return
    full = _LIMIT.enter(ctl)
    try:
        token = _LENT_THREADS.set(full if full > 1 and size >= SMALL_BLAS_WORK else None)
        try:
            yield
        finally:
            _LENT_THREADS.reset(token)
    finally:
        _LIMIT.exit()


@contextmanager
def threads_for(flops: float) -> Iterator[None]:
    """Inside :func:`blas_threads_for`: the caller's BLAS threads for one operation of
    ``flops`` >= ``BIG_BLAS_FLOPS``; otherwise (and outside a sweep) nothing changes."""
    full = _LENT_THREADS.get()
    if full is None or flops < BIG_BLAS_FLOPS:
        yield
        return
    _LIMIT.set_lent(full)
    try:
        yield
    finally:
        _LIMIT.set_lent(None)


@contextmanager
def blas_threads_unchanged() -> Iterator[None]:
    """Inside this context (this thread, or this asyncio task) tnlm's sweeps leave the BLAS
    thread counts as they are, for callers that run BLAS work in other threads meanwhile.

    Examples
    --------
    >>> import numpy as np, tnlm
    >>> with tnlm.blas_threads_unchanged():
    ...     mpo = tnlm.mpo_decompose(np.eye(16), ((4, 4), (4, 4)))
    >>> mpo.bond_dims
    (16,)
    """
    token = _MAY_LIMIT.set(False)
    try:
        yield
    finally:
        _MAY_LIMIT.reset(token)
