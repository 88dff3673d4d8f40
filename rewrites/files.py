"""Reading a source file for a rewrite, and writing it back atomically.

A rewrite must never leave a half-written file, nor overwrite an edit made while it ran:
the new text goes to a temporary file in the same folder (same file system, so the rename
is atomic), takes the original's permission bits, and replaces the original only if the
original still holds the bytes that were read.
"""

from __future__ import annotations

import io
import os
import stat
import tempfile
import tokenize
from dataclasses import dataclass

from allocaudit.auditor.source import SourceError, decode, read_bytes


class WriteError(Exception):
    """Why a rewritten file was not written (the message is the reason shown to the user)."""


@dataclass(frozen=True)
class SourceFile:
    path: str
    data: bytes  # the bytes read: a write goes ahead only if the file still holds them
    text: str
    encoding: str  # as tokenize detects it: "utf-8-sig" for a file with a BOM

    def encode(self, text: str) -> bytes:
        try:
            return text.encode(self.encoding)
        except UnicodeEncodeError as exc:
            raise WriteError(f"the rewritten text cannot be encoded as {self.encoding}: {exc.reason}") from None


def read_source(path: str, max_size: int) -> SourceFile:
    """Bytes, text and encoding of a Python file; SourceError with a reason on failure."""
    data = read_bytes(path, max_size)
    text = decode(data)
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    except SyntaxError:
        encoding = "utf-8"
    return SourceFile(path, data, text, encoding)


def write_atomic(source: SourceFile, new_data: bytes) -> None:
    """Replace ``source.path`` with ``new_data`` unless it changed since it was read."""
    target = os.path.realpath(source.path)  # write through a symlink, keep the link
    try:
        info = os.stat(target)
    except FileNotFoundError:
        raise WriteError("file vanished before it could be written") from None
    except OSError as exc:
        raise WriteError(exc.strerror or str(exc)) from None
    # The write bits, not only access(): root may write anything, but a file marked
    # read-only says it is not to be changed.
    if not info.st_mode & 0o222 or not os.access(target, os.W_OK):
        raise WriteError("read-only file: not written")
    folder = os.path.dirname(target) or "."
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(target)}.", suffix=".allocaudit-tmp")
    except OSError as exc:
        raise WriteError(f"cannot create a temporary file next to it: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(new_data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, stat.S_IMODE(info.st_mode))
        try:
            os.chown(tmp, info.st_uid, info.st_gid)
        except OSError:
            pass  # only root may give a file away; the owner is then the writer, as with any editor
        # The last moment to notice a concurrent edit: compare what is there now with
        # what was read (an edit landing between this check and the rename is not seen).
        try:
            with open(target, "rb") as handle:
                current = handle.read(len(source.data) + 1)
        except FileNotFoundError:
            raise WriteError("file vanished before it could be written") from None
        if current != source.data:
            raise WriteError("file changed since it was read: not written")
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


__all__ = ["SourceError", "SourceFile", "WriteError", "read_source", "write_atomic"]
