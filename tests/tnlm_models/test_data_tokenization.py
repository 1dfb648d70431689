"""WordPiece tokenizer: training, vocab.txt loading, saving, pair encoding."""

from __future__ import annotations

import pytest

from tnlm_models.tokenization import SPECIAL_TOKENS, WordPieceTokenizer

TEXTS = ["the quick brown fox jumps over the lazy dog", "a dog and a fox", "Quick thinking!"] * 20


@pytest.fixture(scope="module")
def tok() -> WordPieceTokenizer:
    return WordPieceTokenizer.train(TEXTS, vocab_size=80)


def test_trained_vocab_has_special_tokens_first(tok):
    vocab = tok.backend.get_vocab()
    assert [vocab[t] for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
    assert tok.vocab_size <= 80


def test_encode_single_and_pair(tok):
    ids, types = tok.encode("the dog")
    assert ids[0] == tok.cls_id and ids[-1] == tok.sep_id and set(types) == {0}
    ids, types = tok.encode("the dog", "a fox")
    assert ids.count(tok.sep_id) == 2
    assert types[: ids.index(tok.sep_id) + 1] == [0] * (ids.index(tok.sep_id) + 1)
    assert types[-1] == 1
    assert tok.decode(ids) == "the dog a fox"


def test_truncation_longest_first(tok):
    ids, _ = tok.encode("the quick brown fox " * 10, "dog", max_length=12)
    assert len(ids) == 12 and ids[-1] == tok.sep_id
    assert tok.decode(ids).endswith("dog")


def test_save_and_load_roundtrip(tok, tmp_path):
    tok.save(tmp_path)
    assert (tmp_path / "tokenizer.json").is_file() and (tmp_path / "vocab.txt").is_file()
    for path in (tmp_path, tmp_path / "tokenizer.json", tmp_path / "vocab.txt"):
        other = WordPieceTokenizer.load(path)
        assert other.encode("the lazy fox", "jumps") == tok.encode("the lazy fox", "jumps")


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer file not found"):
        WordPieceTokenizer.load(tmp_path / "nope.txt")
    with pytest.raises(FileNotFoundError, match="no tokenizer.json or vocab.txt"):
        WordPieceTokenizer.load(tmp_path)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="vocabulary file is empty"):
        WordPieceTokenizer.load(tmp_path / "empty.txt")
    (tmp_path / "v.txt").write_text("[PAD]\n[UNK]\nhello\n")
    with pytest.raises(ValueError, match=r"lacks the special tokens \['\[CLS\]'"):
        WordPieceTokenizer.load(tmp_path / "v.txt")
    with pytest.raises(ValueError, match="vocab_size must be an int >= 16"):
        WordPieceTokenizer.train(TEXTS, vocab_size=3)
    with pytest.raises(ValueError, match="max_length must be >= 4"):
        WordPieceTokenizer.train(TEXTS, vocab_size=40).encode("a", max_length=2)


@pytest.mark.slow
def test_bert_vocab_txt_matches_bert_ids(shared_data):
    tok = WordPieceTokenizer.load(shared_data / "bert-base-uncased" / "vocab.txt")
    assert tok.vocab_size == 30522
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 100, 101, 102, 103)
    # "hello world" in bert-base-uncased is [CLS] 7592 2088 [SEP]
    assert tok.encode("Hello World") == ([101, 7592, 2088, 102], [0, 0, 0, 0])
