"""Reading a file a spec names, on the server: a regular file of bounded size, or a SpecError.

A spec names files the server reads at launch (a FlexiBERT table, a teacher's ``config.json``).
``Path.read_text`` of ``/dev/zero`` reads for ever (the server's memory grew by gigabytes),
and of a FIFO blocks a server thread until something writes to it: such a path is refused
before a byte is read, and a file past ``limit`` bytes is refused by its size.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from archsearch.spaces._errors import SpecError

#: The largest table file read (the largest shipped one, HW-GPT-Bench's, is 2.8 MB).
MAX_TABLE_BYTES = 512 * 2**20


def read_text(path: str | Path, field: str, limit: int, fix: str = "") -> str:
    """The UTF-8 text of the regular file ``path``; SpecError on ``field`` naming the problem
    (missing, a folder, not a regular file, larger than ``limit`` bytes, unreadable, not
    UTF-8)."""
    path = Path(path)
    try:
        # O_NONBLOCK: opening a FIFO for reading does not wait for a writer (no effect on files)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise SpecError(field, f"file {path} not found", fix) from None
    except IsADirectoryError:
        raise SpecError(field, f"{path} is a folder, not a file", fix) from None
    except OSError as e:
        raise SpecError(field, f"cannot read {path}: {e.strerror}", fix) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        if stat.S_ISDIR(info.st_mode):
            raise SpecError(field, f"{path} is a folder, not a file", fix)
        raise SpecError(field, f"{path} is not a regular file (a device, pipe or socket)", fix)
    with os.fdopen(fd, "rb") as f:
        if info.st_size > limit:
            raise SpecError(field, f"{path} is {info.st_size} bytes; at most {limit} are read", fix)
        try:
            data = f.read(limit + 1)
        except OSError as e:
            raise SpecError(field, f"cannot read {path}: {e.strerror}", fix) from None
    if len(data) > limit:  # it grew while read
        raise SpecError(field, f"{path} is over {limit} bytes; at most {limit} are read", fix)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(field, f"{path} is not UTF-8 text: {e}", fix) from None
