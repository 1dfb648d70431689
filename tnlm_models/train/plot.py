"""``plot_run``: PNG curves of loss, learning rate and validation metrics of a run."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["MARKER", "plot_run", "read_metrics"]

logger = logging.getLogger(__name__)


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The records of ``run_dir/metrics.jsonl``.

    Raises
    ------
    FileNotFoundError
        If the run has no ``metrics.jsonl``.
    ValueError
        If it holds no record, or a line is not a JSON object (file and line named).
    """
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no metrics.jsonl in {run_dir}; is it a run directory?")
    records = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            if lineno == len(lines):  # a record cut short by a crash: the others stand
                logger.warning("%s:%d: incomplete last record skipped", path, lineno)
                continue
            raise ValueError(f"{path}:{lineno}: not a JSON record ({e})") from None
        if not isinstance(rec, dict):
            raise ValueError(f"{path}:{lineno}: expected a JSON object, got {rec!r}")
        records.append(rec)
    if not records:
        raise ValueError(f"{path} holds no record")
    return records


#: written into every PNG plot_run makes (a PNG text chunk), so that it replaces only those
MARKER = "tnlm_models.train.plot_run"


def _check_ours(path: Path) -> None:
    if not path.exists():
        return
    if not path.is_file():
        raise ValueError(f"{path} exists and is not a file; choose another plot folder")
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    if MARKER.encode() not in head:
        raise FileExistsError(
            f"{path} exists and was not written by tnlm-train plot; it is left as it is: "
            "choose another plot folder (--out)"
        )


def _save(fig: Any, path: Path) -> None:
    """``fig`` as a PNG, written to a temporary file, flushed to disk and renamed."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fig.savefig(fh, format="png", dpi=100, metadata={"Source": MARKER})
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _points(records: list[dict], key: str) -> tuple[list[Any], list[Any]]:
    pts = [(r["step"], r[key]) for r in records if key in r and "step" in r]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_run(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    report: Callable[[str], None] | None = None,
) -> list[Path]:
    """Write ``loss.png``, ``lr.png`` and (when validated) ``metrics.png``.

    Each figure is titled with the run's name (its directory's name). A curve whose values
    the records lack is left out and named through ``report``; a figure with no curve at
    all is not written.

    Parameters
    ----------
    run_dir : path
        A run directory holding ``metrics.jsonl``.
    out_dir : path, optional
        Where the PNGs go; default ``run_dir/plots``.
    report : callable, optional
        Called with one message per missing curve; default: a logged warning.

    Returns
    -------
    list of Path
        The files written.

    Raises
    ------
    ValueError
        If the records hold nothing to plot (no loss, learning rate or metric).
    FileExistsError
        If the folder holds a PNG of the same name that ``plot_run`` did not write (its
        text chunk lacks :data:`MARKER`); nothing is written then.
    """
    records = read_metrics(run_dir)
    missing: list[str] = []
    name = Path(run_dir).resolve().name
    train = [r for r in records if r.get("split") == "train"]
    valid = [r for r in records if r.get("split") == "valid"]
    curves: dict[str, list[tuple[str, tuple[list, list], str]]] = {"loss": [], "lr": []}
    for split, recs, style in (("train", train, "-"), ("validation", valid, "o-")):
        pts = _points(recs, "loss")
        if pts[0]:
            curves["loss"].append((split, pts, style))
        elif recs:
            missing.append(
                f"no 'loss' in the {split} records of {name}: its loss curve is left out"
            )
    pts = _points(train, "lr")
    if pts[0]:
        curves["lr"].append(("train", pts, "-"))
    elif train:
        missing.append(f"no 'lr' in the train records of {name}: lr.png is not written")
    metric_names = sorted({k for r in valid for k in r} - {"step", "split", "loss"})
    if not curves["loss"] and not curves["lr"] and not metric_names:
        raise ValueError(
            f"nothing to plot in {Path(run_dir) / 'metrics.jsonl'}: its records hold no "
            "loss, lr or validation metric"
        )
    for message in missing:
        (report or logger.warning)(message)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir) if out_dir is not None else Path(run_dir) / "plots"
    if out.exists() and not out.is_dir():
        raise ValueError(f"the plot folder {out} is a file")
    names = [k for k in ("loss", "lr") if curves[k]] + (["metrics"] if metric_names else [])
    for stem in names:  # before any work: never replace a picture someone else made
        _check_ours(out / f"{stem}.png")
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for key, ylabel in (("loss", "loss"), ("lr", "learning rate")):
        if not curves[key]:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, (x, y), style in curves[key]:
            ax.plot(x, y, style, label=label)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        if key == "loss":
            ax.legend()
        ax.grid(alpha=0.3)
        fig.suptitle(name)
        fig.tight_layout()
        _save(fig, out / f"{key}.png")
        plt.close(fig)
        written.append(out / f"{key}.png")

    if metric_names:
        fig, axes = plt.subplots(
            1, len(metric_names), figsize=(4 * len(metric_names), 3.5), squeeze=False
        )
        for ax, metric in zip(axes[0], metric_names):
            x, y = _points(valid, metric)
            ax.plot(x, y, "o-")
            ax.set_title(metric)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
        fig.suptitle(name)
        fig.tight_layout()
        _save(fig, out / "metrics.png")
        plt.close(fig)
        written.append(out / "metrics.png")
    return written
