"""GLUE-style TSV files: every GLUE task's layout recognised by its header, labels
normalised and checked, and classification examples encoded."""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..tokenization import WordPieceTokenizer
from .batches import TokenDataset
from .text import read_text_file, split_lines

__all__ = [
    "GLUE_LAYOUTS",
    "LABEL_HEADER_WORDS",
    "check_class_labels",
    "check_label_list",
    "ClassificationDataset",
    "detect_glue_layout",
    "encode_classification",
    "GlueExamples",
    "GlueLayout",
    "GlueTestExamples",
    "infer_label_list",
    "normalize_label",
    "read_glue_test_tsv",
    "read_glue_tsv",
]

logger = logging.getLogger(__name__)


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
    rows = [line.split("\t") for line in split_lines(read_text_file(path, encoding=encoding))]
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
