"""Shared pieces of the benchmarks: test matrices, peer adapters, timing and the machine record.

Every benchmark times all contestants on the *same* input inside one repeat loop
(round-robin), so that load on a shared machine hits every contestant alike; the reported
number is the median over repeats.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

import tnlm
from tnlm.factorize import factorize

N_CORES = 5

#: The matrix sizes of issue 2 (BERT-base: attention 768x768, FFN 768x3072, and 4096x4096).
SIZES = ((768, 768), (768, 3072), (4096, 4096))
QUICK_SIZES = ((768, 768), (768, 3072))


def dims_for(rows: int, cols: int, n: int = N_CORES) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The balanced factorisation tnlm uses for ``shape=n`` (same for every contestant)."""
    return factorize(rows, n), factorize(cols, n)


# ------------------------------------------------------------------------------------------
# test matrices
# ------------------------------------------------------------------------------------------


def gaussian_matrix(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """Plain Gaussian matrix, entries N(0, 1/cols), float64: flat TT spectra."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((rows, cols)) / math.sqrt(cols)


def decaying_matrix(rows: int, cols: int, seed: int = 0, tau: float = 8.0) -> np.ndarray:
    """Matrix whose TT unfoldings have geometrically decaying spectra, float64, ||W||_F = 1.

    Random MPO with bond dimension up to 160 whose bond index ``b`` is weighted by
    ``exp(-b / tau)``: the truncation error of the exact TT-SVD is about ``exp(-r / tau)``
    per bond (~3e-4 at bond 64, ~0.1 at bond 16 for tau = 8), the regime where a float32
    randomized SVD without enough power iterations loses accuracy.
    """
    rng = np.random.default_rng(seed)
    rd, cd = dims_for(rows, cols)
    n = len(rd)
    phys = [i * j for i, j in zip(rd, cd)]
    full = [min(math.prod(phys[: k + 1]), math.prod(phys[k + 1 :])) for k in range(n - 1)]
    ranks = [1] + [min(f, 160) for f in full] + [1]
    cores = []
    for k in range(n):
        c = rng.standard_normal((ranks[k], rd[k], cd[k], ranks[k + 1]))
        c /= math.sqrt(ranks[k] * rd[k] * cd[k])
        if k < n - 1:
            c *= np.exp(-np.arange(ranks[k + 1]) / tau)
        cores.append(c)
    w = tnlm.MPO(cores).to_dense()
    return w / np.linalg.norm(w)


MATRICES: dict[str, Callable[[int, int], np.ndarray]] = {
    "decay": decaying_matrix,
    "gaussian": gaussian_matrix,
}


def full_ranks(rows: int, cols: int) -> list[int]:
    rd, cd = dims_for(rows, cols)
    phys = [i * j for i, j in zip(rd, cd)]
    return [min(math.prod(phys[: k + 1]), math.prod(phys[k + 1 :])) for k in range(len(rd) - 1)]


# ------------------------------------------------------------------------------------------
# peers
# ------------------------------------------------------------------------------------------


def quimb_from_dense(w: np.ndarray, bond_dim: int | None, method: str = "svd") -> Any:
    """quimb: ``MatrixProductOperator.from_dense`` (square); the same split loop for rectangles.

    quimb's ``from_dense`` reshapes to ``(*dims, *dims)`` and so refuses rectangular matrices;
    for those we run the identical loop (``Tensor.split`` with ``from_dense``'s defaults:
    ``absorb="right"``, ``cutoff_mode="rsum2"``) on ``W`` reshaped to
    ``(*row_dims, *col_dims)``. Returns a quimb tensor network with upper indices ``k{i}``
    (rows) and lower indices ``b{i}`` (columns).

    ``bond_dim=None`` is the exact decomposition (``cutoff=0``: quimb then splits by QR).
    """
    import quimb.tensor as qtn

    rd, cd = dims_for(*w.shape)
    opts: dict[str, Any] = {"max_bond": bond_dim, "cutoff": 0.0}
    if bond_dim is not None and method != "svd":
        opts["method"] = method
    if rd == cd:
        return qtn.MatrixProductOperator.from_dense(w, rd, **opts)
    n = len(rd)
    uix = [f"k{i}" for i in range(n)]
    lix = [f"b{i}" for i in range(n)]
    tm = qtn.Tensor(data=w.reshape(rd + cd), inds=uix + lix)
    opts.setdefault("cutoff_mode", "rel" if opts.get("method") == "svd:rand" else "rsum2")
    tensors = []
    for i in range(n - 1):
        left, tm = tm.split(
            left_inds=None,
            right_inds=uix[i + 1 :] + lix[i + 1 :],
            ltags=f"I{i}",
            get="tensors",
            absorb="right",
            **opts,
        )
        tensors.append(left)
    tm.add_tag(f"I{n - 1}")
    tensors.append(tm)
    return qtn.TensorNetwork(tensors)


def quimb_to_dense(tn: Any, rows: int, cols: int) -> np.ndarray:
    n = len(dims_for(rows, cols)[0])
    dense = tn.to_dense([f"k{i}" for i in range(n)], [f"b{i}" for i in range(n)])
    return np.asarray(dense).reshape(rows, cols)


def tensorly_decompose(w: np.ndarray, bond_dim: int | None, svd: str = "truncated_svd") -> Any:
    """TensorLy: ``tensor_train_matrix`` on ``W`` reshaped to ``(i_1..i_n, j_1..j_n)``.

    ``bond_dim=None`` passes the full ranks (TensorLy only takes ranks).
    """
    from tensorly.decomposition import tensor_train_matrix

    rows, cols = w.shape
    rd, cd = dims_for(rows, cols)
    inner = full_ranks(rows, cols) if bond_dim is None else [bond_dim] * (len(rd) - 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tensor_train_matrix(w.reshape(rd + cd), [1, *inner, 1], svd=svd, random_state=0)


def tensorly_to_dense(ttm: Any, rows: int, cols: int) -> np.ndarray:
    from tensorly.tt_matrix import tt_matrix_to_tensor

    return np.asarray(tt_matrix_to_tensor(ttm)).reshape(rows, cols)


# ------------------------------------------------------------------------------------------
# timing and bookkeeping
# ------------------------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def median(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def rel_error(w64: np.ndarray, approx: Any) -> float:
    """``||W - W'||_F / ||W||_F`` in float64."""
    a = tnlm._backend.to_numpy(approx).astype(np.float64)  # noqa: SLF001
    return float(np.linalg.norm(w64 - a) / np.linalg.norm(w64))


def machine_info() -> dict[str, Any]:
    import scipy

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": _cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "tnlm": tnlm.__version__,
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "load_average_at_start": os.getloadavg(),
    }
    for mod in ("torch", "quimb", "tensorly"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            info[mod] = None
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def write_json(path: str, payload: dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=1, default=str)
    os.replace(tmp, path)


def round_robin(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 2) -> dict:
    """Median wall time (s) of each function, timed in interleaved order."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}
