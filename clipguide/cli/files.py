"""Output files replaced whole: write a temporary file beside the target, then rename it.

A reader never sees half a file: the target is either the old one or the new one. The temporary
file is created like ``open(path, "w")`` would create the target (mode 0o666 less the umask, not
``mkstemp``'s 0600, which would survive the rename) and is named
``.NAME.PID.RANDOM.tmp``, so that a later writer of the same target can tell a leftover of a
killed process (removed) from one still being written by a live process (kept).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

__all__ = ["atomic_open", "write_atomic", "remove_stale_temps", "temp_files"]

_SUFFIX = ".tmp"


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{_SUFFIX}")


def temp_files(path: str | os.PathLike) -> list[Path]:
    """Temporary files of ``path`` (this module's and the older ``mkstemp`` naming)."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    prefix = f".{path.name}."
    return sorted(
        p
        for p in path.parent.iterdir()
        if p.name.startswith(prefix) and p.name.endswith(_SUFFIX) and len(p.name) > len(prefix)
    )


def _writer_alive(temp: Path, target: Path) -> bool:
    """Whether the process named in ``temp`` (``.NAME.PID.RANDOM.tmp``) is another live one."""
    middle = temp.name[len(target.name) + 2 : -len(_SUFFIX)]
    pid_text = middle.split(".", 1)[0]
    if os.name != "posix" or not pid_text.isdigit() or int(pid_text) == os.getpid():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    except OSError:
        return False
    return True


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove temporary files of ``path`` left by killed writers; returns those removed."""
    path = Path(path)
    removed = []
    for temp in temp_files(path):
        if not _writer_alive(temp, path):
            temp.unlink(missing_ok=True)
            removed.append(temp)
    return removed


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **kwargs) -> Iterator[IO]:
    """Open a temporary file that replaces ``path`` when the block ends without an error.

    The folder is created if needed and stale temporary files of ``path`` are removed first.
    The data are flushed to disk before the rename; on an error (or Ctrl-C) the temporary file
    is removed and ``path`` is left as it was. ``mode`` is ``"wb"`` or ``"w"`` (``kwargs``
    go to ``open``: ``encoding``, ``newline``).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode={mode!r}: atomic_open writes new files; use 'w' or 'wb'")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    temp = _temp_path(path)
    # 0o666 & ~umask, as for any new file; O_EXCL: never reuse someone else's file
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike, data: bytes | str) -> None:
    """Replace ``path`` with ``data`` (text is written as UTF-8) in one rename."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    with atomic_open(path, "wb") as handle:
        handle.write(data)
