"""``write_report``: ``report.md`` and PNG plots of a study folder's ``results.jsonl``.

Files written (each through a temporary file and a rename)::

    report.md                  arms and budgets; pre-training and fine-tuning tables with the
                               mean and spread (sample standard deviation) over seeds
    valid_loss_vs_tokens.png   validation MLM loss against training tokens, one line per arm
    score_vs_parameters.png    each task's first GLUE metric against unique parameters
    score_vs_depth.png         the same against depth

An existing file is replaced only when it is one of these names in the study folder.
"""

from __future__ import annotations

import math
import os
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["PLOTS", "REPORT_FILE", "write_report"]

REPORT_FILE = "report.md"
PLOTS = ("valid_loss_vs_tokens.png", "score_vs_parameters.png", "score_vs_depth.png")


def _mean_spread(values: Sequence[float]) -> str:
    m = statistics.fmean(values)
    if len(values) < 2:
        return f"{m:.4f} (n=1)"
    return f"{m:.4f} ± {statistics.stdev(values):.4f} (n={len(values)})"


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # processes may share a study
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _metric_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if "value" in r and "metric" in r]


def _valid_curve(run_dir: Path) -> tuple[list[int], list[float]]:
    """``(tokens, validation loss)`` at each evaluation of a pre-training run."""
    from ..train.plot import read_metrics

    tokens, xs, ys = 0, [], []
    try:
        records = read_metrics(run_dir)
    except (OSError, ValueError):
        return [], []
    for r in records:
        if r.get("split") == "train" and "tokens" in r:
            tokens += int(r["tokens"])
        elif r.get("split") == "valid" and "loss" in r:
            xs.append(tokens)
            ys.append(float(r["loss"]))
    return xs, ys


def _figure(path: Path, draw: Any) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    try:
        draw(ax)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
    finally:
        plt.close(fig)
    _write_atomic(path, buf.getvalue())


def write_report(out: str | os.PathLike) -> list[Path]:
    """Write ``report.md`` and the plots of the study in ``out``; return their paths.

    Raises
    ------
    FileNotFoundError
        If ``out`` holds no ``results.jsonl``.
    """
    from .runner import RESULTS_FILE, read_results

    root = Path(out)
    if not (root / RESULTS_FILE).is_file():
        raise FileNotFoundError(f"no {RESULTS_FILE} in {root}; run the study first")
    rows = _metric_rows(read_results(root))
    arms: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["phase"] == "pretrain":
            arms.setdefault(r["arm"], r)

    lines = [f"# Study report: {root.name}", ""]
    lines += [
        "Parameters are unique (a shared tensor once); non-embedding excludes the embedding "
        "tables and their LayerNorm. Tokens, wall and CPU time are the training steps' "
        "(evaluation excluded); training FLOPs per token are counted by torch's flop counter on "
        "one forward and backward pass. Spread: sample standard deviation over seeds.",
        "",
        "## Pre-training",
        "",
        "| arm | family | depth | unique | non-embedding | tokens | train MFLOP/token | "
        "wall s | CPU s | valid MLM loss | valid MLM accuracy |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    by_metric = {(r["arm"], r["metric"]): r["value"] for r in rows if r["phase"] == "pretrain"}
    for name, r in arms.items():
        loss = by_metric.get((name, "loss"), math.nan)
        acc = by_metric.get((name, "accuracy"), math.nan)
        lines.append(
            f"| {name} | {r['family']} | {r['depth']} | {r['unique_parameters']:,} | "
            f"{r['non_embedding_parameters']:,} | {r['tokens']:,} | "
            f"{r.get('train_flops_per_token', math.nan) / 1e6:.2f} | {r['wall_s']:.1f} | "
            f"{r['cpu_s']:.1f} | {loss:.4f} | {acc:.4f} |"
        )
    groups: dict[tuple[str, str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["phase"] == "finetune":
            groups[(r["task"], r["metric"], r["mode"], r["arm"])].append(r)
    tasks = sorted({(k[0], k[1]) for k in groups})
    for task, metric in tasks:
        lines += [
            "",
            f"## Fine-tuning: {task}, {metric}",
            "",
            "| arm | mode | trainable | " + metric + " mean ± spread | tokens | wall s |",
            "|---|---|---:|---|---:|---:|",
        ]
        for (t, m, mode, arm), rs in groups.items():
            if (t, m) != (task, metric):
                continue
            lines.append(
                f"| {arm} | {mode} | {rs[0]['trainable_parameters']:,} | "
                f"{_mean_spread([x['value'] for x in rs])} | "
                f"{int(statistics.fmean(x['tokens'] for x in rs)):,} | "
                f"{statistics.fmean(x['wall_s'] for x in rs):.1f} |"
            )
    lines += ["", "Plots: " + ", ".join(f"[{p}]({p})" for p in PLOTS), ""]
    written = [root / REPORT_FILE]
    _write_atomic(written[0], "\n".join(lines).encode("utf-8"))

    def loss_curves(ax: Any) -> None:
        for name, r in arms.items():
            xs, ys = _valid_curve(Path(r["run_dir"]))
            if xs:
                ax.plot(xs, ys, marker="o", label=name)
        ax.set_xlabel("training tokens")
        ax.set_ylabel("validation MLM loss")

    def score_against(key: str, label: str) -> Any:
        def draw(ax: Any) -> None:
            for task, metric in tasks:
                if metric != next(m for t, m in tasks if t == task):
                    continue  # the task's first metric only
                for mode in ("full", "central"):
                    pts = [
                        (rs[0][key], statistics.fmean(x["value"] for x in rs))
                        for (t, m, md, _), rs in groups.items()
                        if (t, m, md) == (task, metric, mode)
                    ]
                    if pts:
                        pts.sort()
                        ax.plot(*zip(*pts), marker="o", label=f"{task} {metric} ({mode})")
            ax.set_xlabel(label)
            ax.set_ylabel("validation score (mean over seeds)")

        return draw

    for name, draw in zip(
        PLOTS,
        (
            loss_curves,
            score_against("unique_parameters", "unique parameters"),
            score_against("depth", "depth"),
        ),
    ):
        _figure(root / name, draw)
        written.append(root / name)
    return written
