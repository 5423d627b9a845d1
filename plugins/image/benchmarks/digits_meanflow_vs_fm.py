"""One-step MeanFlow against flow-matching Euler at 1, 2, 4, 8 and 32 steps, with equal training compute.

    OMP_NUM_THREADS=1 python plugins/image/benchmarks/digits_meanflow_vs_fm.py            # digits, CPU
    python plugins/image/benchmarks/digits_meanflow_vs_fm.py --recipe recipes/image_mnist.yaml --count 5000

1. Trains the recipe as it is (MeanFlow) with `mfkit train`, and reads its training speed (steps/s).
2. Trains flow matching on the same backbone and data (objective.kind=flow_matching, plain L2) for a
   short probe to read its speed, then for as many steps as fit in the MeanFlow run's compute
   (MeanFlow steps x FM speed / MeanFlow speed): equal training compute, measured, not assumed.
3. Scores both with the `image` evaluator (mfkit.evaluation.evaluate_checkpoint): MeanFlow 1 and 2 steps,
   flow-matching Euler 1, 2, 4, 8, 32 steps, each on the same seeded noise and class labels, against the
   held-out split; the real-vs-real floor (real training images scored the same way) is printed too.

Prints a Markdown table and writes it, with the raw figures as JSON, to --out.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from mfkit.evaluation import evaluate_checkpoint

FM_OVERRIDES = ["objective.kind=flow_matching", "objective.r_neq_t_share=0.25", "objective.adaptive_p=0.0"]


def train(recipe: str, out: Path, name: str, overrides: list[str]) -> Path:
    command = [sys.executable, "-m", "mfkit", "train", recipe, f"output_dir={out}", f"name={name}", *overrides,
               "--overwrite"]
    print("$", " ".join(command[2:]), flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return out / name


def speed(run: Path) -> float:
    """Median steps per second over the logged intervals (the first one, with start-up, left out)."""
    rates = [json.loads(line)["it_per_s"] for line in (run / "metrics.jsonl").read_text().splitlines()
             if '"it_per_s"' in line]
    return statistics.median(rates[1:] or rates)


def latest(run: Path) -> Path:
    return sorted((run / "checkpoints").glob("step-*.safetensors"))[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="recipes/image_digits.yaml")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-image"))
    parser.add_argument("--steps", type=int, default=None, help="MeanFlow training steps (default: the recipe's)")
    parser.add_argument("--count", type=int, default=2000, help="samples scored per row")
    parser.add_argument("--probe", type=int, default=300, help="flow-matching steps of the speed probe")
    parser.add_argument("--meanflow-run", type=Path, default=None,
                        help="score this finished MeanFlow run of the recipe instead of training one")
    args = parser.parse_args()
    steps = [f"train.steps={args.steps}"] if args.steps else []
    mf_run = args.meanflow_run or train(args.recipe, args.out, "meanflow", steps)
    mf_speed = speed(mf_run)
    probe = train(args.recipe, args.out, "fm-probe", FM_OVERRIDES + [f"train.steps={args.probe}",
                                                                      "train.checkpoint_every=100000"])
    fm_speed = speed(probe)
    mf_steps = int(json.loads((mf_run / "metrics.jsonl").read_text().splitlines()[-1])["step"])
    fm_steps = int(round(mf_steps * fm_speed / mf_speed))
    fm_run = train(args.recipe, args.out, "flow-matching", FM_OVERRIDES + [f"train.steps={fm_steps}"])
    print(f"speed: MeanFlow {mf_speed:.2f} steps/s, flow matching {fm_speed:.2f} steps/s -> "
          f"{mf_steps} MeanFlow steps = {fm_steps} flow-matching steps", flush=True)
    mf = evaluate_checkpoint(latest(mf_run), steps=(1, 2), euler=(), count=args.count, device="cpu")
    fm = evaluate_checkpoint(latest(fm_run), steps=(), euler=(1, 2, 4, 8, 32), count=args.count, device="cpu")
    metrics = list(mf.directions)
    header = ("| method | NFE | " + " | ".join(f"{m} ({'lower' if mf.directions[m] == 'lower' else 'higher'} "
                                                f"is better)" for m in metrics) + " | ms / sample |")
    lines = [header, "|" + "---|" * (len(metrics) + 3)]
    lines.append("| real vs real (floor) | - | " + " | ".join(f"{mf.floor[m]:.4g}" for m in metrics) + " | - |")
    for label, report in ((f"MeanFlow ({mf_steps} steps)", mf), (f"flow matching, Euler ({fm_steps} steps)", fm)):
        for row in report.rows:
            lines.append(f"| {label} | {row.steps} | " + " | ".join(f"{row.metrics[m]:.4g}" for m in metrics)
                         + f" | {row.network_ms:.3f} |")
    table = "\n".join(lines)
    summary = (f"Equal training compute: MeanFlow {mf_steps} steps at {mf_speed:.2f} steps/s, flow matching "
               f"{fm_steps} steps at {fm_speed:.2f} steps/s; {args.count} samples per row against "
               f"{mf.reference_count} held-out images.")
    print(table + "\n\n" + summary)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(table + "\n\n" + summary + "\n")
    (args.out / "results.json").write_text(json.dumps(
        {"meanflow": [r.__dict__ for r in mf.rows], "flow_matching": [r.__dict__ for r in fm.rows],
         "floor": mf.floor, "speeds": {"meanflow": mf_speed, "flow_matching": fm_speed},
         "steps": {"meanflow": mf_steps, "flow_matching": fm_steps}}, indent=2))


if __name__ == "__main__":
    main()
