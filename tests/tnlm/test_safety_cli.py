"""``tnlm decompose`` never loses a file and answers bad input with one line and exit 2.

Every bad input is run in-process through ``tnlm.cli.main`` (its stderr must be exactly one
line naming the value and what was expected); one real subprocess checks that no traceback
reaches the user. Outputs are checked before any work: a stand-in ``mpo_decompose`` that fails
the test proves the decomposition never started.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tnlm
import tnlm.cli as cli
from tnlm.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def matrix() -> np.ndarray:
    return np.random.default_rng(11).standard_normal((16, 12))


@pytest.fixture
def npy(tmp_path: Path, matrix: np.ndarray) -> Path:
    path = tmp_path / "w.npy"
    np.save(path, matrix)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: Any) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {err!r}"
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the decomposition starts."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the decomposition ran before the arguments were checked")

    monkeypatch.setattr(cli, "mpo_decompose", refuse)


def safetensors_bytes(tensors: dict[str, tuple[str, tuple[int, ...], bytes]]) -> bytes:
    """A ``.safetensors`` file written by hand (so that corrupt ones can be made too)."""
    header: dict[str, Any] = {"__metadata__": {"format": "np"}}
    data = b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {
            "dtype": dtype,
            "shape": list(shape),
            "data_offsets": [len(data), len(data) + len(raw)],
        }
        data += raw
    head = json.dumps(header).encode()
    return len(head).to_bytes(8, "little") + head + data


# --------------------------------------------------------------------------- item 1: outputs


def test_save_prints_the_path_it_really_writes(tmp_path, npy, capsys) -> None:
    rc, out, err = run(capsys, "decompose", npy, "--shape", "2", "--save", tmp_path / "out")
    assert (rc, err) == (0, "")
    assert f"MPO written to {tmp_path / 'out.npz'}\n" in out
    assert not (tmp_path / "out").exists()
    assert tnlm.load(tmp_path / "out.npz").shape == (16, 12)


@pytest.mark.parametrize(("option", "name"), [("--save", "out.npz"), ("--png", "s.png")])
def test_existing_output_is_refused_before_any_work(
    tmp_path, npy, capsys, no_work, option, name
) -> None:
    target = tmp_path / name
    target.write_bytes(b"the user's own file")
    rc, out, err = run(capsys, "decompose", npy, "--shape", "2", option, target)
    assert rc == 2 and out == ""
    line = one_line(err)
    assert re.search(rf"{option} {re.escape(str(target))} already exists; pass --force", line)
    assert target.read_bytes() == b"the user's own file"


def test_save_without_suffix_checks_the_real_path(tmp_path, npy, capsys, no_work) -> None:
    (tmp_path / "out.npz").write_bytes(b"keep")
    rc, _, err = run(capsys, "decompose", npy, "--shape", "2", "--save", tmp_path / "out")
    assert rc == 2
    assert re.search(r"--save \S*out\.npz already exists", one_line(err))
    assert (tmp_path / "out.npz").read_bytes() == b"keep"


def test_force_overwrites_and_leaves_no_temporary_files(tmp_path, npy, capsys) -> None:
    png, save = tmp_path / "s.png", tmp_path / "m.npz"
    png.write_bytes(b"old")
    save.write_bytes(b"old")
    argv = ["decompose", npy, "--shape", "2", "--png", png, "--save", save, "--force"]
    rc, out, err = run(capsys, *argv)
    assert (rc, err) == (0, "")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert tnlm.load(save).shape == (16, 12)
    assert sorted(os.listdir(tmp_path)) == ["m.npz", "s.png", "w.npy"]
    assert f"bond spectra written to {png}" in out and f"MPO written to {save}" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--png", "{tmp}/missing/s.png"],
            r"--png \S+/missing/s\.png: folder \S+/missing does not exist",
        ),
        (
            ["--png", "{tmp}/s.jpgg"],
            r"--png \S+s\.jpgg: unknown image type 'jpgg'; expected one of .*\.png",
        ),
        (["--png", "{tmp}/spectra"], r"unknown image type '\(no extension\)'; expected one of"),
        (["--save", "{tmp}/d.npz"], r"--save \S+/d\.npz is a directory; expected a file path"),
        (["--png", "{tmp}/w.npy/s.png"], r"folder \S+/w\.npy does not exist"),
    ],
)
def test_bad_output_paths_are_refused_before_any_work(
    tmp_path, npy, capsys, no_work, extra, message
) -> None:
    (tmp_path / "d.npz").mkdir()
    argv = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    rc, out, err = run(capsys, "decompose", npy, "--shape", "2", *argv)
    assert rc == 2 and out == ""
    assert re.search(message, one_line(err))


def test_png_and_save_naming_one_file_is_refused(
    tmp_path, npy, capsys, no_work, monkeypatch
) -> None:
    monkeypatch.setattr(cli, "_plot_formats", lambda: {"npz": "pretend", "png": "PNG"})
    same = tmp_path / "a.npz"
    rc, _, err = run(capsys, "decompose", npy, "--shape", "2", "--png", same, "--save", same)
    assert rc == 2
    assert re.search(r"--png and --save both name \S+a\.npz; expected two files", one_line(err))


def test_unwritable_folder_is_refused_before_any_work(
    tmp_path, npy, capsys, no_work, monkeypatch
) -> None:
    def denied(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cli.tempfile, "mkstemp", denied)
    rc, _, err = run(capsys, "decompose", npy, "--shape", "2", "--save", tmp_path / "m.npz")
    assert rc == 2
    assert re.search(
        r"--save \S+m\.npz: cannot write in folder \S+ \(Permission denied\)", one_line(err)
    )


def test_a_failed_output_does_not_skip_the_other(tmp_path, npy, capsys, monkeypatch) -> None:
    """The plot's folder disappears while the decomposition runs (a hook at a known point):
    the plot fails with one line, the MPO is still written, and the exit status is 1."""
    real = cli.mpo_decompose
    plots = tmp_path / "plots"
    plots.mkdir()

    def decompose_then_remove_folder(*args: Any, **kwargs: Any) -> Any:
        mpo = real(*args, **kwargs)
        plots.rmdir()
        return mpo

    monkeypatch.setattr(cli, "mpo_decompose", decompose_then_remove_folder)
    save = tmp_path / "m.npz"
    argv = ["decompose", npy, "--shape", "2", "--png", plots / "s.png", "--save", save]
    rc, out, err = run(capsys, *argv)
    assert rc == 1
    assert re.search(r"could not write --png \S+/plots/s\.png: No such file", one_line(err))
    assert tnlm.load(save).shape == (16, 12)
    assert f"MPO written to {save}" in out and "bond spectra written" not in out


def test_a_file_that_appears_during_the_work_is_not_overwritten(
    tmp_path, npy, capsys, monkeypatch
) -> None:
    real = cli.mpo_decompose
    save = tmp_path / "m.npz"

    def decompose_then_create(*args: Any, **kwargs: Any) -> Any:
        mpo = real(*args, **kwargs)
        save.write_bytes(b"written by someone else meanwhile")
        return mpo

    monkeypatch.setattr(cli, "mpo_decompose", decompose_then_create)
    rc, _, err = run(capsys, "decompose", npy, "--shape", "2", "--save", save)
    assert rc == 1
    assert re.search(
        r"--save \S+m\.npz appeared while tnlm was working; not overwritten", one_line(err)
    )
    assert save.read_bytes() == b"written by someone else meanwhile"
    assert sorted(os.listdir(tmp_path)) == ["m.npz", "w.npy"]


# --------------------------------------------------------------------------- item 2: inputs


def _write_inputs(tmp: Path, matrix: np.ndarray) -> None:
    bad = matrix.copy()
    bad[2, 3] = np.nan
    np.save(tmp / "nan.npy", bad)
    np.save(tmp / "cube.npy", np.zeros((2, 3, 4)))
    np.save(tmp / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp / "empty.npy").write_bytes(b"")
    (tmp / "w.txt").write_text("1 2")
    with open(tmp / "huge.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f8", "fortran_order": False, "shape": (10**7, 10**7)}
        )
        f.write(b"\0" * 64)
    (tmp / "garbage.npy").write_bytes(b"not a numpy file at all")
    np.savez(tmp / "two.npz", first=matrix, second=matrix.T)
    (tmp / "garbage.npz").write_bytes(b"PK but not really a zip")
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6)}
    )
    for name, method in [("stored", zipfile.ZIP_STORED), ("deflated", zipfile.ZIP_DEFLATED)]:
        with zipfile.ZipFile(tmp / f"huge_{name}.npz", "w", compression=method) as zf:
            zf.writestr("w.npy", header.getvalue() + b"\0" * 4096)
    tnlm.save(tnlm.mpo_decompose(matrix, 2), str(tmp / "saved_mpo.npz"))
    (tmp / "garbage.safetensors").write_bytes(b"garbage!garbage!")
    (tmp / "huge.safetensors").write_bytes((2**42).to_bytes(8, "little") + b"{}")
    raw = matrix.astype("<f4").tobytes()
    (tmp / "cut.safetensors").write_bytes(safetensors_bytes({"w": ("F32", (16, 12), raw)})[:-8])
    (tmp / "entry.safetensors").write_bytes(b"\x0c" + b"\0" * 7 + b'{"w": "xyz"}')
    (tmp / "deep.safetensors").write_bytes((100_000).to_bytes(8, "little") + b"[" * 100_000)
    (tmp / "list.safetensors").write_bytes(len(b"[1]").to_bytes(8, "little") + b"[1]")
    (tmp / "f8.safetensors").write_bytes(safetensors_bytes({"w": ("F8_E4M3", (2, 2), b"\0" * 4)}))
    (tmp / "dir.npy").mkdir()


BAD_INPUTS = [
    (["{tmp}", "--shape", "2"], r"\S+ is a directory; expected a matrix file \(\.npy, \.npz"),
    (["{tmp}/dir.npy", "--shape", "2"], r"dir\.npy is a directory; expected a matrix file"),
    (["{tmp}/none.npy", "--shape", "2"], r"no such file: \S+none\.npy"),
    (
        ["{tmp}/w.txt", "--shape", "2"],
        r"unsupported file type '\.txt' for \S+w\.txt; expected \.npy, \.npz",
    ),
    (
        ["{tmp}/empty.npy", "--shape", "2"],
        r"empty\.npy is empty \(0 bytes\); expected a \.npy matrix file",
    ),
    (
        ["{tmp}/nan.npy", "--shape", "2"],
        r"nan\.npy: W contains NaN or Inf entries; expected finite values only",
    ),
    (
        ["{tmp}/cube.npy", "--shape", "2"],
        r"cube\.npy is a 3-D array of shape \(2, 3, 4\); expected a 2-D matrix",
    ),
    (
        ["{tmp}/objects.npy", "--shape", "2"],
        r"objects\.npy holds Python objects \(dtype object\), which tnlm never unpickles",
    ),
    (
        ["{tmp}/huge.npy", "--shape", "2"],
        r"huge\.npy is truncated or corrupt: .*declares 800,000,000,000,000 bytes .* only 64 bytes",
    ),
    (["{tmp}/garbage.npy", "--shape", "2"], r"garbage\.npy is not a valid \.npy array \("),
    (
        ["{tmp}/nan.npy", "--shape", "2", "--key", "w"],
        r"--key 'w' given, but \S+nan\.npy is a \.npy file holding one array",
    ),
    (
        ["{tmp}/two.npz", "--shape", "2"],
        r"two\.npz holds 2 arrays \(2 of them 2-D\); name one with --key NAME\. "
        r"Available: first 16x12, second 12x16",
    ),
    (
        ["{tmp}/two.npz", "--shape", "2", "--key", "third"],
        r"two\.npz has no array 'third'; it has: first 16x12, second 12x16; name one with --key",
    ),
    (["{tmp}/garbage.npz", "--shape", "2"], r"garbage\.npz is not a valid \.npz archive \("),
    (
        ["{tmp}/huge_stored.npz", "--shape", "2"],
        r"huge_stored\.npz is truncated or corrupt: array 'w' \(shape \(1000000, 1000000\)\) "
        r"declares 8,000,000,000,000 bytes of data but only 4,096 bytes follow the header",
    ),
    (
        ["{tmp}/huge_deflated.npz", "--shape", "2"],
        r"huge_deflated\.npz is truncated or corrupt: array 'w' .* declares 8,000,000,000,000 "
        r"bytes of data but only [\d,]+ bytes follow",
    ),
    (
        ["{tmp}/saved_mpo.npz", "--shape", "2"],
        r"saved_mpo\.npz is an MPO saved by tnlm, not a matrix; read it with tnlm\.load",
    ),
    (
        ["{tmp}/garbage.safetensors", "--shape", "2"],
        r"garbage\.safetensors is not a valid \.safetensors file: .*header too large",
    ),
    (
        ["{tmp}/huge.safetensors", "--shape", "2"],
        r"huge\.safetensors is not a valid \.safetensors file: .*header too large",
    ),
    (
        ["{tmp}/cut.safetensors", "--shape", "2"],
        r"cut\.safetensors is not a valid \.safetensors file: .*not fully covered",
    ),
    (
        ["{tmp}/entry.safetensors", "--shape", "2"],
        r"entry\.safetensors is not a valid \.safetensors file: .*invalid JSON in header",
    ),
    (
        ["{tmp}/deep.safetensors", "--shape", "2"],
        r"deep\.safetensors is not a valid \.safetensors file: .*invalid JSON in header",
    ),
    (
        ["{tmp}/list.safetensors", "--shape", "2"],
        r"list\.safetensors is not a valid \.safetensors file: .*invalid JSON in header",
    ),
    (
        ["{tmp}/f8.safetensors", "--shape", "2"],
        r"f8\.safetensors: tensor 'w' has dtype F8_E4M3, which numpy cannot hold; expected "
        r"a float, integer or bfloat16 tensor",
    ),
    (
        ["{tmp}/w.npy", "--shape", "99999999999999999999"],
        r"--shape 99999999999999999999: 99999999999999999999 cores is more than \S+w\.npy "
        r"\(16 x 12\) can split into; expected n between 1 and 7",
    ),
    (["{tmp}/w.npy", "--shape", "0"], r"--shape '0' is not understood; expected an int n >= 1"),
    (
        ["{tmp}/w.npy", "--shape", "2", "--tol", "abc"],
        r"^tnlm decompose: error: argument --tol: invalid float value: 'abc' "
        r"\(see 'tnlm decompose --help'\)$",
    ),
]


@pytest.mark.parametrize(("argv", "message"), BAD_INPUTS)
def test_bad_input_is_one_line_naming_the_value(
    tmp_path, npy, matrix, capsys, argv, message
) -> None:
    _write_inputs(tmp_path, matrix)
    rc, out, err = run(capsys, "decompose", *[a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert rc == 2 and out == ""
    line = one_line(err)
    assert line.startswith("tnlm decompose: error: ")
    assert re.search(message, line), line


def test_pickled_pt_is_refused_without_running_it(tmp_path, capsys) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "obj.pt"
    torch.save({"w": torch.zeros(4, 4), "fn": _Unpicklable()}, path)
    rc, _, err = run(capsys, "decompose", path, "--shape", "2")
    assert rc == 2
    assert re.search(
        r"obj\.pt holds pickled Python objects that tnlm will not load \(.*_Unpicklable.*\); "
        r"tnlm reads \.pt files with torch\.load\(weights_only=True\); expected a tensor or a "
        r"state dict of tensors",
        one_line(err),
    )
    (tmp_path / "junk.pt").write_bytes(b"junk" * 10)
    rc, _, err = run(capsys, "decompose", tmp_path / "junk.pt", "--shape", "2")
    assert rc == 2
    assert re.search(
        r"junk\.pt is not a readable PyTorch file \(.+\); expected a tensor", one_line(err)
    )
    torch.save([torch.zeros(4, 4)], tmp_path / "list.pt")
    rc, _, err = run(capsys, "decompose", tmp_path / "list.pt", "--shape", "2")
    assert re.search(r"list\.pt holds a list; expected a tensor or a state dict", one_line(err))


class _Unpicklable:
    """A class torch.load(weights_only=True) must refuse to import."""


def test_bfloat16_safetensors_is_upcast_exactly_and_says_so(tmp_path, capsys) -> None:
    torch = pytest.importorskip("torch")
    st = pytest.importorskip("safetensors.torch")
    w = torch.randn(16, 12, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    path = tmp_path / "bf16.safetensors"
    st.save_file({"w": w, "bias": torch.zeros(12, dtype=torch.bfloat16)}, str(path))
    oracle = w.float().numpy()
    loaded = cli.load_matrix(str(path))
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, oracle)  # bfloat16 -> float32 is exact
    rc, out, err = run(capsys, "decompose", path, "--shape", "2", "--save", tmp_path / "m")
    assert (rc, err) == (0, "")
    assert f"note: {path}['w'] is bfloat16, which numpy cannot hold; upcast to float32" in out
    assert f"note: {path} holds 2 tensors; using 'w', the only 2-D one" in out
    assert "(float32, numpy)" in out
    dense = tnlm.load(tmp_path / "m.npz").to_dense()
    rtol = 100 * np.finfo(np.float32).eps
    np.testing.assert_allclose(dense, oracle, rtol=rtol, atol=rtol * np.abs(oracle).max())


def test_npz_single_array_and_key(tmp_path, matrix, capsys) -> None:
    np.savez(tmp_path / "one.npz", w=matrix)
    rc, out, _ = run(capsys, "decompose", tmp_path / "one.npz", "--shape", "2")
    assert rc == 0 and "matrix 16 x 12" in out
    np.savez(tmp_path / "two.npz", a=matrix, b=matrix.T)
    rc, out, _ = run(capsys, "decompose", tmp_path / "two.npz", "--key", "b", "--shape", "2")
    assert rc == 0 and "matrix 12 x 16" in out and "input " in out and "['b']" in out


def test_subprocess_bad_input_has_no_traceback(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tnlm.cli", "decompose", str(tmp_path), "--shape", "2"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1
    assert re.search(
        r"^tnlm decompose: error: \S+ is a directory; expected a matrix file", proc.stderr
    )


# --------------------------------------------------------------------------- item 3: core-only


def test_png_without_matplotlib_names_the_extra(
    tmp_path, npy, capsys, no_work, monkeypatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    rc, out, err = run(capsys, "decompose", npy, "--shape", "2", "--png", tmp_path / "s.png")
    assert rc == 2 and out == ""
    assert re.search(
        r"--png needs matplotlib, which is not installed; install it with: "
        r"pip install 'tnlm\[plot\]'",
        one_line(err),
    )
    assert not (tmp_path / "s.png").exists()


# --------------------------------------------------------------------------- item 4: the plot


def test_spectra_plot_legend_explains_dashes_and_title_names_the_input(matrix) -> None:
    pytest.importorskip("matplotlib")
    mpo = tnlm.mpo_decompose(matrix, ((4, 4), (3, 4)), 3)
    fig = cli._spectra_figure(mpo, source="weights/w.npy")
    ax = fig.axes[0]
    assert ax.get_title().splitlines()[0] == "weights/w.npy"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "bond 1 (r=3)" in labels
    assert "solid: kept singular values" in labels
    assert "dashed: discarded (truncated) values" in labels
    dashed = [ln for ln in ax.get_legend().get_lines() if ln.get_linestyle() == "--"]
    assert len(dashed) == 1


def test_png_title_names_the_input_file(tmp_path, npy, capsys, monkeypatch) -> None:
    pytest.importorskip("matplotlib")
    titles: list[str] = []
    real = cli._spectra_figure

    def spy(mpo: Any, source: Any = None) -> Any:
        fig = real(mpo, source)
        titles.append(fig.axes[0].get_title())
        return fig

    monkeypatch.setattr(cli, "_spectra_figure", spy)
    rc, _, _ = run(
        capsys, "decompose", npy, "--shape", "2", "--tol", "0.5", "--png", tmp_path / "s.pdf"
    )
    assert rc == 0
    assert (tmp_path / "s.pdf").read_bytes()[:5] == b"%PDF-"
    assert titles and titles[0].startswith(f"{npy}\n")


# --------------------------------------------------------------------------- item 5: version


def test_version(capsys) -> None:
    rc, out, err = run(capsys, "--version")
    assert (rc, out, err) == (0, f"tnlm {tnlm.__version__}\n", "")


# --------------------------------------------------------------------------- crashes, extras

_KILL_AFTER_TEMP_WRITE = """
import os, sys
import tnlm.cli as cli
real_fsync = os.fsync
def killed(fd):  # the known point: the temporary file is complete, the rename has not run
    real_fsync(fd)
    os._exit(137)
cli.os.fsync = killed
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_process_killed_while_writing_leaves_no_partial_output(tmp_path, npy) -> None:
    pytest.importorskip("matplotlib")
    save, png = tmp_path / "m.npz", tmp_path / "s.png"
    argv = ["decompose", str(npy), "--shape", "2", "--save", str(save), "--png", str(png)]
    proc = subprocess.run(
        [sys.executable, "-c", _KILL_AFTER_TEMP_WRITE, *argv],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 137, proc.stderr
    assert not save.exists() and not png.exists()  # nothing half-written under a real name
    proc = subprocess.run(
        [sys.executable, "-m", "tnlm.cli", *argv], capture_output=True, text=True, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr  # a rerun needs no --force
    assert tnlm.load(save).shape == (16, 12)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_interrupted_write_cleans_up_after_itself(tmp_path, npy, capsys, monkeypatch) -> None:
    def interrupted(path: str) -> None:
        with open(path, "wb") as f:
            f.write(b"half an MPO")
        raise KeyboardInterrupt

    monkeypatch.setattr(tnlm.MPO, "save", lambda self, path: interrupted(path))
    with pytest.raises(KeyboardInterrupt):
        main(["decompose", str(npy), "--shape", "2", "--save", str(tmp_path / "m.npz")])
    assert sorted(os.listdir(tmp_path)) == ["w.npy"]


def test_pt_without_torch_names_the_extra(tmp_path, capsys, monkeypatch) -> None:
    (tmp_path / "w.pt").write_bytes(b"anything")
    monkeypatch.setitem(sys.modules, "torch", None)
    rc, _, err = run(capsys, "decompose", tmp_path / "w.pt", "--shape", "2")
    assert rc == 2
    assert re.search(
        r"reading \S+w\.pt needs torch, which is not installed; install it with: "
        r"pip install 'tnlm\[torch\]'",
        one_line(err),
    )


def test_safetensors_without_the_package_names_it(tmp_path, matrix, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "safetensors", None)
    path = tmp_path / "w.safetensors"
    data = {"w": ("F64", (16, 12), matrix.astype("<f8").tobytes())}
    path.write_bytes(safetensors_bytes(data))
    rc, out, err = run(capsys, "decompose", path, "--shape", "2")
    assert rc == 2 and out == ""
    assert re.fullmatch(
        r"tnlm decompose: error: reading \S+w\.safetensors needs the safetensors package, "
        r"which is not installed; install it with: pip install safetensors",
        one_line(err),
    )


def test_safetensors_of_every_numpy_dtype_is_read_exactly(tmp_path, matrix) -> None:
    for code, dtype in (("F64", "<f8"), ("F32", "<f4"), ("F16", "<f2"), ("I32", "<i4")):
        path = tmp_path / f"w_{code}.safetensors"
        m = matrix.astype(dtype)
        path.write_bytes(safetensors_bytes({"w": (code, (16, 12), m.tobytes())}))
        loaded = cli.load_matrix(str(path))
        assert loaded.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(loaded, m)


def test_pt_state_dict_with_int_keys_is_read_by_key(tmp_path, matrix, capsys) -> None:
    torch = pytest.importorskip("torch")
    torch.save({0: torch.from_numpy(matrix), 1: torch.from_numpy(matrix.T)}, tmp_path / "w.pt")
    rc, out, err = run(capsys, "decompose", tmp_path / "w.pt", "--key", "1", "--shape", "2")
    assert (rc, err) == (0, "")
    assert "matrix 12 x 16" in out
