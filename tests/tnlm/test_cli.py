"""The ``tnlm decompose`` command on .npy, .pt and .safetensors files."""

from __future__ import annotations

import numpy as np
import pytest

from tnlm.cli import main, parse_bond_dim, parse_shape


@pytest.fixture
def matrix() -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.standard_normal((48, 36))


def test_parse_shape_and_bond_dim() -> None:
    assert parse_shape("3") == 3
    assert parse_shape("4,3,4x3,4,3") == ((4, 3, 4), (3, 4, 3))
    assert parse_bond_dim(None) is None
    assert parse_bond_dim("8") == 8
    assert parse_bond_dim("4,6") == [4, 6]
    with pytest.raises(ValueError, match="--shape 'a,b' is not understood"):
        parse_shape("a,b")
    with pytest.raises(ValueError, match="--bond-dim '4;5' is not understood"):
        parse_bond_dim("4;5")


def test_decompose_npy_prints_report_and_writes_png(tmp_path, matrix, capsys) -> None:
    path = tmp_path / "w.npy"
    np.save(path, matrix)
    png = tmp_path / "spectra.png"
    out_npz = tmp_path / "w_mpo.npz"
    rc = main(
        [
            "decompose",
            str(path),
            "--shape",
            "4,3,4x3,4,3",
            "--bond-dim",
            "5",
            "--png",
            str(png),
            "--save",
            str(out_npz),
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "matrix 48 x 36" in out
    assert "compression" in out
    # the printed total error is the measured one
    import tnlm

    mpo = tnlm.load(out_npz)
    measured = np.linalg.norm(matrix - mpo.to_dense())
    assert f"total error {measured:.4e}" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_decompose_pt_state_dict_needs_key(tmp_path, matrix, capsys) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "sd.pt"
    torch.save({"a.weight": torch.from_numpy(matrix), "b.weight": torch.zeros(4, 4)}, path)
    assert main(["decompose", str(path), "--shape", "2"]) == 2
    err = capsys.readouterr().err
    assert "name one with --key" in err and "a.weight" in err
    assert main(["decompose", str(path), "--key", "a.weight", "--shape", "2", "--tol", "0.5"]) == 0
    assert "(float64, torch)" in capsys.readouterr().out


def test_decompose_safetensors(tmp_path, matrix, capsys) -> None:
    st = pytest.importorskip("safetensors.numpy")
    path = tmp_path / "m.safetensors"
    st.save_file({"w": matrix.astype(np.float32)}, str(path))
    assert main(["decompose", str(path), "--shape", "2", "--bond-dim", "3"]) == 0
    assert "(float32, numpy)" in capsys.readouterr().out
    assert main(["decompose", str(path), "--key", "nope", "--shape", "2"]) == 2
    assert "has no tensor 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shape", "4,4x3,4"], "multiply to 16, but W has 48 rows"),
        (["--shape", "2", "--bond-dim", "0"], "bond_dim must be >= 1"),
        (["--shape", "2", "--tol", "1.5"], r"tol must lie in the open interval \(0, 1\)"),
    ],
)
def test_bad_arguments_exit_2_with_message(tmp_path, matrix, capsys, args, message) -> None:
    path = tmp_path / "w.npy"
    np.save(path, matrix)
    assert main(["decompose", str(path), *args]) == 2
    assert pytest.importorskip("re").search(message, capsys.readouterr().err)


def test_missing_file_and_bad_extension(tmp_path, capsys) -> None:
    assert main(["decompose", str(tmp_path / "none.npy"), "--shape", "2"]) == 2
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "w.txt"
    bad.write_text("1 2")
    assert main(["decompose", str(bad), "--shape", "2"]) == 2
    assert "unsupported file type '.txt'" in capsys.readouterr().err
