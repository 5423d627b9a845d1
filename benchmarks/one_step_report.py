"""The one-step report: MeanFlow against flow matching at equal compute, for each CPU-sized shipped recipe.

    python benchmarks/one_step_report.py                     # docs/results.md, docs/figures/results*
    python benchmarks/one_step_report.py --recipes toy2d --scale 0.1 --out /tmp/results.md \
        --figures /tmp/figures --json /tmp/results.json     # a quick look
    python benchmarks/one_step_report.py --work /tmp/report --reuse   # after an interruption: no retraining
    python benchmarks/one_step_report.py --recipes image_digits       # (re)run one pair; the others are kept
    python benchmarks/one_step_report.py --from-json docs/figures/results.json   # only render the report again
    python benchmarks/one_step_report.py --import RESULTS.json "COMMAND"   # a plugin benchmark's pair

For each MeanFlow recipe in ``PAIRS`` (modality issues add theirs), the same recipe with
``objective.kind: flow_matching`` (MeanFlow-only fields dropped) is its flow-matching twin. Both train
from the same seed with `mfkit train`; flow matching gets as many steps as fit in MeanFlow's wall time
(the step-time ratio is measured first, in this process, in interleaved blocks). Both are then scored
by `mfkit eval --json` (run in its own process): MeanFlow with 1, 2, 4, 8
steps, flow matching with 1 to 100 Euler steps. The report states where one MeanFlow step is behind
flow matching at 100 steps, and (when ``docs/figures/peers.json`` from ``benchmarks/peers.py`` exists)
behind a peer library.

Every pair's figures are kept in the ``--json`` store (``docs/figures/results.json``), keyed by recipe,
with the machine, date and duration of its own run: running some recipes replaces their pairs and keeps
the others, and the report is rendered from the whole store, in ``PAIRS`` order. ``MAIN_METRIC`` names
the figure each recipe is judged by (default: the evaluator's first), in the evaluator's direction.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import fcntl
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from mfkit.recipe import schema

ROOT = Path(__file__).resolve().parents[1]
#: MeanFlow recipes that train on a CPU in minutes; each gets a flow-matching twin.
PAIRS = ["toy2d", "toy2d_guided", "image_digits", "audio_speech", "points_shapes"]
#: The figure a recipe is judged by, where it is not the evaluator's first.
MAIN_METRIC = {"image_digits": "fd", "image_mnist": "fd", "audio_speech": "accuracy", "points_shapes": "1nna_cd"}
#: Samples scored per row where the recipe's sample.count (what `mfkit sample` writes) is too few for a
#: Fréchet distance or a class accuracy to mean anything.
EVAL_COUNT = {"audio_speech": 1000}
MF_STEPS = (1, 2, 4, 8)
FM_STEPS = (1, 2, 4, 8, 16, 32, 100)
#: objective fields the flow-matching twin drops: mfkit's MeanFlow-only fields, and the preset (a resolved
#: recipe holds the preset's values already)
MEANFLOW_ONLY = (*schema.MEANFLOW_ONLY, "preset")


def resolved(data: dict) -> dict:
    """The recipe with every default filled in, as a run stores it."""
    from mfkit.recipe.loading import parse_recipe, recipe_to_yaml

    return yaml.safe_load(recipe_to_yaml(parse_recipe(copy.deepcopy(data), "report")))


def recipe_data(name: str, overrides: list[str] | None = None) -> dict:
    """The shipped recipe NAME, resolved, with ``key=value`` overrides applied first."""
    from mfkit.recipe.loading import apply_overrides, parse_recipe, recipe_to_yaml

    path = ROOT / "recipes" / f"{name}.yaml"
    data = apply_overrides(yaml.safe_load(path.read_text()), overrides or [])
    return yaml.safe_load(recipe_to_yaml(parse_recipe(data, str(path))))


def flow_matching_twin(data: dict) -> dict:
    """The same recipe trained with flow matching: objective kind changed, MeanFlow-only fields dropped."""
    twin = copy.deepcopy(data)
    twin["objective"] = {key: value for key, value in twin["objective"].items() if key not in MEANFLOW_ONLY}
    twin["objective"]["kind"] = "flow_matching"
    twin["name"] = f"{data['name']}-fm"
    twin["sample"]["steps"] = 32
    return twin


def step_ratio(data: dict, twin: dict, rounds: int = 3, steps: int = 15) -> tuple[float, float, float]:
    """Seconds per training step of the MeanFlow and flow-matching objectives on the recipe's backbone and
    batch (interleaved blocks, median), and their ratio."""
    from torch.utils.data import DataLoader

    from mfkit.recipe.build import build_backbone, build_modality, build_objective_for
    from mfkit.recipe.loading import parse_recipe

    def block(recipe_dict: dict) -> float:
        recipe = parse_recipe(recipe_dict, "report")
        modality = build_modality(recipe)
        torch.manual_seed(recipe.train.seed)
        model = build_backbone(recipe, modality)
        objective = build_objective_for(recipe, modality)
        optimizer = torch.optim.Adam(model.parameters(), lr=recipe.train.lr)
        batches = DataLoader(modality.dataset("train"), batch_size=recipe.train.batch_size, shuffle=True,
                             drop_last=True, collate_fn=modality.collate(), generator=torch.Generator().manual_seed(0))
        loader = (batch for _ in iter(int, 1) for batch in batches)  # epoch after epoch: small data sets end
        generator = torch.Generator().manual_seed(1)

        def step():
            x, cond = modality.unpack(next(loader))
            out = objective(model, x, cond=cond, generator=generator)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()

        for _ in range(3):
            step()
        began = time.perf_counter()
        for _ in range(steps):
            step()
        return (time.perf_counter() - began) / steps

    meanflow, flow = [], []
    for _ in range(rounds):
        meanflow.append(block(data))
        flow.append(block(twin))
    mf, fm = statistics.median(meanflow), statistics.median(flow)
    return mf, fm, mf / fm


#: Runs taken as they were (--reuse): their training time still counts in the pair's duration.
REUSED: set[str] = set()


def finished_run(data: dict) -> tuple[Path, float] | None:
    """A run of this recipe already trained to its last step in the work folder: its final checkpoint and
    training time (from the run's metrics log), else None."""
    from mfkit.train.checkpoint import checkpoint_step, latest_checkpoint, load_checkpoint

    run = Path(data["output_dir"]) / data["name"]
    checkpoint = latest_checkpoint(run / "checkpoints")
    if checkpoint is None or checkpoint_step(checkpoint) != data["train"]["steps"]:
        return None
    stored = resolved(yaml.safe_load(load_checkpoint(checkpoint, weights_only=True).recipe_yaml))  # new defaults filled
    wanted = resolved(data)
    if any(stored[key] != wanted[key] for key in ("objective", "modality", "backbone")) \
            or stored["train"]["batch_size"] != wanted["train"]["batch_size"]:
        return None
    times = [json.loads(line)["time"] for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return checkpoint, (times[-1] - times[0]) * len(times) / max(len(times) - 1, 1)


def train(data: dict, work: Path, threads: int, reuse: bool = False) -> tuple[Path, float]:
    """`mfkit train` on the recipe (written to ``work``); returns the final checkpoint and the wall time.
    ``reuse``: a run already trained to the end in ``work`` is taken as it is."""
    from mfkit.train.checkpoint import latest_checkpoint

    if reuse and (found := finished_run(data)) is not None:
        REUSED.add(data["name"])
        return found
    path = work / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "mfkit", "train", str(path), "--overwrite", "--quiet"],
                          env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"training {data['name']} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    checkpoint = latest_checkpoint(Path(data["output_dir"]) / data["name"] / "checkpoints")
    return checkpoint, seconds


def reused_steps(twin: dict) -> int | None:
    """The number of steps of a flow-matching twin already trained in the work folder, if any."""
    from mfkit.train.checkpoint import checkpoint_step, latest_checkpoint

    from mfkit.train.checkpoint import load_checkpoint

    checkpoint = latest_checkpoint(Path(twin["output_dir"]) / twin["name"] / "checkpoints")
    if checkpoint is None:
        return None
    planned = yaml.safe_load(load_checkpoint(checkpoint, weights_only=True).recipe_yaml)["train"]["steps"]
    return planned if checkpoint_step(checkpoint) == planned else None  # not a run stopped half-way


def evaluate(checkpoint: Path, steps: tuple[int, ...], euler: tuple[int, ...], count: int, threads: int = 1) -> dict:
    """`mfkit eval --json` on the checkpoint, in a fresh process (so a checkout updated during a long report
    reads the checkpoints its own `mfkit train` wrote)."""
    out = checkpoint.parent.parent / f"eval-{checkpoint.stem}.json"
    command = [sys.executable, "-m", "mfkit", "eval", "--checkpoint", str(checkpoint), "--n", str(count), "--seed", "0",
               "--device", "cpu", "--json", str(out)]
    command += ["--steps", ",".join(map(str, steps))] if steps else []
    command += ["--euler", ",".join(map(str, euler))] if euler else []
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"mfkit eval on {checkpoint} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    report = json.loads(out.read_text())
    for row in report["rows"]:
        row["metrics"] = _nan_for_null(row["metrics"])
    if report.get("floor"):
        report["floor"] = _nan_for_null(report["floor"])
    return report


def _nan_for_null(figures: dict) -> dict:
    """`mfkit eval --json` writes a NaN or infinite figure as null: back to a float (NaN) for the tables."""
    return {name: float("nan") if value is None else value for name, value in figures.items()}


def machine_text(threads: int) -> str:
    return (f"{platform.machine()} ({os.cpu_count()} CPU cores visible, {threads} thread(s) per run), "
            f"torch {torch.__version__}, python {platform.python_version()}")


def run_pair(name: str, args, work: Path) -> dict:
    began = time.perf_counter()
    data = recipe_data(name)
    data["output_dir"] = str(work / "runs")
    data["train"]["steps"] = max(10, round(data["train"]["steps"] * args.scale))
    data["train"]["checkpoint_every"] = data["train"]["steps"]
    data["train"]["device"] = "cpu"
    twin = flow_matching_twin(data)
    torch.set_num_threads(args.threads)
    mf_step, fm_step, ratio = step_ratio(data, twin)
    twin["train"]["steps"] = round(data["train"]["steps"] * ratio)
    previous = reused_steps(twin) if args.reuse else None
    if previous is not None:  # keep the flow-matching length the earlier measurement gave
        twin["train"]["steps"] = previous
    twin["train"]["checkpoint_every"] = twin["train"]["steps"]
    mf_checkpoint, mf_seconds = train(data, work, args.threads, args.reuse)
    fm_checkpoint, fm_seconds = train(twin, work, args.threads, args.reuse)
    count = args.n or EVAL_COUNT.get(name, data["sample"]["count"])
    return {"recipe": name, "meanflow_steps": data["train"]["steps"], "fm_steps": twin["train"]["steps"],
            "mf_step_ms": 1000 * mf_step, "fm_step_ms": 1000 * fm_step, "step_ratio": ratio,
            "mf_train_seconds": mf_seconds, "fm_train_seconds": fm_seconds,
            "meanflow": evaluate(mf_checkpoint, MF_STEPS, (), count, args.threads),
            "flow_matching": evaluate(fm_checkpoint, (), FM_STEPS, count, args.threads),
            "objective": {k: v for k, v in data["objective"].items() if v is not None},
            "batch": data["train"]["batch_size"], "backbone": data["backbone"],
            "machine": machine_text(args.threads), "date": datetime.date.today().isoformat(),
            "load": _load_text(), "scale": args.scale, "note": args.note,
            "seconds": time.perf_counter() - began + sum(
                seconds for run, seconds in ((data["name"], mf_seconds), (twin["name"], fm_seconds)) if run in REUSED)}


def imported_pair(path: Path, command: str) -> dict:
    """A pair measured by a plugin's own equal-compute benchmark (its JSON holds the same fields: the two
    `mfkit eval` reports, steps and step times), stored with the command that produced it."""
    data = json.loads(Path(path).read_text())
    missing = [key for key in ("meanflow", "flow_matching", "meanflow_steps", "fm_steps", "mf_step_ms", "fm_step_ms")
               if key not in data]
    if missing:
        raise SystemExit(f"{path} lacks {', '.join(missing)}: not an equal-compute pair")
    name = Path(str(data.get("recipe", path))).stem
    overrides = list(data.get("overrides") or [])
    recipe = recipe_data(name, overrides)
    pair = {"recipe": name, "step_ratio": data["mf_step_ms"] / data["fm_step_ms"],
            "objective": {k: v for k, v in recipe["objective"].items() if v is not None},
            "batch": recipe["train"]["batch_size"], "backbone": recipe["backbone"],
            "date": datetime.date.fromtimestamp(Path(path).stat().st_mtime).isoformat(),
            **{key: data[key] for key in ("meanflow", "flow_matching", "meanflow_steps", "fm_steps", "mf_step_ms",
                                          "fm_step_ms", "mf_train_seconds", "fm_train_seconds", "machine")
               if key in data}}
    pair["seconds"] = data.get("seconds") or (data.get("mf_train_seconds", 0) + data.get("fm_train_seconds", 0)) or None
    pair["note"] = (f"Measured by `{command}` (equal compute by CPU time; imported with --import). "
                    + (f"Trained with the overrides {' '.join(overrides)}. " if overrides else "")
                    + (data.get("note") or ""))
    return pair


def _load_text() -> str:
    try:
        return "load average " + ", ".join(f"{x:.1f}" for x in os.getloadavg()) + " at the end"
    except OSError:
        return ""


def update_store(path: Path, pairs: list[dict]) -> list[dict]:
    """Replace the stored pairs of these recipes (others kept); returns every stored pair, in PAIRS order.
    A lock keeps two reports run side by side (different recipes) from losing each other's pairs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"mfkit-report-{digest}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stored = load_store(path)
        stored.update({pair["recipe"]: pair for pair in pairs})
        ordered = ordered_pairs(stored)
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text(json.dumps({"pairs": ordered}, indent=1, default=str) + "\n")
        os.replace(temporary, path)
    return ordered


def load_store(path: Path) -> dict[str, dict]:
    """recipe -> pair from a store (an older store's single "seconds" is given to each of its pairs)."""
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    pairs = {pair["recipe"]: pair for pair in data.get("pairs", [])}
    for pair in pairs.values():
        pair.setdefault("seconds", data.get("seconds"))
    return pairs


def ordered_pairs(stored: dict[str, dict]) -> list[dict]:
    order = {name: index for index, name in enumerate(PAIRS)}
    return [stored[name] for name in sorted(stored, key=lambda name: (order.get(name, len(order)), name))]


def _rows(report: dict) -> dict[int, dict]:
    return {row["steps"]: row for row in report["rows"]}


def _better(a: float, b: float, direction: str) -> bool:
    return a < b if direction == "lower" else a > b


def pair_section(pair: dict, figures: Path, relative: str) -> list[str]:
    from benchmarks.plots import line_plot

    mf, fm = _rows(pair["meanflow"]), _rows(pair["flow_matching"])
    floor = pair["meanflow"]["floor"] or {}
    directions = pair["meanflow"]["directions"]
    name = pair["recipe"]
    main = MAIN_METRIC.get(name, next(iter(directions)))
    metrics = [main] + [m for m in directions if m != main and not m.startswith("accuracy_")]
    direction = directions[main]
    run = [f"Run on {pair['date']}" if pair.get("date") else "Run",
           f"on {pair['machine']}" if pair.get("machine") else "",
           f"({pair['load']})" if pair.get("load") else "",
           f"in {pair['seconds'] / 60:.1f} minutes" if pair.get("seconds") else "",
           f"with steps scaled by {pair['scale']}" if pair.get("scale", 1) != 1 else ""]
    lines = [f"## {name}", "",
             " ".join(part for part in run if part) + "." + (f" {pair['note']}" if pair.get("note") else ""), "",
             f"MeanFlow: {pair['meanflow_steps']} steps; flow matching: {pair['fm_steps']} steps "
             f"({pair['fm_steps'] / pair['meanflow_steps']:.2f}x as many: the step-time ratio measured before "
             f"training). Timed for this report: {pair['mf_step_ms']:.1f} ms per MeanFlow step against "
             f"{pair['fm_step_ms']:.1f} ms, a ratio of {pair['step_ratio']:.2f}. Training took {pair['mf_train_seconds']:.0f} s and "
             f"{pair['fm_train_seconds']:.0f} s. Backbone {pair['backbone']['name']} {pair['backbone'].get('params', {})}, "
             f"batch {pair['batch']}. {pair['meanflow']['count']} samples against {pair['meanflow']['reference_count']} "
             f"held-out items; floor: {pair['meanflow']['floor_count']} real training items against the same.", "",
             "| method | calls | " + " | ".join(f"{m} ({directions[m]} is better)" for m in metrics)
             + " | network ms/sample |", "|---" * (len(metrics) + 3) + "|",
             "| real data (floor) | - | " + " | ".join(_figure(floor.get(m)) for m in metrics) + " | - |"]
    for label, rows in (("MeanFlow", mf), ("flow matching (Euler)", fm)):
        for calls, row in rows.items():
            lines.append(f"| {label} | {calls} | " + " | ".join(_figure(row["metrics"].get(m)) for m in metrics)
                         + f" | {row['network_ms']:.4f} |")
    one = mf[1]["metrics"][main]
    most = max(fm)
    at_most = fm[most]["metrics"][main]
    gap = abs(one - at_most)
    verdict = (f"one MeanFlow step ({one:.4f}) is **behind** flow matching at {most} steps ({at_most:.4f}) by "
               f"{gap:.4f} ({100 * gap / abs(at_most):.0f}%)" if _better(at_most, one, direction) else
               f"one MeanFlow step ({one:.4f}) is at least as good as flow matching at {most} steps ({at_most:.4f})")
    fm_match = next((calls for calls, row in sorted(fm.items()) if not _better(one, row["metrics"][main], direction)),
                    None)
    reach = (f"flow matching first matches it at {fm_match} Euler steps" if fm_match is not None
             else f"no number of Euler steps up to {most} matches it")
    pick = min if direction == "lower" else max
    best_calls = pick(fm, key=lambda calls: fm[calls]["metrics"][main])
    best_value = fm[best_calls]["metrics"][main]
    best = (f" Flow matching's best is {best_value:.4f} at {best_calls} steps"
            + (f": one MeanFlow step is **behind** it by {abs(one - best_value):.4f} "
               f"({100 * abs(one - best_value) / abs(best_value):.0f}%)." if _better(best_value, one, direction) else "."))
    floor_text = f"; the real-data floor is {floor[main]:.4f}" if main in floor else ""
    lines += ["", f"On {main} ({direction} is better): {verdict}; {reach}{floor_text}.{best}", ""]
    calls_png = line_plot({"MeanFlow": [(c, r["metrics"][main]) for c, r in mf.items()],
                           "flow matching": [(c, r["metrics"][main]) for c, r in fm.items()]},
                          figures / f"results-{name}-calls.png", title=f"{name}: {main} against network calls",
                          xlabel="network calls per sample", ylabel=main, floor=floor.get(main))
    time_png = line_plot({"MeanFlow": [(r["network_ms"], r["metrics"][main]) for r in mf.values()],
                          "flow matching": [(r["network_ms"], r["metrics"][main]) for r in fm.values()]},
                         figures / f"results-{name}-time.png", title=f"{name}: {main} against sampling time",
                         xlabel="network ms per sample", ylabel=main, floor=floor.get(main))
    lines += [f"![{name}: quality against calls]({relative}/{calls_png.name}) "
              f"![{name}: quality against time]({relative}/{time_png.name})", ""]
    return lines


def _figure(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _peer_curves(results: list[dict], data: str) -> dict[str, dict[int, float]]:
    """Sliced W2 per number of calls of each method's own sampler on one data set (failed runs left out)."""
    return {r["label"]: {row["calls"]: row["metrics"]["sliced_w2"] for row in r["rows"] if row["sampler"] == r["label"]}
            for r in results if r["data"] == data and "error" not in r}


def _is_our_meanflow(result: dict) -> bool:
    return result["method"].startswith("mfkit-mf")


def peers_section(path: Path) -> list[str]:
    """Where mfkit's best one step stands against the peers, and every objective option's one and two calls
    (from benchmarks/peers.py's JSON)."""
    if not path.is_file():
        return []
    results = json.loads(path.read_text())["results"]
    lines = ["## Against the other libraries (benchmarks/peers.py, docs/benchmarks.md)", ""]
    options = ["## One-call quality by objective option", "",
               "Each mfkit objective option alone and combined (`+ot`: minibatch optimal-transport coupling; `+imf`: "
               "improved MeanFlow; `+alpha`: alpha-Flow curriculum; `+v1`: r drawn apart, LN(-4, 1.6), clipped; "
               "`+iw`: interval weighting, strength 4 (`iw=S`: strength S), balanced from half of training; "
               "`share=`, `p=`, `mean=`, `std=`, `block=`: r != t share, adaptive p, logit-normal t, rows per OT "
               "assignment; `small preset`: `MeanFlow.preset(\"small\")`), beside every peer, on "
               "the peer benchmark's 2-D data at equal training steps (sliced W2, lower is better; one seed: "
               "differences under about 0.01 are within run-to-run variation). Sorted by one call.", ""]
    for data in dict.fromkeys(r["data"] for r in results):
        rows = [r for r in results if r["data"] == data and "error" not in r]
        curves = _peer_curves(results, data)
        ours = {r["label"]: curves[r["label"]][1] for r in rows if _is_our_meanflow(r) and 1 in curves[r["label"]]}
        best_label = min(ours, key=ours.get)
        best_one = ours[best_label]
        # each peer at one call and at its most calls
        candidates = [(curves[r["label"]][calls], r["label"], calls) for r in rows if not r["method"].startswith("mfkit")
                      for calls in dict.fromkeys((1, max(curves[r["label"]]))) if calls in curves[r["label"]]]
        ahead = [c for c in candidates if c[0] < best_one]
        for value, label, calls in ahead:
            lines.append(f"- {data}: mfkit's best one step ({best_label}, sliced W2 {best_one:.3f}) is "
                         f"**behind** {label} at {calls} call(s) ({value:.3f}) by {best_one - value:.3f} "
                         f"({100 * (best_one - value) / value:.0f}%).")
        if not ahead:
            closest = min(candidates, default=None)
            tail = f"; the closest is {closest[1]} at {closest[2]} call(s), {closest[0]:.3f}" if closest else ""
            lines.append(f"- {data}: mfkit's best one step ({best_label}, sliced W2 {best_one:.3f}) is ahead of every "
                         f"peer at 1 call and at its most calls{tail}.")
        floor = next((r["floor"]["sliced_w2"] for r in rows if "floor" in r), None)
        options += [f"{data}" + (f" (real-data floor {floor:.3f}):" if floor is not None else ":"), "",
                    "| method | 1 call | 2 calls | best (calls) | step x mfkit FM |", "|---|---|---|---|---|"]
        ranked = sorted(rows, key=lambda r: curves[r["label"]].get(1, float("inf")))
        for r in ranked:
            curve = curves[r["label"]]
            best_calls = min(curve, key=curve.get)
            name = f"**{r['label']}**" if r["label"] == best_label else r["label"]
            options.append(f"| {name} | {_figure(curve.get(1), 3)} | {_figure(curve.get(2), 3)} | "
                           f"{curve[best_calls]:.3f} ({best_calls}) | {r.get('ratio', float('nan')):.2f} |")
        options.append("")
    return lines + [""] + options


def write_report(pairs: list[dict], args) -> None:
    figures = args.figures
    relative = os.path.relpath(figures, args.out.parent)
    lines = ["# Results: one step against many", "",
             "Generated by `python benchmarks/one_step_report.py` (do not edit by hand; rerun it). MeanFlow and flow "
             "matching train from the same seed with equal compute (flow matching gets the extra steps that its "
             "cheaper step buys), and are scored by `mfkit eval`'s code against held-out real data, beside the "
             "real-vs-real floor. Each section says when and on what machine its pair ran "
             "(`--recipes NAME` reruns one pair and keeps the others). Each modality adds its recipes to `PAIRS` "
             "in the script.", ""]
    timed = [pair["seconds"] for pair in pairs if pair.get("seconds")]
    if timed:
        lines += [f"It runs unattended: `python benchmarks/one_step_report.py` trains and scores every pair in turn, "
                  f"one thread each; the pairs below took {sum(timed) / 60:.0f} minutes together on the machines "
                  f"their sections name.", ""]
    missing = [name for name in PAIRS if name not in {pair["recipe"] for pair in pairs}]
    if missing:
        lines += [f"Not run yet: {', '.join(missing)} (`python benchmarks/one_step_report.py --recipes "
                  f"{','.join(missing)}`).", ""]
    for pair in pairs:
        lines += pair_section(pair, figures, relative)
    lines += peers_section(args.peers)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines).rstrip() + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", default=",".join(PAIRS))
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every recipe's training steps")
    parser.add_argument("--n", type=int, default=None, help="samples per row (default: the recipe's sample.count)")
    parser.add_argument("--threads", type=int, default=1, help="threads per training run (the machine is shared)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results.md")
    parser.add_argument("--figures", type=Path, default=ROOT / "docs" / "figures")
    parser.add_argument("--peers", type=Path, default=ROOT / "docs" / "figures" / "peers.json")
    parser.add_argument("--work", type=Path, default=None, help="run folders (default: a temporary folder)")
    parser.add_argument("--json", type=Path, default=ROOT / "docs" / "figures" / "results.json",
                        help="the store of every pair's figures: the pairs run now replace theirs, the others are "
                             "kept, and the report shows them all")
    parser.add_argument("--note", default="", help="a sentence about the machine's conditions, for the report")
    parser.add_argument("--from-json", type=Path, default=None, help="train nothing: render the report from "
                                                                      "this store")
    parser.add_argument("--import", dest="imports", nargs="*", default=[], metavar="FILE COMMAND",
                        help="store pairs measured by a plugin's own benchmark: its JSON file, then the command that "
                             "produced it (pairs of arguments); nothing is trained")
    parser.add_argument("--reuse", action="store_true", help="take runs already trained to the end in --work as "
                                                             "they are (a report interrupted after training)")
    args = parser.parse_args()
    import importlib

    # import everything up front: the report runs long, and a checkout edited meanwhile must not stop it
    for module in ("benchmarks.plots", "mfkit.recipe.build", "mfkit.train.checkpoint"):
        importlib.import_module(module)

    if args.imports:
        pairs = [imported_pair(Path(path), command) for path, command in zip(args.imports[::2], args.imports[1::2])]
        write_report(update_store(args.json, pairs), args)
        print(f"imported {', '.join(pair['recipe'] for pair in pairs)}; wrote {args.out}", file=sys.stderr)
        return
    if args.from_json is not None:
        write_report(ordered_pairs(load_store(args.from_json)), args)
        print(f"wrote {args.out}", file=sys.stderr)
        return
    began = time.perf_counter()
    work = args.work or Path(tempfile.mkdtemp(prefix="mfkit-report-"))
    work.mkdir(parents=True, exist_ok=True)
    pairs = []
    for name in args.recipes.split(","):
        pairs.append(run_pair(name, args, work))
        print(f"{name}: {pairs[-1]['seconds']:.0f} s", file=sys.stderr, flush=True)
    everything = update_store(args.json, pairs) if args.json else pairs
    write_report(everything, args)
    print(f"wrote {args.out} in {(time.perf_counter() - began) / 60:.1f} minutes", file=sys.stderr)


if __name__ == "__main__":
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    main()
