"""WordPiece tokenizer for MPOBERT, built on the ``tokenizers`` library.

A :class:`WordPieceTokenizer` is either trained on a corpus (BERT normaliser, BERT
pre-tokeniser, WordPiece model) or loaded from a BERT ``vocab.txt`` or a saved
``tokenizer.json``. It is saved next to every checkpoint (``tokenizer.json`` and
``vocab.txt``), so that a checkpoint directory is self-contained.

Training is deterministic: the same texts and settings give the same vocabulary, ids
included, in every process (see :meth:`WordPieceTokenizer.train`).

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
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer
from tokenizers.decoders import WordPiece as WordPieceDecoder
from tokenizers.models import WordPiece
from tokenizers.normalizers import BertNormalizer
from tokenizers.pre_tokenizers import BertPreTokenizer
from tokenizers.processors import TemplateProcessing
from tokenizers.trainers import WordPieceTrainer

__all__ = ["SPECIAL_TOKENS", "WordPieceTokenizer", "load_tokenizer"]

logger = logging.getLogger(__name__)

#: The BERT special tokens, in the order a trained vocabulary lists them (ids 0..4).
SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

TOKENIZER_FILE = "tokenizer.json"
VOCAB_FILE = "vocab.txt"
#: prefix of a WordPiece that continues a word
SUBWORD_PREFIX = "##"
#: at most this many distinct characters (the most frequent) enter a trained vocabulary
LIMIT_ALPHABET = 1000
_EXPECTED = (
    "expected a tokenizers JSON file (tokenizer.json) or a BERT WordPiece vocab.txt "
    "(one token per line)"
)


def _bert_pipeline(tokenizer: Tokenizer, lowercase: bool) -> Tokenizer:
    """Give ``tokenizer`` BERT's normaliser, pre-tokeniser and WordPiece decoder."""
    tokenizer.normalizer = BertNormalizer(lowercase=lowercase)
    tokenizer.pre_tokenizer = BertPreTokenizer()
    tokenizer.decoder = WordPieceDecoder(prefix=SUBWORD_PREFIX)
    return tokenizer


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
        """Train a WordPiece vocabulary on ``texts``, deterministically.

        The ``tokenizers`` WordPiece trainer (BPE merges with a ``##`` prefix for
        word-inner pieces) gives ``##x`` pieces ids in hash-map order, and those ids break
        ties between equally frequent merges, so two runs on the same text could get
        different vocabularies (huggingface/tokenizers#1794). Here the alphabet (the
        :data:`LIMIT_ALPHABET` most frequent characters, ties broken by code point) and
        every ``##x`` piece are fixed, in sorted order, before the trainer runs; the
        result is the same in every process.

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
            Ids: the special tokens (0..4), the ``##x`` pieces, the alphabet, then the
            merged pieces in the order they were learned.
        """
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 16:
            raise ValueError(f"vocab_size must be an int >= 16, got {vocab_size!r}")
        if isinstance(texts, str):
            raise TypeError("texts must be an iterable of str, got one str")
        texts = list(texts)
        for t in texts:
            if not isinstance(t, str):
                raise TypeError(f"texts must be an iterable of str, got an item {t!r}")
        normalizer = BertNormalizer(lowercase=lowercase)
        pre_tokenizer = BertPreTokenizer()
        words: Counter[str] = Counter()
        for t in texts:
            words.update(w for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(t)))
        chars: Counter[str] = Counter()
        inner: set[str] = set()
        for w, n in words.items():
            for c in w:
                chars[c] += n
            inner.update(w[1:])
        alphabet = sorted(chars, key=lambda c: (-chars[c], c))[:LIMIT_ALPHABET]
        pieces = [SUBWORD_PREFIX + c for c in sorted(inner.intersection(alphabet))]
        trainer = WordPieceTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            show_progress=False,
            # registering the ## pieces up front gives them sorted ids (see above)
            special_tokens=[*SPECIAL_TOKENS, *pieces],
            limit_alphabet=max(len(alphabet), 1),
            initial_alphabet=alphabet,
            continuing_subword_prefix=SUBWORD_PREFIX,
        )
        scratch = _bert_pipeline(Tokenizer(WordPiece(unk_token="[UNK]")), lowercase)
        scratch.train_from_iterator(texts, trainer=trainer)
        # a fresh tokenizer, so that only the BERT tokens are special (not the ## pieces)
        model = WordPiece(
            scratch.get_vocab(), unk_token="[UNK]", continuing_subword_prefix=SUBWORD_PREFIX
        )
        tok = _bert_pipeline(Tokenizer(model), lowercase)
        tok.add_special_tokens(list(SPECIAL_TOKENS))
        logger.info("trained a WordPiece vocabulary of %d tokens", tok.get_vocab_size())
        return cls(tok)

    @classmethod
    def from_vocab(
        cls, vocab_file: str | os.PathLike, *, lowercase: bool = True
    ) -> WordPieceTokenizer:
        """Load a BERT ``vocab.txt`` (one token per line, the line number is the id).

        Raises
        ------
        FileNotFoundError
            If the file does not exist.
        ValueError
            If it is empty, binary, not UTF-8 text, or lacks a BERT special token (the
            message names the file and what was expected).
        """
        from .data import SNIFF_BYTES, binary_reason, decode_text

        path = Path(vocab_file)
        if not path.is_file():
            raise FileNotFoundError(f"vocabulary file not found: {path}")
        data = path.read_bytes()
        if not data:
            raise ValueError(f"vocabulary file is empty: {path}")
        reason = binary_reason(data[:SNIFF_BYTES])
        if reason is not None:
            raise ValueError(f"tokenizer file {path} is not text ({reason}); {_EXPECTED}")
        try:
            text = decode_text(data, path)
        except ValueError as e:
            raise ValueError(f"{e}; {_EXPECTED}") from None
        vocab: dict[str, int] = {}
        for lineno, line in enumerate(text.replace("\r\n", "\n").split("\n")):
            token = line.rstrip("\r")
            if token:
                vocab.setdefault(token, lineno)  # BERT: the line number is the id
        missing = [t for t in SPECIAL_TOKENS if t not in vocab]
        if missing:
            raise ValueError(
                f"vocabulary {path} lacks the special tokens {missing}; "
                f"a BERT vocabulary needs all of {list(SPECIAL_TOKENS)} ({_EXPECTED})"
            )
        tok = _bert_pipeline(Tokenizer(WordPiece(vocab, unk_token="[UNK]")), lowercase)
        return cls(tok)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> WordPieceTokenizer:
        """Load a ``tokenizers`` JSON file (``tokenizer.json``).

        Raises
        ------
        ValueError
            If ``tokenizers`` cannot read the file, or its vocabulary lacks a BERT special
            token (the message names the file and what was expected).
        """
        p = Path(path)
        try:
            tok = Tokenizer.from_file(str(p))
        except Exception as e:  # tokenizers raises a bare Exception ("key must be a string")
            raise ValueError(
                f"tokenizer file {p} is not a valid tokenizers JSON file ({e}); {_EXPECTED}"
            ) from None
        try:
            return cls(tok)
        except ValueError as e:
            raise ValueError(f"tokenizer file {p}: {e}") from None

    @classmethod
    def load(cls, path: str | os.PathLike, *, lowercase: bool = True) -> WordPieceTokenizer:
        """Load from a directory (``tokenizer.json`` or ``vocab.txt``) or a file.

        A file is read as a ``tokenizers`` JSON file when its name ends in ``.json`` or its
        first non-blank byte is ``{``, else as a ``vocab.txt``.

        Parameters
        ----------
        path : str or path
            A checkpoint directory, a ``tokenizer.json`` file, or a ``vocab.txt`` file.
        lowercase : bool
            Used only when loading a bare ``vocab.txt``.

        Raises
        ------
        FileNotFoundError
            If the path does not exist, or a directory holds neither file.
        ValueError
            If the file is neither a tokenizers JSON file nor a BERT vocabulary (the
            message names the file and what was expected).
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
        with open(p, "rb") as fh:
            looks_json = fh.read(256).lstrip().startswith(b"{")
        if p.suffix == ".json" or looks_json:
            return cls.from_json(p)
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
