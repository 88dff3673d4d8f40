"""The cache rules on whole modules: the seed's cache, the review's proposed fix, and a
cache that does everything right (fixtures/caches/, our own restatements)."""

from pathlib import Path

from allocaudit.auditor.app.engine import scan_source
from allocaudit.auditor.settings import Settings

CACHES = Path(__file__).parent / "fixtures" / "caches"


def codes(name):
    path = CACHES / name
    return sorted({f.code for f in scan_source(str(path), path.read_bytes(), Settings(select=("AA2",)))})


def test_seed_cache_reports_every_bug_the_review_found():
    # no dtype check, no device check, no re-zeroing, unbounded growth; and a class-level
    # cache that nothing releases
    assert codes("seed_cache.py") == ["AA201", "AA202", "AA203", "AA204", "AA207"]


def test_review_fix_reports_the_graph_hazard_and_nothing_it_fixed():
    found = codes("review_cache.py")
    assert "AA205" in found
    assert not {"AA201", "AA202", "AA203", "AA204"} & set(found)


def test_a_sound_cache_is_not_flagged():
    assert codes("sound_cache.py") == []


def test_cache_findings_point_at_the_hand_out_and_name_the_container():
    path = CACHES / "seed_cache.py"
    by_code = {f.code: f for f in scan_source(str(path), path.read_bytes(), Settings(select=("AA2",)))}
    assert by_code["AA201"].line == 20 and "`GroupedGemmMoE.buffer_pool`" in by_code["AA201"].message
    assert by_code["AA203"].message.count("torch.zeros") == 1
    assert by_code["AA204"].line == 23
    assert by_code["AA207"].line == 11
