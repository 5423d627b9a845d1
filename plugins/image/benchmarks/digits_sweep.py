"""Tuning sweep behind `recipes/image_digits.yaml`: train one variant, measure its CPU time, score it.

    OMP_NUM_THREADS=1 python plugins/image/benchmarks/digits_sweep.py train NAME [--fm] [key=value ...]
    OMP_NUM_THREADS=1 python plugins/image/benchmarks/digits_sweep.py score RUN [--seeds 0 1]

`train` runs `mfkit train recipes/image_digits.yaml` with the overrides (``--fm`` adds the
flow-matching overrides of digits_meanflow_vs_fm.py), records the child process's CPU time (user +
system, from getrusage, so a busy machine does not distort it) and the trainer's CPU seconds per step,
then scores the run. `score` (re)scores a finished run. Scoring uses the `image` evaluator with each
kept EMA (MeanFlow: 1 and 2 steps; flow matching: Euler 1, 2, 4, 8, 32, or --euler), 2000 samples, evaluation
seeds from --seeds; --guidance S scores with classifier-free guidance at sampling time (nfe counts both
calls). The `image` evaluator's feature network is seeded by the recipe's train.seed, so
scoring always sets train.seed=0: runs trained with other seeds are scored in the same feature space.
Every result is appended as one JSON line to --log.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from digits_meanflow_vs_fm import FEATURE_SPACE, FM_OVERRIDES  # noqa: E402 - one definition each
RESULTS = Path(__file__).parent / "results"
#: How the scored samples' class labels were chosen. Entries without this key (before 2026-11-29) took the
#: first `count` test labels in order; scores of the two kinds differ by evaluation noise, so compare runs
#: scored the same way (rescore older runs with `score RUN`).
CONDITIONS = "test labels in seeded random order"


def is_flow_matching(run: Path) -> bool:
    """Whether the run trained flow matching (its resolved recipe's objective.kind; a MeanFlow recipe may
    name flow matching elsewhere, e.g. alpha_curriculum.flow_matching_until)."""
    import yaml

    return yaml.safe_load((run / "recipe.yaml").read_text())["objective"]["kind"] == "flow_matching"


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def train(recipe: str, out: Path, name: str, overrides: list[str]) -> dict:
    command = [sys.executable, "-m", "mfkit", "train", recipe, f"output_dir={out}", f"name={name}", *overrides,
               "--overwrite"]
    print("$", " ".join(command[2:]), flush=True)
    cpu, wall = child_cpu(), time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return {"cpu_s": child_cpu() - cpu, "wall_s": time.perf_counter() - wall}


def score(run: Path, seeds: list[int], count: int, guidance: float = 1.0, euler: tuple[int, ...] = (1, 2, 4, 8, 32),
          emas: list[str] | None = None, device: str = "cpu") -> list[dict]:
    from mfkit.evaluation import evaluate_checkpoint
    from mfkit.train.checkpoint import load_checkpoint

    checkpoint = sorted((run / "checkpoints").glob("step-*.safetensors"))[-1]
    keys = emas or list(load_checkpoint(checkpoint, weights_only=True).ema)
    flow_matching = is_flow_matching(run)
    results = []
    for key in keys:
        for seed in seeds:
            report = evaluate_checkpoint(checkpoint, steps=() if flow_matching else (1, 2),
                                         euler=euler if flow_matching else (), count=count, seed=seed,
                                         device=device, overrides=FEATURE_SPACE, ema=key, guidance=guidance)
            for row in report.rows:
                results.append({"ema": key, "seed": seed, "sampler": row.sampler, "nfe": row.steps * (1 + (guidance != 1)),
                                **({"guidance": guidance} if guidance != 1 else {}), **row.metrics})
                print(f"  ema {key} seed {seed} {row.sampler} {row.steps}: fd {row.metrics['fd']:.3f} "
                      f"acc {row.metrics['accuracy']:.4f}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["train", "score"])
    parser.add_argument("name", help="variant name (train) or run folder (score)")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--fm", action="store_true", help="train flow matching instead of MeanFlow")
    parser.add_argument("--recipe", default="recipes/image_digits.yaml")
    parser.add_argument("--out", type=Path, default=Path("runs/sweep-image"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--log", type=Path, default=RESULTS / "digits_sweep.jsonl")
    parser.add_argument("--guidance", type=float, default=1.0,
                        help="score with classifier-free guidance at sampling time (needs class dropout in training)")
    parser.add_argument("--euler", type=int, nargs="+", default=[1, 2, 4, 8, 32], help="Euler step counts scored")
    parser.add_argument("--emas", nargs="+", help="score only these kept EMAs (default: all)")
    parser.add_argument("--device", default="cpu", help="where samples are drawn and scored (the tables: cpu; "
                                                        "cuda draws other noise, so its figures differ by "
                                                        "evaluation noise)")
    args = parser.parse_args()
    entry: dict = {"name": args.name, "recipe": args.recipe, "objective": "flow_matching" if args.fm else "meanflow",
                   "overrides": args.overrides}
    if args.action == "train":
        overrides = (FM_OVERRIDES if args.fm else []) + args.overrides
        entry.update(train(args.recipe, args.out, args.name, overrides))
        run = args.out / args.name
        lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        steps = [line for line in lines if "it_per_s" in line]
        entry["steps"] = steps[-1]["step"]
        entry["cpu_s_per_step"] = entry["cpu_s"] / entry["steps"]
    else:
        run = Path(args.name)
        entry["objective"] = "flow_matching" if is_flow_matching(run) else "meanflow"
    entry["scores"] = score(run, args.seeds, args.count, args.guidance, tuple(args.euler), args.emas, args.device)
    if args.device != "cpu":
        entry["device"] = args.device
    entry["conditions"] = CONDITIONS
    args.log.parent.mkdir(parents=True, exist_ok=True)
    with args.log.open("a") as log:
        log.write(json.dumps(entry) + "\n")
    print(json.dumps({k: v for k, v in entry.items() if k != "scores"}))


if __name__ == "__main__":
    main()
