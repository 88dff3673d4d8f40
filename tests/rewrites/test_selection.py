"""Which sites `fix` rewrites: by default those whose size may grow with the batch; with
`--all-sizes` every fixable one; with `--profile` those that ran, with at least
`--min-bytes` per call, largest first. Through the CLI, on a profile written by hand (the
profile's format is the tracer's, tested with torch in tests/auditor/test_profile.py)."""

import json

import pytest

from allocaudit.auditor.profiling.profile import Profile, Site, write
from tests.rewrites.helpers import cli, moe_file

LAYER = """\
import torch


class MoE:
    def forward(self, hidden_states, topk_ids, num_experts):
        num_tokens = hidden_states.shape[0]
        counts = torch.zeros(num_experts, dtype=torch.int32, device="cuda")
        gate_up = torch.empty(num_tokens, 1024, device="cuda")
        act = torch.empty(num_tokens, 512, device="cuda")
        sorted_ids = torch.empty(topk_ids.numel(), dtype=torch.int32, device="cuda")
        kernel(hidden_states, topk_ids, counts, gate_up, act, sorted_ids)
        return hidden_states

    def rare_path(self, hidden_states):
        spill = torch.empty(hidden_states.shape, device="cuda")
        kernel(hidden_states, spill)
"""


def profile_of(path, measured):
    """A profile of ``path`` in which line L allocated B bytes in C calls, for each (L, B, C)."""
    sites = [Site(str(path), line, "MoE.forward", calls=calls, bytes=size) for line, size, calls in measured]
    profile = Profile(["python", "run.py"], "cuda", "2.13.0", ["cuda:0"], 0, None, 1.0, sites)
    out = path.parent.parent / "profile.json"
    write(profile, str(out))
    return out


@pytest.fixture
def layer(tmp_path):
    return moe_file(tmp_path, LAYER)


def test_by_default_a_size_that_does_not_grow_with_the_batch_is_left_out(layer):
    result = cli("fix", "--no-cache", "--check", "--show-fixes", str(layer))
    assert result.returncode == 1, result.stderr
    assert f"{layer}:7:18: skipped: size does not grow with the batch: (num_experts,)" in result.stdout
    assert f"{layer}:8:19: would rewrite `torch.empty` -> get_empty(cache_name='layer.MoE.forward.gate_up') [static: grows with the batch (dim `num_tokens` from `hidden_states.shape[0]`)]" in result.stdout
    assert "Would fix 4 sites in 1 file (1 skipped)." in result.stdout
    scanned = cli("scan", "--no-cache", str(layer))
    assert f"{layer}:7:18: AA101 `torch.zeros`" in scanned.stdout  # no [*]: fix does not rewrite it
    assert scanned.stdout.splitlines()[-1] == (
        "Found 5 findings in 1 file scanned. [*] 4 fixable with `allocaudit fix` "
        "(1 site of a size that does not grow with the batch left out: `--all-sizes` fixes them)."
    )


def test_all_sizes_by_flag_or_config(layer):
    assert "Would fix 5 sites" in cli("fix", "--no-cache", "--check", "--all-sizes", str(layer)).stdout
    assert "[*] 5 fixable with `allocaudit fix`." in cli("scan", "--no-cache", "--all-sizes", str(layer)).stdout
    (layer.parent.parent / "pyproject.toml").write_text("[tool.allocaudit]\nall-sizes = true\n")
    assert "Would fix 5 sites" in cli("fix", "--no-cache", "--check", str(layer)).stdout
    assert "Would fix 4 sites" in cli("fix", "--no-cache", "--check", "--no-all-sizes", str(layer)).stdout


def test_with_a_profile_only_sites_that_ran_largest_first_with_what_was_measured(layer):
    # gate_up: 2 MiB in 2 calls; act: 1 MiB in 2 calls; sorted_ids: 4 KiB in 2 calls; counts ran
    # but stays out (its size does not grow); rare_path's spill never ran.
    profile = profile_of(layer, [(7, 64, 2), (8, 2 << 20, 2), (9, 1 << 20, 2), (10, 4096, 2)])
    result = cli("fix", "--no-cache", "--check", "--show-fixes", "--profile", str(profile), str(layer))
    assert result.returncode == 1, result.stderr
    done = [line for line in result.stdout.splitlines() if "would rewrite" in line]
    assert [line.split(":")[1] for line in done] == ["8", "9", "10"]  # largest first
    assert done[0].endswith("[profile: 1.0 MiB per call, 2.0 MiB in 2 calls]")
    assert f"{layer}:15:17: skipped: did not run in the profile {profile}" in result.stdout
    assert f"{layer}:7:18: skipped: size does not grow with the batch: (num_experts,)" in result.stdout

    small = cli("fix", "--no-cache", "--check", "--show-fixes", "--profile", str(profile), "--min-bytes", "64KiB", str(layer))
    assert [line.split(":")[1] for line in small.stdout.splitlines() if "would rewrite" in line] == ["8", "9"]
    assert f"{layer}:10:22: skipped: 2.0 KiB per call in the profile {profile}, under min-bytes 64.0 KiB" in small.stdout

    every = cli("fix", "--no-cache", "--check", "--all-sizes", "--profile", str(profile), str(layer))
    assert "Would fix 4 sites" in every.stdout  # counts ran: with every size, the profile decides


def test_fix_profile_writes_only_the_chosen_sites(layer):
    profile = profile_of(layer, [(8, 2 << 20, 2)])
    result = cli("fix", "--no-cache", "--profile", str(profile), str(layer))
    assert result.returncode == 0, result.stdout + result.stderr
    text = layer.read_text()
    assert "gate_up = get_empty(" in text
    assert 'act = torch.empty(num_tokens, 512, device="cuda")' in text


def test_scan_with_a_profile_marks_what_fix_with_it_rewrites(layer):
    profile = profile_of(layer, [(7, 64, 2), (8, 2 << 20, 2), (10, 4096, 2)])
    result = cli("scan", "--no-cache", "--profile", str(profile), "--min-bytes", "1MiB", str(layer))
    assert f"{layer}:8:19: AA101 [*] 2 calls, 2.0 MiB" in result.stdout
    assert f"{layer}:10:22: AA101 2 calls, 4.0 KiB" in result.stdout
    assert result.stdout.splitlines()[-1] == (
        f"[*] 1 fixable with `allocaudit fix --profile {profile} --min-bytes 1MiB` (left out: 2 sites that did not run, 1 under min-bytes)."
    )
    document = json.loads(cli("scan", "--no-cache", "--profile", str(profile), "--format", "json", str(layer)).stdout)
    (ran,) = [f for f in document["executed"] if f["line"] == 8]
    assert ran["fixable"] and ran["fix_reason"] == "profile: 1.0 MiB per call, 2.0 MiB in 2 calls"
    never = {f["line"]: f["not_fixable_reason"] for f in document["never_executed"]}
    assert never[9] == f"did not run in the profile {profile}"


def test_min_bytes_from_the_config_and_bad_values(layer):
    profile = profile_of(layer, [(8, 2 << 20, 2), (9, 1 << 20, 2)])
    config = layer.parent.parent / "pyproject.toml"
    config.write_text('[tool.allocaudit]\nmin-bytes = "1MiB"\n')
    assert "Would fix 1 site " in cli("fix", "--no-cache", "--check", "--profile", str(profile), str(layer)).stdout
    assert "Would fix 2 sites" in cli("fix", "--no-cache", "--check", "--profile", str(profile), "--min-bytes", "0", str(layer)).stdout

    config.write_text('[tool.allocaudit]\nmin-bytes = "lots"\n')
    bad = cli("fix", "--no-cache", "--check", "--profile", str(profile), str(layer))
    assert bad.returncode == 2
    assert f"{config}: [tool.allocaudit] min-bytes: must be a number of bytes such as 65536, 64KiB or 1MiB, not 'lots'" in bad.stderr
    config.unlink()
    flag = cli("fix", "--check", "--profile", str(profile), "--min-bytes", "-1", str(layer))
    assert flag.returncode == 2 and "--min-bytes must be a number of bytes" in flag.stderr
    alone = cli("fix", "--check", "--min-bytes", "1MiB", str(layer))
    assert alone.returncode == 2 and "--min-bytes needs --profile" in alone.stderr
    missing = cli("fix", "--check", "--profile", str(layer.parent / "nope.json"), str(layer))
    assert missing.returncode == 2 and "nope.json" in missing.stderr
