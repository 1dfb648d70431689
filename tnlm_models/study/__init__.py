"""The MPOBERT study: arms at equal parameters, a resumable runner and its report.

``run_study("smoke", "runs/study")`` pre-trains every arm, fine-tunes it on each task and
seed, and writes ``results.jsonl``, ``report.md`` and PNG plots (see ``runner`` and
``report``); ``tnlm-train study`` is its command line.
"""

from .arms import PRESETS, Arm, Preset, build_arms, count_parameters, finetune_modes, get_preset
from .report import write_report
from .runner import read_results, run_study, task_spec

__all__ = [
    "PRESETS",
    "Arm",
    "Preset",
    "build_arms",
    "count_parameters",
    "finetune_modes",
    "get_preset",
    "read_results",
    "run_study",
    "task_spec",
    "write_report",
]
