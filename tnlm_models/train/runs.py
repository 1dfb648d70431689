"""Run folders: what ``train`` may write where, resuming, and ``metrics.jsonl``.

A run folder is ours when it holds ``run.json``, written first when ``train`` creates it;
each checkpoint folder carries its own marker (:data:`~.checkpoint.MARKER`). The rules::

    output_dir                       resume=False               resume=True
    ------------------------------   ------------------------   ---------------------------
    missing or empty                 created, run.json          error: no checkpoint
    a run without history            used                       error: no checkpoint
    a run with checkpoints/metrics   error (name, choices)      newest intact checkpoint
    anything else (not ours)         error, nothing touched     error, nothing touched

On resume a missing or corrupt ``index.json``, or a damaged latest checkpoint, is rebuilt
from the intact step folders with a warning. ``metrics.jsonl`` is cut back to the resumed
step through a temporary file (a crash leaves the old file or the new one); a torn last line
(a kill while appending) is dropped with a warning.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .checkpoint import (
    INDEX,
    MARKER,
    MODEL_FILE,
    IndexEntryError,
    list_checkpoints,
    load_training_state,
    read_index,
    verify_checkpoint,
    write_index,
)
from .files import disk_error, fault_armed, fault_point, read_json, write_atomic

__all__ = [
    "METRICS_FILE",
    "RUN_FILE",
    "append_metrics",
    "default_run_name",
    "find_resume_checkpoint",
    "prepare_run_dir",
    "truncate_metrics",
]

logger = logging.getLogger(__name__)

RUN_FILE = "run.json"
RUN_FORMAT = "tnlm-run"
METRICS_FILE = "metrics.jsonl"


# ---------------------------------------------------------------------------- run folders
def default_run_name(task: str) -> str:
    """``<task>-<local date>-<time>``, the folder name under ``runs/`` when none is given."""
    return f"{task}-{time.strftime('%Y%m%d-%H%M%S')}"


def _is_run(path: Path) -> bool:
    marker = path / RUN_FILE
    if not marker.is_file():
        return False
    info = read_json(marker)
    return isinstance(info, dict) and info.get("format") == RUN_FORMAT


def _is_legacy_run(path: Path) -> bool:
    """A run written before ``run.json`` existed: a valid index whose folders all hold a model
    and a trainer state."""
    root = path / "checkpoints"
    try:
        names = read_index(root).get("all") or []
    except ValueError:
        return False
    return bool(names) and all(
        (root / n / MODEL_FILE).is_file() and (root / n / "trainer_state.json").is_file()
        for n in names
    )


def _history(path: Path) -> tuple[list[str], list[str]]:
    """(checkpoint entries, metric files) a run folder already holds."""
    root = path / "checkpoints"
    entries = (
        sorted(p.name for p in root.iterdir() if not p.name.startswith(".tmp-"))
        if root.is_dir()
        else []
    )
    metrics = path / METRICS_FILE
    return entries, [METRICS_FILE] if metrics.is_file() and metrics.stat().st_size else []


def _mark_run(path: Path, task: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    info = {"format": RUN_FORMAT, "version": 1, "task": task, "created": time.time()}
    write_atomic(path / RUN_FILE, lambda fh: fh.write(json.dumps(info, indent=2).encode()))


def prepare_run_dir(run_dir: Path, *, resume: bool | str, task: str) -> Callable[[], None] | None:
    """Check that a run may write into ``run_dir`` (see the module docstring); mark it.

    Called on rank 0 only, before anything is written. Returns, when this call marked the
    folder, a function that takes the mark back (the marker, and the folders this call
    created) if the run fails before writing anything else; else None.

    Raises
    ------
    ValueError
        If ``run_dir`` is not empty and not a tnlm run, or holds checkpoints or metrics of
        a run and ``resume`` is off.
    FileNotFoundError
        If ``resume=True`` and ``run_dir`` holds no run.
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"output_dir {run_dir} is a file; a folder was expected")
    ours = run_dir.is_dir() and _is_run(run_dir)
    legacy = False
    if run_dir.is_dir() and not ours and any(run_dir.iterdir()):
        legacy = _is_legacy_run(run_dir)
        if not legacy:
            raise ValueError(
                f"output_dir {run_dir} is not empty and is not a tnlm run (no {RUN_FILE}); "
                "nothing in it was changed. Choose a new or empty output_dir, or the folder "
                "of an earlier tnlm run with resume=True"
            )
    if resume is True and not (ours or legacy):
        raise FileNotFoundError(f"resume requested but no checkpoint found in {run_dir}")
    if not resume and (ours or legacy):
        entries, metrics = _history(run_dir)
        if entries:
            shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise ValueError(
                f"{run_dir} already holds checkpoints; pass resume=True to continue that run "
                f"or choose another output_dir (found checkpoints/: {shown})"
            )
        if metrics:
            raise ValueError(
                f"{run_dir} already holds a run that stopped before its first checkpoint "
                f"({METRICS_FILE}); choose another output_dir or delete that folder"
            )
    if legacy:
        logger.warning("%s has no %s (an older tnlm run); marking it as a run", run_dir, RUN_FILE)
    if ours:
        return None
    created = [p for p in (run_dir, *run_dir.parents) if not p.exists()]
    _mark_run(run_dir, task)
    return lambda: _unmark_run(run_dir, created)


def _unmark_run(run_dir: Path, created: list[Path]) -> None:
    """Undo :func:`prepare_run_dir`'s mark if the folder still holds only the marker."""
    try:
        if [p.name for p in run_dir.iterdir()] != [RUN_FILE]:
            return
        (run_dir / RUN_FILE).unlink()
        for d in created:  # deepest first; rmdir refuses a folder something else wrote into
            d.rmdir()
    except OSError:
        pass


def _rebuild_index(root: Path, latest: Path, old: dict[str, Any]) -> None:
    """Write ``index.json`` from the intact step folders (``latest`` is the newest)."""
    intact: list[Path] = []
    for p in list_checkpoints(root):
        try:
            verify_checkpoint(p)
        except (ValueError, OSError):
            continue
        if p.name <= latest.name:
            intact.append(p)
    if latest not in intact:
        intact.append(latest)  # a checkpoint of an older tnlm, without marker
    names = sorted(p.name for p in intact)
    best, best_metric = old.get("best"), old.get("best_metric")
    if best not in names:
        best, best_metric = None, None
        for n in names:
            info = read_json(root / n / MARKER) if (root / n / MARKER).is_file() else {}
            m, greater = info.get("metric"), bool(info.get("greater_is_better"))
            if isinstance(m, int | float) and (
                best_metric is None or (m > best_metric if greater else m < best_metric)
            ):
                best, best_metric = n, m
    write_index(root, latest.name, best, best_metric, names)


def find_resume_checkpoint(
    target: Path, device: torch.device | str = "cpu"
) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """The checkpoint to resume from, its trainer state and its optimizer/RNG state.

    ``target`` is a checkpoint (taken as it is), or a run or ``checkpoints`` folder: then
    the index's latest checkpoint, or when the index is missing or corrupt, or that
    checkpoint is damaged, the newest intact one (with a warning; the index is rebuilt).

    Raises
    ------
    FileNotFoundError
        If no intact checkpoint is found (the reasons are listed).
    ValueError
        If a checkpoint given directly is damaged (the file is named), or the index names
        something other than a checkpoint folder (:class:`~.checkpoint.IndexEntryError`).
    """
    if (target / MODEL_FILE).is_file():
        verify_checkpoint(target)
        state, saved = load_training_state(target, device)
        return target, state, saved
    root = target / "checkpoints" if (target / "checkpoints").is_dir() else target
    problems: list[str] = []
    try:
        index = read_index(root)
        if not index and list_checkpoints(root):
            problems.append(f"{root / INDEX} is missing")
    except IndexEntryError:
        raise
    except ValueError as e:
        index = {}
        problems.append(str(e))
    named = [root / n for n in index.get("all", []) if (root / n).is_dir()]
    candidates = sorted({*list_checkpoints(root), *named}, reverse=True)
    if index.get("latest") and (root / index["latest"]).is_dir():
        latest = root / index["latest"]
        candidates = [latest] + [c for c in candidates if c != latest]
    elif index.get("latest"):
        problems.append(f"{root / INDEX} names {index['latest']}, which is missing")
    for ckpt in candidates:
        try:
            verify_checkpoint(ckpt)
            state, saved = load_training_state(ckpt, device)
        except ValueError as e:
            logger.warning("checkpoint %s is damaged and skipped: %s", ckpt, e)
            problems.append(str(e))
            continue
        if problems:
            logger.warning(
                "rebuilding %s from the intact checkpoints (%s); resuming from %s",
                root / INDEX,
                "; ".join(problems),
                ckpt,
            )
            _rebuild_index(root, ckpt, index)
        return ckpt, state, saved
    reasons = f" ({'; '.join(problems)})" if problems else ""
    raise FileNotFoundError(f"resume requested but no checkpoint found in {target}{reasons}")


# ---------------------------------------------------------------------------- metrics
def truncate_metrics(path: Path, last_step: int) -> None:
    """Keep the records of ``metrics.jsonl`` up to ``last_step``; rewrite it atomically.

    Raises
    ------
    ValueError
        If a line other than the last is not a JSON record (file and line named).
    """
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        stale.unlink(missing_ok=True)  # left by a run killed while rewriting
    if not path.is_file():
        return
    lines = path.read_bytes().split(b"\n")
    last = max((i for i, ln in enumerate(lines) if ln.strip()), default=-1)
    kept: list[bytes] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            step = rec.get("step", 0) if isinstance(rec, dict) else None
            if isinstance(step, bool) or not isinstance(step, int):
                raise ValueError("not a record with an integer 'step'")
        except ValueError as e:
            if i == last:
                logger.warning(
                    "%s, line %d is incomplete (the run stopped while writing it); dropped",
                    path,
                    i + 1,
                )
                continue
            reason = e.msg if isinstance(e, json.JSONDecodeError) else str(e)
            raise ValueError(
                f"{path}, line {i + 1}: not a JSON record ({reason}); fix or remove that line"
            ) from None
        if step <= last_step:
            kept.append(line + b"\n")
    write_atomic(path, lambda fh: fh.write(b"".join(kept)), fault="metrics-rewrite")


def append_metrics(path: Path, record: dict[str, Any]) -> None:
    """Append one record (one line) to ``metrics.jsonl``."""
    line = (json.dumps(record) + "\n").encode("utf-8")
    try:
        with open(path, "ab") as fh:
            if fault_armed("metrics-append", record.get("step")):
                fh.write(line[: len(line) // 2])
                fh.flush()
                fault_point("metrics-append", record.get("step"))
            fh.write(line)
    except OSError as e:
        raise disk_error(e, path) from None
