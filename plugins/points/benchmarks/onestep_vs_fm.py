"""One-step MeanFlow against flow-matching Euler on point clouds, at equal training compute.

    python plugins/points/benchmarks/onestep_vs_fm.py                        # recipes/points_shapes.yaml
    python plugins/points/benchmarks/onestep_vs_fm.py --scale 0.05 --count 70 --work /tmp/pts   # quick look

1. The recipe's flow-matching twin: ``objective.kind: flow_matching``, MeanFlow-only fields dropped.
2. Equal compute: the CPU seconds per training step of both objectives are measured in this process on
   the recipe's backbone, batch and data (one thread, interleaved blocks, median); flow matching gets
   ``steps x (MeanFlow step time / flow-matching step time)`` steps, i.e. the same compute. CPU time
   (``time.process_time``), not wall time: on a shared machine other people's jobs inflate wall time
   at random, CPU time only counts this process's work. Both trainings' CPU times are reported too.
3. Both train from the same seed with `mfkit train`.
4. Both are scored by the code behind `mfkit eval` (:func:`mfkit.evaluation.evaluate_checkpoint`, the
   ``points`` evaluator: MMD / COV / 1-NNA with Chamfer distance against the held-out split, and the
   classifier's accuracy on the requested class), MeanFlow with 1, 2, 4, 8, 32 steps and flow matching
   with 1, 2, 4, 8, 32 Euler steps, from the same noise. The floor is real training clouds against the
   same held-out clouds.

Writes ``<work>/results.json`` and prints a Markdown table (the one in the plugin's README).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from mfkit.recipe import schema

HERE = Path(__file__).resolve().parent
DEFAULT_RECIPE = HERE.parents[2] / "recipes" / "points_shapes.yaml"
STEPS = (1, 2, 4, 8, 32)
#: objective fields the flow-matching twin drops: mfkit's MeanFlow-only fields, and the preset
MEANFLOW_ONLY = (*schema.MEANFLOW_ONLY, "preset")


def flow_matching_twin(recipe: dict) -> dict:
    twin = copy.deepcopy(recipe)
    twin["objective"] = {k: v for k, v in recipe.get("objective", {}).items() if k not in MEANFLOW_ONLY}
    twin["objective"]["kind"] = "flow_matching"
    twin["objective"].pop("adaptive_p", None)  # flow matching trains with plain L2
    twin["objective"].pop("adaptive_c", None)
    twin["name"] = f"{recipe['name']}-fm"
    return twin


def _objective(recipe: dict, modality):
    """The objective `mfkit train` builds from the recipe (the same validation and defaults)."""
    from mfkit.recipe import parse_recipe
    from mfkit.recipe.build import build_objective_for

    return build_objective_for(parse_recipe(recipe), modality)


def step_seconds(recipe: dict, twin: dict, rounds: int = 5, steps: int = 6) -> tuple[float, float]:
    """Median CPU seconds per training step of the MeanFlow recipe and its flow-matching twin."""
    from mfkit.plugins import PluginContext, registry

    context = PluginContext(seed=recipe["train"].get("seed", 0))
    modality_spec = registry.modality(recipe["modality"]["name"])
    modality = modality_spec.build(modality_spec.params_model(**recipe["modality"].get("params", {})), context)
    data = modality.dataset("train")
    batch = recipe["train"]["batch_size"]

    def block(run_recipe: dict) -> float:
        torch.manual_seed(0)
        spec = registry.backbone(recipe["backbone"]["name"])
        model = spec.build(spec.params_model(**recipe["backbone"].get("params", {})), modality.info, context)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        objective = _objective(run_recipe, modality)
        generator = torch.Generator().manual_seed(0)

        def step() -> None:
            index = torch.randint(0, len(data), (batch,), generator=generator).tolist()
            x = torch.stack([data[i][0] for i in index])
            labels = torch.stack([torch.as_tensor(data[i][1]) for i in index])
            out = objective(model, x, labels)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()

        step()
        began = time.process_time()
        for _ in range(steps):
            step()
        return (time.process_time() - began) / steps

    meanflow, flow = [], []
    for _ in range(rounds):
        meanflow.append(block(recipe))
        flow.append(block(twin))
    return statistics.median(meanflow), statistics.median(flow)


def train(recipe: dict, work: Path, threads: int) -> tuple[Path, float, float]:
    """`mfkit train` on the recipe (written into ``work``); the last checkpoint, wall and CPU seconds."""
    path = work / f"{recipe['name']}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    began, cpu = time.perf_counter(), _children_cpu()
    done = subprocess.run([sys.executable, "-m", "mfkit", "train", str(path), "--overwrite", "--quiet"], env=env,
                          capture_output=True, text=True)
    seconds, cpu = time.perf_counter() - began, _children_cpu() - cpu
    if done.returncode != 0:
        raise RuntimeError(f"training {recipe['name']} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    checkpoints = sorted((Path(recipe["output_dir"]) / recipe["name"] / "checkpoints").glob("step-*.safetensors"))
    return checkpoints[-1], seconds, cpu


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def evaluate(checkpoint: Path, meanflow: tuple[int, ...], euler: tuple[int, ...], count: int) -> dict:
    from mfkit.evaluation import evaluate_checkpoint

    report = evaluate_checkpoint(checkpoint, steps=meanflow, euler=euler, count=count, seed=0, device="cpu",
                                 reference_limit=count)
    return report.to_dict()


def table(result: dict) -> str:
    """The Markdown table of the results."""
    mf, fm = result["meanflow"], result["flow_matching"]
    metrics = ["1nna_cd", "mmd_cd", "cov_cd", "class_accuracy"]
    head = "| sampler | network calls | " + " | ".join(metrics) + " | network ms / cloud |"
    lines = [head, "|---" * (len(metrics) + 3) + "|",
             "| real training clouds (floor) | - | " + " | ".join(f"{mf['floor'][m]:.4f}" for m in metrics)
             + " | - |"]
    for label, report in (("MeanFlow", mf), ("flow matching, Euler", fm)):
        for row in report["rows"]:
            lines.append(f"| {label} | {row['steps']} | " + " | ".join(f"{row['metrics'][m]:.4f}" for m in metrics)
                         + f" | {row['network_ms']:.2f} |")
    one = next(r for r in mf["rows"] if r["steps"] == 1)["metrics"]["1nna_cd"]
    best = min(r["metrics"]["1nna_cd"] for r in fm["rows"])
    lines += ["", f"One MeanFlow step: 1-NNA {100 * one:.1f}%; flow matching's best: {100 * best:.1f}% "
                  f"(gap {100 * (one - best):+.1f} points; target: within 5)."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE)
    parser.add_argument("--work", type=Path, default=Path("runs/points-benchmark"))
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the recipe's training steps")
    parser.add_argument("--count", type=int, default=None, help="samples per row (default: the held-out count)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per training process")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    recipe = yaml.safe_load(args.recipe.read_text())
    recipe["output_dir"] = str(args.work / "runs")
    recipe["train"]["steps"] = max(10, round(recipe["train"]["steps"] * args.scale))
    recipe["train"]["checkpoint_every"] = recipe["train"]["steps"]
    recipe["train"]["device"] = "cpu"
    twin = flow_matching_twin(recipe)
    mf_step, fm_step = step_seconds(recipe, twin)
    twin["train"]["steps"] = round(recipe["train"]["steps"] * mf_step / fm_step)
    twin["train"]["checkpoint_every"] = twin["train"]["steps"]
    print(f"CPU time per step: MeanFlow {1000 * mf_step:.0f} ms, flow matching {1000 * fm_step:.0f} ms -> flow "
          f"matching trains {twin['train']['steps']} steps against MeanFlow's {recipe['train']['steps']}", flush=True)
    mf_checkpoint, mf_seconds, mf_cpu = train(recipe, args.work, args.threads)
    print(f"MeanFlow trained in {mf_seconds:.0f} s ({mf_cpu:.0f} CPU s)", flush=True)
    fm_checkpoint, fm_seconds, fm_cpu = train(twin, args.work, args.threads)
    print(f"flow matching trained in {fm_seconds:.0f} s ({fm_cpu:.0f} CPU s)", flush=True)
    params = recipe["modality"].get("params", {})
    count = args.count or 7 * params.get("corpus_val_per_class", 64)
    result = {"recipe": str(args.recipe), "machine": f"{platform.machine()}, {os.cpu_count()} cores visible, "
                                                     f"{args.threads} thread(s) per run",
              "meanflow_steps": recipe["train"]["steps"], "fm_steps": twin["train"]["steps"],
              "mf_step_ms": 1000 * mf_step, "fm_step_ms": 1000 * fm_step,
              "mf_train_seconds": mf_seconds, "fm_train_seconds": fm_seconds, "mf_train_cpu_seconds": mf_cpu,
              "fm_train_cpu_seconds": fm_cpu, "count": count, "meanflow_recipe": recipe, "flow_matching_recipe": twin,
              "meanflow": evaluate(mf_checkpoint, STEPS, (), count),
              "flow_matching": evaluate(fm_checkpoint, (), STEPS, count)}
    (args.work / "results.json").write_text(json.dumps(result, indent=1))
    print(table(result))


if __name__ == "__main__":
    main()
