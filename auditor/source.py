"""Reading a source file: bytes, size limit, encoding, parse — each failure a clear reason."""

from __future__ import annotations

import ast
import errno
import io
import os
import sys
import tokenize
import warnings


class SourceError(Exception):
    """Why a file cannot be scanned (the message is the reason shown to the user), and where
    in the file the reader stopped when it knows (1-based line and column)."""

    def __init__(self, reason: str, line: int = 1, col: int = 1) -> None:
        super().__init__(reason)
        self.line = line
        self.col = col


def read_bytes(path: str, max_size: int) -> bytes:
    try:
        size = os.stat(path).st_size
        if size > max_size:
            raise SourceError(f"file too large ({size / 1e6:.1f} MB > max-file-size {max_size / 1e6:.1f} MB)")
        with open(path, "rb") as handle:
            return handle.read(max_size + 1)
    except FileNotFoundError:
        if os.path.islink(path):
            raise SourceError("broken symlink") from None
        raise SourceError("file vanished during the scan") from None
    except PermissionError:
        raise SourceError("permission denied") from None
    except IsADirectoryError:
        raise SourceError("is a directory") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SourceError("symlink loop") from None
        raise SourceError(exc.strerror or str(exc)) from None


def decode(data: bytes) -> str:
    """Text of a Python source file, honouring a BOM and a PEP 263 encoding cookie."""
    nul = data.find(b"\0")
    if nul != -1:
        raise SourceError(f"binary file (NUL byte at offset {nul})")
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    except SyntaxError as exc:
        if "unknown encoding" in str(exc):
            raise SourceError(f"bad encoding declaration: {exc}") from None
        encoding = "utf-8"  # undecodable first lines and no cookie: say where UTF-8 fails
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise SourceError(f"not valid {encoding.upper().replace('-SIG', '')}: undecodable byte at offset {exc.start}") from None
    except LookupError:
        raise SourceError(f"unknown encoding `{encoding}`") from None


def parse(text: str, path: str) -> ast.Module:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences and the like
            return ast.parse(text, filename=path)
    except SyntaxError as exc:
        where = f"line {exc.lineno}" + (f", column {exc.offset}" if exc.offset else "")
        reason = f"syntax error at {where}: {exc.msg}"
        if _parses_as_newer_python(text):
            running = ".".join(map(str, sys.version_info[:2]))
            reason += f" (the file may be written for a Python newer than {running}, which runs allocaudit: run allocaudit under that Python)"
        raise SourceError(reason, exc.lineno or 1, exc.offset or 1) from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise SourceError(f"cannot parse: {type(exc).__name__}: {exc}") from None


def _parses_as_newer_python(text: str) -> bool:
    """Whether libcst's parser, which follows the newest grammar whatever Python runs it,
    accepts what this interpreter's parser refused: then the file is newer Python (PEP 695
    `type X = ...` on 3.11, `except A, B:` before 3.14), not broken Python. Only asked after
    a syntax error, so its cost is paid on broken files alone."""
    import libcst

    try:
        libcst.parse_module(text)
    except Exception:  # any refusal: the file is not valid in the newest grammar either
        return False
    return True
