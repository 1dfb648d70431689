"""Text corpora: the built-in corpus, strict reading of text files and folders (binary
files skipped), documents, and the masked-LM dataset (``"lines"`` or ``"blocks"``)."""

from __future__ import annotations

import codecs
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..tokenization import WordPieceTokenizer
from .batches import TokenDataset

__all__ = [
    "BINARY_SIGNATURES",
    "SNIFF_BYTES",
    "TEXT_FORMATS",
    "binary_reason",
    "build_mlm_dataset",
    "check_encoding",
    "decode_text",
    "default_corpus",
    "read_text",
    "read_text_file",
    "split_documents",
    "split_lines",
]

logger = logging.getLogger(__name__)

TEXT_FORMATS = ("lines", "blocks")


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


def split_lines(text: str) -> list[str]:
    """``text`` cut at universal newlines (``\\n``, ``\\r\\n``, ``\\r``), as text-mode files
    are; not ``str.splitlines``, which also cuts at form feeds and Unicode separators."""
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
            lines = [ln.strip() for ln in split_lines(decode_text(data, f, encoding))]
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
