"""``predict``: label a TSV file with a fine-tuned checkpoint, in GLUE's submission format.

The output is what the GLUE server takes (``SST-2.tsv``, ``CoLA.tsv``, ...)::

    index	prediction
    0	1
    1	0

one row per example in input order: the label string for classification, the score for
regression. The inputs may be GLUE test files, which carry an ``index`` (or ``id``) column
and no label, or any file that fine-tuning reads (its labels are ignored).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data import (
    ClassificationCollator,
    KeyedDataset,
    TokenDataset,
    detect_glue_layout,
    eval_batches,
)
from ..serialization import read_json_object
from ..tokenization import WordPieceTokenizer
from ._support import _autocast, _check_model, _model_classes
from .checkpoint import resolve_checkpoint
from .config import TrainConfig
from .distributed import resolve_device

__all__ = ["PredictionInputs", "has_labels", "predict", "read_prediction_inputs"]

logger = logging.getLogger(__name__)

#: header names of the example index in GLUE test files (``id`` in QQP)
INDEX_COLUMNS = ("index", "id")
#: text columns of GLUE test files, pairs first: (text_a, text_b or None)
TEST_TEXT_COLUMNS: tuple[tuple[str, str | None], ...] = (
    ("sentence1", "sentence2"),  # MNLI, RTE, WNLI, STS-B
    ("question1", "question2"),  # QQP
    ("#1 String", "#2 String"),  # MRPC
    ("question", "sentence"),  # QNLI
    ("sentence", None),  # CoLA, SST-2
)


@dataclass
class PredictionInputs:
    """The examples of a file to label: their ``index`` (as written in the output) and
    texts (``texts_b`` is None for single sentences)."""

    index: list[str]
    texts_a: list[str]
    texts_b: list[str] | None
    path: str


def _rows(path: Path) -> list[list[str]]:
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    with open(path, encoding="utf-8") as fh:
        rows = [line.rstrip("\r\n").split("\t") for line in fh]
    while rows and rows[-1] == [""]:
        rows.pop()
    if not rows:
        raise ValueError(f"data file is empty: {path}")
    return rows


def _test_layout(header: list[str]) -> tuple[str, str, str | None] | None:
    """``(index, text_a, text_b)`` column names when ``header`` is a GLUE test file's."""
    if "label" in header:
        return None
    index = next((c for c in INDEX_COLUMNS if c in header), None)
    if index is None:
        return None
    for a, b in TEST_TEXT_COLUMNS:
        if a in header and (b is None or b in header):
            return index, a, b
    return None


def _column(c: int | str, names: list[str], path: Path, what: str) -> int:
    if isinstance(c, bool) or not isinstance(c, int | str):
        raise TypeError(f"{what} must be an int index or a str name, got {c!r}")
    if isinstance(c, int):
        return c
    if c not in names:
        raise ValueError(f"{what} {c!r} is not in the header of {path}; columns are {names}")
    return names.index(c)


def has_labels(cfg: TrainConfig, path: str | os.PathLike) -> bool:
    """False when ``path`` is a file without labels: a GLUE test file (an ``index``/``id``
    column and no ``label``), or a file whose label column (``cfg.label_column``) is headed
    ``index`` or ``id``."""
    p = Path(path)
    first = _rows(p)[0]
    if cfg.label_column is None:
        return _test_layout(first) is None
    named = cfg.has_header is True or any(
        isinstance(c, str) for c in (cfg.text_a_column, cfg.text_b_column, cfg.label_column)
    )
    if isinstance(cfg.label_column, int) and not isinstance(cfg.label_column, bool):
        if cfg.label_column < len(first) and first[cfg.label_column] in INDEX_COLUMNS:
            return False  # a test file read with the training file's column numbers
        return True
    return not (named and cfg.label_column in INDEX_COLUMNS)


def read_prediction_inputs(cfg: TrainConfig, path: str | os.PathLike) -> PredictionInputs:
    """The examples of ``path`` in file order, with the index GLUE expects for each.

    Columns come from ``cfg`` (``text_a_column``, ``text_b_column``, ``has_header``) when
    set; otherwise a GLUE test header (``index``/``id`` and the task's text columns) or one
    of the labelled layouts fine-tuning recognises (:func:`tnlm_models.data.detect_glue_layout`)
    is used. The index is the file's ``index``/``id`` column when it has one, else the row
    number counted from 0.

    Raises
    ------
    ValueError
        If the layout is not recognised, or a row has too few columns (file and line named).
    """
    p = Path(path)
    rows = _rows(p)
    header = rows[0]
    text_a: int | str | None
    text_b: int | str | None
    if cfg.text_a_column is not None:
        text_a, text_b = cfg.text_a_column, cfg.text_b_column
        has_header = cfg.has_header
        if has_header is None:
            has_header = isinstance(text_a, str) or isinstance(text_b, str)
    elif (test := _test_layout(header)) is not None:
        _, text_a, text_b = test
        has_header = True
    else:
        layout = detect_glue_layout(p)  # the labelled layouts; raises naming the file
        text_a, text_b, has_header = layout.text_a, layout.text_b, layout.header
    names = header if has_header else []
    if not has_header and any(isinstance(c, str) for c in (text_a, text_b)):
        raise ValueError(f"a column is given by name but {p} is read without header")
    cols = [_column(text_a, names, p, "text_a_column")]
    if text_b is not None:
        cols.append(_column(text_b, names, p, "text_b_column"))
    index_col = next((names.index(c) for c in INDEX_COLUMNS if c in names), None)
    need = max(cols + ([index_col] if index_col is not None else [])) + 1
    index: list[str] = []
    texts_a: list[str] = []
    texts_b: list[str] = []
    start = 1 if has_header else 0
    for lineno, row in enumerate(rows[start:], start=start + 1):
        if row == [""]:
            continue
        if len(row) < need:
            raise ValueError(
                f"{p}:{lineno}: malformed row, expected at least {need} tab-separated "
                f"columns, got {len(row)}"
            )
        index.append(row[index_col] if index_col is not None else str(len(index)))
        texts_a.append(row[cols[0]])
        if text_b is not None:
            texts_b.append(row[cols[1]])
    if not texts_a:
        raise ValueError(f"data file holds no example: {p}")
    return PredictionInputs(index, texts_a, texts_b if text_b is not None else None, str(p))


def _read_json(path: Path) -> dict[str, Any]:
    """The JSON object of a checkpoint file ({} when absent; the file named when broken)."""
    return read_json_object(path) if path.is_file() else {}


def _check_out(out: Path, data: Path, force: bool) -> None:
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give a file name")
    if out.exists() and out.resolve() == data.resolve():
        raise ValueError(f"--out {out} is the input file; choose another name")
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; pass force=True (--force) to overwrite it")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"cannot write {out}: {parent} is a file, not a folder")
            break


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, flush it to disk, rename it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        if os.environ.get("TNLM_TEST_HOOK") == "predict-before-rename":
            os._exit(75)  # a test stops here: the process dies between write and rename
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@torch.no_grad()
def predict(
    checkpoint: str | os.PathLike,
    data: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    force: bool = False,
    **overrides: Any,
) -> Path | list[str]:
    """Predict the label (or score) of every example of a TSV file.

    Parameters
    ----------
    checkpoint : path
        A fine-tuned checkpoint folder, or a run directory (its best checkpoint, else its
        latest).
    data : path
        A TSV file: a GLUE test file (``index`` column, no label) or any layout that
        fine-tuning reads (see :func:`read_prediction_inputs`).
    out : path, optional
        Where to write the predictions in GLUE's submission format (header
        ``index<TAB>prediction``, one row per example in input order), atomically. None
        returns the predictions instead.
    force : bool
        Overwrite ``out`` if it exists (otherwise that is an error).
    **overrides
        Settings over the run's saved config: ``eval_batch_size``, ``device``,
        ``text_a_column``, ...

    Returns
    -------
    Path or list of str
        ``out``, or the predictions (label strings, or scores formatted as in the file).

    Raises
    ------
    FileExistsError
        If ``out`` exists and ``force`` is False.
    ValueError
        If the checkpoint is not a fine-tuned classifier, or the file cannot be read.

    Examples
    --------
    >>> predict("runs/finetune-x", "glue/SST-2/test.tsv", "SST-2.tsv")  # doctest: +SKIP
    PosixPath('SST-2.tsv')
    """
    data = Path(data)
    if not data.is_file():
        raise FileNotFoundError(f"data file not found: {data}")
    out_path = None if out is None else Path(out)
    if out_path is not None:
        _check_out(out_path, data, force)
    ckpt = resolve_checkpoint(checkpoint, "best")
    saved = _read_json(ckpt / "train_config.json")
    state = _read_json(ckpt / "trainer_state.json")
    saved.pop("label_list", None)
    cfg = TrainConfig.from_dict(saved).replace(resume=False, **overrides)
    if cfg.task != "finetune":
        raise ValueError(
            f"{ckpt} is a masked-LM ({cfg.task}) checkpoint; predict needs a fine-tuned "
            "classifier (tnlm-train finetune --init-from ...)"
        )
    label_list: list[str] = list(state.get("label_list") or cfg.label_list or [])
    if not cfg.regression and not label_list:
        raise ValueError(f"{ckpt} records no label list (trainer_state.json); cannot name labels")
    inputs = read_prediction_inputs(cfg, data)
    device = resolve_device(cfg.device)
    tok = WordPieceTokenizer.load(ckpt)
    _, _, ForCls = _model_classes()
    num_labels = 1 if cfg.regression else len(label_list)
    model = ForCls.from_pretrained(ckpt, num_labels=num_labels)
    _check_model(model, cfg, tok, num_labels)
    model.to(device).eval()

    enc = tok.encode_batch(inputs.texts_a, inputs.texts_b, max_length=cfg.max_seq_length)
    dummy: float | int = 0.0 if cfg.regression else 0
    items = TokenDataset(
        [{"input_ids": ids, "token_type_ids": t, "label": dummy} for ids, t in enc]
    )
    collate = ClassificationCollator(tok)
    autocast = _autocast(cfg, device)
    preds: list[str] = []
    for keys in eval_batches(len(items), cfg.eval_batch_size):
        batch = collate([KeyedDataset(items)[k] for k in keys])
        batch.pop("labels")
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast:
            logits = model(**batch).logits.float()  # (B, num_labels)
        if cfg.regression:
            # the shortest text that reads back as the same float32
            preds.extend(str(v) for v in logits.view(-1).cpu().numpy())
        else:
            preds.extend(str(label_list[k]) for k in logits.argmax(-1).tolist())
    if out_path is None:
        return preds
    text = "index\tprediction\n" + "".join(f"{i}\t{y}\n" for i, y in zip(inputs.index, preds))
    _write_atomic(out_path, text)
    logger.info("wrote %d predictions of %s to %s", len(preds), ckpt, out_path)
    return out_path
