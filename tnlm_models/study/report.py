"""``write_report``: ``report.md`` and PNG plots of a study folder's ``results.jsonl``.

Files written (each through a temporary file and a rename)::

    report.md                  arms and budgets; pre-training and fine-tuning tables with the
                               mean and spread (sample standard deviation) over seeds; the
                               learning-rate grid and the ablations when the study ran them
    valid_loss_vs_tokens.png   validation MLM loss against training tokens, one line per arm
    score_vs_parameters.png    each task's first GLUE metric against unique parameters
    score_vs_depth.png         the same against depth
    stability_train_loss.png, stability_layer_grad_norms.png
                               the stability runs' loss curves and per-layer gradient norms

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
#: written when the study ran the stable-initialisation comparison
STABILITY_PLOTS = ("stability_train_loss.png", "stability_layer_grad_norms.png")


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


def _curves(records: list[dict[str, Any]]) -> dict[str, dict[str, list[Any]]]:
    """Each run's curve record (``CURVE_KEY``), by run folder."""
    from .runner import CURVE_KEY

    return {
        str(r["run_dir"]): r[CURVE_KEY]
        for r in records
        if isinstance(r.get(CURVE_KEY), dict) and "run_dir" in r
    }


def _run_curve(curves: dict[str, dict[str, list[Any]]], run_dir: str | None) -> dict[str, Any]:
    """A run's curves: from its record in results.jsonl, else (a study written before the
    records existed) read from its run folder's metrics; empty when neither is there."""
    if run_dir is None:
        return {}
    if run_dir in curves:
        return curves[run_dir]
    from .runner import _run_totals

    try:
        return dict(_run_totals(Path(run_dir))["curve"])
    except (OSError, ValueError):
        return {}


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
    records = read_results(root)
    lines += _lr_grid_section(rows, records)
    stability = _stability_runs(records, rows)
    lines += _stability_section(stability)
    lines += _ablation_section(
        rows,
        "central-lr",
        "Central-tensor learning rate",
        "central_lr_factor",
        "central LR factor",
    )
    lines += _ablation_section(
        rows, "init", "Initialisation from a pre-trained dense BERT", "variant", "start"
    )
    plots = PLOTS + (STABILITY_PLOTS if stability else ())
    lines += ["", "Plots: " + ", ".join(f"[{p}]({p})" for p in plots), ""]
    written = [root / REPORT_FILE]
    _write_atomic(written[0], "\n".join(lines).encode("utf-8"))

    curves = _curves(records)

    def loss_curves(ax: Any) -> None:
        for name, r in arms.items():
            curve = _run_curve(curves, r.get("run_dir"))
            xs, ys = curve.get("valid_tokens", []), curve.get("valid_loss", [])
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
    if stability:
        for name, draw in zip(STABILITY_PLOTS, _stability_plots(stability)):
            _figure(root / name, draw)
            written.append(root / name)
    return written


# ---------------------------------------------------------------------------- ablations
def _lr_grid_section(rows: list[dict[str, Any]], records: list[dict[str, Any]]) -> list[str]:
    grid = [r for r in rows if r["phase"] == "lr-grid" and r["metric"] == "loss"]
    diverged = {
        (r["arm"], r["learning_rate"])
        for r in records
        if r.get("phase") == "lr-grid" and r.get("status") == "done" and r.get("diverged")
    }
    if not grid and not diverged:
        return []
    rates = sorted({r["learning_rate"] for r in grid} | {lr for _, lr in diverged})
    chosen = {
        r["arm"]: r.get("learning_rate")
        for r in rows
        if r["phase"] == "pretrain" and r["metric"] == "loss"
    }
    out = [
        "",
        "## Learning-rate grid (validation MLM loss of short runs; * the rate pre-training "
        "used; - not run yet)",
        "",
        "| arm | " + " | ".join(f"{lr:g}" for lr in rates) + " |",
        "|---|" + "---:|" * len(rates),
    ]
    for arm in dict.fromkeys([r["arm"] for r in grid] + [a for a, _ in sorted(diverged)]):
        cells = []
        for lr in rates:
            v = [r["value"] for r in grid if r["arm"] == arm and r["learning_rate"] == lr]
            mark = "*" if chosen.get(arm) == lr else ""
            if v:
                cells.append(f"{v[0]:.4f}{mark}")
            else:
                cells.append("diverged" if (arm, lr) in diverged else "-")
        out.append(f"| {arm} | " + " | ".join(cells) + " |")
    return out


def _stability_runs(
    records: list[dict[str, Any]], rows: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """One dict per stability run: its settings, final loss, and logged curves."""
    curves = _curves(records)
    runs = []
    for r in records:
        if r.get("phase") != "stability" or r.get("status") != "done":
            continue
        run = {k: r.get(k) for k in ("depth", "init_scheme", "learning_rate", "diverged")}
        valid = [
            x["value"]
            for x in rows
            if x["phase"] == "stability"
            and x["arm"] == r["arm"]
            and x.get("variant") == r.get("variant")
        ]
        run["valid_loss"] = valid[0] if valid else math.nan
        curve = _run_curve(curves, r.get("run_dir"))
        run.update(
            steps=curve.get("train_steps", []),
            losses=curve.get("train_loss", []),
            norms=curve.get("layer_grad_norms", []),
        )
        runs.append(run)
    return runs


def _spread(norms: list[float]) -> float:
    """max / min of the per-layer gradient norms (inf when a layer has none)."""
    lo = min(norms)
    return max(norms) / lo if lo > 0 else math.inf


def _stability_section(runs: list[dict[str, Any]]) -> list[str]:
    if not runs:
        return []
    out = [
        "",
        "## Stability from scratch (per-layer gradient norms: max/min over layers)",
        "",
        "| depth | init_scheme | lr | first train loss | last train loss | valid MLM loss | "
        "layer-norm spread, first step | last step | diverged |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in sorted(runs, key=lambda x: (x["learning_rate"], x["depth"], x["init_scheme"])):
        first = f"{r['losses'][0]:.4f}" if r["losses"] else "-"
        last = f"{r['losses'][-1]:.4f}" if r["losses"] else "-"
        s0 = f"{_spread(r['norms'][0]):.2f}" if r["norms"] else "-"
        s1 = f"{_spread(r['norms'][-1]):.2f}" if r["norms"] else "-"
        out.append(
            f"| {r['depth']} | {r['init_scheme']} | {r['learning_rate']:g} | {first} | {last} | "
            f"{r['valid_loss']:.4f} | {s0} | {s1} | {'yes' if r['diverged'] else 'no'} |"
        )
    return out


def _stability_plots(runs: list[dict[str, Any]]) -> tuple[Any, Any]:
    def label(r: dict[str, Any]) -> str:
        return f"L{r['depth']} {r['init_scheme']} lr {r['learning_rate']:g}"

    def losses(ax: Any) -> None:
        for r in runs:
            if r["steps"]:
                ax.plot(r["steps"], r["losses"], label=label(r))
        ax.set_xlabel("step")
        ax.set_ylabel("training MLM loss")

    def norms(ax: Any) -> None:
        for r in runs:
            if r["norms"]:
                ax.semilogy(range(len(r["norms"][0])), r["norms"][0], label=label(r))
        ax.set_xlabel("layer")
        ax.set_ylabel("gradient norm at the first logged step")

    return losses, norms


def _ablation_section(
    rows: list[dict[str, Any]], phase: str, title: str, key: str, header: str
) -> list[str]:
    runs: dict[Any, dict[str, float]] = {}
    info: dict[Any, dict[str, Any]] = {}
    for r in rows:
        if r["phase"] == phase:
            runs.setdefault(r.get(key), {})[r["metric"]] = r["value"]
            info.setdefault(r.get(key), r)
    if not runs:
        return []
    out = [
        "",
        f"## {title}",
        "",
        f"| {header} | arm | tokens | valid MLM loss | valid MLM accuracy |",
        "|---|---|---:|---:|---:|",
    ]
    for k, m in runs.items():
        r = info[k]
        out.append(
            f"| {k} | {r['arm']} | {r['tokens']:,} | {m.get('loss', math.nan):.4f} | "
            f"{m.get('accuracy', math.nan):.4f} |"
        )
    return out
