"""WordPiece tokenizer for MPOBERT, built on the ``tokenizers`` library.

A :class:`WordPieceTokenizer` is either trained on a corpus (BERT normaliser, BERT
pre-tokeniser, WordPiece model) or loaded from a BERT ``vocab.txt`` or a saved
``tokenizer.json``. It is saved next to every checkpoint (``tokenizer.json`` and
``vocab.txt``), so that a checkpoint directory is self-contained.

Examples
--------
>>> tok = WordPieceTokenizer.train(["the cat sat on the mat"] * 10, vocab_size=60)
>>> ids, types = tok.encode("the cat", max_length=8)
>>> ids[0] == tok.cls_id and ids[-1] == tok.sep_id
True
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import BertWordPieceTokenizer, Tokenizer
from tokenizers.decoders import WordPiece as WordPieceDecoder
from tokenizers.models import WordPiece
from tokenizers.normalizers import BertNormalizer
from tokenizers.pre_tokenizers import BertPreTokenizer
from tokenizers.processors import TemplateProcessing

__all__ = ["SPECIAL_TOKENS", "WordPieceTokenizer", "load_tokenizer"]

logger = logging.getLogger(__name__)

#: The BERT special tokens, in the order a trained vocabulary lists them (ids 0..4).
SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

TOKENIZER_FILE = "tokenizer.json"
VOCAB_FILE = "vocab.txt"


class WordPieceTokenizer:
    """A BERT-style WordPiece tokenizer with ``[CLS] a [SEP] (b [SEP])`` templates.

    Parameters
    ----------
    tokenizer : tokenizers.Tokenizer
        A tokenizer whose vocabulary holds the five BERT special tokens.

    Raises
    ------
    ValueError
        If a special token is missing from the vocabulary.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        vocab = tokenizer.get_vocab()
        missing = [t for t in SPECIAL_TOKENS if t not in vocab]
        if missing:
            raise ValueError(
                f"tokenizer vocabulary lacks the special tokens {missing}; "
                f"a BERT vocabulary needs all of {list(SPECIAL_TOKENS)}"
            )
        tokenizer.no_truncation()
        tokenizer.no_padding()
        # [CLS] a [SEP] (b [SEP]), whatever the saved tokenizer carried
        tokenizer.post_processor = TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
        )
        self._tok = tokenizer
        self.pad_id = vocab["[PAD]"]
        self.unk_id = vocab["[UNK]"]
        self.cls_id = vocab["[CLS]"]
        self.sep_id = vocab["[SEP]"]
        self.mask_id = vocab["[MASK]"]
        self.special_ids = frozenset(vocab[t] for t in SPECIAL_TOKENS)

    # ------------------------------------------------------------------ construction
    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int = 8000,
        *,
        lowercase: bool = True,
        min_frequency: int = 2,
    ) -> WordPieceTokenizer:
        """Train a WordPiece vocabulary on ``texts``.

        Parameters
        ----------
        texts : iterable of str
            Training text, e.g. one document per item.
        vocab_size : int
            Target vocabulary size, special tokens included (at least 16).
        lowercase : bool
            Lower-case and strip accents, as BERT-uncased does.
        min_frequency : int
            Minimum pair frequency for a merge.

        Returns
        -------
        WordPieceTokenizer
        """
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 16:
            raise ValueError(f"vocab_size must be an int >= 16, got {vocab_size!r}")
        bert = BertWordPieceTokenizer(lowercase=lowercase)
        bert.train_from_iterator(
            iter(texts),
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(SPECIAL_TOKENS),
            show_progress=False,
        )
        logger.info("trained a WordPiece vocabulary of %d tokens", bert.get_vocab_size())
        return cls(bert._tokenizer)

    @classmethod
    def from_vocab(
        cls, vocab_file: str | os.PathLike, *, lowercase: bool = True
    ) -> WordPieceTokenizer:
        """Load a BERT ``vocab.txt`` (one token per line, the line number is the id)."""
        path = Path(vocab_file)
        if not path.is_file():
            raise FileNotFoundError(f"vocabulary file not found: {path}")
        if path.stat().st_size == 0:
            raise ValueError(f"vocabulary file is empty: {path}")
        vocab: dict[str, int] = {}
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh):
                token = line.rstrip("\r\n")
                if token:
                    vocab.setdefault(token, lineno)  # BERT: the line number is the id
        missing = [t for t in SPECIAL_TOKENS if t not in vocab]
        if missing:
            raise ValueError(
                f"vocabulary {path} lacks the special tokens {missing}; "
                f"a BERT vocabulary needs all of {list(SPECIAL_TOKENS)}"
            )
        tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]"))
        tok.normalizer = BertNormalizer(lowercase=lowercase)
        tok.pre_tokenizer = BertPreTokenizer()
        tok.decoder = WordPieceDecoder()
        return cls(tok)

    @classmethod
    def load(cls, path: str | os.PathLike, *, lowercase: bool = True) -> WordPieceTokenizer:
        """Load from a directory (``tokenizer.json`` or ``vocab.txt``) or a file.

        Parameters
        ----------
        path : str or path
            A checkpoint directory, a ``tokenizer.json`` file, or a ``vocab.txt`` file.
        lowercase : bool
            Used only when loading a bare ``vocab.txt``.
        """
        p = Path(path)
        if p.is_dir():
            if (p / TOKENIZER_FILE).is_file():
                p = p / TOKENIZER_FILE
            elif (p / VOCAB_FILE).is_file():
                p = p / VOCAB_FILE
            else:
                raise FileNotFoundError(f"no {TOKENIZER_FILE} or {VOCAB_FILE} in directory {p}")
        if not p.is_file():
            raise FileNotFoundError(f"tokenizer file not found: {p}")
        if p.suffix == ".json":
            return cls(Tokenizer.from_file(str(p)))
        return cls.from_vocab(p, lowercase=lowercase)

    def save(self, directory: str | os.PathLike) -> None:
        """Write ``tokenizer.json`` and ``vocab.txt`` into ``directory``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self._tok.save(str(d / TOKENIZER_FILE))
        vocab = sorted(self._tok.get_vocab().items(), key=lambda kv: kv[1])
        (d / VOCAB_FILE).write_text("".join(tok + "\n" for tok, _ in vocab), encoding="utf-8")

    # ------------------------------------------------------------------ use
    @property
    def vocab_size(self) -> int:
        """Number of entries in the vocabulary."""
        return self._tok.get_vocab_size()

    @property
    def backend(self) -> Tokenizer:
        """The underlying ``tokenizers.Tokenizer``."""
        return self._tok

    def tokenize(self, text: str) -> list[str]:
        """WordPiece tokens of ``text`` without special tokens."""
        return self._tok.encode(text, add_special_tokens=False).tokens

    def encode_plain(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, without special tokens and without truncation."""
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def encode(
        self, text: str, text_pair: str | None = None, *, max_length: int = 512
    ) -> tuple[list[int], list[int]]:
        """Encode one text (or pair) as ``[CLS] a [SEP] (b [SEP])``, truncated to ``max_length``.

        Returns
        -------
        ids, token_type_ids : list of int
        """
        return self.encode_batch(
            [text], None if text_pair is None else [text_pair], max_length=max_length
        )[0]

    def encode_batch(
        self,
        texts: Sequence[str],
        text_pairs: Sequence[str] | None = None,
        *,
        max_length: int = 512,
    ) -> list[tuple[list[int], list[int]]]:
        """Encode many texts (or pairs), truncating the longest member first.

        Returns
        -------
        list of (ids, token_type_ids)
        """
        if max_length < 4:
            raise ValueError(f"max_length must be >= 4, got {max_length}")
        if text_pairs is not None and len(text_pairs) != len(texts):
            raise ValueError(
                f"texts and text_pairs differ in length: {len(texts)} vs {len(text_pairs)}"
            )
        self._tok.enable_truncation(max_length=max_length, strategy="longest_first")
        try:
            if text_pairs is None:
                enc = self._tok.encode_batch(list(texts))
            else:
                enc = self._tok.encode_batch(list(zip(texts, text_pairs)))
        finally:
            self._tok.no_truncation()
        return [(e.ids, e.type_ids) for e in enc]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of ``ids``."""
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def __repr__(self) -> str:
        return f"WordPieceTokenizer(vocab_size={self.vocab_size})"


def load_tokenizer(path: str | os.PathLike, *, lowercase: bool = True) -> WordPieceTokenizer:
    """Shorthand for :meth:`WordPieceTokenizer.load`."""
    return WordPieceTokenizer.load(path, lowercase=lowercase)
