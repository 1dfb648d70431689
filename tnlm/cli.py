"""The ``tnlm`` command: decompose a stored matrix and report its MPO structure.

Usage::

    tnlm decompose W.npy --shape 5 --bond-dim 64 --png spectra.png
    tnlm decompose model.safetensors --key bert.encoder.layer.0.output.dense.weight \\
        --shape 4,4,4,4,3x4,4,8,6,4 --tol 0.1 --save dense_mpo.npz
    tnlm analyze bert-base-uncased/ --shape 5 --keys 'attention' --json bert.json --png figs/
    tnlm --version

Exit status: 0 on success; 2 on bad input (one line on stderr, nothing written: every
argument, output path and the input file are checked before the decomposition starts);
1 when an output could not be written after the work was done (one line per failed output;
the other outputs are still written).

Outputs are written to a temporary file in the target folder, flushed to disk and renamed
into place, so a crash never leaves a half-written file; an existing file is never replaced
unless ``--force`` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import numpy as np

from . import analysis as A
from . import backend as B
from ._readers import EXTENSIONS as _EXTENSIONS
from ._readers import MAX_LISTED as _MAX_LISTED
from ._readers import CLIError, Stored, load_matrix
from ._readers import one_line as _one_line
from ._readers import read_matrix as _read_matrix
from ._readers import stored_tensors as _stored_tensors
from ._readers import weight_files as _weight_files
from .decompose import mpo_decompose, resolve_matrix_shape
from .mpo import MPO
from .truncation import SVD_METHODS

__all__ = [
    "main",
    "load_matrix",
    "parse_shape",
    "parse_bond_dim",
    "format_report",
    "plot_spectra",
]


def parse_shape(text: str) -> Any:
    """``"5"`` -> 5; ``"4,4,3x4,8,6"`` -> ((4, 4, 3), (4, 8, 6))."""
    text = text.strip()
    try:
        if "x" not in text:
            n = int(text)
            if n < 1:
                raise ValueError
            return n
        rows, cols = text.split("x")
        return tuple(int(v) for v in rows.split(",")), tuple(int(v) for v in cols.split(","))
    except ValueError:
        raise ValueError(
            f"--shape {text!r} is not understood; expected an int n >= 1 (number of cores) or "
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


def _max_cores(rows: int, cols: int) -> int:
    """Most cores an ``rows x cols`` matrix splits into with every core holding >= 2 entries
    (``i_k * j_k >= 2`` for all k forces ``2**n <= rows * cols``)."""
    return max(1, (rows * cols).bit_length() - 1)


# --------------------------------------------------------------------------- reporting


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


def _plot_formats() -> dict[str, str]:
    """File formats matplotlib writes (extension -> description); CLIError if it is absent."""
    try:
        import matplotlib  # noqa: F401  (a missing package fails here, with one message)
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        raise CLIError(
            "--png needs matplotlib, which is not installed; install it with: "
            "pip install 'tnlm[plot]'"
        ) from None
    return dict(FigureCanvasBase.get_supported_filetypes())


def _spectra_figure(mpo: MPO, source: str | None = None) -> Any:
    """A matplotlib ``Figure`` of every bond's singular values: kept solid, discarded dashed
    in the same colour; the legend says so and the title names ``source``."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    rep = mpo.report
    if rep is None:
        raise ValueError("the MPO has no truncation report to plot")
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    any_discarded = False
    for k, b in enumerate(rep.bonds):
        kept = B.to_numpy(b.kept).astype(float)
        (line,) = ax.semilogy(np.arange(1, len(kept) + 1), kept, label=f"bond {k + 1} (r={b.rank})")
        if b.discarded is not None and len(b.discarded):
            any_discarded = True
            disc = B.to_numpy(b.discarded).astype(float)
            x = np.arange(len(kept) + 1, len(kept) + len(disc) + 1)
            ax.semilogy(x, np.maximum(disc, 1e-300), "--", color=line.get_color())
    handles, _ = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], color="0.3", ls="-", label="solid: kept singular values"))
    if any_discarded:
        handles.append(
            Line2D([], [], color="0.3", ls="--", label="dashed: discarded (truncated) values")
        )
    ax.set_xlabel("index")
    ax.set_ylabel("singular value")
    what = f"MPO bond spectra {mpo.shape[0]}x{mpo.shape[1]}, rel. error {rep.relative_error:.2e}"
    ax.set_title(what if source is None else f"{source}\n{what}", fontsize=10)
    ax.legend(handles=handles, fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return fig


def plot_spectra(mpo: MPO, path: str, *, source: str | None = None) -> None:
    """Plot every bond's singular values, kept solid and discarded dashed.

    Parameters
    ----------
    mpo : MPO
        A decomposition that carries its truncation report.
    path : str
        Written in the format its extension names (png, pdf, svg, ...; png without one).
    source : str, optional
        The input the MPO came from, named in the title.
    """
    fmt = os.path.splitext(path)[1].lower().lstrip(".") or "png"
    _spectra_figure(mpo, source).savefig(path, format=fmt, dpi=110)


# --------------------------------------------------------------------------- writing


def _check_output(option: str, path: str, force: bool) -> None:
    """Refuse an output path before any work: an existing file without ``--force``, a
    directory, or a folder that is missing or not writable."""
    if os.path.isdir(path):
        raise CLIError(f"{option} {path} is a directory; expected a file path")
    if os.path.lexists(path) and not force:
        raise CLIError(f"{option} {path} already exists; pass --force to overwrite it")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CLIError(f"{option} {path}: folder {folder} does not exist; create it first")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".tnlm-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise CLIError(
            f"{option} {path}: cannot write in folder {folder} ({e.strerror or e})"
        ) from None


def _fsync(path: str, flags: int = os.O_RDONLY) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: str, write: Callable[[str], None], force: bool) -> None:
    """``write(tmp)`` into a private temporary folder next to ``path``, fsync, then move it
    into place: ``os.replace`` with ``force``, else a hard link that fails if ``path``
    appeared meanwhile. The temporary folder is always removed."""
    folder = os.path.dirname(os.path.abspath(path))
    tmpdir = tempfile.mkdtemp(dir=folder, prefix=".tnlm-tmp-")
    try:
        tmp = os.path.join(tmpdir, "out" + os.path.splitext(path)[1])
        write(tmp)
        _fsync(tmp)
        if force:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # atomic "create, never replace"
            except FileExistsError:
                raise
            except OSError:  # no hard links on this file system
                if os.path.lexists(path):
                    raise FileExistsError(path) from None
                os.replace(tmp, path)
        with contextlib.suppress(OSError):  # not every platform can fsync a folder
            _fsync(folder)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


# --------------------------------------------------------------------------- command


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit 2), not usage + message."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see '{self.prog} --help')\n")


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    p = _Parser(prog="tnlm", description="Tensor-train / MPO tools.")
    p.add_argument("--version", action="version", version=f"tnlm {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("decompose", help="decompose a matrix into an MPO and report it")
    d.add_argument("file", help=f"matrix file: {_EXTENSIONS}")
    d.add_argument(
        "--key",
        metavar="NAME",
        help="array name inside a .npz, .pt state dict or .safetensors file",
    )
    d.add_argument("--shape", required=True, help="n (cores) or ROWS x COLS, e.g. 4,4,3x4,8,6")
    d.add_argument("--bond-dim", help="cap for every bond, or one per bond (comma-separated)")
    d.add_argument("--tol", type=float, help="guaranteed relative Frobenius error, in (0, 1)")
    d.add_argument("--method", default="auto", choices=SVD_METHODS, help="SVD driver")
    d.add_argument(
        "--png", metavar="PATH", help="write the bond spectra plot here (.png, .pdf, .svg, ...)"
    )
    d.add_argument(
        "--save", metavar="PATH", help="write the MPO to this .npz file (tnlm.load reads it)"
    )
    d.add_argument("--force", action="store_true", help="overwrite existing output files")
    a = sub.add_parser(
        "analyze",
        help="bond spectra, entropies, error-vs-bond-dimension curves and parameter shares of "
        "every matrix in a weight file or folder",
    )
    a.add_argument(
        "weights",
        metavar="WEIGHTS",
        help=f"a weight file ({_EXTENSIONS}) or a folder of them (a model checkpoint, a "
        "Hugging Face model folder)",
    )
    a.add_argument(
        "--shape",
        required=True,
        help="factorisation of the dense matrices: n (cores, balanced factors) or ROWS x COLS",
    )
    a.add_argument(
        "--keys",
        metavar="REGEX",
        help="analyse only the matrices whose name this regular expression matches (re.search)",
    )
    a.add_argument(
        "--shared",
        metavar="REGEX",
        default=A.DEFAULT_SHARED,
        help="names of the shared central tensors (default: a path component 'central')",
    )
    a.add_argument(
        "--bond-dims",
        default="4,16,64",
        help="bond dimension caps whose error the table shows (comma-separated; default "
        "4,16,64); the curve also has every power of two below the largest bond",
    )
    a.add_argument("--json", metavar="PATH", help="write the full analysis to this JSON file")
    a.add_argument(
        "--png", metavar="DIR", help="write one figure per group of matrices into this folder"
    )
    a.add_argument("--force", action="store_true", help="overwrite existing output files")
    return p


def _plan_outputs(args: argparse.Namespace) -> list[tuple[str, str]]:
    """``(option, real path)`` of every output, all checked before any work."""
    outputs: list[tuple[str, str]] = []
    if args.png is not None:
        formats = _plot_formats()
        ext = os.path.splitext(args.png)[1].lower().lstrip(".")
        if ext not in formats:
            raise CLIError(
                f"--png {args.png}: unknown image type {ext or '(no extension)'!r}; expected "
                f"one of {', '.join('.' + e for e in sorted(formats))}"
            )
        outputs.append(("--png", args.png))
    if args.save is not None:
        # tnlm.save appends .npz; name the file that is really written
        outputs.append(("--save", args.save if args.save.endswith(".npz") else args.save + ".npz"))
    if len(outputs) == 2 and os.path.abspath(outputs[0][1]) == os.path.abspath(outputs[1][1]):
        raise CLIError(f"--png and --save both name {outputs[0][1]}; expected two files")
    for option, path in outputs:
        _check_output(option, path, args.force)
    return outputs


def _decompose(args: argparse.Namespace) -> int:
    outputs = _plan_outputs(args)
    shape = parse_shape(args.shape)
    bond_dim = parse_bond_dim(args.bond_dim)
    W, label, notes = _read_matrix(args.file, args.key)
    rows, cols = (int(d) for d in W.shape)
    if isinstance(shape, int) and shape > _max_cores(rows, cols):
        raise CLIError(
            f"--shape {args.shape}: {shape} cores is more than {label} ({rows} x {cols}) can "
            f"split into; expected n between 1 and {_max_cores(rows, cols)}"
        )
    try:
        mpo = mpo_decompose(W, shape, bond_dim, tol=args.tol, method=args.method)
    except (ValueError, TypeError) as e:
        raise CLIError(f"{label}: {_one_line(e)}") from None
    for note in notes:
        print(f"note: {note}")
    print(f"input {label}")
    print(format_report(mpo))
    writers: dict[str, Callable[[str], None]] = {
        "--png": lambda tmp: plot_spectra(mpo, tmp, source=label),
        "--save": mpo.save,
    }
    status = 0
    for option, path in outputs:  # a failure in one output does not skip the others
        try:
            _write_atomic(path, writers[option], args.force)
        except FileExistsError:
            print(
                f"tnlm decompose: error: {option} {path} appeared while tnlm was working; "
                "not overwritten (pass --force to overwrite it)",
                file=sys.stderr,
            )
            status = 1
        except (OSError, ValueError, RuntimeError, MemoryError) as e:
            why = e.strerror if isinstance(e, OSError) and e.strerror else f"{e}"
            print(
                f"tnlm decompose: error: could not write {option} {path}: "
                f"{_one_line(why or type(e).__name__)}",
                file=sys.stderr,
            )
            status = 1
        else:
            what = "bond spectra" if option == "--png" else "MPO"
            print(f"{what} written to {path}")
    return status


def _report_write(
    command: str, option: str, path: str, write: Callable[[str], None], force: bool
) -> bool:
    """Write one output atomically; on failure print one line on stderr and return False."""
    try:
        _write_atomic(path, write, force)
    except FileExistsError:
        print(
            f"tnlm {command}: error: {option} {path} appeared while tnlm was working; not "
            "overwritten (pass --force to overwrite it)",
            file=sys.stderr,
        )
        return False
    except (OSError, ValueError, RuntimeError, MemoryError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else f"{e}"
        print(
            f"tnlm {command}: error: could not write {option} {path}: "
            f"{_one_line(why or type(e).__name__)}",
            file=sys.stderr,
        )
        return False
    return True


def _compile(option: str, pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as e:
        raise CLIError(
            f"{option} {pattern!r} is not a valid regular expression ({e}); expected a Python "
            r"regular expression such as 'layer\.0\.' or 'query|key'"
        ) from None


def _parse_caps(text: str) -> list[int]:
    try:
        caps = [int(v) for v in text.split(",")]
    except ValueError:
        caps = [0]
    if not caps or min(caps) < 1:
        raise CLIError(
            f"--bond-dims {text!r} is not understood; expected comma-separated ints >= 1, "
            "e.g. 4,16,64"
        )
    return sorted(set(caps))


def _model_hook() -> Any:
    """``tnlm_models.analysis`` when it can be imported (tnlm never needs it), else None."""
    try:
        return importlib.import_module("tnlm_models.analysis")
    except ImportError:
        return None


def _figure_names(groups: Sequence[str]) -> dict[str, str]:
    """A file name per group: ``*`` becomes ``N``, anything but ``[A-Za-z0-9._-]`` ``_``."""
    names: dict[str, str] = {}
    used: set[str] = set()
    for g in groups:
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", g.replace("*", "N")).strip("._")[:150] or "group"
        name, i = base + ".png", 2
        while name.lower() in used:
            name, i = f"{base}-{i}.png", i + 1
        used.add(name.lower())
        names[g] = name
    return names


def _analyze(args: argparse.Namespace) -> int:
    # ---- every argument, input and output checked before any work
    shape = parse_shape(args.shape)
    caps = _parse_caps(args.bond_dims)
    keys = _compile("--keys", args.keys) if args.keys is not None else None
    shared = _compile("--shared", args.shared).pattern
    notes: list[str] = []
    source = args.weights
    hook = _model_hook() if os.path.isdir(source) else None
    folder = hook.checkpoint_folder(source) if hook is not None else None
    if folder is not None and os.path.abspath(folder) != os.path.abspath(source):
        notes.append(f"{source} is a training run; analysing its checkpoint {folder}")
        source = str(folder)
    files, note = _weight_files(source)
    notes += [note] if note else []
    stored: dict[str, Stored] = {}
    for f in files:
        for t in _stored_tensors(f):
            if t.name in stored:
                raise CLIError(
                    f"tensor {t.name!r} is in both {stored[t.name].file} and {f}; expected each "
                    "name once (pass one of the files)"
                )
            stored[t.name] = t
    mpos: dict[str, Any] = {}
    if folder is not None and hook is not None:
        mpos = dict(hook.layer_mpos(folder))
        notes.append(
            f"{len(mpos)} MPO layers of the checkpoint rebuilt by tnlm_models (kind 'mpo': "
            "their cores, analysed in canonical form; adapters and biases are tensors of their own)"
        )
    matrices: dict[str, Any] = {n: t for n, t in stored.items() if len(t.shape) == 2 and t.floating}
    matrices.update(mpos)
    everything = sorted(matrices, key=A.group_key)
    chosen = [n for n in everything if keys is None or keys.search(n)]
    if not chosen:
        listing = ", ".join(everything[:_MAX_LISTED]) + (
            f" ... and {len(everything) - _MAX_LISTED} more"
            if len(everything) > _MAX_LISTED
            else ""
        )
        if not everything:
            raise CLIError(
                f"{args.weights} holds no matrix ({len(stored)} tensors, none 2-D and floating); "
                "expected at least one 2-D weight tensor"
            )
        raise CLIError(
            f"--keys {args.keys!r} matches none of the {len(everything)} matrices in "
            f"{args.weights}: {listing}"
        )
    dense_shape: dict[str, Any] = {}
    skipped: list[tuple[str, str]] = []
    for n in chosen:
        if n in mpos:
            continue
        rows, cols = stored[n].shape
        if isinstance(shape, int):
            if shape > _max_cores(rows, cols):
                skipped.append((n, f"{rows} x {cols} cannot split into {shape} cores"))
                continue
        else:
            try:
                resolve_matrix_shape(shape, rows, cols)
            except (ValueError, TypeError) as e:
                raise CLIError(
                    f"--shape {args.shape} does not fit {n} ({rows} x {cols}): {_one_line(e)}; "
                    "select matrices of one shape with --keys, or pass --shape n"
                ) from None
        dense_shape[n] = shape
    if mpos and not isinstance(shape, int) and any(n in mpos for n in chosen):
        notes.append("--shape applies to the dense matrices; MPO layers keep their own factors")
    outputs: list[tuple[str, str]] = []
    if args.json is not None:
        _check_output("--json", args.json, args.force)
        outputs.append(("--json", args.json))
    figure_names: dict[str, str] = {}
    if args.png is not None:
        _plot_formats()
        if os.path.exists(args.png) and not os.path.isdir(args.png):
            raise CLIError(f"--png {args.png} is a file; expected a folder (created if missing)")
        parent = os.path.dirname(os.path.abspath(args.png))
        if not os.path.isdir(parent):
            raise CLIError(f"--png {args.png}: folder {parent} does not exist; create it first")
        groups = sorted(
            {A.group_name(n) for n in chosen if n not in dict(skipped)}, key=A.group_key
        )
        figure_names = _figure_names(groups)
        if os.path.isdir(args.png):
            for name in figure_names.values():
                _check_output("--png", os.path.join(args.png, name), args.force)
        elif not os.access(parent, os.W_OK):
            raise CLIError(f"--png {args.png}: cannot write in folder {parent}")

    # ---- the work
    results: list[A.MatrixAnalysis] = []
    for n in chosen:
        if n not in mpos and n not in dense_shape:
            continue
        try:
            if n in mpos:
                results.append(A.analyze_matrix(mpos[n], bond_dims=caps, name=n))
            else:
                W = stored[n].load()
                results.append(A.analyze_matrix(W, dense_shape[n], bond_dims=caps, name=n))
        except (ValueError, TypeError) as e:
            skipped.append((n, _one_line(e)))
    if not results:
        n, why = skipped[0]
        raise CLIError(f"no matrix could be analysed; {n}: {why}")
    sizes = {n: math.prod(t.shape) for n, t in stored.items() if t.floating}
    shares = A.parameter_shares(sizes, shared)
    for note in notes:
        print(f"note: {note}")
    for n, why in skipped:
        print(f"skipped {n}: {why}")
    print(
        f"input {args.weights}: {len(files)} file(s), {len(stored)} tensors, "
        f"{len(results)} matrices analysed"
    )
    print(A.format_analysis(results, caps))
    print()
    print(A.format_shares(shares))
    print(
        "err@r: relative Frobenius error of TT-SVD with every bond capped at r (exact); the "
        "JSON file also gives the spectral bounds"
    )
    doc = {
        "tnlm_version": _version(),
        "input": args.weights,
        "files": files,
        "shape": args.shape,
        "notes": notes,
        "skipped": [{"name": n, "reason": why} for n, why in skipped],
        **A.analysis_to_json(results, shares),
    }
    status = 0
    for option, path in outputs:
        text = json.dumps(doc, indent=1, allow_nan=False)

        def write_json(tmp: str, text: str = text) -> None:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")

        if _report_write("analyze", option, path, write_json, args.force):
            print(f"analysis written to {path}")
        else:
            status = 1
    if args.png is not None:
        os.makedirs(args.png, exist_ok=True)
        by_group: dict[str, list[A.MatrixAnalysis]] = {}
        for r in results:
            by_group.setdefault(r.group, []).append(r)
        written = 0
        for g, members in by_group.items():
            path = os.path.join(args.png, figure_names[g])

            def plot(tmp: str, members: list[A.MatrixAnalysis] = members, g: str = g) -> None:
                A.plot_group(members, tmp, title=g)

            if _report_write("analyze", "--png", path, plot, args.force):
                written += 1
            else:
                status = 1
        print(f"{written} figure(s) written to {args.png}")
    return status


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tnlm`` console script; returns the exit status."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # --help, --version, or a one-line usage error
        return e.code if isinstance(e.code, int) else 2
    run = _analyze if args.command == "analyze" else _decompose
    try:
        return run(args)
    except MemoryError:
        print(f"tnlm {args.command}: error: out of memory", file=sys.stderr)
        return 1
    except (ValueError, TypeError, OSError) as e:
        msg = e.args[0] if isinstance(e, OSError) and len(e.args) == 1 else e
        print(f"tnlm {args.command}: error: {_one_line(msg)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
