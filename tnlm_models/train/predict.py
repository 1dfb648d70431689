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
from pathlib import Path
from typing import Any

import torch

from ..data import (
    ClassificationCollator,
    GlueTestExamples,
    KeyedDataset,
    TokenDataset,
    detect_glue_layout,
    eval_batches,
    read_glue_test_tsv,
)
from ..tokenization import WordPieceTokenizer
from .checkpoint import read_checkpoint_json, resolve_checkpoint
from .config import TrainConfig
from .distributed import resolve_device
from .models import check_model, device_batch, model_classes, trusted
from .precision import autocast_context

__all__ = ["has_labels", "predict", "read_prediction_inputs"]

logger = logging.getLogger(__name__)

#: header names of the example index in GLUE files (``id`` in QQP)
INDEX_COLUMNS = ("index", "id")


def has_labels(cfg: TrainConfig, path: str | os.PathLike) -> bool:
    """False when ``path`` holds no labels: a GLUE test file (recognised by its header,
    :func:`tnlm_models.data.detect_glue_layout`), or a file whose label column
    (``cfg.label_column``) is its ``index``/``id`` column, as when a test file is read with
    the column numbers of its training file (MRPC: column 0 is ``Quality`` in train.tsv,
    ``index`` in test.tsv)."""
    if cfg.text_a_column is None:
        return detect_glue_layout(path, encoding=cfg.encoding).labeled
    label = cfg.label_column
    if isinstance(label, str):
        return label not in INDEX_COLUMNS
    if isinstance(label, int) and not isinstance(label, bool):
        first = _first_row(Path(path), cfg.encoding)
        return not (label < len(first) and first[label].strip() in INDEX_COLUMNS)
    return True


def _first_row(path: Path, encoding: str) -> list[str]:
    with open(path, encoding=encoding) as fh:
        return fh.readline().lstrip("\ufeff").rstrip("\r\n").split("\t")


def read_prediction_inputs(cfg: TrainConfig, path: str | os.PathLike) -> GlueTestExamples:
    """The examples of ``path`` in file order, with the id GLUE expects for each.

    Columns come from ``cfg`` (``text_a_column``, ``text_b_column``, ``has_header``) when
    set; otherwise the layout is recognised by its header: a GLUE test file or any
    labelled layout fine-tuning reads (:func:`tnlm_models.data.read_glue_test_tsv`). The id
    is the file's ``index``/``id`` column when it has one, else the 0-based row number.

    Raises
    ------
    ValueError
        If the layout is not recognised, or a row has too few columns (file and line named).
    """
    p = Path(path)
    index: str | None = None
    if cfg.text_a_column is not None and cfg.has_header is not False:
        try:  # a GLUE header: take its id column, whatever the text columns
            layout = detect_glue_layout(p, encoding=cfg.encoding)
        except ValueError:
            layout = None
        if layout is not None and layout.header and isinstance(layout.index, str):
            if layout.index in [c.strip() for c in _first_row(p, cfg.encoding)]:
                index = layout.index
    return read_glue_test_tsv(
        p,
        text_a=cfg.text_a_column,
        text_b=cfg.text_b_column,
        index=index,
        header=cfg.has_header,
        encoding=cfg.encoding,
    )


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
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError(
            "predict runs in one process (every process would write the same file); "
            "start it without torchrun"
        )
    data = Path(data)
    if not data.is_file():
        raise FileNotFoundError(f"data file not found: {data}")
    out_path = None if out is None else Path(out)
    if out_path is not None:
        _check_out(out_path, data, force)
    ckpt = resolve_checkpoint(checkpoint, "best")
    saved = read_checkpoint_json(ckpt, "train_config.json")
    state = read_checkpoint_json(ckpt, "trainer_state.json")
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
    _, _, ForCls = model_classes()
    num_labels = 1 if cfg.regression else len(label_list)
    model = ForCls.from_pretrained(ckpt, num_labels=num_labels)
    check_model(model, cfg, tok, num_labels)
    model.to(device).eval()

    enc = tok.encode_batch(inputs.texts_a, inputs.texts_b, max_length=cfg.max_seq_length)
    dummy: float | int = 0.0 if cfg.regression else 0
    items = TokenDataset(
        [{"input_ids": ids, "token_type_ids": t, "label": dummy} for ids, t in enc]
    )
    collate = ClassificationCollator(tok)
    autocast = autocast_context(cfg, device)
    preds: list[str] = []
    for keys in eval_batches(len(items), cfg.eval_batch_size):
        batch = collate([KeyedDataset(items)[k] for k in keys])
        batch.pop("labels")
        batch = device_batch(model, batch, device)
        with autocast, trusted(model):
            logits = model(**batch).logits.float()  # (B, num_labels)
        if cfg.regression:
            # the shortest text that reads back as the same float32
            preds.extend(str(v) for v in logits.view(-1).cpu().numpy())
        else:
            preds.extend(str(label_list[k]) for k in logits.argmax(-1).tolist())
    if out_path is None:
        return preds
    text = "index\tprediction\n" + "".join(f"{i}\t{y}\n" for i, y in zip(inputs.indices, preds))
    _write_atomic(out_path, text)
    logger.info("wrote %d predictions of %s to %s", len(preds), ckpt, out_path)
    return out_path
