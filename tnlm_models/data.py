"""Data pipeline: text corpora, GLUE-style TSV files, masked-LM and classification batches.

Everything random here is a pure function of a seed and a position, so that a run resumed
from a checkpoint sees exactly the batches and masks the uninterrupted run saw, and so that
one process and ``N`` data-parallel processes see the same global batches:

* the order of examples in epoch ``e`` is ``default_rng([seed, e]).permutation(n)``
  (:class:`StepBatcher`), and the batch of optimizer step ``s`` is a slice of it;
* the mask of example ``i`` in epoch ``e`` is drawn from ``default_rng([seed, e, i])``
  (:class:`MLMCollator`), whichever process or worker builds the batch.

Text layouts
------------
``"lines"``
    every non-empty line is one example, truncated to the sequence length;
``"blocks"``
    the token stream of all lines is packed into blocks of ``max_seq_length - 2`` tokens,
    each wrapped as ``[CLS] block [SEP]``.
"""

from __future__ import annotations

import codecs
import logging
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .tokenization import WordPieceTokenizer

__all__ = [
    "BINARY_SIGNATURES",
    "EVAL_EPOCH",
    "GLUE_LAYOUTS",
    "TEXT_FORMATS",
    "ClassificationCollator",
    "ClassificationDataset",
    "GlueExamples",
    "GlueLayout",
    "GlueTestExamples",
    "LABEL_HEADER_WORDS",
    "KeyedDataset",
    "MLMCollator",
    "StepBatcher",
    "TokenDataset",
    "binary_reason",
    "build_mlm_dataset",
    "check_class_labels",
    "check_encoding",
    "check_label_list",
    "decode_text",
    "default_corpus",
    "detect_glue_layout",
    "encode_classification",
    "eval_batches",
    "infer_label_list",
    "normalize_label",
    "read_glue_test_tsv",
    "read_glue_tsv",
    "read_text",
    "read_text_file",
    "split_documents",
    "train_batches",
]

logger = logging.getLogger(__name__)

TEXT_FORMATS = ("lines", "blocks")
#: epoch key used for evaluation masks, so that evaluation masks never change between runs
EVAL_EPOCH = 1_000_003


# ---------------------------------------------------------------------------- text corpora
def default_corpus() -> list[str]:
    """The built-in corpus: the paragraphs of the standard library's ``pydoc_data.topics``.

    Every Python installation carries this text (the language reference's help topics,
    about 0.5 MB), so pre-training works with no data at all.

    Returns
    -------
    list of str
        Non-empty paragraphs, in a fixed order.
    """
    from pydoc_data.topics import topics

    paragraphs: list[str] = []
    for key in sorted(topics):
        for para in topics[key].split("\n\n"):
            para = " ".join(para.split())
            if para:
                paragraphs.append(para)
    return paragraphs


#: bytes of a file's head examined to tell a binary file from text
SNIFF_BYTES = 8192
#: magic numbers of common binary formats (a file starting with one is never read as text)
BINARY_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"%PDF-", "a PDF document"),
    (b"PK\x03\x04", "a zip archive"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\xfd7zXZ\x00", "an xz archive"),
    (b"(\xb5/\xfd", "a zstd archive"),
    (b"7z\xbc\xaf'\x1c", "a 7z archive"),
    (b"\x7fELF", "an ELF executable"),
    (b"\x93NUMPY", "a numpy array"),
)
_WIDE_BOMS = (
    codecs.BOM_UTF32_LE,
    codecs.BOM_UTF32_BE,
    codecs.BOM_UTF16_LE,
    codecs.BOM_UTF16_BE,
)


def check_encoding(encoding: object) -> str:
    """The canonical name of a text encoding (``"utf-8"``, ``"latin-1"`` -> ``"iso8859-1"``).

    Raises
    ------
    TypeError
        If ``encoding`` is not a str.
    ValueError
        If Python knows no text codec of that name.
    """
    if not isinstance(encoding, str):
        raise TypeError(f"encoding must be a str such as 'utf-8', got {type(encoding).__name__}")
    try:
        info = codecs.lookup(encoding)
    except LookupError:
        raise ValueError(
            f"unknown text encoding {encoding!r}; use a Python codec name such as 'utf-8', "
            "'latin-1' or 'cp1252'"
        ) from None
    if not getattr(info, "_is_text_encoding", True):
        raise ValueError(f"encoding {encoding!r} is not a text encoding (it maps bytes to bytes)")
    return info.name


def binary_reason(head: bytes, encoding: str = "utf-8") -> str | None:
    """Why ``head`` (the first bytes of a file) is not text, or None if it may be.

    A file is binary when it starts with a known magic number
    (:data:`BINARY_SIGNATURES`) or, for an 8-bit or UTF-8 encoding, holds a NUL byte.
    """
    for magic, what in BINARY_SIGNATURES:
        if head.startswith(magic):
            return f"it is {what}"
    wide = check_encoding(encoding).startswith(("utf-16", "utf-32"))
    if not wide and not head.startswith(_WIDE_BOMS):
        nul = head.find(b"\x00")
        if nul >= 0:
            return f"it holds a NUL byte at offset {nul}"
    return None


def decode_text(data: bytes, path: str | os.PathLike, encoding: str = "utf-8") -> str:
    """Decode the bytes of a text file strictly, dropping a leading byte-order mark.

    Raises
    ------
    ValueError
        On bytes that are not valid in ``encoding``: the message names the file, the byte
        offset and the line, and says to pass ``encoding=``.
    """
    codec = check_encoding(encoding)
    start = 0
    if codec == "utf-8":
        if data.startswith(_WIDE_BOMS):
            raise ValueError(
                f"file {os.fspath(path)} is UTF-16 or UTF-32 text (it starts with that "
                "byte-order mark), not utf-8; pass encoding='utf-16' (or 'utf-32')"
            )
        if data.startswith(codecs.BOM_UTF8):
            start = len(codecs.BOM_UTF8)
    try:
        text = data[start:].decode(codec)
    except UnicodeDecodeError as e:
        offset = start + e.start
        line = data.count(b"\n", 0, offset) + 1
        bad = data[offset : offset + min(max(e.end - e.start, 1), 4)]
        raise ValueError(
            f"file {os.fspath(path)} is not valid {encoding} at byte {offset} (line {line}, "
            f"bytes {bad!r}); pass encoding='...' with the file's encoding "
            "(e.g. encoding='latin-1' or 'cp1252')"
        ) from None
    return text[1:] if text.startswith("\ufeff") else text


def _read_unless_binary(path: Path, encoding: str) -> tuple[bytes, str | None]:
    """The bytes of ``path``, or ``(b"", reason)`` for a binary file (only its head read)."""
    with open(path, "rb") as fh:
        head = fh.read(SNIFF_BYTES)
        reason = binary_reason(head, encoding)
        if reason is not None:
            return b"", reason
        return head + fh.read(), None


def read_text_file(path: str | os.PathLike, *, encoding: str = "utf-8") -> str:
    """The whole text of one file, read strictly (see :func:`decode_text`).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file is binary (:func:`binary_reason`) or not valid in ``encoding``.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"data file not found: {p}")
    data, reason = _read_unless_binary(p, encoding)
    if reason is not None:
        raise ValueError(f"file {p} is not a text file ({reason}); expected {encoding} text")
    return decode_text(data, p, encoding)


def _split_lines(text: str) -> list[str]:
    # universal newlines (\n, \r\n, \r), as text-mode files; not str.splitlines, which
    # also splits at form feeds and Unicode separators inside a line
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _text_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if not files:
            raise ValueError(f"data folder {path} holds no files")
        return files
    raise FileNotFoundError(f"data path not found: {path}")


def read_text(
    paths: str | os.PathLike | Sequence[str | os.PathLike], *, encoding: str = "utf-8"
) -> list[str]:
    """Read the non-empty lines of text files, or of every file under folders.

    Files are decoded strictly (a leading byte-order mark is dropped): a byte that is not
    valid in ``encoding`` is an error naming the file, the byte offset and the line, never
    a silently replaced character. Binary files (:func:`binary_reason`: a known magic
    number, or a NUL byte in the first :data:`SNIFF_BYTES` bytes) found in a folder are
    skipped with a warning; a binary file named explicitly is an error.

    Parameters
    ----------
    paths : path or sequence of paths
        Files, or folders read recursively in sorted order (hidden files skipped).
    encoding : str, default "utf-8"
        Text encoding of every file.

    Returns
    -------
    list of str
        Stripped non-empty lines, one document each.

    Raises
    ------
    FileNotFoundError
        If a path does not exist.
    ValueError
        If no path is given, the files hold no text, a named file is binary, or a file is
        not valid in ``encoding``.
    """
    check_encoding(encoding)
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    if len(paths) == 0:
        raise ValueError("no data files given")
    docs: list[str] = []
    for p in paths:
        root = Path(p)
        files = _text_files(root)
        skipped: list[str] = []
        for f in files:
            data, reason = _read_unless_binary(f, encoding)
            if reason is not None:
                if f == root:
                    raise ValueError(
                        f"data file {f} is not a text file ({reason}); expected {encoding} "
                        "text, one document per line"
                    )
                logger.warning(
                    "skipping %s in data folder %s: not a text file (%s)", f, root, reason
                )
                skipped.append(f.name)
                continue
            lines = [ln.strip() for ln in _split_lines(decode_text(data, f, encoding))]
            if not any(lines):
                logger.warning("data file %s holds no text", f)
            docs.extend(ln for ln in lines if ln)
        if skipped and len(skipped) == len(files):
            raise ValueError(
                f"data folder {root} holds no text file (skipped as binary: {skipped[:5]})"
            )
    if not docs:
        raise ValueError(f"data files are empty (no non-blank line): {[str(p) for p in paths]}")
    return docs


def split_documents(
    docs: Sequence[str], valid_fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """Split documents into train and validation sets by a seeded rule.

    Document ``i`` goes to validation when it is among the first
    ``ceil(valid_fraction * n)`` entries of ``default_rng(seed).permutation(n)``;
    the order within each part is the original order.

    Parameters
    ----------
    docs : sequence of str
    valid_fraction : float
        In ``[0, 1)``; 0 gives an empty validation set.
    seed : int

    Returns
    -------
    train, valid : list of str
    """
    if not 0.0 <= valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction!r}")
    n = len(docs)
    n_valid = int(np.ceil(valid_fraction * n)) if valid_fraction > 0 else 0
    if n_valid and n - n_valid < 1:
        raise ValueError(f"cannot split {n} document(s) into non-empty train and validation sets")
    chosen = np.zeros(n, dtype=bool)
    chosen[np.random.default_rng(seed).permutation(n)[:n_valid]] = True
    train = [d for d, c in zip(docs, chosen) if not c]
    valid = [d for d, c in zip(docs, chosen) if c]
    return train, valid


# ---------------------------------------------------------------------------- datasets
class TokenDataset(torch.utils.data.Dataset):
    """Encoded examples: each item is a dict with ``input_ids``, ``token_type_ids``
    and optionally ``label``."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]

    def num_tokens(self) -> int:
        """Total number of tokens, special tokens included."""
        return sum(len(it["input_ids"]) for it in self.items)


def build_mlm_dataset(
    docs: Sequence[str],
    tokenizer: WordPieceTokenizer,
    max_seq_length: int,
    text_format: str = "blocks",
) -> TokenDataset:
    """Encode documents for masked-LM training.

    Parameters
    ----------
    docs : sequence of str
    tokenizer : WordPieceTokenizer
    max_seq_length : int
        Length of an example including ``[CLS]`` and ``[SEP]``.
    text_format : {"lines", "blocks"}

    Returns
    -------
    TokenDataset
    """
    if text_format not in TEXT_FORMATS:
        raise ValueError(f"text_format must be one of {TEXT_FORMATS}, got {text_format!r}")
    if max_seq_length < 8:
        raise ValueError(f"max_seq_length must be >= 8, got {max_seq_length}")
    items: list[dict[str, Any]] = []
    if text_format == "lines":
        for ids, types in tokenizer.encode_batch(list(docs), max_length=max_seq_length):
            if len(ids) > 2:
                items.append({"input_ids": ids, "token_type_ids": types})
    else:
        stream: list[int] = []
        for ids in tokenizer.encode_plain(list(docs)):
            stream.extend(ids)
        body = max_seq_length - 2
        for start in range(0, len(stream), body):
            chunk = stream[start : start + body]
            if len(chunk) < 2:
                continue
            ids = [tokenizer.cls_id, *chunk, tokenizer.sep_id]
            items.append({"input_ids": ids, "token_type_ids": [0] * len(ids)})
    if not items:
        raise ValueError("the text yields no example after tokenization")
    return TokenDataset(items)


# ---------------------------------------------------------------------------- GLUE TSV
@dataclass(frozen=True)
class GlueLayout:
    """Where the fields of a GLUE-style TSV file are.

    Columns are indices (int) or header names (str). ``text_b`` is None for single
    sentences, ``label`` is None for unlabeled (test) files, and ``index`` is the column of
    example ids that GLUE files carry (used when present; else an example's id is its
    0-based position).
    """

    name: str
    header: bool
    text_a: int | str
    text_b: int | str | None
    label: int | str | None
    index: int | str | None = None

    @property
    def labeled(self) -> bool:
        """Whether the layout has a label column (train and dev files, not test files)."""
        return self.label is not None


#: The GLUE layouts, in the order :func:`detect_glue_layout` tries them: the first whose
#: text and label columns are all in the header wins, so the specific layouts come first
#: and the unlabeled (test-file) layouts last.
GLUE_LAYOUTS: tuple[GlueLayout, ...] = (
    # CoLA train/dev: no header; source, label, author's label, sentence
    GlueLayout("cola", header=False, text_a=3, text_b=None, label=1),
    # Quality, #1 ID, #2 ID, #1 String, #2 String
    GlueLayout("mrpc", True, "#1 String", "#2 String", "Quality"),
    # id, qid1, qid2, question1, question2, is_duplicate
    GlueLayout("qqp", True, "question1", "question2", "is_duplicate", "id"),
    # index, promptID, pairID, genre, ... parses ..., sentence1, sentence2, label1, ...
    # gold_label (train, dev_matched, dev_mismatched)
    GlueLayout("mnli", True, "sentence1", "sentence2", "gold_label", "index"),
    # index, genre, filename, year, old_index, source1, source2, sentence1, sentence2, score
    GlueLayout("sts-b", True, "sentence1", "sentence2", "score", "index"),
    # index, question, sentence, label
    GlueLayout("qnli", True, "question", "sentence", "label", "index"),
    # index, sentence1, sentence2, label: RTE and WNLI
    GlueLayout("pair", True, "sentence1", "sentence2", "label", "index"),
    # sentence, label
    GlueLayout("sst-2", True, "sentence", None, "label"),
    # test files: the same texts, no label
    GlueLayout("mrpc-test", True, "#1 String", "#2 String", None, "index"),
    GlueLayout("qqp-test", True, "question1", "question2", None, "id"),
    GlueLayout("qnli-test", True, "question", "sentence", None, "index"),
    # STS-B, MNLI (test_matched, test_mismatched), RTE, WNLI, AX
    GlueLayout("pair-test", True, "sentence1", "sentence2", None, "index"),
    # SST-2 and CoLA: index, sentence
    GlueLayout("single-test", True, "sentence", None, None, "index"),
)
#: the layouts by name
KNOWN_LAYOUTS: dict[str, GlueLayout] = {layout.name: layout for layout in GLUE_LAYOUTS}

#: names of a label column; a first row whose label cell is one (and appears nowhere else
#: in the column) is a header, also when the columns are given as integers
LABEL_HEADER_WORDS = frozenset(
    {"label", "labels", "gold_label", "class", "target", "y", "quality", "is_duplicate", "score"}
)

_INT_LABEL = re.compile(r"[+-]?[0-9]+")


def _read_tsv_rows(path: Path, encoding: str = "utf-8") -> list[list[str]]:
    rows = [line.split("\t") for line in _split_lines(read_text_file(path, encoding=encoding))]
    while rows and rows[-1] == [""]:
        rows.pop()
    if not rows:
        raise ValueError(f"data file is empty: {path}")
    return rows


def _match_layout(first: Sequence[str]) -> GlueLayout | None:
    names = {c.strip() for c in first}
    for layout in GLUE_LAYOUTS:
        if not layout.header:
            if len(first) == 4 and first[1].strip() in ("0", "1"):
                return layout
            continue
        wanted = [c for c in (layout.text_a, layout.text_b, layout.label) if c is not None]
        if all(c in names for c in wanted):
            return layout
    return None


def detect_glue_layout(path: str | os.PathLike, *, encoding: str = "utf-8") -> GlueLayout:
    """Recognise a GLUE task's TSV layout (train, dev or test file) by its first row.

    The layouts are those of CoLA (no header: source, label, author's label, sentence),
    SST-2 (``sentence``, ``label``), MRPC (``Quality``, ``#1 ID``, ``#2 ID``,
    ``#1 String``, ``#2 String``), STS-B (... ``sentence1``, ``sentence2``, ``score``),
    QQP (``id``, ``qid1``, ``qid2``, ``question1``, ``question2``, ``is_duplicate``),
    MNLI (... ``sentence1``, ``sentence2``, ..., ``gold_label``), QNLI (``index``,
    ``question``, ``sentence``, ``label``), RTE and WNLI (``index``, ``sentence1``,
    ``sentence2``, ``label``), and the test files of each (the same header without the
    label column; SST-2's and CoLA's are ``index``, ``sentence``); see
    :data:`GLUE_LAYOUTS`. A UTF-8 byte-order mark is ignored.

    Raises
    ------
    ValueError
        If the file matches none of them (then give the columns explicitly).
    """
    p = Path(path)
    return _layout_of(p, _read_tsv_rows(p, encoding)[0])


def _layout_of(p: Path, first: Sequence[str]) -> GlueLayout:
    layout = _match_layout(first)
    if layout is None:
        raise ValueError(
            f"cannot recognise the layout of {p} (first row {list(first[:6])}); known layouts "
            f"are {sorted(KNOWN_LAYOUTS)}; set text_a_column, text_b_column and label_column"
        )
    return layout


def _is_number(s: str) -> bool:
    try:
        return math.isfinite(float(s))
    except ValueError:
        return False


def _resolve_columns(
    p: Path,
    rows: list[list[str]],
    columns: Sequence[int | str | None],
    header: bool | None,
    label_position: int | None,
) -> tuple[list[int | None], int, list[str]]:
    """Column indices (None stays None), the first data row, and the header names."""
    for c in columns:
        if c is not None and (isinstance(c, bool) or not isinstance(c, int | str)):
            raise TypeError(f"a column must be an int index or a str name, got {c!r}")
    known = _match_layout(rows[0])
    if header is None:
        if any(isinstance(c, str) for c in columns):
            header = True
        elif known is not None and known.header:
            header = True  # a GLUE header, whatever columns were given
            logger.info("%s: the first row is a header (%s layout)", p, known.name)
        else:
            header = _label_says_header(rows, columns, label_position)
            if header:
                logger.info("%s: the first row is a header (its label is not a number)", p)
    elif not header and any(isinstance(c, str) for c in columns):
        named = next(c for c in columns if isinstance(c, str))
        raise ValueError(f"column {named!r} given by name but {p} is read without header")
    elif not header and known is not None and known.header:
        raise ValueError(
            f"{p}:1 is the header of a GLUE {known.name} file ({rows[0][:6]}) but has_header "
            "is false; set has_header = true so the header is not read as an example"
        )
    names = [c.strip() for c in rows[0]] if header else []
    idx: list[int | None] = []
    for c in columns:
        if c is None:
            idx.append(None)
        elif isinstance(c, str):
            if not header:
                raise ValueError(f"column {c!r} given by name but {p} is read without header")
            if c not in names:
                raise ValueError(f"column {c!r} not in the header of {p}; columns are {names}")
            idx.append(names.index(c))
        elif c < 0:
            raise ValueError(f"a column index must be >= 0, got {c}")
        else:
            idx.append(c)
    return idx, (1 if header else 0), names


def _label_says_header(
    rows: list[list[str]], columns: Sequence[int | str | None], label_position: int | None
) -> bool:
    """Whether the first row is a header, judged by its label cell: a header word
    (:data:`LABEL_HEADER_WORDS`) found nowhere else in the column, or a label that is not a
    number above labels that all are."""
    if label_position is None or len(rows) < 2:
        return False
    col = columns[label_position]
    if not isinstance(col, int) or len(rows[0]) <= col:
        return False
    first = rows[0][col].strip()
    rest = [r[col].strip() for r in rows[1:] if len(r) > col]
    if first.lower() in LABEL_HEADER_WORDS and first not in rest:
        return True
    return not _is_number(first) and bool(rest) and all(map(_is_number, rest))


@dataclass
class GlueExamples:
    """Raw classification examples read from a TSV file."""

    texts_a: list[str]
    texts_b: list[str] | None
    labels: list[str]
    lines: list[int]
    path: str


def _rows_of(
    p: Path, rows: list[list[str]], idx: list[int | None], start: int
) -> Iterator[tuple[int, list[str]]]:
    need = max(i for i in idx if i is not None) + 1
    for lineno, row in enumerate(rows[start:], start=start + 1):
        if row == [""]:
            continue
        if len(row) < need:
            raise ValueError(
                f"{p}:{lineno}: malformed row, expected at least {need} tab-separated "
                f"columns, got {len(row)}"
            )
        yield lineno, row


def read_glue_tsv(
    path: str | os.PathLike,
    *,
    text_a: int | str | None = None,
    text_b: int | str | None = None,
    label: int | str | None = None,
    header: bool | None = None,
    encoding: str = "utf-8",
) -> GlueExamples:
    """Read a labeled GLUE-format TSV file with single sentences or sentence pairs.

    Parameters
    ----------
    path : path
    text_a, text_b, label : int or str, optional
        Column index or header name of the first text, the second text (pairs only) and
        the label. When ``text_a`` is None the layout is detected
        (:func:`detect_glue_layout`); explicit columns are the fallback for other files.
    header : bool, optional
        Whether the first row is a header. Default: True when a column is given by name
        or the first row is a GLUE header; with integer columns also when the first row's
        label is a column name (:data:`LABEL_HEADER_WORDS`) found nowhere else, or is not
        a number while every other row's is. A GLUE header is never read as an example
        (``header=False`` on one is an error).
    encoding : str, default "utf-8"
        Read strictly; a UTF-8 byte-order mark is dropped.

    Returns
    -------
    GlueExamples

    Raises
    ------
    ValueError
        On an empty, binary or wrongly encoded file, an unknown column name, an unlabeled
        (test) file, a row with too few columns or an empty label (the message names the
        file and line).
    """
    p = Path(path)
    rows = _read_tsv_rows(p, encoding)
    if text_a is None:
        layout = _layout_of(p, rows[0])
        if not layout.labeled:
            raise ValueError(
                f"{p} has no label column (a GLUE {layout.name} file, columns "
                f"{rows[0][:6]}); training and evaluation need labels; predict on it "
                "instead (read_glue_test_tsv)"
            )
        text_a, text_b, label, header = layout.text_a, layout.text_b, layout.label, layout.header
    if label is None:
        raise ValueError(f"label_column must be given for {p}")
    idx, start, _ = _resolve_columns(p, rows, [text_a, label, text_b], header, 1)
    a_list: list[str] = []
    b_list: list[str] = []
    labels: list[str] = []
    lines: list[int] = []
    for lineno, row in _rows_of(p, rows, idx, start):
        lab = row[idx[1]].strip()  # type: ignore[index]
        if not lab:
            raise ValueError(f"{p}:{lineno}: empty label")
        a_list.append(row[idx[0]])  # type: ignore[index]
        labels.append(lab)
        if idx[2] is not None:
            b_list.append(row[idx[2]])
        lines.append(lineno)
    if not a_list:
        raise ValueError(f"data file holds no example: {p}")
    return GlueExamples(a_list, b_list if text_b is not None else None, labels, lines, str(p))


@dataclass
class GlueTestExamples:
    """Unlabeled examples read from a GLUE test file (or the texts of a labeled file).

    ``indices[k]`` is example ``k``'s id as the file writes it (the ``index`` or ``id``
    column; else its 0-based position), which GLUE submissions pair with the prediction.
    """

    indices: list[str]
    texts_a: list[str]
    texts_b: list[str] | None
    lines: list[int]
    path: str
    layout: str | None


def read_glue_test_tsv(
    path: str | os.PathLike,
    *,
    text_a: int | str | None = None,
    text_b: int | str | None = None,
    index: int | str | None = None,
    header: bool | None = None,
    encoding: str = "utf-8",
) -> GlueTestExamples:
    """Read the ``(index, text_a[, text_b])`` rows of a GLUE test file, for prediction.

    Every GLUE task's test layout is recognised (:data:`GLUE_LAYOUTS`, e.g. SST-2's
    ``index``/``sentence``, MNLI's ``test_matched.tsv``); a labeled train or dev file is
    read too, its label column ignored.

    Parameters
    ----------
    path : path
    text_a, text_b, index : int or str, optional
        Columns of the first text, the second text and the example id, by index or header
        name. When ``text_a`` is None the layout is detected (:func:`detect_glue_layout`).
        Without an index column the id is the example's 0-based position.
    header : bool, optional
        As in :func:`read_glue_tsv`.
    encoding : str, default "utf-8"

    Returns
    -------
    GlueTestExamples

    Raises
    ------
    ValueError
        On an empty, binary or wrongly encoded file, an unrecognised layout without
        columns, an unknown column name, or a row with too few columns (file and line).
    """
    p = Path(path)
    rows = _read_tsv_rows(p, encoding)
    layout_name = None
    if text_a is None:
        layout = _layout_of(p, rows[0])
        layout_name = layout.name
        text_a, text_b, header = layout.text_a, layout.text_b, layout.header
        names = {c.strip() for c in rows[0]} if layout.header else set()
        if index is None and layout.index in names:
            index = layout.index
    idx, start, _ = _resolve_columns(p, rows, [text_a, text_b, index], header, None)
    ids: list[str] = []
    a_list: list[str] = []
    b_list: list[str] = []
    lines: list[int] = []
    for lineno, row in _rows_of(p, rows, idx, start):
        ids.append(row[idx[2]].strip() if idx[2] is not None else str(len(ids)))
        a_list.append(row[idx[0]])  # type: ignore[index]
        if idx[1] is not None:
            b_list.append(row[idx[1]])
        lines.append(lineno)
    if not a_list:
        raise ValueError(f"data file holds no example: {p}")
    return GlueTestExamples(
        ids, a_list, b_list if text_b is not None else None, lines, str(p), layout_name
    )


# ---------------------------------------------------------------------------- labels
def normalize_label(label: str) -> str:
    """The one spelling of a class label: stripped, and an integer without leading zeros
    or ``+`` (``"01"`` and ``"+1"`` are ``"1"``), so that one class never becomes two.

    >>> normalize_label(" 01 "), normalize_label("entailment")
    ('1', 'entailment')
    """
    s = label.strip()
    return str(int(s)) if _INT_LABEL.fullmatch(s) else s


def _is_real_number(label: str) -> bool:
    """A finite number that is not spelled as an integer (``"0.5"``, ``"4.750"``)."""
    s = label.strip()
    return not _INT_LABEL.fullmatch(s) and _is_number(s)


_REAL_HINT = (
    "a classifier needs class labels (a real value would be cut to a class); set "
    "regression = true for real-valued labels (e.g. STS-B scores), or give label_list to "
    "take these strings as classes"
)


def check_label_list(label_list: Sequence[str]) -> list[str]:
    """Validate a label set and return it with each label normalised
    (:func:`normalize_label`); class ``k`` is ``label_list[k]``.

    Raises
    ------
    TypeError
        If it is not a sequence of str.
    ValueError
        If a label is empty or listed twice (``"1"`` and ``"01"`` are the same label), or
        fewer than two classes are given.
    """
    if isinstance(label_list, str) or not isinstance(label_list, Sequence):
        raise TypeError(f"label_list must be a list of str, got {type(label_list).__name__}")
    for lab in label_list:
        if not isinstance(lab, str):
            raise TypeError(f"label_list entries must be str, got {lab!r} in {list(label_list)}")
    norm = [normalize_label(lab) for lab in label_list]
    if not all(norm):
        raise ValueError(f"label_list {list(label_list)} holds an empty label")
    dups = sorted({lab for lab in norm if norm.count(lab) > 1})
    if dups:
        raise ValueError(
            f"label_list {list(label_list)} lists {dups} more than once (integer spellings "
            "are one label: '01' is '1'); list each class once"
        )
    if len(norm) < 2:
        raise ValueError(
            f"label_list must hold at least 2 classes, got {list(label_list)}; for "
            "real-valued labels set regression = true"
        )
    return norm


def check_class_labels(examples: GlueExamples) -> None:
    """Refuse real-number labels (``"0.5"``) for a classifier, naming the file and line."""
    for lab, line in zip(examples.labels, examples.lines):
        if _is_real_number(lab):
            raise ValueError(f"{examples.path}:{line}: label {lab!r} is a number; {_REAL_HINT}")


def infer_label_list(labels: Sequence[str]) -> list[str]:
    """The distinct labels, normalised (:func:`normalize_label`) and sorted: numerically
    when all are integers (so label ``"0"`` is class 0), else as strings.

    Raises
    ------
    ValueError
        If a label is a real number (``"0.5"``): a classifier needs class labels.
    """
    distinct = {normalize_label(lab) for lab in labels}
    real = sorted(lab for lab in distinct if _is_real_number(lab))
    if real:
        raise ValueError(f"labels {real[:5]} are numbers; {_REAL_HINT}")
    if all(_INT_LABEL.fullmatch(lab) for lab in distinct):
        return sorted(distinct, key=int)
    return sorted(distinct)


class ClassificationDataset(TokenDataset):
    """Encoded classification examples with their label set."""

    def __init__(self, items: list[dict[str, Any]], label_list: list[str] | None) -> None:
        super().__init__(items)
        self.label_list = label_list


def encode_classification(
    examples: GlueExamples,
    tokenizer: WordPieceTokenizer,
    max_seq_length: int,
    label_list: Sequence[str] | None,
) -> ClassificationDataset:
    """Tokenize examples and map labels to indices.

    Parameters
    ----------
    label_list : sequence of str or None
        The label set (:func:`check_label_list`), index ``k`` for ``label_list[k]``;
        labels match after :func:`normalize_label`. None means regression (labels parsed
        as finite floats).

    Raises
    ------
    ValueError
        If a label is outside the label set or not a finite number (file and line named).
    """
    classes = None if label_list is None else check_label_list(label_list)
    enc = tokenizer.encode_batch(examples.texts_a, examples.texts_b, max_length=max_seq_length)
    items: list[dict[str, Any]] = []
    lookup = None if classes is None else {lab: k for k, lab in enumerate(classes)}
    for (ids, types), lab, line in zip(enc, examples.labels, examples.lines):
        if lookup is None:
            y: float | int = float(lab) if _is_number(lab) else math.nan
            if not math.isfinite(y):
                raise ValueError(
                    f"{examples.path}:{line}: label {lab!r} is not a number (regression needs "
                    "finite real labels)"
                )
        else:
            key = normalize_label(lab)
            if key not in lookup:
                hint = f"; {_REAL_HINT}" if _is_real_number(key) else ""
                raise ValueError(
                    f"{examples.path}:{line}: label {lab!r} is outside the label set "
                    f"{classes}{hint}"
                )
            y = lookup[key]
        items.append({"input_ids": ids, "token_type_ids": types, "label": y})
    return ClassificationDataset(items, classes)


# ---------------------------------------------------------------------------- batching
def _pad(seqs: Sequence[Sequence[int]], value: int, length: int) -> torch.Tensor:
    out = torch.full((len(seqs), length), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


class MLMCollator:
    """Masked-LM batches with dynamic padding.

    Of the non-special tokens, each is chosen with probability ``mlm_probability``
    (at least one per example); a chosen token becomes ``[MASK]`` with probability 0.8,
    a random token with probability 0.1, and stays with probability 0.1. Labels are the
    original ids at chosen positions and -100 elsewhere.

    Items are ``(epoch, index, example)`` triples (see :class:`KeyedDataset`); the mask of
    an example is drawn from ``numpy.random.default_rng([seed, epoch, index])``.

    Returns
    -------
    dict
        ``input_ids``, ``attention_mask``, ``token_type_ids``, ``labels``: int64 tensors of
        shape ``(batch, longest)``.
    """

    def __init__(
        self,
        tokenizer: WordPieceTokenizer,
        mlm_probability: float = 0.15,
        seed: int = 0,
        pad_to_multiple_of: int = 1,
    ) -> None:
        if not 0.0 < mlm_probability < 1.0:
            raise ValueError(f"mlm_probability must be in (0, 1), got {mlm_probability!r}")
        self.pad_id = tokenizer.pad_id
        self.mask_id = tokenizer.mask_id
        self.vocab_size = tokenizer.vocab_size
        self.special = np.array(sorted(tokenizer.special_ids))
        self.mlm_probability = mlm_probability
        self.seed = seed
        self.multiple = pad_to_multiple_of

    def mask_one(self, ids: Sequence[int], epoch: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Masked ids and labels for one example."""
        rng = np.random.default_rng([self.seed, epoch, index])
        x = np.asarray(ids, dtype=np.int64)
        candidates = ~np.isin(x, self.special)
        u = rng.random(len(x))
        chosen = candidates & (u < self.mlm_probability)
        if not chosen.any() and candidates.any():
            pos = np.flatnonzero(candidates)
            chosen[pos[rng.integers(len(pos))]] = True
        labels = np.where(chosen, x, -100)
        action = rng.random(len(x))
        random_tokens = rng.integers(0, self.vocab_size, len(x))
        x = np.where(chosen & (action < 0.8), self.mask_id, x)
        x = np.where(chosen & (action >= 0.8) & (action < 0.9), random_tokens, x)
        return x, labels

    def __call__(self, batch: Sequence[tuple[int, int, dict[str, Any]]]) -> dict[str, torch.Tensor]:
        length = max(len(item["input_ids"]) for _, _, item in batch)
        length = -(-length // self.multiple) * self.multiple
        masked, labels = zip(*(self.mask_one(it["input_ids"], e, i) for e, i, it in batch))
        return {
            "input_ids": _pad(masked, self.pad_id, length),
            "attention_mask": _pad([[1] * len(m) for m in masked], 0, length),
            "token_type_ids": _pad([it["token_type_ids"] for _, _, it in batch], 0, length),
            "labels": _pad(labels, -100, length),
        }


class ClassificationCollator:
    """Classification batches with dynamic padding; ``labels`` is int64 (classes) or
    float32 (regression), shape ``(batch,)``."""

    def __init__(self, tokenizer: WordPieceTokenizer, pad_to_multiple_of: int = 1) -> None:
        self.pad_id = tokenizer.pad_id
        self.multiple = pad_to_multiple_of

    def __call__(self, batch: Sequence[tuple[int, int, dict[str, Any]]]) -> dict[str, torch.Tensor]:
        items = [it for _, _, it in batch]
        length = max(len(it["input_ids"]) for it in items)
        length = -(-length // self.multiple) * self.multiple
        labels = [it["label"] for it in items]
        dtype = torch.float32 if isinstance(labels[0], float) else torch.long
        return {
            "input_ids": _pad([it["input_ids"] for it in items], self.pad_id, length),
            "attention_mask": _pad([[1] * len(it["input_ids"]) for it in items], 0, length),
            "token_type_ids": _pad([it["token_type_ids"] for it in items], 0, length),
            "labels": torch.tensor(labels, dtype=dtype),
        }


class KeyedDataset(torch.utils.data.Dataset):
    """Wraps a dataset so that ``ds[(epoch, i)]`` returns ``(epoch, i, base[i])``."""

    def __init__(self, base: torch.utils.data.Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> tuple[int, int, Any]:
        epoch, i = key
        return epoch, i, self.base[i]


class StepBatcher:
    """The global batch of every optimizer step, as a pure function of the step.

    Epoch ``e`` visits the examples in the order ``default_rng([seed, e]).permutation(n)``
    (or in file order when ``shuffle`` is False), dropping the last incomplete batch.

    Parameters
    ----------
    num_examples : int
    global_batch_size : int
        Examples per optimizer step, over all processes and accumulation steps.
    seed : int
    shuffle : bool
    """

    def __init__(
        self, num_examples: int, global_batch_size: int, seed: int, shuffle: bool = True
    ) -> None:
        if global_batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {global_batch_size}")
        if num_examples < global_batch_size:
            raise ValueError(
                f"the training set has {num_examples} examples, fewer than one batch "
                f"(batch_size={global_batch_size}); lower batch_size or add data"
            )
        self.n = num_examples
        self.batch_size = global_batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.steps_per_epoch = num_examples // global_batch_size
        self._perm_epoch = -1
        self._perm = np.arange(num_examples)

    def _order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.n)
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            self._perm_epoch = epoch
        return self._perm

    def batch(self, step: int) -> tuple[int, np.ndarray]:
        """Epoch and example indices, shape ``(global_batch_size,)``, of step ``step``."""
        epoch, pos = divmod(step, self.steps_per_epoch)
        order = self._order(epoch)
        return epoch, order[pos * self.batch_size : (pos + 1) * self.batch_size]


def train_batches(
    batcher: StepBatcher,
    start_step: int,
    end_step: int,
    *,
    accumulation_steps: int = 1,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[list[tuple[int, int]]]:
    """Keys ``(epoch, index)`` of this process's micro-batches, steps ``start..end-1``.

    The global batch of a step is cut into ``accumulation_steps`` micro-steps, and each
    micro-step into ``world_size`` equal shards; process ``rank`` gets shard ``rank``.
    """
    per = batcher.batch_size // (accumulation_steps * world_size)
    if per * accumulation_steps * world_size != batcher.batch_size:
        raise ValueError(
            f"batch_size={batcher.batch_size} is not divisible by gradient_accumulation_steps"
            f" * world_size = {accumulation_steps} * {world_size}"
        )
    for step in range(start_step, end_step):
        epoch, idx = batcher.batch(step)
        for m in range(accumulation_steps):
            lo = (m * world_size + rank) * per
            yield [(epoch, int(i)) for i in idx[lo : lo + per]]


def eval_batches(
    num_examples: int, batch_size: int, *, rank: int = 0, world_size: int = 1
) -> list[list[tuple[int, int]]]:
    """Keys of this process's evaluation batches: examples ``rank, rank + W, ...`` in order."""
    mine = list(range(rank, num_examples, world_size))
    return [
        [(EVAL_EPOCH, i) for i in mine[k : k + batch_size]] for k in range(0, len(mine), batch_size)
    ]
