"""One test per fixture pair: `NAME.in.py` fixed must give `NAME.out.py` byte for byte; the
result compiles, a second fix changes nothing, and unfix gives back equivalent code."""

import shutil

import pytest

from allocaudit.rewrites.equivalence import equivalent
from tests.rewrites.helpers import FIXTURES, fix_file, unfix_file

PAIRS = sorted(p.name[: -len(".in.py")] for p in FIXTURES.glob("*.in.py"))


def _decode(data: bytes) -> str:
    import io
    import tokenize

    encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    return data.decode(encoding)


def test_every_input_has_an_expected_output():
    assert PAIRS
    assert {p.name[: -len(".out.py")] for p in FIXTURES.glob("*.out.py")} == set(PAIRS)


@pytest.mark.parametrize("name", PAIRS)
def test_fix_gives_the_expected_output(name, tmp_path):
    path = tmp_path / f"{name}.py"  # the module name, and so the cache names, come from the file name
    shutil.copyfile(FIXTURES / f"{name}.in.py", path)
    result = fix_file(path)
    assert not result.errors
    assert path.read_bytes() == (FIXTURES / f"{name}.out.py").read_bytes()
    compile(path.read_bytes(), str(path), "exec")

    again = fix_file(path)
    assert not again.changed and not again.errors
    assert path.read_bytes() == (FIXTURES / f"{name}.out.py").read_bytes()


@pytest.mark.parametrize("name", PAIRS)
def test_unfix_restores_equivalent_code(name, tmp_path):
    path = tmp_path / f"{name}.py"
    # get_empty calls already in the input are restored too: compare with the input unfixed.
    reference = tmp_path / "reference" / f"{name}.py"
    reference.parent.mkdir()
    shutil.copyfile(FIXTURES / f"{name}.in.py", reference)
    unfix_file(reference)
    original = reference.read_bytes()
    # Dead allocations that fix deleted (AA104) stay deleted.
    fixed = tmp_path / "fixed" / f"{name}.py"
    fixed.parent.mkdir()
    shutil.copyfile(FIXTURES / f"{name}.in.py", fixed)
    deleted = [row.line for row in fix_file(fixed).changed if row.text.endswith("deleted: never read")]
    shutil.copyfile(FIXTURES / f"{name}.out.py", path)
    result = unfix_file(path)
    assert not result.errors and not result.skipped
    restored = path.read_bytes()
    assert equivalent(_decode(original), _decode(restored), deleted)
    if original.startswith(b"\xef\xbb\xbf"):
        assert restored.startswith(b"\xef\xbb\xbf")
    if b"\r\n" in original:
        assert restored.count(b"\r\n") == restored.count(b"\n")
