"""Data safety (issue 8, H5): strict text decoding, binary files, labels, every GLUE layout,
deterministic tokenizer training, and clear tokenizer-loading errors."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tnlm_models import MPOBertForMaskedLM, MPOBertForSequenceClassification
from tnlm_models.cli import main as cli_main
from tnlm_models.data import (
    GLUE_LAYOUTS,
    check_label_list,
    default_corpus,
    detect_glue_layout,
    encode_classification,
    infer_label_list,
    read_glue_test_tsv,
    read_glue_tsv,
    read_text,
)
from tnlm_models.testing import tiny_config, tiny_model_settings
from tnlm_models.tokenization import WordPieceTokenizer, load_tokenizer
from tnlm_models.train import TrainConfig, train
from tnlm_models.train.datasets import RawData, label_list_for, read_raw_data

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tok() -> WordPieceTokenizer:
    return WordPieceTokenizer.train(default_corpus()[:200], vocab_size=200)


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# ---------------------------------------------------------------------------- 1. text
def test_non_utf8_text_is_an_error_naming_file_and_byte(tmp_path):
    f = _write(tmp_path / "cafe.txt", "first line\ncafé au lait\n", "latin-1")
    # "caf" + 0xe9: byte 14 of the file, on line 2; never silently "caf"
    with pytest.raises(
        ValueError,
        match=r"file .*cafe\.txt is not valid utf-8 at byte 14 \(line 2.*pass encoding=",
    ):
        read_text(f)
    assert read_text(f, encoding="latin-1") == ["first line", "café au lait"]
    with pytest.raises(ValueError, match="unknown text encoding 'klingon'"):
        read_text(f, encoding="klingon")
    with pytest.raises(TypeError, match="encoding must be a str"):
        read_text(f, encoding=8)  # type: ignore[arg-type]


def test_utf8_byte_order_mark_is_dropped(tmp_path):
    f = _write(tmp_path / "bom.txt", "\ufeffhello world\nsecond\n")
    assert read_text(f) == ["hello world", "second"]
    wide = _write(tmp_path / "wide.txt", "\ufeffhello\n", "utf-16")
    with pytest.raises(ValueError, match=r"wide\.txt is UTF-16 or UTF-32 text.*encoding='utf-16'"):
        read_text(wide)
    assert read_text(wide, encoding="utf-16") == ["hello"]


def test_binary_files_in_a_folder_are_skipped_with_a_warning(tmp_path, caplog):
    rng = np.random.default_rng(0)
    d = tmp_path / "data"
    d.mkdir()
    _write(d / "a.txt", "one document\nanother document\n")
    (d / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"IHDR" + bytes(range(1, 200)))
    noise = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
    (d / "noise.bin").write_bytes(b"text-like start " + noise + b"\x00")
    (d / "z.txt").write_text("last one\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="tnlm_models.data"):
        docs = read_text(d)
    assert docs == ["one document", "another document", "last one"]
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "image.png" in warned and "a PNG image" in warned
    assert "noise.bin" in warned and "NUL byte" in warned


def test_a_binary_file_named_explicitly_is_an_error(tmp_path):
    png = tmp_path / "picture.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(
        ValueError, match=r"data file .*picture\.png is not a text file \(it is a PNG"
    ):
        read_text(png)
    only = tmp_path / "only"
    only.mkdir()
    (only / "blob.gz").write_bytes(b"\x1f\x8b\x08\x00rest")
    with pytest.raises(ValueError, match=r"data folder .*only holds no text file.*blob\.gz"):
        read_text(only)


def test_train_config_encoding_reaches_the_reader(tmp_path):
    f = _write(tmp_path / "l1.txt", "naïve café\nsecond line\n", "latin-1")
    cfg = TrainConfig(train_data=[str(f)], valid_fraction=0.0)
    assert cfg.encoding == "utf-8"
    with pytest.raises(ValueError, match=r"l1\.txt is not valid utf-8 at byte 2 \(line 1"):
        read_raw_data(cfg)
    raw = read_raw_data(cfg.replace(encoding="latin-1"))
    assert raw.train_texts == ["naïve café", "second line"]


# ---------------------------------------------------------------------------- 2. labels
def test_a_label_list_with_duplicates_is_refused():
    with pytest.raises(ValueError, match=r"label_list \['0', '1', '1'\] lists \['1'\] more than"):
        check_label_list(["0", "1", "1"])
    with pytest.raises(ValueError, match=r"lists \['1'\] more than once .*'01' is '1'"):
        check_label_list(["0", "1", "01"])
    with pytest.raises(ValueError, match="at least 2 classes"):
        check_label_list(["1"])
    with pytest.raises(TypeError, match="label_list entries must be str, got 1"):
        check_label_list(["0", 1])  # type: ignore[list-item]
    cfg = TrainConfig(task="finetune", label_list=["0", "1", "1"])
    with pytest.raises(ValueError, match="more than once"):
        label_list_for(cfg, RawData())  # it made a three-output model


def test_integer_label_spellings_are_one_class(tmp_path, tok):
    f = _write(tmp_path / "s.tsv", "sentence\tlabel\na\t1\nb\t01\nc\t0\nd\t+1\n")
    ex = read_glue_tsv(f)
    assert infer_label_list(ex.labels) == ["0", "1"]
    cfg = TrainConfig(task="finetune")
    labels = label_list_for(cfg, RawData(train_glue=[ex]))
    assert labels == ["0", "1"]
    ds = encode_classification(ex, tok, 16, labels)
    assert [it["label"] for it in ds.items] == [1, 1, 0, 1]
    # a given label list is normalised the same way
    assert [it["label"] for it in encode_classification(ex, tok, 16, ["00", "1"]).items] == [
        1,
        1,
        0,
        1,
    ]


def test_the_default_label_order_puts_label_0_at_class_0(tmp_path, tok):
    # "1" comes first in the file; numeric order still gives "0" class 0, "10" after "2"
    f = _write(tmp_path / "s.tsv", "sentence\tlabel\nyes\t1\nno\t0\nten\t10\ntwo\t2\n")
    ex = read_glue_tsv(f)
    labels = label_list_for(TrainConfig(task="finetune"), RawData(train_glue=[ex]))
    assert labels == ["0", "1", "2", "10"]
    ds = encode_classification(ex, tok, 16, labels)
    assert [it["label"] for it in ds.items] == [1, 0, 3, 2]
    assert infer_label_list(["1", "0", "1"]) == ["0", "1"]
    assert infer_label_list(["neutral", "entailment", "contradiction"]) == [
        "contradiction",
        "entailment",
        "neutral",
    ]


def test_real_valued_labels_are_refused_for_a_classifier(tmp_path, tok):
    f = _write(tmp_path / "r.tsv", "sentence\tlabel\na\t1\nb\t0.5\n")
    ex = read_glue_tsv(f)
    with pytest.raises(ValueError, match=r"r\.tsv:3: label '0\.5' is a number.*regression = true"):
        label_list_for(TrainConfig(task="finetune"), RawData(train_glue=[ex]))
    with pytest.raises(ValueError, match=r"labels \['0\.5'\] are numbers.*regression"):
        infer_label_list(ex.labels)
    with pytest.raises(ValueError, match=r"r\.tsv:3: label '0\.5' is outside .*regression = true"):
        encode_classification(ex, tok, 16, ["0", "1"])
    # regression reads them, but refuses a non-finite target
    assert [it["label"] for it in encode_classification(ex, tok, 16, None).items] == [1.0, 0.5]
    nan = read_glue_tsv(_write(tmp_path / "n.tsv", "sentence\tlabel\na\tnan\n"))
    with pytest.raises(ValueError, match=r"n\.tsv:2: label 'nan' is not a number"):
        encode_classification(nan, tok, 16, None)


def test_the_classifier_refuses_float_and_out_of_range_labels():
    torch.manual_seed(0)
    model = MPOBertForSequenceClassification(tiny_config(num_labels=2)).eval()
    ids = torch.randint(5, 97, (3, 6))
    with pytest.raises(TypeError, match="must be an integer tensor of class ids, got dtype"):
        model(ids, labels=torch.tensor([0.7, 1.0, 0.2]))  # was truncated to [0, 1, 0]
    with pytest.raises(ValueError, match=r"label 2 outside \[0, 2\) for a classifier"):
        model(ids, labels=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"labels have shape \(2,\), expected \(batch,\) = \(3,\)"):
        model(ids, labels=torch.tensor([0, 1]))
    assert model(ids, labels=torch.tensor([0, 1, 1])).loss is not None
    mlm = MPOBertForMaskedLM(tiny_config()).eval()
    with pytest.raises(TypeError, match="labels for masked-LM must be an integer tensor"):
        mlm(ids, labels=ids.float())
    with pytest.raises(ValueError, match=r"label 97 outside \[0, 97\) for masked-LM"):
        mlm(ids, labels=torch.full_like(ids, 97))


def test_attention_mask_must_be_0_or_1():
    torch.manual_seed(0)
    model = MPOBertForMaskedLM(tiny_config()).eval()
    ids = torch.randint(5, 97, (2, 6))
    mask = torch.ones(2, 6)
    mask[1, 4:] = 0
    with pytest.raises(ValueError, match=r"attention_mask must hold only 0 .* got the value 0\.5"):
        model(ids, attention_mask=torch.where(mask > 0, 1.0, 0.5))
    with pytest.raises(ValueError, match="got the value 2"):
        model(ids, attention_mask=mask.long() * 2)
    with torch.no_grad():
        ref = model(ids, attention_mask=mask.long()).logits
        for m in (mask, mask.bool(), mask.to(torch.int32)):
            assert torch.equal(model(ids, attention_mask=m).logits, ref)


# ---------------------------------------------------------------------------- 3. GLUE layouts
#: (task file, header row or None, a data row, layout, text_a, text_b, label or index)
GLUE_FIXTURES = [
    ("CoLA/train", None, ["gj04", "1", "", "The cat sat."], "cola", "The cat sat.", None, "1"),
    ("SST-2/dev", ["sentence", "label"], ["a fine film", "1"], "sst-2", "a fine film", None, "1"),
    (
        "MRPC/dev",
        ["\ufeffQuality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
        ["1", "702876", "702977", "He said so .", "He did say so ."],
        "mrpc",
        "He said so .",
        "He did say so .",
        "1",
    ),
    (
        "STS-B/dev",
        "index genre filename year old_index source1 source2 sentence1 sentence2 score".split(),
        [
            "0",
            "main-captions",
            "MSRvid",
            "2012test",
            "0001",
            "none",
            "none",
            "A man.",
            "A guy.",
            "5.0",
        ],
        "sts-b",
        "A man.",
        "A guy.",
        "5.0",
    ),
    (
        "QQP/train",
        ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
        ["7", "15", "16", "How old?", "What age?", "1"],
        "qqp",
        "How old?",
        "What age?",
        "1",
    ),
    (
        "MNLI/dev_matched",
        (
            "index promptID pairID genre sentence1_binary_parse sentence2_binary_parse "
            "sentence1_parse sentence2_parse sentence1 sentence2 label1 label2 gold_label"
        ).split(),
        [
            "0",
            "31193",
            "31193n",
            "government",
            "( a )",
            "( b )",
            "(R a)",
            "(R b)",
            "It rains.",
            "It is dry.",
            "contradiction",
            "contradiction",
            "contradiction",
        ],
        "mnli",
        "It rains.",
        "It is dry.",
        "contradiction",
    ),
    (
        "QNLI/dev",
        ["index", "question", "sentence", "label"],
        ["0", "Who?", "Him.", "entailment"],
        "qnli",
        "Who?",
        "Him.",
        "entailment",
    ),
    (
        "RTE/train",
        ["index", "sentence1", "sentence2", "label"],
        ["0", "A b.", "C d.", "not_entailment"],
        "pair",
        "A b.",
        "C d.",
        "not_entailment",
    ),
    (
        "WNLI/dev",
        ["index", "sentence1", "sentence2", "label"],
        ["0", "E f.", "G h.", "1"],
        "pair",
        "E f.",
        "G h.",
        "1",
    ),
    # test files: no label; the last field is the example index
    ("SST-2/test", ["index", "sentence"], ["4", "a film"], "single-test", "a film", None, "4"),
    (
        "CoLA/test",
        ["index", "sentence"],
        ["5", "Bill left."],
        "single-test",
        "Bill left.",
        None,
        "5",
    ),
    (
        "MRPC/test",
        ["index", "#1 ID", "#2 ID", "#1 String", "#2 String"],
        ["6", "1", "2", "X .", "Y ."],
        "mrpc-test",
        "X .",
        "Y .",
        "6",
    ),
    (
        "QQP/test",
        ["id", "question1", "question2"],
        ["8", "Why?", "How?"],
        "qqp-test",
        "Why?",
        "How?",
        "8",
    ),
    (
        "MNLI/test_mismatched",
        (
            "index promptID pairID genre sentence1_binary_parse sentence2_binary_parse "
            "sentence1_parse sentence2_parse sentence1 sentence2"
        ).split(),
        ["9", "1", "1n", "letters", "( a )", "( b )", "(R a)", "(R b)", "P q.", "R s."],
        "pair-test",
        "P q.",
        "R s.",
        "9",
    ),
    (
        "QNLI/test",
        ["index", "question", "sentence"],
        ["10", "When?", "Now."],
        "qnli-test",
        "When?",
        "Now.",
        "10",
    ),
    (
        "RTE/test",
        ["index", "sentence1", "sentence2"],
        ["11", "T u.", "V w."],
        "pair-test",
        "T u.",
        "V w.",
        "11",
    ),
]


@pytest.mark.parametrize(
    "task, header, row, layout, text_a, text_b, last",
    GLUE_FIXTURES,
    ids=[f[0] for f in GLUE_FIXTURES],
)
def test_every_glue_layout_is_recognised(tmp_path, task, header, row, layout, text_a, text_b, last):
    lines = ([header] if header else []) + [row, row]
    f = _write(tmp_path / "file.tsv", "".join("\t".join(r) + "\n" for r in lines))
    found = detect_glue_layout(f)
    assert found.name == layout and found in GLUE_LAYOUTS
    first = 2 if header else 1
    if found.labeled:
        ex = read_glue_tsv(f)
        assert (ex.texts_a, ex.labels, ex.lines) == ([text_a] * 2, [last] * 2, [first, first + 1])
        assert ex.texts_b == (None if text_b is None else [text_b] * 2)
    else:
        with pytest.raises(ValueError, match=r"file\.tsv has no label column .*read_glue_test_tsv"):
            read_glue_tsv(f)
        test = read_glue_test_tsv(f)
        assert (test.indices, test.texts_a, test.layout) == ([last] * 2, [text_a] * 2, layout)
        assert test.texts_b == (None if text_b is None else [text_b] * 2)
        assert test.lines == [first, first + 1]


def test_labeled_files_read_for_prediction_without_labels(tmp_path):
    f = _write(tmp_path / "dev.tsv", "sentence\tlabel\nfine\t1\nbad\t0\n")
    test = read_glue_test_tsv(f)
    assert (test.indices, test.texts_a, test.layout) == (["0", "1"], ["fine", "bad"], "sst-2")
    g = _write(tmp_path / "free.tsv", "x\tHello\ny\tThere\n")
    test = read_glue_test_tsv(g, text_a=1, index=0)
    assert (test.indices, test.texts_a, test.layout) == (["x", "y"], ["Hello", "There"], None)


def test_integer_columns_never_train_on_the_header(tmp_path):
    sst = _write(tmp_path / "sst.tsv", "sentence\tlabel\ngood\t1\nbad\t0\n")
    ex = read_glue_tsv(sst, text_a=0, label=1)  # no has_header: the header was an example
    assert ex.labels == ["1", "0"] and ex.lines == [2, 3]
    mrpc = _write(
        tmp_path / "mrpc.tsv",
        "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tA .\tB .\n0\t3\t4\tC .\tD .\n",
    )
    ex = read_glue_tsv(mrpc, text_a=3, text_b=4, label=0)
    assert ex.labels == ["1", "0"] and ex.texts_b == ["B .", "D ."]
    own = _write(tmp_path / "own.tsv", "text\ty\nsome text\t1\nmore\t0\n")
    assert read_glue_tsv(own, text_a=0, label=1).labels == ["1", "0"]
    words = _write(tmp_path / "words.tsv", "Text\tLabel\nnice\tpos\nugly\tneg\n")
    assert read_glue_tsv(words, text_a=0, label=1).labels == ["pos", "neg"]  # not 3 classes
    plain = _write(tmp_path / "plain.tsv", "some text\t1\nmore\t0\n")
    assert read_glue_tsv(plain, text_a=0, label=1).labels == ["1", "0"]
    kept = _write(tmp_path / "kept.tsv", "a\tlabel\nb\tother\nc\tlabel\n")  # a real class
    assert read_glue_tsv(kept, text_a=0, label=1).labels == ["label", "other", "label"]
    with pytest.raises(ValueError, match=r"sst\.tsv:1 is the header of a GLUE sst-2 file"):
        read_glue_tsv(sst, text_a=0, label=1, header=False)


@pytest.mark.slow
def test_real_glue_files_and_test_files(shared_data, tmp_path):
    glue = shared_data / "glue"
    sst = read_glue_tsv(glue / "SST-2/dev.tsv")
    assert len(sst.texts_a) == 872 and infer_label_list(sst.labels) == ["0", "1"]
    cola = read_glue_tsv(glue / "CoLA/dev.tsv")
    assert len(cola.texts_a) == 1043 and infer_label_list(cola.labels) == ["0", "1"]
    sts = read_glue_tsv(glue / "STS-B/dev.tsv")
    assert detect_glue_layout(glue / "STS-B/dev.tsv").name == "sts-b"
    assert len(sts.texts_a) == 1500 and sts.texts_b is not None
    assert sts.texts_a[0] == "A man with a hard hat is dancing." and sts.labels[0] == "5.000"
    with pytest.raises(ValueError, match=r"STS-B/dev\.tsv:2: label '5\.000' is a number"):
        label_list_for(TrainConfig(task="finetune"), RawData(train_glue=[sts]))
    for task, n, pair in (("SST-2", 1821, False), ("CoLA", 1063, False), ("STS-B", 1379, True)):
        test = read_glue_test_tsv(glue / task / "test.tsv")
        assert len(test.indices) == n and test.indices[:2] == ["0", "1"], task
        assert (test.texts_b is not None) == pair, task
    # with a UTF-8 byte-order mark (as MRPC's files carry) the header is still the header
    bom = tmp_path / "dev.tsv"
    bom.write_bytes(b"\xef\xbb\xbf" + (glue / "SST-2/dev.tsv").read_bytes())
    again = read_glue_tsv(bom)
    assert (again.texts_a, again.labels) == (sst.texts_a, sst.labels)


# ---------------------------------------------------------------------------- 4. latin-1 TSV
def test_a_latin1_tsv_names_the_file_and_line(tmp_path, capsys):
    f = _write(tmp_path / "l1.tsv", "sentence\tlabel\ngood\t1\ncafé crème\t0\n", "latin-1")
    with pytest.raises(ValueError, match=r"file .*l1\.tsv is not valid utf-8 at byte \d+ \(line 3"):
        read_glue_tsv(f)
    with pytest.raises(ValueError, match=r"l1\.tsv is not valid utf-8 at byte \d+ \(line 3"):
        detect_glue_layout(f)
    assert read_glue_tsv(f, encoding="latin-1").texts_a == ["good", "café crème"]
    rc = cli_main(
        [
            "finetune",
            "--data",
            str(f),
            "--output-dir",
            str(tmp_path / "run"),
            "--quiet",
            "progress=false",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2
    line = _one_line(err)
    assert "l1.tsv" in line and "line 3" in line and "encoding=" in line
    assert not (tmp_path / "run" / "checkpoints").exists()


# ---------------------------------------------------------------------------- 5. reproducible
_VOCAB_SCRIPT = """
import json, sys
from tnlm_models.data import default_corpus
from tnlm_models.tokenization import WordPieceTokenizer
docs = default_corpus()[:200]
vocabs = [WordPieceTokenizer.train(docs, vocab_size=400).backend.get_vocab() for _ in range(2)]
json.dump(vocabs, sys.stdout, sort_keys=True)
"""


def test_tokenizer_training_is_deterministic_across_processes():
    runs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", _VOCAB_SCRIPT],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        runs.extend(json.loads(out.stdout))
    assert len(runs[0]) == 400
    assert all(v == runs[0] for v in runs[1:])  # tokens and ids


def test_two_identical_tiny_runs_end_with_identical_weights(tmp_path):
    data = tmp_path / "corpus.txt"
    data.write_text("\n".join(default_corpus()[:120]), encoding="utf-8")
    states = []
    for name in ("a", "b"):
        res = train(
            None,
            None,
            dict(
                train_data=[str(data)],  # no tokenizer: each run trains its vocabulary
                vocab_size=300,
                max_seq_length=32,
                batch_size=8,
                max_steps=3,
                progress=False,
                log_every=0,
                max_valid_examples=8,
                eval_batch_size=8,
                output_dir=str(tmp_path / name),
                model=tiny_model_settings(),
            ),
        )
        states.append({k: v.detach().clone() for k, v in res.model.state_dict().items()})
    assert states[0].keys() == states[1].keys()
    assert [k for k in states[0] if not torch.equal(states[0][k], states[1][k])] == []
    a_vocab = sorted((tmp_path / "a").rglob("vocab.txt"))
    b_vocab = sorted((tmp_path / "b").rglob("vocab.txt"))
    assert a_vocab and [f.read_text() for f in a_vocab] == [f.read_text() for f in b_vocab]


# ---------------------------------------------------------------------------- 6. tokenizer files
_EXPECTED = r"expected a tokenizers JSON file \(tokenizer\.json\) or a BERT WordPiece vocab\.txt"


def test_a_garbage_tokenizer_file_is_a_clear_error(tmp_path, tok):
    bad_json = tmp_path / "tokenizer.json"
    bad_json.write_text('{1: "x"}')  # tokenizers: "Exception: key must be a string"
    with pytest.raises(
        ValueError, match=rf"tokenizer file .*tokenizer\.json is not a valid .*{_EXPECTED}"
    ):
        load_tokenizer(bad_json)
    with pytest.raises(ValueError, match=rf"is not a valid tokenizers JSON file.*{_EXPECTED}"):
        load_tokenizer(tmp_path)  # the directory's tokenizer.json
    noname = tmp_path / "tok"
    noname.write_text('  {"not": "a tokenizer"}')
    with pytest.raises(ValueError, match=rf"tokenizer file .*tok is not a valid .*{_EXPECTED}"):
        load_tokenizer(noname)
    blob = tmp_path / "weights.bin"
    blob.write_bytes(
        np.random.default_rng(0).integers(0, 256, 512, dtype=np.uint8).tobytes() + b"\0"
    )
    with pytest.raises(
        ValueError, match=rf"tokenizer file .*weights\.bin is not text .*{_EXPECTED}"
    ):
        load_tokenizer(blob)
    latin = tmp_path / "vocab.txt"
    latin.write_bytes("[PAD]\n[UNK]\ncafé\n".encode("latin-1"))
    with pytest.raises(ValueError, match=rf"vocab\.txt is not valid utf-8 at byte 15.*{_EXPECTED}"):
        load_tokenizer(latin)
    words = tmp_path / "words.txt"
    words.write_text("hello\nworld\n")
    with pytest.raises(ValueError, match=rf"words\.txt lacks the special tokens.*{_EXPECTED}"):
        load_tokenizer(words)
    # a valid tokenizers file with the wrong vocabulary names the file too
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    other = tmp_path / "other.json"
    Tokenizer(WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]")).save(str(other))
    with pytest.raises(
        ValueError, match=r"tokenizer file .*other\.json: tokenizer vocabulary lacks"
    ):
        load_tokenizer(other)
    tok.save(tmp_path / "good")
    assert load_tokenizer(tmp_path / "good").encode("a b") == tok.encode("a b")


def test_cli_tokenizer_garbage_is_one_line(tmp_path, capsys):
    bad = tmp_path / "garbage.json"
    bad.write_text('{1: "x"}')
    data = tmp_path / "t.txt"
    data.write_text("some text here\n" * 20)
    rc = cli_main(
        [
            "pretrain",
            "--data",
            str(data),
            "--tokenizer",
            str(bad),
            "--output-dir",
            str(tmp_path / "run"),
            "--quiet",
            "progress=false",
        ]
    )
    assert rc == 2
    line = _one_line(capsys.readouterr().err)
    assert "garbage.json" in line and "tokenizer.json" in line and "vocab.txt" in line
