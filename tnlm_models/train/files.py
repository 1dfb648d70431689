"""Crash-safe files: atomic replacement, JSON reading, a full disk named as such, and the
test hook that kills the process at a named point.

The kill points (``TNLM_TEST_KILL_AT=point`` or ``point@step``) stand in
:func:`.checkpoint.save_checkpoint` (``checkpoint-write``, ``checkpoint-index``) and in
:mod:`.runs` (``metrics-append``, and ``metrics-rewrite`` given to :func:`write_atomic`).
"""

from __future__ import annotations

import errno
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

__all__ = [
    "KILL_ENV",
    "disk_error",
    "fault_armed",
    "fault_point",
    "fsync_dir",
    "fsync_tree",
    "read_json",
    "write_atomic",
    "write_json",
]


# ---------------------------------------------------------------------------- test hook
KILL_ENV = "TNLM_TEST_KILL_AT"


def fault_armed(point: str, step: int | None = None) -> bool:
    """True when the test hook ``TNLM_TEST_KILL_AT`` names ``point`` (or ``point@step``)."""
    want = os.environ.get(KILL_ENV)
    if not want:
        return False
    return want == point or (step is not None and want == f"{point}@{step}")


def fault_point(point: str, step: int | None = None) -> None:
    """Test hook: SIGKILL this process here when ``TNLM_TEST_KILL_AT`` names this point.

    Tests stop a run at a known point this way (never by timing) and check what a crash
    there leaves on disk. The variable is unset in normal use.
    """
    if fault_armed(point, step):
        os.kill(os.getpid(), signal.SIGKILL)


# ---------------------------------------------------------------------------- files
def disk_error(err: BaseException, path: Path) -> BaseException:
    """``err``, or for a full disk an ``OSError`` that says so and names ``path``.

    ``torch.save`` and the Rust writers of ``safetensors``/``tokenizers`` report a full disk
    in their own words (``basic_ios::clear``, ``os error 28``); this gives one message.
    """
    text = str(err)
    full = (isinstance(err, OSError) and err.errno == errno.ENOSPC) or (
        "os error 28" in text or "No space left on device" in text
    )
    if full:
        return OSError(errno.ENOSPC, "no space left on device while writing", str(path))
    return err


def fsync_dir(d: Path) -> None:
    """Flush a folder's entries (a rename inside it) to disk, where the OS allows it."""
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(d: Path) -> None:
    """Flush every file directly inside folder ``d`` to disk."""
    for f in d.iterdir():
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())


def write_atomic(
    path: str | os.PathLike, write: Callable[[BinaryIO], Any], *, fault: str | None = None
) -> None:
    """Replace ``path`` through a temporary file: ``write(fh)``, flush, fsync, rename.

    A crash leaves either the old file or the new one, never a part of it. On an error the
    temporary file is removed; a full disk is reported as such, naming ``path``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if fault:
            fault_point(fault)
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        raise disk_error(e, path) from None
    fsync_dir(path.parent)


def write_json(path: Path, obj: Any) -> None:
    """Replace ``path`` with ``obj`` as indented JSON (UTF-8), through :func:`write_atomic`."""
    write_atomic(path, lambda fh: fh.write(json.dumps(obj, indent=2).encode("utf-8")))


def read_json(path: str | os.PathLike) -> Any:
    """The content of a JSON file; a truncated or corrupt one is a ``ValueError`` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text; the file is corrupt") from None
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{path} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno}); the "
            "file is truncated or corrupt"
        ) from None
