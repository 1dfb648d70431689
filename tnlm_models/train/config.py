"""``TrainConfig``: every hyper-parameter of a pre-training or fine-tuning run.

A config is built from keyword arguments, a dict, or a TOML/YAML file, plus overrides
(``key=value`` strings from the command line). Unknown keys and values of the wrong type are
errors that name the key and list the valid ones. The ``model`` table holds
``MPOBertConfig`` fields used when the trainer builds a new model.

Example TOML::

    task = "pretrain"
    max_steps = 200
    learning_rate = 1e-3

    [model]
    hidden_size = 128
    num_hidden_layers = 4
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from .._fields import PROBABILITY, Bounds, check_fields

__all__ = [
    "DATA_ENV",
    "DEFAULT_MODEL",
    "FREEZE_MODES",
    "LR_SCHEDULES",
    "PRECISIONS",
    "TASKS",
    "DataArg",
    "TrainConfig",
    "as_paths",
    "as_train_config",
    "load_config",
    "parse_override",
    "with_data",
]

#: The environment variable naming the data folder (the one that holds ``glue/``); config
#: files refer to it as ``${TNLM_DATA}``.
DATA_ENV = "TNLM_DATA"
_GLUE_SOURCE = (
    "GLUE comes from https://gluebenchmark.com/tasks (or the Hugging Face dataset "
    "'nyu-mll/glue'); keep its folders as <data>/glue/SST-2/train.tsv, ... and set "
    f"{DATA_ENV}=<data>"
)
#: Keys whose values are paths; ``${NAME}`` in them is replaced by the environment variable.
_PATH_KEYS = ("train_data", "valid_data", "tokenizer", "init_from", "output_dir")
_VARIABLE = re.compile(r"\$\{(\w+)\}")

TASKS = ("pretrain", "finetune")
LR_SCHEDULES = ("linear", "cosine", "constant")
PRECISIONS = ("auto", "fp32", "bf16")
#: What ``freeze`` may hold: nothing frozen, or the central tensors and embedding tables.
FREEZE_MODES = ("none", "central")

#: The small MPOBERT that ``tnlm-train pretrain`` builds when no model is given: it trains
#: on the built-in corpus in a few minutes on two CPU cores.
DEFAULT_MODEL: dict[str, Any] = {
    "hidden_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 512,
    "max_position_embeddings": 128,
    "num_cores": 3,
    "adapter_size": 4,
}

#: Numeric ranges of ``TrainConfig`` fields (types come from the annotations).
_BOUNDS: dict[str, Bounds] = {
    **dict.fromkeys(
        (
            "vocab_size",
            "num_epochs",
            "batch_size",
            "gradient_accumulation_steps",
            "eval_batch_size",
            "max_steps",
            "max_train_examples",
            "max_valid_examples",
            "num_threads",
        ),
        Bounds(1),
    ),
    **dict.fromkeys(
        (
            "seed",
            "warmup_steps",
            "eval_every",
            "save_every",
            "log_every",
            "keep_last",
            "num_workers",
            "weight_decay",
            "max_grad_norm",
            "central_lr_factor",
        ),
        Bounds(0),
    ),
    "max_seq_length": Bounds(8),
    "learning_rate": Bounds(0, lo_open=True),
    "adam_eps": Bounds(0, lo_open=True),
    "adam_beta1": PROBABILITY,
    "adam_beta2": PROBABILITY,
    "valid_fraction": PROBABILITY,
    "mlm_probability": Bounds(0, 1, lo_open=True, hi_open=True),
    "min_lr_ratio": Bounds(0, 1),
    "warmup_ratio": Bounds(0, 1, hi_open=True),
}


@dataclass
class TrainConfig:
    """Hyper-parameters of a training run.

    Parameters
    ----------
    task : {"pretrain", "finetune"}
        Masked-LM pre-training on text, or sequence classification on TSV files.
    output_dir : str, optional
        Run directory; default ``runs/<run_name>``.
    run_name : str, optional
        Default ``<task>-<YYYYmmdd-HHMMSS>``.
    seed : int
        Seeds model initialisation, data order, masks, dropout and the train/valid split.
    train_data, valid_data : list of str
        Files or folders. Pre-training: text, one document per line (empty: the built-in
        corpus); without ``valid_data`` a seeded ``valid_fraction`` of the documents is held
        out. Fine-tuning: GLUE-style TSV files.
    valid_fraction : float
        Held-out fraction of the documents when ``valid_data`` is empty (pre-training).
    text_format : {"blocks", "lines"}
        Pack the text into blocks of ``max_seq_length`` tokens, or one example per line.
    max_seq_length : int
        Tokens per example, ``[CLS]``/``[SEP]`` included; at most the model's
        ``max_position_embeddings``.
    max_train_examples, max_valid_examples : int, optional
        Keep only the first examples (quick runs).
    encoding : str
        Text encoding of the data files, read strictly (a byte that is not valid is an
        error naming the file and byte); a UTF-8 byte-order mark is dropped.
    tokenizer : str, optional
        A ``vocab.txt``, ``tokenizer.json`` or checkpoint directory. Default: the
        checkpoint's tokenizer when fine-tuning or resuming, else a WordPiece vocabulary of
        ``vocab_size`` trained on the training text.
    vocab_size : int
        Size of the WordPiece vocabulary trained when no ``tokenizer`` is given.
    lowercase : bool
        Lowercase the text before tokenization (a trained or ``vocab.txt`` tokenizer).
    mlm_probability : float
        Fraction of tokens chosen for the masked-LM loss (80% ``[MASK]``, 10% random,
        10% kept).
    text_a_column, text_b_column, label_column : int or str, optional
        TSV column indices or header names; default: recognise the layout of every GLUE
        task (``tnlm_models.data.GLUE_LAYOUTS``).
    has_header : bool, optional
        Whether TSV files start with a header row (default: when columns are named or the
        first row is a GLUE header or a non-numeric label above numeric ones).
    label_list : list of str, optional
        The label set, each class once; default: the sorted labels of the training file
        (numerically when all are integers, so ``"0"`` is class 0). Integer spellings are
        one label (``"01"`` is ``"1"``).
    regression : bool
        Real-valued labels, a single output and MSE loss.
    init_from : str, optional
        Checkpoint or run directory to start from (fine-tuning: an MLM checkpoint).
    learning_rate : float
        Peak learning rate.
    central_lr_factor : float
        Central tensors train at ``learning_rate * central_lr_factor``.
    freeze : {"none", "central"}
        ``"central"``: lightweight fine-tuning as in MPOP (Liu et al., ACL 2021): the
        central tensors and the embedding tables (word, position, token type) get
        ``requires_grad=False`` and stay bit-identical; the auxiliary tensors, adapters,
        dense (non-MPO) matrices, norms, biases and the heads train. The model must have
        central tensors. ``TrainResult.num_trainable_parameters`` counts what trains.
    weight_decay : float
        AdamW decoupled weight decay, applied to every parameter of two or more dimensions
        whose name contains none of ``no_decay``; never to biases and norms.
    no_decay : list of str
        Name fragments of parameters exempt from weight decay.
    adam_beta1, adam_beta2, adam_eps : float
        AdamW's moment decay rates and denominator epsilon.
    lr_schedule : {"linear", "cosine", "constant"}
        Decay after warm-up, down to ``min_lr_ratio * learning_rate``.
    warmup_ratio : float
        Linear warm-up over this fraction of the run's optimizer steps (rounded up).
    warmup_steps : int, optional
        Linear warm-up length in steps; when given it replaces ``warmup_ratio``.
    min_lr_ratio : float
        The final learning rate as a fraction of ``learning_rate``.
    max_steps : int, optional
        Optimizer steps; default ``num_epochs`` epochs.
    num_epochs : int
        Passes over the training data when ``max_steps`` is not set.
    batch_size : int
        Examples per optimizer step over all processes and accumulation steps; it must be
        divisible by ``gradient_accumulation_steps * world_size``.
    gradient_accumulation_steps : int
        Micro-batches whose gradients are summed before each optimizer step.
    max_grad_norm : float
        Gradient clipping threshold (0 disables clipping).
    precision : {"auto", "fp32", "bf16"}
        ``auto``: bf16 autocast on GPUs that support it, fp32 elsewhere.
    device : str
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    eval_batch_size : int
        Per-process evaluation batch size.
    eval_every : int, optional
        Evaluate every this many optimizer steps and at the end; default (None): at the end
        of every epoch (and of the run); 0: only at the end.
    save_every, log_every : int
        In optimizer steps; 0 means only at the end (save) or never (log).
    keep_last : int
        Checkpoints kept besides the best one.
    metric_for_best : str, optional
        Validation metric that selects the best checkpoint; default ``loss`` (pre-training),
        ``accuracy`` (classification) or ``loss`` (regression).
    resume : bool or str
        Continue from the latest checkpoint of ``output_dir`` (True) or from the given
        checkpoint path.
    num_workers : int
        DataLoader worker processes.
    num_threads : int, optional
        ``torch.set_num_threads`` value.
    progress : bool
        Show a progress bar (rank 0 only).
    log_layer_grad_norms : bool
        Add ``layer_grad_norms`` to every logged training record: the gradient norm of each
        encoder layer's own parameters (shared central tensors excluded, see
        ``MPOBertEncoder.layer_gradient_norms``), before clipping, at that step.
    model : dict
        ``MPOBertConfig`` fields for a new model (merged over :data:`DEFAULT_MODEL`).
    """

    task: str = "pretrain"
    output_dir: str | None = None
    run_name: str | None = None
    seed: int = 0
    # data
    train_data: list[str] = field(default_factory=list)
    valid_data: list[str] = field(default_factory=list)
    valid_fraction: float = 0.05
    text_format: str = "blocks"
    max_seq_length: int = 64
    max_train_examples: int | None = None
    max_valid_examples: int | None = None
    encoding: str = "utf-8"
    tokenizer: str | None = None
    vocab_size: int = 4000
    lowercase: bool = True
    mlm_probability: float = 0.15
    text_a_column: int | str | None = None
    text_b_column: int | str | None = None
    label_column: int | str | None = None
    has_header: bool | None = None
    label_list: list[str] | None = None
    regression: bool = False
    init_from: str | None = None
    # optimisation
    learning_rate: float = 1e-3
    central_lr_factor: float = 1.0
    freeze: str = "none"
    weight_decay: float = 0.01
    no_decay: list[str] = field(default_factory=lambda: ["bias", "LayerNorm", "layer_norm", "norm"])
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    lr_schedule: str = "linear"
    warmup_ratio: float = 0.1
    warmup_steps: int | None = None
    min_lr_ratio: float = 0.0
    max_steps: int | None = None
    num_epochs: int = 3
    batch_size: int = 32
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    precision: str = "auto"
    device: str = "auto"
    # evaluation, logging, checkpoints
    eval_batch_size: int = 64
    eval_every: int | None = None
    save_every: int = 0
    log_every: int = 10
    keep_last: int = 2
    metric_for_best: str | None = None
    resume: bool | str = False
    num_workers: int = 0
    num_threads: int | None = None
    progress: bool = True
    log_layer_grad_norms: bool = False
    model: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ validation
    @classmethod
    def field_names(cls) -> list[str]:
        """Names of every field."""
        return [f.name for f in dataclasses.fields(cls)]

    def validate(self) -> None:
        """Check types and ranges; raise ``TypeError``/``ValueError`` naming the field.

        Types come from the field annotations and ranges from ``_BOUNDS``
        (``tnlm_models._fields``); the rest are choices and rules between fields.
        """
        for name in ("train_data", "valid_data"):
            value = getattr(self, name)
            if isinstance(value, str | os.PathLike):
                setattr(self, name, [value])  # one path
        check_fields(self, _BOUNDS, "training config key")
        for name, options in (
            ("task", TASKS),
            ("lr_schedule", LR_SCHEDULES),
            ("precision", PRECISIONS),
            ("text_format", ("blocks", "lines")),
            ("freeze", FREEZE_MODES),
        ):
            if getattr(self, name) not in options:
                raise ValueError(
                    f"{name} must be one of {list(options)}, got {getattr(self, name)!r}"
                )
        if self.batch_size % self.gradient_accumulation_steps:
            raise ValueError(
                f"batch_size={self.batch_size} is not divisible by "
                f"gradient_accumulation_steps={self.gradient_accumulation_steps}"
            )

    # ------------------------------------------------------------------ schedule
    def warmup_for(self, total_steps: int) -> int:
        """Warm-up steps of a run of ``total_steps`` optimizer steps.

        ``warmup_steps`` when given, else ``ceil(warmup_ratio * total_steps)``.

        Examples
        --------
        >>> TrainConfig(warmup_ratio=0.1).warmup_for(57), TrainConfig(warmup_steps=5).warmup_for(57)
        (6, 5)
        """
        if self.warmup_steps is not None:
            return self.warmup_steps
        return math.ceil(self.warmup_ratio * total_steps)

    def evaluates_after(self, done: int, total_steps: int, steps_per_epoch: int) -> bool:
        """Whether the run evaluates after its ``done``-th optimizer step.

        At the last step always; else every ``eval_every`` steps, or at the end of every
        epoch when ``eval_every`` is None (0: only at the end).

        Examples
        --------
        >>> [d for d in range(1, 10) if TrainConfig().evaluates_after(d, 9, 4)]
        [4, 8, 9]
        """
        if done == total_steps:
            return True
        every = steps_per_epoch if self.eval_every is None else self.eval_every
        return bool(every) and done % every == 0

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """A JSON/TOML-serialisable dict (``from_dict`` inverts it)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a dict, rejecting unknown keys (the valid ones are listed)."""
        if not isinstance(d, dict):
            raise TypeError(f"a training config must be a mapping, got {type(d).__name__}")
        names = cls.field_names()
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ValueError(
                f"unknown training config key(s) {unknown}; valid keys are: {', '.join(names)}"
            )
        return cls(**d)

    def replace(self, **changes: Any) -> TrainConfig:
        """A validated copy with some fields changed (unknown keys rejected)."""
        d = self.to_dict()
        d.update(changes)
        return TrainConfig.from_dict(d)


# ---------------------------------------------------------------------------- files
def parse_override(item: str) -> tuple[str, Any]:
    """Parse ``key=value``; the value is read as a TOML value (``1e-3``, ``true``,
    ``[1, 2]``, ``"text"``), or taken as a plain string when it is not one."""
    if "=" not in item:
        raise ValueError(f"an override must look like key=value, got {item!r}")
    key, raw = item.split("=", 1)
    key = key.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def _read_file(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file not found: {p}")
    text = p.read_text(encoding="utf-8")
    if p.suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{p}: invalid TOML: {e}") from None
    elif p.suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{p}: invalid YAML: {e}") from None
    else:
        raise ValueError(f"config file must end in .toml, .yaml or .yml, got {p.name!r}")
    if not isinstance(data, dict):
        raise TypeError(f"{p}: a config file must hold a table of keys, got {type(data).__name__}")
    return data


def _expand_path(key: str, raw: str, source: str) -> str:
    """``raw`` with every ``${NAME}`` replaced by ``os.environ[NAME]``.

    An unset variable is an error; so is a path built from one that does not exist (the
    message says what the variable should name, and for data where GLUE comes from).
    """
    names = _VARIABLE.findall(raw)
    if not names:
        return raw
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        hint = f"; {_GLUE_SOURCE}" if DATA_ENV in missing else ""
        raise ValueError(
            f"{source}: {key} = {raw!r} needs the environment variable {missing[0]}, which is "
            f"not set{hint}"
        )
    path = _VARIABLE.sub(lambda m: os.environ[m.group(1)], raw)
    if key in ("train_data", "valid_data", "tokenizer", "init_from") and not Path(path).exists():
        values = ", ".join(f"{n}={os.environ[n]!r}" for n in dict.fromkeys(names))
        hint = f"; {_GLUE_SOURCE}" if "glue" in raw.lower() else ""
        raise FileNotFoundError(
            f"{source}: {key} {path} (from {raw!r} with {values}) does not exist{hint}"
        )
    return path


def _expand_paths(data: dict[str, Any], source: str) -> None:
    """Expand ``${NAME}`` in the path keys of a config file's table, in place."""
    for key in _PATH_KEYS:
        value = data.get(key)
        if isinstance(value, str):
            data[key] = _expand_path(key, value, source)
        elif isinstance(value, list):
            data[key] = [_expand_path(key, v, source) if isinstance(v, str) else v for v in value]


def load_config(
    path: str | os.PathLike | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
) -> TrainConfig:
    """Read a TOML or YAML config and apply overrides.

    Parameters
    ----------
    path : path, optional
        ``.toml``, ``.yaml`` or ``.yml`` file. In its path keys (``train_data``,
        ``valid_data``, ``tokenizer``, ``init_from``, ``output_dir``) ``${NAME}`` stands for
        the environment variable ``NAME``, e.g. ``"${TNLM_DATA}/glue/SST-2/train.tsv"``; an
        unset variable, or a data path built from one that does not exist, is an error.
    overrides : list of "key=value" or dict, optional
        Applied after the file; ``model.<field>=value`` sets one model field.

    Returns
    -------
    TrainConfig
    """
    data: dict[str, Any] = {}
    if path is not None:
        data = _read_file(path)
        _expand_paths(data, str(path))
    items = (
        overrides.items() if isinstance(overrides, dict) else map(parse_override, overrides or [])
    )
    for key, value in items:
        if key.startswith("model."):
            model = dict(data.get("model") or {})
            model[key[len("model.") :]] = value
            data["model"] = model
        else:
            data[key] = value
    try:
        return TrainConfig.from_dict(data)
    except (TypeError, ValueError) as e:
        if path is not None:
            raise type(e)(f"{path}{_line_of_key(path, str(e))}: {e}") from None
        raise


def _line_of_key(path: str | os.PathLike, message: str) -> str:
    """``":N"``, the line of ``path`` that sets the key an error message names, or ``""``."""
    match = re.search(r"key '([A-Za-z_][A-Za-z0-9_]*)'", message)
    if match is None:
        return ""
    setting = re.compile(rf"^\s*{re.escape(match.group(1))}\s*[=:]")
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return ""
    return next((f":{n}" for n, line in enumerate(lines, 1) if setting.match(line)), "")


# ---------------------------------------------------------------------------- arguments
#: what ``train(data=...)`` and ``evaluate(data=...)`` take
DataArg = str | os.PathLike | Sequence[str | os.PathLike] | dict[str, Any] | None


def as_train_config(
    config: TrainConfig | dict | str | os.PathLike | None, overrides: dict[str, Any]
) -> TrainConfig:
    """The ``config`` argument of ``train``/``evaluate`` as a :class:`TrainConfig` (a config,
    a dict of its fields, a TOML/YAML path or None for the defaults), ``overrides`` applied."""
    if config is None:
        cfg = TrainConfig.from_dict({})
    elif isinstance(config, TrainConfig):
        cfg = config
    elif isinstance(config, dict):
        cfg = TrainConfig.from_dict(dict(config))
    elif isinstance(config, str | os.PathLike):
        cfg = load_config(config)
    else:
        raise TypeError(
            f"config must be a TrainConfig, dict or TOML/YAML path, got {type(config).__name__}"
        )
    return cfg.replace(**overrides) if overrides else cfg


def as_paths(x: Any, name: str) -> list[str]:
    """``x`` (None, a path or a list of paths) as a list of strings; ``name`` is the argument
    named in the ``TypeError`` for anything else."""
    if x is None:
        return []
    if isinstance(x, str | os.PathLike):
        return [os.fspath(x)]
    if isinstance(x, list | tuple) and all(isinstance(p, str | os.PathLike) for p in x):
        return [os.fspath(p) for p in x]
    raise TypeError(f"{name} must be a path or a list of paths, got {type(x).__name__}")


def with_data(cfg: TrainConfig, data: DataArg) -> TrainConfig:
    """``cfg`` with the data files of ``train(data=...)``: a path or list of paths (training
    files), or ``{"train": ..., "valid": ...}``; None keeps the config's."""
    if data is None:
        return cfg
    if isinstance(data, dict):
        unknown = sorted(set(data) - {"train", "valid"})
        if unknown:
            raise ValueError(f"unknown data keys {unknown}; valid keys are ['train', 'valid']")
        return cfg.replace(
            train_data=as_paths(data.get("train"), "data['train']") or cfg.train_data,
            valid_data=as_paths(data.get("valid"), "data['valid']") or cfg.valid_data,
        )
    return cfg.replace(train_data=as_paths(data, "data"))
