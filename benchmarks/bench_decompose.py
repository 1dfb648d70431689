"""Dense matrix -> MPO: tnlm against quimb and TensorLy, in one run, on the same inputs.

Usage::

    python benchmarks/bench_decompose.py [--quick] [--repeats 5] \\
        [--out docs/benchmarks/decompose.json]

For every size (768x768, 768x3072, 4096x4096; ``--quick``: the first two), dtype (float32,
float64), test matrix ("decay": geometrically decaying TT spectra; "gaussian") and bond cap
(64, 16, None = exact) it times, round-robin inside each repeat:

* ``tnlm`` (``method="auto"``) on the numpy input and on the same matrix as a torch tensor;
* ``tnlm-svd``: tnlm with the exact LAPACK SVD at every bond (the "exact truncated TT-SVD");
* ``quimb``: ``MatrixProductOperator.from_dense`` (exact SVD; QR sweeps when exact), with the
  same split loop for rectangular matrices, which ``from_dense`` refuses;
* ``tensorly``: ``tensor_train_matrix`` (its default ``truncated_svd``);
* ``quimb-rand`` / ``tensorly-rand``: their randomized SVDs (``svd:rand``,
  ``randomized_svd``), for context: they are fast but lose accuracy on decaying spectra.

Each contestant's relative error ``||W - W'||_F / ||W||_F`` is measured in float64 and
compared with the reference: the exact truncated TT-SVD of the float64 matrix (the smaller of
quimb's and TensorLy's float64 errors; both truncate LAPACK SVDs). The "faster peer" of a case
is the fastest quimb/TensorLy variant whose error is within 1.02x of the reference ("speed
only counts at equal error"); with no truncation, the faster of all peers.

To keep a full run near 25 minutes on 2 cores: the exact case (bond None) runs on the
decay matrix only (its cost does not depend on the spectrum); at 4096x4096 the peers are
timed ``--large-peer-repeats`` times (default 1; they take 1-12 s per call there) and
``tnlm-svd`` is skipped; tnlm itself gets ``--large-repeats`` (default ``--repeats``).
``--matrices decay`` halves the 4096x4096 part.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402

import tnlm  # noqa: E402

log = logging.getLogger("bench_decompose")

BONDS: tuple[int | None, ...] = (64, 16, None)
DTYPES = ("float32", "float64")
ERR_TOL = 1.02


def _contestants(w: np.ndarray, bond: int | None, large: bool, matrix: str) -> dict[str, Any]:
    """name -> (callable, to_dense, is_peer, is_exact_svd)."""
    import torch

    rows, cols = w.shape
    shape = C.dims_for(rows, cols)
    wt = torch.from_numpy(w)
    out: dict[str, Any] = {
        "tnlm": (lambda: tnlm.mpo_decompose(w, shape, bond), lambda m: m.to_dense(), False),
        "tnlm-torch": (lambda: tnlm.mpo_decompose(wt, shape, bond), lambda m: m.to_dense(), False),
    }
    if bond is not None and not large:
        out["tnlm-svd"] = (
            lambda: tnlm.mpo_decompose(w, shape, bond, method="svd"),
            lambda m: m.to_dense(),
            False,
        )
    out["quimb"] = (
        lambda: C.quimb_from_dense(w, bond),
        lambda q: C.quimb_to_dense(q, rows, cols),
        True,
    )
    out["tensorly"] = (
        lambda: C.tensorly_decompose(w, bond),
        lambda t: C.tensorly_to_dense(t, rows, cols),
        True,
    )
    if bond is not None:
        out["quimb-rand"] = (
            lambda: C.quimb_from_dense(w, bond, method="svd:rand"),
            lambda q: C.quimb_to_dense(q, rows, cols),
            True,
        )
        out["tensorly-rand"] = (
            lambda: C.tensorly_decompose(w, bond, svd="randomized_svd"),
            lambda t: C.tensorly_to_dense(t, rows, cols),
            True,
        )
    return out


def finish_case(rec: dict[str, Any], ref: float | None) -> None:
    """Error ratios against the reference, and speed-ups against the faster peer that is
    within ``ERR_TOL`` of the reference error (exact case: any peer)."""
    bond = rec["bond_dim"]
    ref = 0.0 if bond is None else ref
    rec["reference_error"] = ref
    rec["error_ratio"] = {
        k: (e / ref if ref else (1.0 if e < 1e-5 else math.inf))
        for k, e in rec["rel_error"].items()
    }
    peers = [k for k in rec["median_s"] if k.startswith(("quimb", "tensorly"))]
    ok = [k for k in peers if bond is None or rec["error_ratio"][k] <= ERR_TOL]
    fastest = min(ok, key=lambda k: rec["median_s"][k]) if ok else None
    exact_peers = [k for k in ("quimb", "tensorly") if k in rec["median_s"]]
    fastest_exact = min(exact_peers, key=lambda k: rec["median_s"][k])
    rec["faster_peer"] = fastest
    rec["faster_exact_peer"] = fastest_exact
    for who in ("tnlm", "tnlm-torch"):
        t = rec["median_s"][who]
        rec[f"speedup_{who}"] = rec["median_s"][fastest] / t if fastest else None
        rec[f"speedup_{who}_vs_exact_peer"] = rec["median_s"][fastest_exact] / t


def run_case(
    w64: np.ndarray, dtype: str, bond: int | None, matrix: str, repeats: int, peer_repeats: int
) -> dict[str, Any]:
    w = np.ascontiguousarray(w64.astype(dtype))
    large = max(w.shape) >= 4096
    contestants = _contestants(w, bond, large, matrix)
    times: dict[str, list[float]] = {k: [] for k in contestants}
    errors: dict[str, float] = {}
    reported: dict[str, float] = {}
    for rep in range(max(repeats, peer_repeats)):
        for name, (fn, dense, is_peer) in contestants.items():
            if rep >= (peer_repeats if is_peer else repeats):
                continue
            dt, res = C.timed(fn)
            times[name].append(dt)
            if rep == 0:
                errors[name] = C.rel_error(w64, dense(res))
                if hasattr(res, "report") and res.report is not None:
                    reported[name] = res.report.relative_error
            del res
    return {
        "rows": w.shape[0],
        "cols": w.shape[1],
        "dtype": dtype,
        "matrix": matrix,
        "bond_dim": bond,
        "median_s": {k: C.median(v) for k, v in times.items()},
        "min_s": {k: min(v) for k, v in times.items()},
        "times_s": times,
        "load_average": os.getloadavg(),
        "rel_error": errors,
        "reported_rel_error": reported,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="768x768 and 768x3072 only")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument(
        "--large-peer-repeats",
        type=int,
        default=1,
        help="repeats of quimb/TensorLy at 4096x4096 (they take 5-40 s per call)",
    )
    p.add_argument(
        "--large-repeats",
        type=int,
        default=None,
        help="repeats of tnlm at 4096x4096 (default: --repeats)",
    )
    p.add_argument("--out", default="docs/benchmarks/decompose.json")
    p.add_argument("--sizes", default=None, help="e.g. 768x768,4096x4096 (overrides --quick)")
    p.add_argument("--matrices", default="decay,gaussian")
    p.add_argument("--dtypes", default=",".join(DTYPES))
    p.add_argument("--bonds", default="64,16,none")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument(
        "--report",
        nargs="+",
        metavar="JSON",
        help="print the markdown tables of earlier runs and exit",
    )
    args = p.parse_args(argv)
    if args.report:
        cases = []
        for path in args.report:
            with open(path) as f:
                cases += json.load(f)["cases"]
        print(markdown_table(cases))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    if args.sizes:
        sizes = [tuple(int(x) for x in s.split("x")) for s in args.sizes.split(",")]
    else:
        sizes = list(C.QUICK_SIZES if args.quick else C.SIZES)
    bonds = [None if b.lower() == "none" else int(b) for b in args.bonds.split(",")]
    payload: dict[str, Any] = {
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "machine": C.machine_info(),
        "repeats": args.repeats,
        "large_peer_repeats": args.large_peer_repeats,
        "cases": [],
    }
    t_start = time.perf_counter()
    # warm-up: imports, plan caches, LAPACK workspaces
    w0 = C.gaussian_matrix(256, 256)
    for fn, _, _ in _contestants(w0, 16, False, "gaussian").values():
        fn()
    for rows, cols in sizes:
        large = max(rows, cols) >= 4096
        for matrix in args.matrices.split(","):
            w64 = C.MATRICES[matrix](rows, cols)
            for bond in bonds:
                if bond is None and matrix != "decay":
                    continue  # the exact decomposition's cost does not depend on the spectrum
                ref: float | None = None
                # float64 first: the reference is the exact truncated TT-SVD of the float64
                # matrix, as computed by quimb and TensorLy (both LAPACK SVDs)
                for dtype in sorted(args.dtypes.split(","), reverse=True):
                    prep = args.large_peer_repeats if large else args.repeats
                    reps = (args.large_repeats or args.repeats) if large else args.repeats
                    rec = run_case(w64, dtype, bond, matrix, reps, prep)
                    if dtype == "float64" or ref is None:
                        ref = min(rec["rel_error"][k] for k in ("quimb", "tensorly"))
                    finish_case(rec, ref)
                    payload["cases"].append(rec)
                    log.info(
                        "%dx%d %s %s bond=%s  tnlm %.3fs (torch %.3fs)  faster peer %s %.3fs "
                        "-> %.2fx  err ratio tnlm %.4f",
                        rows,
                        cols,
                        dtype,
                        matrix,
                        bond,
                        rec["median_s"]["tnlm"],
                        rec["median_s"]["tnlm-torch"],
                        rec["faster_peer"],
                        rec["median_s"].get(rec["faster_peer"], math.nan),
                        rec["speedup_tnlm"] or math.nan,
                        rec["error_ratio"]["tnlm"],
                    )
                    C.write_json(args.out, payload)
    payload["wall_s"] = time.perf_counter() - t_start
    C.write_json(args.out, payload)
    log.info("done in %.0f s -> %s", payload["wall_s"], args.out)
    if not args.no_plot:
        stem = os.path.splitext(os.path.basename(args.out))[0]
        plot(payload, os.path.join(os.path.dirname(args.out) or ".", stem + ".png"))
    return 0


def markdown_table(cases: list[dict[str, Any]]) -> str:
    """One row per case: median seconds (min in parentheses), the faster peer at equal error,
    tnlm's speed-up over it, and the error ratios against the exact truncated TT-SVD."""
    cols = ["tnlm", "tnlm-torch", "tnlm-svd", "quimb", "tensorly", "quimb-rand", "tensorly-rand"]
    head = (
        "| size | dtype | matrix | bond | "
        + " | ".join(cols)
        + " | faster peer (equal error) | tnlm speed-up | torch speed-up "
        + "| err ratio tnlm | err ratio quimb-rand / tensorly-rand |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for c in cases:

        def cell(k: str, c: dict[str, Any] = c) -> str:
            if k not in c["median_s"]:
                return "-"
            return f"{c['median_s'][k]:.3f} ({c['min_s'][k]:.3f})"

        er = c["error_ratio"]
        sp, spt = c.get("speedup_tnlm"), c.get("speedup_tnlm-torch")
        rand = " / ".join(f"{er[k]:.3g}" for k in ("quimb-rand", "tensorly-rand") if k in er)
        lines.append(
            f"| {c['rows']}x{c['cols']} | {c['dtype'].replace('float', 'f')} | {c['matrix']} "
            f"| {c['bond_dim'] or 'exact'} | "
            + " | ".join(cell(k) for k in cols)
            + f" | {c['faster_peer']} | {sp:.2f}x | {spt:.2f}x | {er['tnlm']:.4f} | {rand or '-'} |"
        )
    return "\n".join(lines)


def plot(payload: dict[str, Any], path: str) -> None:
    """Bar chart: median seconds per contestant, one panel per (size, bond), decay matrix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = [c for c in payload["cases"] if c["matrix"] == "decay"]
    panels = sorted(
        {(c["rows"], c["cols"], str(c["bond_dim"])) for c in cases},
        key=lambda k: (k[0] * k[1], k[2]),
    )
    if not panels:
        return
    names = ["tnlm", "tnlm-torch", "tnlm-svd", "quimb", "tensorly", "quimb-rand", "tensorly-rand"]
    colors = dict(zip(names, ["C0", "C9", "C7", "C1", "C2", "C3", "C4"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6), squeeze=False)
    for ax, (rows, cols, bond) in zip(axes[0], panels):
        width = 0.38
        for di, dtype in enumerate(DTYPES):
            case = next(
                (
                    c
                    for c in cases
                    if (c["rows"], c["cols"], str(c["bond_dim"]), c["dtype"])
                    == (rows, cols, bond, dtype)
                ),
                None,
            )
            if case is None:
                continue
            present = [n for n in names if n in case["median_s"]]
            for ni, n in enumerate(present):
                hatch = "" if case["error_ratio"].get(n, 1) <= ERR_TOL else "//"
                ax.bar(
                    ni + (di - 0.5) * width,
                    case["median_s"][n],
                    width,
                    color=colors[n],
                    alpha=1.0 if dtype == "float32" else 0.55,
                    hatch=hatch,
                    label=f"{n}" if di == 0 else None,
                )
            ax.set_xticks(range(len(present)))
            ax.set_xticklabels(present, rotation=60, ha="right", fontsize=7)
        ax.set_yscale("log")
        ax.set_title(f"{rows}x{cols}, bond {bond}", fontsize=9)
        ax.set_ylabel("median s (f32 solid, f64 light)", fontsize=7)
    fig.suptitle("mpo_decompose vs peers (decay matrix; hatched: error > 1.02x exact)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
