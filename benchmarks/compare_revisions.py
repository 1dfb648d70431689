"""Before/after timing of ``mpo_decompose``: a git revision of ``tnlm`` against the working tree.

The old tree is extracted with ``git archive`` into a temporary folder under the package name
``tnlm_rev`` (its imports are relative), both versions are imported into one process and
called alternately on the same matrix, so that machine drift hits both alike. Prints a
markdown table of median (min) seconds.

    .venv/bin/python benchmarks/compare_revisions.py a2f9902 --repeats 5 --sizes 768x768,768x3072
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import tempfile
import time

import _common as C  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
import numpy as np

import tnlm


def load_revision(rev: str, root: str) -> object:
    tmp = tempfile.mkdtemp(prefix="tnlm_rev_")
    archive = subprocess.run(
        ["git", "-C", root, "archive", rev, "tnlm"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
    os.rename(os.path.join(tmp, "tnlm"), os.path.join(tmp, "tnlm_rev"))
    sys.path.insert(0, tmp)
    return importlib.import_module("tnlm_rev")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("rev", help="git revision of the 'old' tnlm")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--sizes", default="768x768,768x3072")
    p.add_argument("--bonds", default="64,16,none")
    p.add_argument("--matrix", default="decay", choices=sorted(C.MATRICES))
    args = p.parse_args(argv)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    old = load_revision(args.rev, root)
    print(f"| size | dtype | bond | {args.rev} | working tree | old / new |")
    print("|---|---|---|---|---|---|")
    for size in args.sizes.split(","):
        rows, cols = (int(x) for x in size.split("x"))
        w64 = C.MATRICES[args.matrix](rows, cols)
        for dt in ("float32", "float64"):
            w = w64.astype(dt)
            for b in args.bonds.split(","):
                bond = None if b == "none" else int(b)
                times: dict[str, list[float]] = {"old": [], "new": []}
                for _ in range(args.repeats):
                    for name, mod in (("new", tnlm), ("old", old)):
                        t = time.perf_counter()
                        mod.mpo_decompose(w, C.N_CORES, bond)  # type: ignore[attr-defined]
                        times[name].append(time.perf_counter() - t)
                mo, mn = np.median(times["old"]), np.median(times["new"])
                lo, ln = min(times["old"]), min(times["new"])
                print(
                    f"| {size} | f{dt[-2:]} | {bond or 'exact'} | {mo:.3f} ({lo:.3f})"
                    f" | {mn:.3f} ({ln:.3f}) | {mo / mn:.2f}x |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
