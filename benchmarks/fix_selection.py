"""What `allocaudit fix` rewrites: every fixable site, the default (sizes that may grow with the
batch), and with a profile (sites that ran, with their bytes per call).

    python benchmarks/fix_selection.py sizes LABEL=PATH [LABEL=PATH ...] --json OUT
    python benchmarks/fix_selection.py review OUT [--every vllm,sglang] [--sample 20] [--seed 19]
    python benchmarks/fix_selection.py forward [--models mixtral,qwen3_moe,...] [--tokens 512]

``sizes`` runs `allocaudit fix --check --no-cache --show-fixes` on each path twice, with
`--all-sizes` and without, and prints per tree the sites rewritten each way and the sites the
size estimate leaves out, by shape; ``--json`` writes every row (rewritten, left out) with the
source line. ``review`` prints, for a reader's verdicts, every left-out site of the ``--every``
trees, ``--sample`` left-out sites of the other trees and ``--sample`` kept sites of all
trees, drawn with ``random.Random(SEED)``.

``forward`` is a program to profile: Hugging Face transformers MoE models (the installed
package, or the copy first on PYTHONPATH) built from their config classes with random weights
at a small size (hidden 512, 8 experts, 2 layers; nothing is downloaded), one eval forward of
``--tokens`` tokens each on the CPU. Profile it and fix with the profile:

    PYTHONPATH=COPY allocaudit profile --device cpu --out tf.json -- python benchmarks/fix_selection.py forward
    allocaudit fix --check --show-fixes --profile tf.json COPY/transformers
"""

from __future__ import annotations

import argparse
import json
import linecache
import random
import re
import subprocess
import sys
from collections import Counter

ROW = re.compile(r"^(?P<path>.+?):(?P<line>\d+):(?P<col>\d+): (?P<what>would rewrite|skipped: )(?P<text>.*)$")
SIZE_REASON = "size does not grow with the batch: "
MODELS = ("mixtral", "qwen3_moe", "deepseek_v3", "olmoe", "gpt_oss")


def fix_rows(path: str, *flags: str) -> list[dict]:
    """The rows of `allocaudit fix --check --show-fixes PATH`: what it would rewrite or skip."""
    run = subprocess.run(
        [sys.executable, "-m", "allocaudit.auditor", "fix", "--check", "--no-cache", "--show-fixes", *flags, path],
        capture_output=True, text=True,
    )
    rows = []
    for line in run.stdout.splitlines():
        match = ROW.match(line)
        if match:
            row = match.groupdict()
            row["source"] = linecache.getline(row["path"], int(row["line"])).strip()
            rows.append(row)
    return rows


def sizes(args: argparse.Namespace) -> None:
    report: dict[str, dict] = {}
    left_out: list[dict] = []
    kept: list[dict] = []
    for spec in args.trees:
        label, _, path = spec.partition("=")
        every = [r for r in fix_rows(path, "--all-sizes") if r["what"] == "would rewrite"]
        default = fix_rows(path)
        rewritten = [r for r in default if r["what"] == "would rewrite"]
        dropped = [r for r in default if r["text"].startswith(SIZE_REASON)]
        shapes = Counter(r["text"][len(SIZE_REASON):] for r in dropped)
        report[label] = {
            "path": path, "all_sizes": len(every), "default": len(rewritten), "left_out_by_size": len(dropped),
            "files_all_sizes": len({r["path"] for r in every}), "files_default": len({r["path"] for r in rewritten}),
            "left_out_shapes": shapes.most_common(),
        }
        left_out += [{**r, "tree": label} for r in dropped]
        kept += [{**r, "tree": label} for r in rewritten]
        print(f"{label}: {len(every)} sites rewritten with --all-sizes, {len(rewritten)} by default; "
              f"{len(dropped)} left out by size ({', '.join(f'{s} x{n}' for s, n in shapes.most_common(6))})")
    with open(args.json, "w", encoding="utf-8") as handle:
        json.dump({"trees": report, "left_out": left_out, "kept": kept}, handle, indent=1)


def review(args: argparse.Namespace) -> None:
    with open(args.json, encoding="utf-8") as handle:
        data = json.load(handle)
    every = set(args.every.split(",")) if args.every else set()
    rng = random.Random(args.seed)
    left_out = data["left_out"]
    others = [r for r in left_out if r["tree"] not in every]
    groups = [
        (f"every left-out site of {', '.join(sorted(every))}", [r for r in left_out if r["tree"] in every]),
        (f"random {min(args.sample, len(others))} of the {len(others)} left out elsewhere", rng.sample(others, min(args.sample, len(others)))),
        (f"random {min(args.sample, len(data['kept']))} of the {len(data['kept'])} kept", rng.sample(data["kept"], min(args.sample, len(data["kept"])))),
    ]
    for title, rows in groups:
        print(f"\n{title} (seed {args.seed}):")
        for r in rows:
            print(f"  {r['tree']} {r['path']}:{r['line']}  {r['text'][:120]}\n      {r['source'][:150]}")


def small_config(T, name: str):
    """A small config of each target: the shapes of the released models scaled down (hidden 512,
    8 experts of 256, 2 layers), so that a forward on the CPU takes seconds."""
    common = dict(vocab_size=1024, hidden_size=512, num_hidden_layers=2, num_attention_heads=8, pad_token_id=0,
                  bos_token_id=1, eos_token_id=2)
    if name == "mixtral":
        return T.MixtralConfig(**common, num_key_value_heads=2, intermediate_size=1024, num_local_experts=8, num_experts_per_tok=2)
    if name == "qwen3_moe":
        return T.Qwen3MoeConfig(**common, num_key_value_heads=2, head_dim=64, intermediate_size=1024, moe_intermediate_size=256,
                                num_experts=8, num_experts_per_tok=2, norm_topk_prob=True)
    if name == "deepseek_v3":
        return T.DeepseekV3Config(**common, num_key_value_heads=8, intermediate_size=1024, moe_intermediate_size=256,
                                  n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=2, n_group=2, topk_group=1,
                                  first_k_dense_replace=1, kv_lora_rank=64, q_lora_rank=128, qk_rope_head_dim=32,
                                  qk_nope_head_dim=32, v_head_dim=64)
    if name == "olmoe":
        return T.OlmoeConfig(**common, num_key_value_heads=8, intermediate_size=256, num_experts=8, num_experts_per_tok=2)
    if name == "gpt_oss":
        return T.GptOssConfig(**common, num_key_value_heads=2, head_dim=64, intermediate_size=256, num_local_experts=8,
                              num_experts_per_tok=2, sliding_window=64)
    raise ValueError(f"unknown model {name!r}")


def forward(args: argparse.Namespace) -> None:
    import torch
    import transformers as T

    batch, seq = 4, args.tokens // 4
    ids = torch.randint(3, 1024, (batch, seq), generator=torch.Generator().manual_seed(0))
    print(f"transformers {T.__version__} from {T.__file__}")
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = T.AutoModelForCausalLM.from_config(small_config(T, name), attn_implementation="eager").eval()
        with torch.no_grad():
            logits = model(ids, use_cache=False).logits
        print(f"{name}: {sum(p.numel() for p in model.parameters()):,} parameters, logits {tuple(logits.shape)}, "
              f"experts implementation {getattr(model.config, '_experts_implementation', None)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    trees = commands.add_parser("sizes", help="sites rewritten with and without the size estimate")
    trees.add_argument("trees", nargs="+", metavar="LABEL=PATH")
    trees.add_argument("--json", required=True)
    reading = commands.add_parser("review", help="the sites to read: left out and kept")
    reading.add_argument("json")
    reading.add_argument("--every", default="")
    reading.add_argument("--sample", type=int, default=20)
    reading.add_argument("--seed", type=int, default=19)
    models = commands.add_parser("forward", help="a program to profile: transformers MoE models' forward on the CPU")
    models.add_argument("--models", default=",".join(MODELS))
    models.add_argument("--tokens", type=int, default=512)
    args = parser.parse_args()
    {"sizes": sizes, "review": review, "forward": forward}[args.command](args)


if __name__ == "__main__":
    main()
