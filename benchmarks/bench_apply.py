"""MPO times a batch of vectors: tnlm's ``apply`` against quimb, TensorLy and a dense GEMM.

Usage::

    python benchmarks/bench_apply.py [--quick] [--repeats 5] [--batch 512] \\
        [--out docs/benchmarks/apply.json]

For every size (768x768, 768x3072, 4096x4096; ``--quick``: the first two), dtype and bond cap
(64, 16) the same MPO (tnlm's decomposition of a Gaussian matrix, n = 5 cores) is applied to
the same ``x`` of shape (J, batch), round-robin inside each repeat:

* ``tnlm-auto`` / ``tnlm-cores`` / ``tnlm-dense``: ``MPO.apply(x, method=...)`` on numpy
  ("auto" picks by FLOP count between contracting x through the cores and rebuilding W
  then one GEMM); ``tnlm-auto-torch``: the same MPO and x as torch tensors;
* ``quimb-contract``: quimb's way without densifying: the MPO (converted with
  ``MPO.to_quimb``) contracted with x as a tensor network (``TensorNetwork.contract``, which
  plans with cotengra where installed);
* ``quimb-dense``: ``to_dense`` of the quimb MPO, then a GEMM;
* ``tensorly-dense``: ``tt_matrix_to_tensor`` (TensorLy has no TT-matrix times matrix), then
  a GEMM;
* ``dense-gemm``: ``W @ x`` with the dense (rebuilt) W, the cost the MPO layer competes with.
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
import tnlm.planning  # noqa: E402

log = logging.getLogger("bench_apply")

BONDS = (64, 16)
DTYPES = ("float32", "float64")
PEERS = ("quimb-contract", "quimb-dense", "tensorly-dense")


def _contestants(mpo: tnlm.MPO, x: np.ndarray) -> dict[str, Any]:
    import quimb.tensor as qtn
    import torch

    rows, cols = mpo.shape
    n = mpo.n_cores
    batch = x.shape[1]
    w = mpo.to_dense()
    tmpo = tnlm.MPO([torch.from_numpy(np.ascontiguousarray(c)) for c in mpo.cores])
    xt = torch.from_numpy(x)
    qmpo = mpo.to_quimb()
    upper = [qmpo.upper_ind(k) for k in range(n)]
    lower = [qmpo.lower_ind(k) for k in range(n)]
    xq = qtn.Tensor(x.reshape(*mpo.col_dims, batch), inds=[*lower, "batch"])
    tl_factors = [np.asarray(c) for c in mpo.cores]

    def quimb_contract() -> Any:
        y = (qmpo & xq).contract(output_inds=[*upper, "batch"], optimize="auto-hq")
        return y.data.reshape(rows, batch)

    def tensorly_dense() -> Any:
        from tensorly.tt_matrix import tt_matrix_to_tensor

        return np.asarray(tt_matrix_to_tensor(tl_factors)).reshape(rows, cols) @ x

    return {
        "tnlm-auto": lambda: mpo.apply(x),
        "tnlm-cores": lambda: mpo.apply(x, method="cores"),
        "tnlm-dense": lambda: mpo.apply(x, method="dense"),
        "tnlm-auto-torch": lambda: tmpo.apply(xt),
        "quimb-contract": quimb_contract,
        "quimb-dense": lambda: np.asarray(qmpo.to_dense(upper, lower)).reshape(rows, cols) @ x,
        "tensorly-dense": tensorly_dense,
        "dense-gemm": lambda: w @ x,
    }


def run_case(rows: int, cols: int, dtype: str, bond: int, batch: int, repeats: int) -> dict:
    w64 = C.gaussian_matrix(rows, cols, seed=1)
    mpo = tnlm.mpo_decompose(w64.astype(dtype), C.dims_for(rows, cols), bond)
    x = np.random.default_rng(2).standard_normal((cols, batch)).astype(dtype)
    contestants = _contestants(mpo, x)
    ref = mpo.to_dense().astype(np.float64) @ x.astype(np.float64)
    times: dict[str, list[float]] = {k: [] for k in contestants}
    errors: dict[str, float] = {}
    for fn in contestants.values():  # warm-up: plans, caches
        fn()
    for _ in range(repeats):
        for name, fn in contestants.items():
            dt, y = C.timed(fn)
            times[name].append(dt)
            if name not in errors:
                y = tnlm._backend.to_numpy(y).astype(np.float64)  # noqa: SLF001
                errors[name] = float(np.linalg.norm(y - ref) / np.linalg.norm(ref))
    med = {k: C.median(v) for k, v in times.items()}
    cost = mpo.apply_cost(batch)
    fastest_peer = min(PEERS, key=lambda k: med[k])
    rec = {
        "rows": rows,
        "cols": cols,
        "dtype": dtype,
        "bond_dim": bond,
        "batch": batch,
        "bond_dims": mpo.bond_dims,
        "median_s": med,
        "min_s": {k: min(v) for k, v in times.items()},
        "times_s": times,
        "load_average": os.getloadavg(),
        "rel_error": errors,
        "flops": {"cores": cost["cores"], "dense": cost["dense"], "gemm": 2 * rows * cols * batch},
        "auto_choice": tnlm.planning.plan_apply([tuple(c.shape) for c in mpo.cores], batch).method,
        "faster_peer": fastest_peer,
        "ratio_vs_faster_peer": med["tnlm-auto"] / med[fastest_peer],
        "ratio_torch_vs_faster_peer": med["tnlm-auto-torch"] / med[fastest_peer],
        "ratio_vs_dense_gemm": med["tnlm-auto"] / med["dense-gemm"],
        "ratio_auto_vs_best_tnlm_method": med["tnlm-auto"]
        / min(med["tnlm-cores"], med["tnlm-dense"]),
    }
    return rec


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="768x768 and 768x3072 only")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--out", default="docs/benchmarks/apply.json")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--report", metavar="JSON", help="print the markdown table of a run and exit")
    args = p.parse_args(argv)
    if args.report:
        with open(args.report) as f:
            print(markdown_table(json.load(f)["cases"]))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    sizes = C.QUICK_SIZES if args.quick else C.SIZES
    payload: dict[str, Any] = {
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "machine": C.machine_info(),
        "repeats": args.repeats,
        "cases": [],
    }
    t0 = time.perf_counter()
    for rows, cols in sizes:
        for dtype in DTYPES:
            for bond in BONDS:
                rec = run_case(rows, cols, dtype, bond, args.batch, args.repeats)
                payload["cases"].append(rec)
                m = rec["median_s"]
                log.info(
                    "%dx%d %s bond=%d  auto(%s) %.4fs cores %.4fs dense %.4fs torch %.4fs | "
                    "%s %.4fs -> %.2fx | gemm %.4fs -> %.2fx",
                    rows,
                    cols,
                    dtype,
                    bond,
                    rec["auto_choice"],
                    m["tnlm-auto"],
                    m["tnlm-cores"],
                    m["tnlm-dense"],
                    m["tnlm-auto-torch"],
                    rec["faster_peer"],
                    m[rec["faster_peer"]],
                    rec["ratio_vs_faster_peer"],
                    m["dense-gemm"],
                    rec["ratio_vs_dense_gemm"],
                )
                C.write_json(args.out, payload)
    payload["wall_s"] = time.perf_counter() - t0
    C.write_json(args.out, payload)
    log.info("done in %.0f s -> %s", payload["wall_s"], args.out)
    if not args.no_plot:
        plot(payload, os.path.join(os.path.dirname(args.out) or ".", "apply.png"))
    return 0


def markdown_table(cases: list[dict[str, Any]]) -> str:
    """Median milliseconds (min in parentheses) and the ratios the issue asks for."""
    cols = ["tnlm-auto", "tnlm-cores", "tnlm-dense", "tnlm-auto-torch", *PEERS, "dense-gemm"]
    head = (
        "| size | dtype | bond | auto picks | "
        + " | ".join(cols)
        + " | auto / faster peer | auto / dense GEMM | auto / best tnlm method |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for c in cases:
        m, mn = c["median_s"], c["min_s"]
        cells = " | ".join(f"{1e3 * m[k]:.1f} ({1e3 * mn[k]:.1f})" for k in cols)
        lines.append(
            f"| {c['rows']}x{c['cols']} | {c['dtype'].replace('float', 'f')} | {c['bond_dim']} "
            f"| {c['auto_choice']} | {cells} | {c['ratio_vs_faster_peer']:.2f} "
            f"({c['faster_peer']}) | {c['ratio_vs_dense_gemm']:.2f} "
            f"| {c['ratio_auto_vs_best_tnlm_method']:.2f} |"
        )
    return "\n".join(lines)


def plot(payload: dict[str, Any], path: str) -> None:
    """Median time relative to the dense GEMM, per contestant, one panel per size (float32)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = [c for c in payload["cases"] if c["dtype"] == "float32"]
    sizes = sorted({(c["rows"], c["cols"]) for c in cases}, key=lambda s: s[0] * s[1])
    names = ["tnlm-auto", "tnlm-cores", "tnlm-dense", "tnlm-auto-torch", *PEERS]
    fig, axes = plt.subplots(1, len(sizes), figsize=(3.6 * len(sizes), 3.6), squeeze=False)
    for ax, (rows, cols) in zip(axes[0], sizes):
        for bi, bond in enumerate(BONDS):
            case = next(
                (c for c in cases if (c["rows"], c["cols"], c["bond_dim"]) == (rows, cols, bond)),
                None,
            )
            if case is None:
                continue
            gemm = case["median_s"]["dense-gemm"]
            vals = [case["median_s"][n] / gemm for n in names]
            ax.bar(
                [i + (bi - 0.5) * 0.38 for i in range(len(names))], vals, 0.38, label=f"bond {bond}"
            )
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set_yscale("log")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
        ax.set_title(f"{rows}x{cols}, float32, batch {cases[0]['batch']}", fontsize=9)
        ax.set_ylabel("time / dense GEMM", fontsize=8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    _ = math
    raise SystemExit(main())
