"""One-step MeanFlow against flow-matching Euler on spoken digits, with equal training compute.

    python plugins/audio/benchmarks/meanflow_vs_flow_matching.py                   # train both, evaluate
    python plugins/audio/benchmarks/meanflow_vs_flow_matching.py --mf-run runs/audio_speech  # reuse a run

1. MeanFlow: ``mfkit train RECIPE`` (or an existing run given with --mf-run).
2. The CPU seconds per training step of both objectives are measured on short calibration runs
   (``--calibrate`` steps each); flow matching then trains for MF steps x (MF s/step / FM s/step), so both
   spend the same compute. Flow matching uses the same recipe with ``objective.kind=flow_matching``.
3. Both are scored by the ``digit_classifier`` evaluator (``mfkit.evaluation``) at 1, 2, 4, 8, 32 steps on
   ``--count`` samples against the held-out split, with the real and vocoded-real baselines, and the
   one-step samples are scored once more through the vocoder (what a listener hears).
4. The real-time factor of one-step generation: seconds of compute per second of audio, network and
   vocoder apart, at batch 1 and batch 100.

Writes ``<out>/results.json`` and ``<out>/results.md`` (a table) and prints the table.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

STEPS = (1, 2, 4, 8, 32)


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def train(recipe: Path, name: str, overrides: list[str]) -> tuple[Path, float, float]:
    """``mfkit train`` as a child process; returns (run dir, CPU seconds, wall seconds)."""
    cpu, wall = child_cpu(), time.perf_counter()
    command = [sys.executable, "-m", "mfkit", "train", str(recipe), f"name={name}", *overrides, "--overwrite"]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    run_dir = Path(yaml.safe_load(recipe.read_text()).get("output_dir", "runs")) / name
    return run_dir, child_cpu() - cpu, time.perf_counter() - wall


def flow_matching_overrides(recipe: Path) -> list[str]:
    """Overrides that turn the recipe into flow matching: MeanFlow-only fields back to their defaults."""
    objective = yaml.safe_load(recipe.read_text()).get("objective", {})
    out = ["objective.kind=flow_matching"]
    for field in ("r_neq_t_share", "r_sampler", "time_pair_order", "jvp_backend", "fd_step", "jvp_precision",
                  "jvp_guard"):
        if field in objective:
            out.append(f"objective.{field}=" + {"r_neq_t_share": "0.25", "r_sampler": "null", "time_pair_order": "sort",
                                                "jvp_backend": "forward_ad", "fd_step": "0.001",
                                                "jvp_precision": "fp32", "jvp_guard": "3"}[field])
    return out


def calibrate(recipe: Path, steps: int, out: Path) -> dict[str, float]:
    """CPU seconds per step of MeanFlow and flow matching, from two short runs (set-up cost subtracted)."""
    per_step = {}
    for kind, extra in (("meanflow", []), ("flow_matching", flow_matching_overrides(recipe))):
        common = [f"output_dir={out}", "train.checkpoint_every=100000", "train.preview_count=2"]
        _, short, _ = train(recipe, f"calibrate-{kind}-a", [f"train.steps={steps // 4}", *common, *extra])
        _, long, _ = train(recipe, f"calibrate-{kind}-b", [f"train.steps={steps}", *common, *extra])
        per_step[kind] = (long - short) / (steps - steps // 4)
    return per_step


def evaluate(run_dir: Path, euler: bool, count: int) -> dict:
    from mfkit.evaluation import evaluate_checkpoint

    checkpoint = sorted((run_dir / "checkpoints").glob("step-*.safetensors"))[-1]
    report = evaluate_checkpoint(checkpoint, steps=() if euler else STEPS, euler=STEPS if euler else (), count=count,
                                 device="cpu")
    return {"floor": report.floor, "rows": [{"steps": row.steps, "sampler": row.sampler, **row.metrics,
                                              "network_ms": row.network_ms} for row in report.rows]}


def heard(run_dir: Path, count: int, euler_steps: int | None) -> tuple[dict, dict]:
    """One-step samples (or flow matching's ``euler_steps``) scored through the vocoder, and the baselines."""
    import mfkit
    from mfkit.evaluation.data import load_split
    from mfkit_audio.evaluator import DigitClassifierEvaluator, DigitClassifierParams

    model, modality = load_run(run_dir)
    real = load_split(modality, "val", None, 0)
    evaluator = DigitClassifierEvaluator(DigitClassifierParams(through_vocoder=True), modality, modality.context)
    evaluator.fit(modality.dataset("train"))
    cond = torch.arange(count) % len(modality.class_names)
    noise = torch.randn((count, *modality.sample_shape), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        samples = (mfkit.euler_sample(model, noise, steps=euler_steps, cond=cond) if euler_steps
                   else mfkit.sample(model, noise, steps=1, cond=cond))
    return evaluator.score(samples, cond, real.x, real.cond), evaluator.baselines(real.x, real.cond)


def load_run(run_dir: Path):
    """The EMA network of a run's latest checkpoint and its modality (state from the checkpoint if stored)."""
    from mfkit.recipe.build import build_backbone, build_modality, plugin_context
    from mfkit.train.checkpoint import load_checkpoint
    from mfkit.train.weights import recipe_from_checkpoint, select_weights

    checkpoint = load_checkpoint(sorted((run_dir / "checkpoints").glob("step-*.safetensors"))[-1], weights_only=True)
    recipe = recipe_from_checkpoint(checkpoint, [])
    modality = build_modality(recipe, context=plugin_context(recipe, purpose="eval"))
    state = dict(getattr(checkpoint, "modality_state", None) or {})
    if state:
        modality.load_state_dict(state)
    model = build_backbone(recipe, modality)
    model.load_state_dict(select_weights(checkpoint, True)[1])
    return model.eval(), modality


def real_time_factor(run_dir: Path) -> dict[str, float]:
    """Seconds of compute per second of audio for one-step generation, network and vocoder apart."""
    import mfkit

    model, modality = load_run(run_dir)
    seconds = modality.settings.samples / modality.settings.sample_rate
    out = {}
    for batch in (1, 100):
        cond = torch.arange(batch) % len(modality.class_names)
        noise = torch.randn((batch, *modality.sample_shape), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            mfkit.sample(model, noise, steps=1, cond=cond)  # warm-up
            began = time.perf_counter()
            repeats = 20 if batch == 1 else 3
            for _ in range(repeats):
                samples = mfkit.sample(model, noise, steps=1, cond=cond)
            network = (time.perf_counter() - began) / repeats
            began = time.perf_counter()
            modality.waveforms(samples)
            vocoder = time.perf_counter() - began
        out[f"network_rtf_batch{batch}"] = network / (batch * seconds)
        out[f"vocoder_rtf_batch{batch}"] = vocoder / (batch * seconds)
    out["threads"] = torch.get_num_threads()
    return out


def table(results: dict) -> str:
    mf, fm = results["meanflow"]["rows"], results["flow_matching"]["rows"]
    floor = results["meanflow"]["floor"]
    lines = []
    if "meanflow_train" in results and "flow_matching_train" in results:
        mf_train, fm_train = results["meanflow_train"], results["flow_matching_train"]
        lines += [f"Training compute: MeanFlow {mf_train['steps']} steps, {mf_train['cpu_s']:.0f} CPU-seconds; flow "
                  f"matching {fm_train['steps']} steps, {fm_train['cpu_s']:.0f} CPU-seconds.", ""]
    lines += ["| sampler | steps | accuracy ↑ | Fréchet ↓ | inception ↑ |", "|---|---:|---:|---:|---:|"]
    for name, rows in (("MeanFlow", mf), ("flow matching (Euler)", fm)):
        for row in rows:
            lines.append(f"| {name} | {row['steps']} | {row['accuracy']:.3f} | {row['frechet']:.2f} | {row['inception']:.2f} |")
    lines.append(f"| real (train) vs real (val) | - | {floor['accuracy']:.3f} | {floor['frechet']:.2f} | {floor['inception']:.2f} |")
    for name, values in results.get("baselines", {}).items():
        lines.append(f"| {name}, half vs half (val) | - | {values['accuracy']:.3f} | {values['frechet']:.2f} | "
                     f"{values['inception']:.2f} |")
    for name, values in results.get("heard", {}).items():
        lines.append(f"| {name}, through Griffin-Lim | - | {values['accuracy']:.3f} | {values['frechet']:.2f} | "
                     f"{values['inception']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", type=Path, default=Path("recipes/audio_speech.yaml"))
    parser.add_argument("--mf-run", type=Path, help="an existing MeanFlow run of the recipe (skips its training)")
    parser.add_argument("--mf-cpu", type=float, help="CPU seconds the existing MeanFlow run took (with --mf-run)")
    parser.add_argument("--fm-run", type=Path, help="an existing flow-matching run (skips calibration and training)")
    parser.add_argument("--fm-cpu", type=float, help="CPU seconds the existing flow-matching run took (with --fm-run)")
    parser.add_argument("--ratio", type=float, help="MF / FM CPU seconds per step measured when --fm-run was trained")
    parser.add_argument("--calibrate", type=int, default=200, help="steps of each calibration run (short runs underestimate the MeanFlow / flow-matching ratio)")
    parser.add_argument("--count", type=int, default=500, help="samples per evaluated row")
    parser.add_argument("--out", type=Path, default=Path("runs/audio-benchmark"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {"recipe": str(args.recipe), "threads": torch.get_num_threads(), "cpus": os.cpu_count()}
    steps = yaml.safe_load(args.recipe.read_text())["train"]["steps"]
    if args.mf_run is None:
        args.mf_run, cpu, wall = train(args.recipe, "audio-benchmark-meanflow", [])
        results["meanflow_train"] = {"steps": steps, "cpu_s": cpu, "wall_s": wall}
    elif args.mf_cpu:
        results["meanflow_train"] = {"steps": steps, "cpu_s": args.mf_cpu}
    if args.fm_run is None:
        per_step = calibrate(args.recipe, args.calibrate, args.out / "calibration")
        fm_steps = round(steps * per_step["meanflow"] / per_step["flow_matching"])
        results["cpu_s_per_step"] = per_step
        results["mf_over_fm_cpu_per_step"] = per_step["meanflow"] / per_step["flow_matching"]
        (args.out / "calibration.json").write_text(json.dumps(per_step))
        args.fm_run, cpu, wall = train(args.recipe, "audio-benchmark-flow-matching",
                                       [*flow_matching_overrides(args.recipe), f"train.steps={fm_steps}"])
        results["flow_matching_train"] = {"steps": fm_steps, "cpu_s": cpu, "wall_s": wall}
        shutil.rmtree(args.out / "calibration", ignore_errors=True)
    save = lambda: (args.out / "results.json").write_text(json.dumps(results, indent=1))  # noqa: E731
    save()
    if args.ratio:
        results["mf_over_fm_cpu_per_step"] = args.ratio
    if args.fm_cpu:
        fm_steps = yaml.safe_load((args.fm_run / "recipe.yaml").read_text())["train"]["steps"]
        results["flow_matching_train"] = {"steps": fm_steps, "cpu_s": args.fm_cpu}
    results["meanflow"] = evaluate(args.mf_run, euler=False, count=args.count)
    save()
    results["flow_matching"] = evaluate(args.fm_run, euler=True, count=args.count)
    save()
    best_fm = max(results["flow_matching"]["rows"], key=lambda row: row["accuracy"])
    mf_heard, baselines = heard(args.mf_run, args.count, None)
    fm_heard, _ = heard(args.fm_run, args.count, best_fm["steps"])
    results["baselines"] = baselines
    results["heard"] = {"MeanFlow 1 step": mf_heard, f"flow matching {best_fm['steps']} steps": fm_heard}
    save()
    results["real_time_factor"] = real_time_factor(args.mf_run)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    text = table(results)
    (args.out / "results.md").write_text(text + "\n")
    print(text)
    print(json.dumps({k: results[k] for k in results if k not in ("meanflow", "flow_matching", "baselines", "heard")},
                     indent=1))


if __name__ == "__main__":
    main()
