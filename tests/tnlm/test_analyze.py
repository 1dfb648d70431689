"""``tnlm analyze`` and ``tnlm.analysis``: spectra, entropies and error curves against a dense
numpy oracle, the grouping rule, the readers, a tiny MPOBERT checkpoint, and every bad input
(one line on stderr, exit 2, nothing computed)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tnlm
import tnlm.analysis as A
from tnlm.cli import main

REPO = Path(__file__).resolve().parents[2]
RTOL = 1e3 * np.finfo(np.float64).eps  # the analysis runs in float64


# --------------------------------------------------------------------------- oracles


def interleaved(W: np.ndarray, rows: tuple[int, ...], cols: tuple[int, ...]) -> np.ndarray:
    """W as the tensor (i_1 j_1, ..., i_n j_n)."""
    n = len(rows)
    T = W.reshape(*rows, *cols).transpose([x for k in range(n) for x in (k, n + k)])
    return T.reshape([r * c for r, c in zip(rows, cols)])


def unfolding_spectra(W: np.ndarray, rows: tuple[int, ...], cols: tuple[int, ...]) -> list:
    """numpy's singular values of every unfolding W^{<k>}."""
    T = interleaved(W, rows, cols)
    d = T.shape
    return [
        np.linalg.svd(T.reshape(math.prod(d[: k + 1]), -1), compute_uv=False)
        for k in range(len(d) - 1)
    ]


def entropy(s: np.ndarray) -> float:
    p = s**2 / np.sum(s**2)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def tt_svd_error(W: np.ndarray, rows: tuple[int, ...], cols: tuple[int, ...], cap: int) -> float:
    """Relative error of a numpy TT-SVD with every bond capped at ``cap`` (measured densely)."""
    T = interleaved(W, rows, cols)
    d = T.shape
    cores, c, r = [], T.reshape(d[0], -1), 1
    for k in range(len(d) - 1):
        c = c.reshape(r * d[k], -1)
        u, s, vt = np.linalg.svd(c, full_matrices=False)
        k_r = min(cap, len(s))
        cores.append(u[:, :k_r].reshape(r, d[k], k_r))
        c, r = s[:k_r, None] * vt[:k_r], k_r
    cores.append(c.reshape(r, d[-1], 1))
    out = cores[0]
    for g in cores[1:]:
        out = np.tensordot(out, g, axes=(-1, 0))
    return float(np.linalg.norm(out.reshape(T.shape) - T) / np.linalg.norm(T))


def with_spectrum(s: np.ndarray, rows, cols, seed: int = 0) -> np.ndarray:
    """A matrix whose one bond (two cores) has exactly the singular values ``s``."""
    rng = np.random.default_rng(seed)
    m, n = rows[0] * cols[0], rows[1] * cols[1]
    u, _ = np.linalg.qr(rng.standard_normal((m, len(s))))
    v, _ = np.linalg.qr(rng.standard_normal((n, len(s))))
    M = (u * s) @ v.T  # (i1 j1, i2 j2)
    return (
        M.reshape(rows[0], cols[0], rows[1], cols[1])
        .transpose(0, 2, 1, 3)
        .reshape(rows[0] * rows[1], cols[0] * cols[1])
    )


# --------------------------------------------------------------------------- the library


def test_constructed_spectrum_entropy_and_curve_are_exact() -> None:
    s = np.array([5.0, 3.0, 2.0, 1.0, 0.5, 0.25])
    rows, cols = (2, 3), (4, 2)  # bond 1 splits (2*4) x (3*2): 6 values
    W = with_spectrum(s, rows, cols)
    a = A.analyze_matrix(W, (rows, cols), bond_dims=[3], name="w")
    assert a.bond_dims == (6,)
    np.testing.assert_allclose(a.spectra[0], s, rtol=0, atol=RTOL * s[0])
    assert a.entropies[0] == pytest.approx(entropy(s), rel=RTOL)
    assert a.norm == pytest.approx(np.linalg.norm(s), rel=RTOL)
    # one bond: error at cap r = norm of the tail, and both bounds equal it
    for p in a.curve:
        tail = np.linalg.norm(s[p.bond_dim :]) / np.linalg.norm(s)
        assert p.relative_error == pytest.approx(tail, rel=1e-9, abs=RTOL)
        assert p.lower_bound == pytest.approx(tail, rel=1e-12, abs=RTOL)
        assert p.upper_bound == pytest.approx(tail, rel=1e-12, abs=RTOL)
    assert [p.bond_dim for p in a.curve] == [1, 2, 3, 4, 6]


@pytest.mark.parametrize(
    "rows, cols", [((2, 3, 2), (3, 2, 2)), ((4, 2, 2, 2), (2, 2, 3, 2))], ids=["n3", "n4"]
)
def test_spectra_entropies_and_curve_against_dense_oracle(rows, cols) -> None:
    rng = np.random.default_rng(3)
    W = rng.standard_normal((math.prod(rows), math.prod(cols)))
    W += 3 * np.outer(rng.standard_normal(W.shape[0]), rng.standard_normal(W.shape[1]))
    a = A.analyze_matrix(W.astype(np.float32), (rows, cols), name="w")
    assert a.dtype == "float32" and a.kind == "dense"
    oracle = unfolding_spectra(W.astype(np.float32).astype(np.float64), rows, cols)
    assert len(a.spectra) == len(oracle)
    for got, want in zip(a.spectra, oracle):
        np.testing.assert_allclose(got, want, rtol=0, atol=RTOL * want[0])
    np.testing.assert_allclose(a.entropies, [entropy(s) for s in oracle], rtol=1e-10)
    W64 = W.astype(np.float32).astype(np.float64)
    for p in a.curve:
        exact = tt_svd_error(W64, rows, cols, p.bond_dim)
        assert p.relative_error == pytest.approx(exact, rel=1e-8, abs=1e-12)
        assert p.lower_bound <= exact + 1e-12 <= p.upper_bound + 2e-12
    # more than one bond: the upper bound is strict somewhere
    assert any(p.upper_bound > p.relative_error * (1 + 1e-6) for p in a.curve)


def test_mpo_is_analysed_from_its_cores_without_densifying(monkeypatch) -> None:
    rng = np.random.default_rng(5)
    rows, cols = (2, 4, 2), (3, 2, 2)
    W = rng.standard_normal((16, 12))
    mpo = tnlm.mpo_decompose(W, (rows, cols), bond_dim=4)
    dense = mpo.to_dense()

    def refuse(self: Any) -> Any:
        raise AssertionError("the MPO was rebuilt densely")

    monkeypatch.setattr(tnlm.MPO, "to_dense", refuse)
    a = A.analyze_matrix(mpo, name="layer.0.q")
    monkeypatch.undo()
    assert a.kind == "mpo" and a.bond_dims == mpo.bond_dims
    for got, want in zip(a.spectra, unfolding_spectra(dense, rows, cols)):
        np.testing.assert_allclose(got, want[: len(got)], rtol=0, atol=RTOL * want[0])
        assert np.all(want[len(got) :] < RTOL * want[0])  # the rest is zero
    for p in a.curve:
        assert p.relative_error == pytest.approx(
            tt_svd_error(dense, rows, cols, p.bond_dim), rel=1e-8, abs=1e-12
        )
    with pytest.raises(ValueError, match="is an MPO, whose factorisation is its own"):
        A.analyze_matrix(mpo, 3)


def test_error_bounds_and_default_caps() -> None:
    spectra = [np.array([3.0, 4.0 * 0]), np.array([2.0, 1.0, 1.0])]
    lo, hi = A.error_bounds(spectra, 1)
    assert (lo, hi) == (pytest.approx(math.sqrt(2)), pytest.approx(math.sqrt(2)))
    assert A.error_bounds([np.array([1.0, 1.0]), np.array([3.0, 2.0])], 1) == (
        pytest.approx(2.0),
        pytest.approx(math.sqrt(5)),
    )
    assert A.default_caps((3, 9, 4)) == [1, 2, 4, 8, 9]
    assert A.default_caps((16,)) == [1, 2, 4, 8, 16]
    with pytest.raises(ValueError, match="bond_dim must be an int >= 1; got 0"):
        A.error_bounds(spectra, 0)


def test_grouping_rule() -> None:
    g = A.group_name
    assert g("encoder.layer.3.attention.self.query.weight") == (
        "encoder.layer.*.attention.self.query.weight"
    )
    assert g("bert.encoder.layer.11.query.core0") == "bert.encoder.layer.*.query.core0"
    assert g("h.0.mlp.3.weight") == "h.*.mlp.*.weight"
    assert g("model/layers/2/kernel") == "model/layers/*/kernel"
    assert g("layer3.weight") == "layer3.weight"  # not a component of its own
    assert g("core0") == "core0" and g("0") == "*"
    assert g("bert.encoder.central.query") == "bert.encoder.central.query"
    names = ["l.10.w", "l.2.w", "l.1.w"]
    assert sorted(names, key=A.group_key) == ["l.1.w", "l.2.w", "l.10.w"]


def test_parameter_shares() -> None:
    sizes = {"enc.central.q": 600, "enc.layer.0.q.core0": 100, "enc.layer.1.q.core0": 100}
    sizes["emb.weight"] = 200
    s = A.parameter_shares(sizes)
    assert s.total == 1000
    assert s.shared_tensors == ("enc.central.q",) and s.shared_share == 0.6
    assert [(x.group, x.tensors, x.parameters) for x in s.groups] == [
        ("enc.central.q", 1, 600),
        ("emb.weight", 1, 200),
        ("enc.layer.*.q.core0", 2, 200),
    ]
    assert A.parameter_shares(sizes, shared=r"^emb\.").shared_parameters == 200
    assert A.parameter_shares({"centralized.w": 5}).shared_parameters == 0


# --------------------------------------------------------------------------- the command


def run(capsys: pytest.CaptureFixture[str], *argv: Any) -> tuple[int, str, str]:
    rc = main(["analyze", *(str(a) for a in argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def stack(seed: int = 0) -> dict[str, np.ndarray]:
    """Three 'layers' with constructed one-bond spectra, a bias and a shared 4-D tensor."""
    rows, cols = tnlm.factorize(8, 2), tnlm.factorize(8, 2)  # what --shape 2 chooses
    out = {}
    for i, s in enumerate(([4.0, 2.0, 1.0], [3.0, 3.0, 1.0, 0.5], [1.0])):
        W = with_spectrum(np.array(s), rows, cols, seed=seed + i)
        out[f"enc.layer.{i}.q.weight"] = W
        out[f"enc.layer.{i}.q.bias"] = np.ones(8)
    out["enc.central.q"] = np.ones((2, 3, 3, 2))
    return out


SPECTRA = {0: [4.0, 2.0, 1.0], 1: [3.0, 3.0, 1.0, 0.5], 2: [1.0]}


def check_report(doc: dict[str, Any]) -> None:
    """The JSON of ``stack()`` analysed at --shape 2 against the constructed spectra."""
    names = [m["name"] for m in doc["matrices"]]
    assert names == [f"enc.layer.{i}.q.weight" for i in range(3)]
    for i, m in enumerate(doc["matrices"]):
        s = np.array(SPECTRA[i])
        got = np.array(m["spectra"][0])
        np.testing.assert_allclose(got[: len(s)], s, atol=RTOL * 4)
        np.testing.assert_allclose(got[len(s) :], 0, atol=RTOL * 4)
        assert m["entropies"][0] == pytest.approx(entropy(s), rel=1e-9)
        assert m["group"] == "enc.layer.*.q.weight"
        for p in m["curve"]:
            tail = np.linalg.norm(s[p["bond_dim"] :]) / np.linalg.norm(s)
            assert p["relative_error"] == pytest.approx(tail, abs=1e-9)
    params = doc["parameters"]
    assert params["total"] == 3 * 64 + 3 * 8 + 36
    assert params["shared_central"]["tensors"] == ["enc.central.q"]
    assert params["shared_central"]["share"] == pytest.approx(36 / 252)


def test_npz_table_json_and_figures(tmp_path, capsys) -> None:
    np.savez(tmp_path / "w.npz", **stack())
    out_json, figs = tmp_path / "a.json", tmp_path / "figs"
    rc, out, err = run(capsys, tmp_path / "w.npz", "--shape", "2", "--bond-dims", "2",
                       "--json", out_json, "--png", figs)  # fmt: skip
    assert rc == 0, err
    assert err == ""
    check_report(json.loads(out_json.read_text()))
    lines = out.splitlines()
    row = next(ln for ln in lines if ln.startswith("enc.layer.0.q.weight"))
    assert "dense" in row and "8x8" in row and "2,4x2,4" in row
    tail = np.linalg.norm([1.0]) / np.linalg.norm([4.0, 2.0, 1.0])
    assert row.split()[-1] == f"{tail:.2e}"  # err@2
    assert f"{entropy(np.array([4.0, 2.0, 1.0])):.2f}" in row
    assert "shared central tensors" in out and "14.29%" in out
    assert sorted(os.listdir(figs)) == ["enc.layer.N.q.weight.png"]
    assert (figs / "enc.layer.N.q.weight.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def save_pt(path: Path, tensors: dict[str, np.ndarray]) -> None:
    torch = pytest.importorskip("torch")
    torch.save({k: torch.from_numpy(v) for k, v in tensors.items()}, path)


def save_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    st = pytest.importorskip("safetensors.numpy")
    st.save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path))


@pytest.mark.parametrize("fmt", ["npz", "safetensors", "pt", "folder"])
def test_every_reader_gives_the_same_analysis(tmp_path, capsys, fmt) -> None:
    tensors = stack()
    if fmt == "npz":
        path = tmp_path / "w.npz"
        np.savez(path, **tensors)
    elif fmt == "safetensors":
        path = tmp_path / "w.safetensors"
        save_safetensors(path, tensors)
    elif fmt == "pt":
        path = tmp_path / "w.pt"
        save_pt(path, tensors)
    else:  # a folder: two .npz files, one .npy, one .pt (no safetensors): all read
        path = tmp_path / "model"
        path.mkdir()
        np.savez(path / "a.npz", **{k: v for k, v in tensors.items() if ".0." in k})
        np.save(path / "enc.layer.1.q.weight.npy", tensors.pop("enc.layer.1.q.weight"))
        save_pt(path / "b.pt", {k: v for k, v in tensors.items() if ".0." not in k})
        (path / "notes.txt").write_text("not weights")
    rc, _, err = run(capsys, path, "--shape", "2", "--json", tmp_path / "a.json")
    assert rc == 0, err
    check_report(json.loads((tmp_path / "a.json").read_text()))


def test_folder_reads_safetensors_only_when_present(tmp_path, capsys) -> None:
    tensors = stack()
    save_safetensors(tmp_path / "model.safetensors", tensors)
    save_pt(tmp_path / "optimizer.pt", {"x": np.ones((3, 3))})
    rc, out, err = run(capsys, tmp_path, "--shape", "2", "--json", tmp_path / "a.json")
    assert rc == 0, err
    assert "1 other weight file(s) beside them not read" in out
    check_report(json.loads((tmp_path / "a.json").read_text()))


def test_keys_selects_and_bfloat16_is_read(tmp_path, capsys) -> None:
    torch = pytest.importorskip("torch")
    st = pytest.importorskip("safetensors.torch")
    W = torch.from_numpy(with_spectrum(np.array([2.0, 1.0]), (2, 2), (2, 2)))
    st.save_file(
        {"a.0.w": W.bfloat16(), "a.1.w": W.float(), "b.w": W.float()}, tmp_path / "m.safetensors"
    )
    rc, out, err = run(capsys, tmp_path / "m.safetensors", "--shape", "2", "--keys", r"^a\.",
                       "--json", tmp_path / "a.json")  # fmt: skip
    assert rc == 0, err
    doc = json.loads((tmp_path / "a.json").read_text())
    assert [m["name"] for m in doc["matrices"]] == ["a.0.w", "a.1.w"]
    want = np.linalg.svd(interleaved(W.bfloat16().double().numpy(), (2, 2), (2, 2)).reshape(4, 4),
                         compute_uv=False)  # fmt: skip
    np.testing.assert_allclose(doc["matrices"][0]["spectra"][0], want, atol=1e-12)
    assert doc["matrices"][0]["dtype"] == "float32"  # upcast from bfloat16 on reading


def test_skips_what_cannot_split_and_integer_tensors(tmp_path, capsys) -> None:
    np.savez(tmp_path / "w.npz", big=np.ones((8, 8)), tiny=np.ones((1, 2)),
             ids=np.arange(6).reshape(2, 3))  # fmt: skip
    rc, out, err = run(capsys, tmp_path / "w.npz", "--shape", "3", "--json", tmp_path / "a.json")
    assert rc == 0, err
    assert "skipped tiny: 1 x 2 cannot split into 3 cores" in out
    doc = json.loads((tmp_path / "a.json").read_text())
    assert [m["name"] for m in doc["matrices"]] == ["big"]
    assert doc["skipped"] == [{"name": "tiny", "reason": "1 x 2 cannot split into 3 cores"}]
    assert doc["parameters"]["total"] == 66  # the integer tensor holds no parameters


# --------------------------------------------------------------------------- our checkpoints


def test_tiny_mpobert_checkpoint(tmp_path, capsys) -> None:
    torch = pytest.importorskip("torch")
    from tnlm_models import MPOBertForMaskedLM, MPOLinear
    from tnlm_models.testing import tiny_config

    model = MPOBertForMaskedLM(tiny_config(num_hidden_layers=2))
    model.init_weights(torch.Generator().manual_seed(0))
    with torch.no_grad():  # distinct per-layer cores, so the layers' spectra differ
        for p in model.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    folder = tmp_path / "ckpt"
    model.save_pretrained(folder)
    rc, out, err = run(capsys, folder, "--shape", "3", "--keys", r"layer\.\d+\.(query|output)$",
                       "--json", tmp_path / "a.json", "--png", tmp_path / "figs")  # fmt: skip
    assert rc == 0, err
    doc = json.loads((tmp_path / "a.json").read_text())
    layers = {n: m for n, m in model.named_modules() if isinstance(m, MPOLinear)}
    got = {m["name"]: m for m in doc["matrices"]}
    assert sorted(got) == sorted(n for n in layers if n.endswith((".query", ".output")))
    for name, m in got.items():
        assert m["kind"] == "mpo"
        lin = layers[name]
        dense = lin.mpo_weight().detach().double().numpy()
        assert m["shape"] == list(dense.shape)
        oracle = unfolding_spectra(dense, tuple(lin.out_dims), tuple(lin.in_dims))
        for s, want in zip(m["spectra"], oracle):
            np.testing.assert_allclose(s, want[: len(s)], rtol=0, atol=1e-6 * want[0])
        np.testing.assert_allclose(
            m["entropies"], [entropy(w[: len(s)]) for s, w in zip(m["spectra"], oracle)], rtol=1e-5
        )
    shared = doc["parameters"]["shared_central"]
    central = model.encoder_module().central
    assert shared["tensors"] == sorted(f"bert.encoder.central.{k}" for k in central)
    assert shared["parameters"] == sum(p.numel() for p in central.values())
    assert doc["parameters"]["total"] == model.num_parameters()
    assert shared["share"] == pytest.approx(shared["parameters"] / model.num_parameters())
    assert "shared central tensors" in out and f"{100 * shared['share']:.2f}%" in out
    assert sorted(os.listdir(tmp_path / "figs")) == [
        "bert.encoder.layer.N.output.png",
        "bert.encoder.layer.N.query.png",
    ]


def test_training_run_folder_stands_for_its_checkpoint(tmp_path, capsys) -> None:
    pytest.importorskip("torch")
    from tnlm_models import MPOBertForMaskedLM
    from tnlm_models.testing import tiny_config

    ckpt = tmp_path / "run" / "checkpoints" / "step-00000005"
    MPOBertForMaskedLM(tiny_config(num_hidden_layers=1)).save_pretrained(ckpt)
    (ckpt.parent / "index.json").write_text(json.dumps({"latest": "step-00000005"}))
    rc, out, err = run(capsys, tmp_path / "run", "--shape", "2", "--keys", "query")
    assert rc == 0, err
    assert f"analysing its checkpoint {ckpt}" in out


def test_model_hook_docstring_example() -> None:
    pytest.importorskip("torch")
    import doctest

    import tnlm_models.analysis

    assert doctest.testmod(tnlm_models.analysis, optionflags=doctest.ELLIPSIS).failed == 0


# --------------------------------------------------------------------------- bad input


def one_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {err!r}"
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the analysis ran before the arguments were checked")

    monkeypatch.setattr(A, "analyze_matrix", refuse)


@pytest.fixture
def npz(tmp_path: Path) -> Path:
    path = tmp_path / "w.npz"
    np.savez(path, **stack())
    return path


BAD = [
    (["{tmp}/missing.npz", "--shape", "2"], "no such file or folder: .*missing.npz"),
    (["{tmp}/w.txt", "--shape", "2"], r"unsupported file type '\.txt' for .*w\.txt; expected"),
    (["{tmp}/empty", "--shape", "2"], r"empty holds no weight files; expected \.npy, \.npz"),
    (["{tmp}/vec.npz", "--shape", "2"], r"holds no matrix \(1 tensors, none 2-D and floating\)"),
    (["{npz}", "--shape", "2", "--keys", "zzz"], "--keys 'zzz' matches none of the 3 matrices"),
    (["{npz}", "--shape", "2", "--keys", "("], "--keys '\\(' is not a valid regular expression"),
    (["{npz}", "--shape", "2", "--shared", "[a"], "--shared '\\[a' is not a valid regular"),
    (["{npz}", "--shape", "two"], "--shape 'two' is not understood; expected an int n >= 1"),
    (["{npz}", "--shape", "0"], "--shape '0' is not understood"),
    (
        ["{npz}", "--shape", "4,4x2,4"],
        r"--shape 4,4x2,4 does not fit enc\.layer\.0\.q\.weight \(8 x 8\): row_dims \(4, 4\) "
        r"multiply to 16, but W has 8 rows"
        r".*select matrices of one shape with --keys",
    ),
    (["{npz}", "--shape", "2", "--bond-dims", "0,4"], "--bond-dims '0,4' is not understood"),
    (["{npz}", "--shape", "2", "--bond-dims", "x"], "--bond-dims 'x' is not understood"),
    (["{npz}", "--shape", "2", "--json", "{npz}"], "--json .*w.npz already exists; pass --force"),
    (["{npz}", "--shape", "2", "--png", "{npz}"], "--png .*w.npz is a file; expected a folder"),
    (["{npz}", "--shape", "2", "--png", "{tmp}/no/figs"], "--png .*: folder .*no does not exist"),
    (["{tmp}/dup", "--shape", "2"], "tensor 'w' is in both .*a.npz and .*b.npz; expected each"),
    (["{tmp}/corrupt.npz", "--shape", "2"], r"corrupt\.npz is not a valid \.npz archive"),
    (["{tmp}/zero.safetensors", "--shape", "2"], r"zero\.safetensors is empty \(0 bytes\)"),
]


@pytest.mark.parametrize("argv, message", BAD, ids=[m[:30] for _, m in BAD])
def test_bad_input_is_one_line_and_exit_2(tmp_path, npz, capsys, no_work, argv, message) -> None:
    (tmp_path / "w.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    np.savez(tmp_path / "vec.npz", v=np.ones(3))
    (tmp_path / "dup").mkdir()
    np.savez(tmp_path / "dup" / "a.npz", w=np.ones((4, 4)))
    np.savez(tmp_path / "dup" / "b.npz", w=np.ones((4, 4)))
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04 not a zip")
    (tmp_path / "zero.safetensors").write_bytes(b"")
    args = [a.format(tmp=tmp_path, npz=npz) for a in argv]
    rc, out, err = run(capsys, *args)
    assert rc == 2
    line = one_line(err)
    assert line.startswith("tnlm analyze: error: ")
    assert __import__("re").search(message, line), line
    assert out == ""


def test_existing_figure_is_refused_and_force_overwrites(tmp_path, npz, capsys) -> None:
    figs = tmp_path / "figs"
    figs.mkdir()
    (figs / "enc.layer.N.q.weight.png").write_text("mine")
    rc, _, err = run(capsys, npz, "--shape", "2", "--png", figs)
    assert rc == 2
    assert "enc.layer.N.q.weight.png already exists; pass --force" in one_line(err)
    assert (figs / "enc.layer.N.q.weight.png").read_text() == "mine"
    (tmp_path / "a.json").write_text("mine")
    rc, _, err = run(capsys, npz, "--shape", "2", "--png", figs, "--json", tmp_path / "a.json",
                     "--force")  # fmt: skip
    assert rc == 0, err
    assert (figs / "enc.layer.N.q.weight.png").read_bytes()[:4] == b"\x89PNG"
    check_report(json.loads((tmp_path / "a.json").read_text()))
    leftovers = [f for f in os.listdir(tmp_path) if f.startswith(".tnlm")]
    assert leftovers == [] and sorted(os.listdir(figs)) == ["enc.layer.N.q.weight.png"]


def test_subprocess_bad_input_has_no_traceback(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tnlm.cli", "analyze", str(tmp_path / "nope"), "--shape", "2"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 2
    assert (
        one_line(proc.stderr) == f"tnlm analyze: error: no such file or folder: {tmp_path / 'nope'}"
    )


def test_tnlm_imports_no_model_code() -> None:
    """tnlm's command and analysis import neither tnlm_models nor torch nor matplotlib until a
    folder, a .pt file or --png asks for them."""
    code = (
        "import sys, tnlm.cli, tnlm.analysis; "
        "print([m for m in ('tnlm_models', 'torch', 'matplotlib') if m in sys.modules])"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert proc.stdout.strip() == "[]"


def test_hugging_face_bert_folder(tmp_path, capsys) -> None:
    """A folder written by transformers' save_pretrained: its config.json is not ours, so the
    dense 2-D weights are analysed and the layers grouped by the numeric rule."""
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=20,
    )  # fmt: skip
    model = transformers.BertModel(cfg)
    model.save_pretrained(tmp_path / "bert", safe_serialization=True)
    rc, out, err = run(capsys, tmp_path / "bert", "--shape", "2", "--keys", "attention.self.query",
                       "--json", tmp_path / "a.json", "--png", tmp_path / "figs")  # fmt: skip
    assert rc == 0, err
    doc = json.loads((tmp_path / "a.json").read_text())
    names = [m["name"] for m in doc["matrices"]]
    assert [n.split("encoder.")[-1] for n in names] == [
        "layer.0.attention.self.query.weight",
        "layer.1.attention.self.query.weight",
    ]
    state = model.state_dict()
    for m in doc["matrices"]:
        key = m["name"] if m["name"] in state else m["name"].split(".", 1)[1]
        W = state[key].double().numpy()
        for s, want in zip(m["spectra"], unfolding_spectra(W, (4, 4), (4, 4))):
            np.testing.assert_allclose(s, want, rtol=0, atol=1e-6 * want[0])
    assert {m["kind"] for m in doc["matrices"]} == {"dense"}
    assert doc["parameters"]["shared_central"]["tensors"] == []
    assert doc["parameters"]["total"] == model.num_parameters()
    (fig,) = os.listdir(tmp_path / "figs")
    assert fig.endswith("encoder.layer.N.attention.self.query.weight.png")
