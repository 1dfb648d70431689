"""Data pipeline: corpora, seeded split, MLM masking, GLUE TSV reading, step batching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tnlm_models.data import (
    ClassificationCollator,
    MLMCollator,
    StepBatcher,
    build_mlm_dataset,
    default_corpus,
    detect_glue_layout,
    encode_classification,
    eval_batches,
    infer_label_list,
    read_glue_tsv,
    read_text,
    split_documents,
    train_batches,
)
from tnlm_models.tokenization import WordPieceTokenizer


@pytest.fixture(scope="module")
def tok() -> WordPieceTokenizer:
    return WordPieceTokenizer.train(default_corpus()[:300], vocab_size=300)


# ---------------------------------------------------------------------------- text
def test_default_corpus_is_the_stdlib_topics():
    docs = default_corpus()
    assert len(docs) > 1000 and all(d.strip() == d and d for d in docs)
    assert any("for" in d and "statement" in d for d in docs)
    assert docs == default_corpus()


def test_read_text_files_and_folders(tmp_path):
    (tmp_path / "a.txt").write_text("one\n\n  two  \n")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "b.txt").write_text("three\n")
    (sub / ".hidden").write_text("secret\n")
    assert read_text(tmp_path / "a.txt") == ["one", "two"]
    assert read_text(tmp_path) == ["one", "two", "three"]
    assert read_text([tmp_path / "a.txt", sub]) == ["one", "two", "three"]


def test_read_text_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="data path not found: .*missing.txt"):
        read_text(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(ValueError, match="data files are empty"):
        read_text(tmp_path / "empty.txt")
    (tmp_path / "d").mkdir()
    with pytest.raises(ValueError, match="holds no files"):
        read_text(tmp_path / "d")
    with pytest.raises(ValueError, match="no data files given"):
        read_text([])


def test_split_is_seeded_disjoint_and_complete():
    docs = [f"doc {i}" for i in range(100)]
    tr, va = split_documents(docs, 0.1, seed=3)
    assert len(va) == 10 and len(tr) == 90 and sorted(tr + va) == sorted(docs)
    assert (tr, va) == split_documents(docs, 0.1, seed=3)
    assert va != split_documents(docs, 0.1, seed=4)[1]
    assert split_documents(docs, 0.0, seed=0) == (docs, [])
    with pytest.raises(ValueError, match=r"valid_fraction must be in \[0, 1\)"):
        split_documents(docs, 1.0, 0)
    with pytest.raises(ValueError, match="cannot split 1 document"):
        split_documents(["x"], 0.5, 0)


def test_block_and_line_datasets(tok):
    docs = default_corpus()[:50]
    blocks = build_mlm_dataset(docs, tok, 32, "blocks")
    assert all(len(it["input_ids"]) <= 32 for it in blocks.items)
    assert sum(len(it["input_ids"]) == 32 for it in blocks.items) >= len(blocks) - 1
    stream = [t for ids in tok.encode_plain(docs) for t in ids]
    packed = [t for it in blocks.items for t in it["input_ids"][1:-1]]
    assert packed == stream[: len(packed)] and len(stream) - len(packed) < 2
    lines = build_mlm_dataset(docs, tok, 16, "lines")
    assert len(lines) <= len(docs) and all(len(it["input_ids"]) <= 16 for it in lines.items)
    with pytest.raises(ValueError, match="text_format must be one of"):
        build_mlm_dataset(docs, tok, 32, "pages")


# ---------------------------------------------------------------------------- MLM masking
def test_mlm_collator_statistics_and_padding(tok):
    ds = build_mlm_dataset(default_corpus(), tok, 64, "blocks")
    col = MLMCollator(tok, 0.15, seed=0)
    items = [(0, i, ds[i]) for i in range(len(ds))]
    b = col(items)
    ids = torch.nn.utils.rnn.pad_sequence(
        [torch.tensor(it["input_ids"]) for it in ds.items], batch_first=True
    )
    assert b["input_ids"].shape == ids.shape == b["labels"].shape
    chosen = b["labels"] != -100
    eligible = (b["attention_mask"] == 1) & ~torch.isin(ids, torch.tensor(sorted(tok.special_ids)))
    rate = chosen.sum().item() / eligible.sum().item()
    assert 0.14 < rate < 0.16
    assert torch.equal(b["labels"][chosen], ids[chosen])
    masked = (b["input_ids"] == tok.mask_id) & chosen
    kept = (b["input_ids"] == ids) & chosen
    n = chosen.sum().item()
    assert abs(masked.sum().item() / n - 0.8) < 0.02
    # kept: 10% + random tokens that happen to equal the original
    assert abs(kept.sum().item() / n - 0.1) < 0.02
    assert not chosen[b["attention_mask"] == 0].any()
    assert (b["input_ids"][b["attention_mask"] == 0] == tok.pad_id).all()


def test_mlm_masks_are_a_function_of_seed_epoch_index(tok):
    ds = build_mlm_dataset(default_corpus()[:80], tok, 32, "blocks")
    col = MLMCollator(tok, 0.15, seed=1)
    a = col([(0, 3, ds[3]), (0, 5, ds[5])])
    b = col([(0, 5, ds[5])])
    assert torch.equal(a["labels"][1, : b["labels"].shape[1]], b["labels"][0])
    c = col([(1, 5, ds[5])])
    assert not torch.equal(b["labels"], c["labels"])
    short = {"input_ids": [tok.cls_id, 50, tok.sep_id], "token_type_ids": [0, 0, 0]}
    for i in range(20):  # every example gets at least one target
        assert (col([(0, i, short)])["labels"] != -100).sum() == 1
    with pytest.raises(ValueError, match=r"mlm_probability must be in \(0, 1\)"):
        MLMCollator(tok, 0.0)


# ---------------------------------------------------------------------------- GLUE
def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_glue_layouts_recognised(tmp_path, tok):
    sst = _write(tmp_path / "sst.tsv", "sentence\tlabel\ngood film \t1\nbad\t0\n")
    cola = _write(tmp_path / "cola.tsv", "gj04\t1\t\tThe cat sat.\ngj04\t0\t*\tCat the sat.\n")
    pair = _write(tmp_path / "pair.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tyes\n")
    assert detect_glue_layout(sst).name == "sst-2"
    assert detect_glue_layout(cola).name == "cola"
    assert detect_glue_layout(pair).name == "pair"
    ex = read_glue_tsv(sst)
    assert ex.texts_a == ["good film ", "bad"] and ex.labels == ["1", "0"] and ex.lines == [2, 3]
    ex = read_glue_tsv(cola)
    assert ex.texts_a == ["The cat sat.", "Cat the sat."] and ex.labels == ["1", "0"]
    ex = read_glue_tsv(pair)
    assert ex.texts_b == ["b"] and ex.labels == ["yes"]
    ds = encode_classification(ex, tok, 16, ["no", "yes"])
    assert ds[0]["label"] == 1 and 1 in ds[0]["token_type_ids"]


def test_glue_explicit_columns(tmp_path):
    f = _write(tmp_path / "q.tsv", "id\tq\ts\ty\n1\tWhat?\tThat.\tentailment\n")
    ex = read_glue_tsv(f, text_a="q", text_b="s", label="y")
    assert (ex.texts_a, ex.texts_b, ex.labels) == (["What?"], ["That."], ["entailment"])
    g = _write(tmp_path / "noh.tsv", "x\t2\tHello\n")
    ex = read_glue_tsv(g, text_a=2, label=1)
    assert (ex.texts_a, ex.labels, ex.lines) == (["Hello"], ["2"], [1])


def test_glue_errors(tmp_path, tok):
    with pytest.raises(FileNotFoundError, match="data file not found"):
        read_glue_tsv(tmp_path / "none.tsv")
    empty = _write(tmp_path / "empty.tsv", "")
    with pytest.raises(ValueError, match="data file is empty"):
        read_glue_tsv(empty)
    bad = _write(tmp_path / "bad.tsv", "sentence\tlabel\nfine\t1\nno tab here\n")
    with pytest.raises(ValueError, match=r"bad.tsv:3: malformed row, expected at least 2"):
        read_glue_tsv(bad)
    odd = _write(tmp_path / "odd.tsv", "a\tb\tc\n")
    with pytest.raises(ValueError, match="cannot recognise the layout .* text_a_column"):
        read_glue_tsv(odd)
    hdr = _write(tmp_path / "h.tsv", "sentence\tlabel\nx\t1\n")
    with pytest.raises(
        ValueError, match=r"column 'text' not in the header .* \['sentence', 'label'\]"
    ):
        read_glue_tsv(hdr, text_a="text", label="label")
    with pytest.raises(ValueError, match="given by name but .* without header"):
        read_glue_tsv(hdr, text_a="sentence", label=1, header=False)
    lab = _write(tmp_path / "lab.tsv", "sentence\tlabel\nx\t1\ny\t7\n")
    with pytest.raises(
        ValueError, match=r"lab.tsv:3: label '7' is outside the label set \['0', '1'\]"
    ):
        encode_classification(read_glue_tsv(lab), tok, 16, ["0", "1"])
    reg = _write(tmp_path / "reg.tsv", "sentence\tlabel\nx\t0.5\ny\thigh\n")
    with pytest.raises(ValueError, match=r"reg.tsv:3: label 'high' is not a number"):
        encode_classification(read_glue_tsv(reg), tok, 16, None)


def test_classification_collator(tmp_path, tok):
    f = _write(tmp_path / "s.tsv", "sentence\tlabel\na b c d e\t1\nf\t0\n")
    ds = encode_classification(read_glue_tsv(f), tok, 16, ["0", "1"])
    b = ClassificationCollator(tok)([(0, 0, ds[0]), (0, 1, ds[1])])
    assert b["labels"].tolist() == [1, 0] and b["labels"].dtype == torch.long
    assert b["attention_mask"].sum(1).tolist() == [len(ds[0]["input_ids"]), len(ds[1]["input_ids"])]
    reg = encode_classification(
        read_glue_tsv(_write(tmp_path / "r.tsv", "sentence\tlabel\na\t0.5\n")), tok, 16, None
    )
    assert ClassificationCollator(tok)([(0, 0, reg[0])])["labels"].dtype == torch.float32
    assert infer_label_list(["10", "2", "1"]) == ["1", "2", "10"]
    assert infer_label_list(["b", "a"]) == ["a", "b"]


@pytest.mark.slow
def test_real_glue_files_read_without_configuration(shared_data):
    sst = read_glue_tsv(shared_data / "glue/SST-2/dev.tsv")
    assert len(sst.texts_a) == 872 and set(sst.labels) == {"0", "1"}
    cola = read_glue_tsv(shared_data / "glue/CoLA/dev.tsv")
    assert len(cola.texts_a) == 1043 and set(cola.labels) == {"0", "1"}
    assert cola.texts_a[0] == "The sailors rode the breeze clear of the rocks."


# ---------------------------------------------------------------------------- batching
def test_step_batcher_is_pure_and_covers_each_epoch():
    b = StepBatcher(10, 3, seed=0)
    assert b.steps_per_epoch == 3
    epoch0 = np.concatenate([b.batch(s)[1] for s in range(3)])
    assert len(set(epoch0.tolist())) == 9
    assert b.batch(4)[0] == 1 and not np.array_equal(b.batch(4)[1], b.batch(1)[1])
    assert np.array_equal(StepBatcher(10, 3, seed=0).batch(4)[1], b.batch(4)[1])
    with pytest.raises(ValueError, match="fewer than one batch"):
        StepBatcher(2, 3, seed=0)


def test_train_batches_shards_reassemble_the_global_batch():
    b = StepBatcher(64, 8, seed=1)
    one = list(train_batches(b, 2, 4, accumulation_steps=2))
    shards = [
        list(train_batches(b, 2, 4, accumulation_steps=2, rank=r, world_size=2)) for r in (0, 1)
    ]
    for k in range(len(one)):  # micro-batch k of the single process = ranks' shards
        assert sorted(one[k]) == sorted(shards[0][k] + shards[1][k])
    with pytest.raises(ValueError, match="not divisible by gradient_accumulation_steps"):
        list(train_batches(b, 0, 1, accumulation_steps=3))
    keys = eval_batches(5, 2, rank=1, world_size=2)
    assert [[i for _, i in k] for k in keys] == [[1, 3]]
