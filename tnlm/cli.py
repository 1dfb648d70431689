"""The ``tnlm`` command: decompose a stored matrix and report its MPO structure.

Usage::

    tnlm decompose W.npy --shape 5 --bond-dim 64 --png spectra.png
    tnlm decompose model.safetensors --key encoder.layer.0.output.dense.weight \\
        --shape 4,4,4,4,3x4,4,8,6,4 --tol 0.1
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import _backend as B
from .decompose import mpo_decompose
from .mpo import MPO
from .truncation import SVD_METHODS

__all__ = ["main", "load_matrix", "parse_shape", "parse_bond_dim", "format_report", "plot_spectra"]


def parse_shape(text: str) -> Any:
    """``"5"`` -> 5; ``"4,4,3x4,8,6"`` -> ((4, 4, 3), (4, 8, 6))."""
    text = text.strip()
    try:
        if "x" not in text:
            return int(text)
        rows, cols = text.split("x")
        return tuple(int(v) for v in rows.split(",")), tuple(int(v) for v in cols.split(","))
    except ValueError:
        raise ValueError(
            f"--shape {text!r} is not understood; expected an int n (number of cores) or "
            "'ROW_DIMS x COL_DIMS' like 4,4,4,4,3x4,4,8,6,4"
        ) from None


def parse_bond_dim(text: str | None) -> Any:
    """``None`` -> None; ``"64"`` -> 64; ``"8,16,16,8"`` -> [8, 16, 16, 8]."""
    if text is None:
        return None
    try:
        vals = [int(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(
            f"--bond-dim {text!r} is not understood; expected an int or comma-separated ints"
        ) from None
    return vals[0] if len(vals) == 1 else vals


def _pick(tensors: dict[str, Any], key: str | None, path: str) -> Any:
    if key is not None:
        if key not in tensors:
            raise KeyError(f"{path} has no tensor {key!r}; it has: {', '.join(sorted(tensors))}")
        return tensors[key]
    two_d = [k for k, v in tensors.items() if len(getattr(v, "shape", ())) == 2]
    if len(two_d) != 1:
        raise ValueError(
            f"{path} holds {len(tensors)} tensors ({len(two_d)} of them 2-D); name one with "
            f"--key. Available: {', '.join(sorted(tensors))}"
        )
    return tensors[two_d[0]]


def load_matrix(path: str, key: str | None = None) -> Any:
    """Load a matrix from ``.npy``, ``.pt``/``.pth`` (tensor or state dict) or
    ``.safetensors`` (``key`` names the tensor when the file holds several)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npy":
        return np.load(path, allow_pickle=False)
    if ext in (".pt", ".pth"):
        import torch

        obj = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(obj, dict):
            return _pick(obj, key, path)
        return obj
    if ext == ".safetensors":
        from safetensors import safe_open

        with safe_open(path, framework="numpy") as f:
            names = list(f.keys())
            if key is None:
                two_d = [k for k in names if len(f.get_slice(k).get_shape()) == 2]
                key = two_d[0] if len(two_d) == 1 else None
                if key is None:
                    raise ValueError(
                        f"{path} holds {len(names)} tensors ({len(two_d)} of them 2-D); name one "
                        f"with --key. Available: {', '.join(sorted(names))}"
                    )
            if key not in names:
                raise KeyError(f"{path} has no tensor {key!r}; it has: {', '.join(sorted(names))}")
            return f.get_tensor(key)
    raise ValueError(
        f"unsupported file type {ext!r} for {path}; expected .npy, .pt or .safetensors"
    )


def format_report(mpo: MPO) -> str:
    """A human-readable table of bond dimensions, errors and compression."""
    rep = mpo.report
    lines = [
        f"matrix {mpo.shape[0]} x {mpo.shape[1]}  ({B.dtype_name(mpo.cores[0])}, {mpo.backend})",
        f"row_dims {mpo.row_dims}  col_dims {mpo.col_dims}",
        "",
        f"{'bond':>4} {'rank':>6} {'full':>6} {'error':>12} {'rel. error':>12} {'method':>6}",
    ]
    merged = [i * j for i, j in zip(mpo.row_dims, mpo.col_dims)]
    for k, b in enumerate(rep.bonds if rep is not None else ()):
        full = min(math.prod(merged[: k + 1]), math.prod(merged[k + 1 :]))
        rel = b.error / rep.norm if rep is not None and rep.norm > 0 else 0.0
        lines.append(
            f"{k + 1:>4} {b.rank:>6} {full:>6} {b.error:>12.4e} {rel:>12.4e} {b.method:>6}"
        )
    if rep is not None:
        lines.append(
            f"total error {rep.error:.4e}  relative {rep.relative_error:.4e}  (||W||_F = "
            f"{rep.norm:.4e})"
        )
    c = mpo.central_index
    central = math.prod(int(d) for d in mpo.cores[c].shape)
    lines += [
        f"parameters: dense {mpo.shape[0] * mpo.shape[1]:,}  MPO {mpo.num_params:,}  "
        f"compression {mpo.compression_ratio:.2f}x",
        f"central core {c}: {tuple(int(d) for d in mpo.cores[c].shape)} = {central:,} params "
        f"({100 * central / mpo.num_params:.1f}%)",
    ]
    return "\n".join(lines)


def plot_spectra(mpo: MPO, path: str) -> None:
    """Write a PNG of every bond's singular values (kept solid, discarded dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rep = mpo.report
    if rep is None:
        raise ValueError("the MPO has no truncation report to plot")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for k, b in enumerate(rep.bonds):
        kept = B.to_numpy(b.kept).astype(float)
        (line,) = ax.semilogy(np.arange(1, len(kept) + 1), kept, label=f"bond {k + 1} (r={b.rank})")
        if b.discarded is not None and len(b.discarded):
            disc = B.to_numpy(b.discarded).astype(float)
            x = np.arange(len(kept) + 1, len(kept) + len(disc) + 1)
            ax.semilogy(x, np.maximum(disc, 1e-300), "--", color=line.get_color())
    ax.set_xlabel("index")
    ax.set_ylabel("singular value")
    ax.set_title(
        f"MPO bond spectra {mpo.shape[0]}x{mpo.shape[1]}, rel. error {rep.relative_error:.2e}"
    )
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tnlm", description="Tensor-train / MPO tools.")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("decompose", help="decompose a matrix into an MPO and report it")
    d.add_argument("file", help="matrix file: .npy, .pt/.pth or .safetensors")
    d.add_argument("--key", help="tensor name inside a .pt state dict or .safetensors file")
    d.add_argument("--shape", required=True, help="n (cores) or ROWS x COLS, e.g. 4,4,3x4,8,6")
    d.add_argument("--bond-dim", help="cap for every bond, or one per bond (comma-separated)")
    d.add_argument("--tol", type=float, help="guaranteed relative Frobenius error, in (0, 1)")
    d.add_argument("--method", default="auto", choices=SVD_METHODS, help="SVD driver")
    d.add_argument("--png", help="write the bond spectra plot here")
    d.add_argument("--save", help="write the MPO to this .npz file (tnlm.load reads it)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tnlm`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        W = load_matrix(args.file, args.key)
        mpo = mpo_decompose(
            W,
            parse_shape(args.shape),
            parse_bond_dim(args.bond_dim),
            tol=args.tol,
            method=args.method,
        )
    except (ValueError, TypeError, KeyError, FileNotFoundError) as e:
        print(f"tnlm decompose: error: {e}", file=sys.stderr)
        return 2
    print(format_report(mpo))
    if args.png:
        plot_spectra(mpo, args.png)
        print(f"bond spectra written to {args.png}")
    if args.save:
        mpo.save(args.save)
        print(f"MPO written to {args.save}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
