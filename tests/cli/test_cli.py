"""The command line as a user meets it: exit codes, one-line errors, the train -> sample loop."""
import os
import shlex
import signal
import subprocess
import sys

import pytest

from tests.cli.util import env, run, start, wait_for_metrics
from tests.helpers import ROOT, install_example_plugin, small_recipe, write_recipe


@pytest.fixture
def recipe(tmp_path):
    return write_recipe(tmp_path / "tiny.yaml", small_recipe(tmp_path, steps=20, checkpoint_every=10))


def test_train_then_sample(tmp_path, recipe):
    result = run("train", recipe)
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "tiny"
    assert f"next: mfkit sample --run {run_dir}" in result.output
    result = run("sample", "--run", run_dir, "--steps", "1", "--n", "30", "--seed", "1")
    assert result.exit_code == 0, result.output
    png = run_dir / "samples" / "step-0000020-1step-n30-seed1-ema" / "samples.png"
    assert str(png) in result.output and png.is_file()
    out = tmp_path / "two-step"
    result = run("sample", "--checkpoint", run_dir / "checkpoints" / "step-0000010.safetensors",
                 "--steps", "2", "--out", out, "--no-ema", "sample.batch_size=7")
    assert result.exit_code == 0, result.output
    import numpy as np

    assert np.load(out / "samples.npy").shape == (100, 2)


def test_sample_defaults_to_the_latest_run(tmp_path, recipe, monkeypatch):
    assert run("train", recipe).exit_code == 0
    monkeypatch.chdir(tmp_path)
    result = run("sample", "--n", "10")
    assert result.exit_code == 0, result.output
    assert "runs/tiny/samples/step-0000020-1step-n10-seed0-ema/samples.png" in result.output


def test_conditional_sampling_by_class_name(tmp_path):
    data = small_recipe(tmp_path, "cond", steps=10)
    data["modality"]["params"]["conditional"] = True
    path = write_recipe(tmp_path / "cond.yaml", data)
    assert run("train", path).exit_code == 0
    run_dir = tmp_path / "runs" / "cond"
    result = run("sample", "--run", run_dir, "--cond", "upper", "--n", "10")
    assert result.exit_code == 0, result.output
    assert "step-0000010-1step-n10-seed0-ema-upper" in result.output
    result = run("sample", "--run", run_dir, "--cond", "sideways")
    assert result.exit_code == 2 and "unknown condition 'sideways'; choose one of: upper, lower" in result.output


def test_user_mistakes_exit_2_with_one_message(tmp_path, recipe):
    result = run("train", tmp_path / "missing.yaml")
    assert result.exit_code == 2 and "no recipe file" in result.output and "Traceback" not in result.output
    result = run("train", recipe, "objective.adaptive_p=abc", "backbone.name=mlpp")
    assert result.exit_code == 2
    assert "objective.adaptive_p: Input should be a valid number" in result.output
    assert "Did you mean 'mlp'?" in result.output
    result = run("sample", "--run", tmp_path / "nothing")
    assert result.exit_code == 2 and "no checkpoint in" in result.output
    result = run("validate", recipe, "train.steps")
    assert result.exit_code == 2 and "key.path=value" in result.output
    result = run("--verbose", "train", tmp_path / "missing.yaml")
    assert result.exit_code == 2 and "Traceback" in result.output


def test_validate_and_show(recipe):
    result = run("validate", recipe, "train.lr=0.01", "--show")
    assert result.exit_code == 0, result.output
    assert "lr: 0.01" in result.output and "adaptive_c: 0.01" in result.output and "valid recipe" in result.output


def test_plugins_and_recipes_tables():
    result = run("plugins")
    assert result.exit_code == 0 and "toy2d" in result.output and "mlp" in result.output
    result = run("recipes")
    assert result.exit_code == 0 and "toy2d_guided" in result.output and "CPU" in result.output


def test_help_has_examples():
    for command in ("train", "sample", "validate"):
        result = run(command, "--help")
        assert result.exit_code == 0 and "mfkit " in result.output


@pytest.mark.slow
def test_ctrl_c_saves_and_the_printed_hint_resumes_the_same_run(tmp_path):
    """The run is started with overrides (name, steps); the hint printed after Ctrl-C must continue *that* run."""
    path = write_recipe(tmp_path / "long.yaml", small_recipe(tmp_path, "long", steps=100_000, checkpoint_every=50_000))
    assert run("train", path, "train.steps=10").exit_code == 0  # a finished run of the recipe's own name
    process = start("train", path, "name=other", "train.steps=100000", "train.lr=0.002")
    run_dir = tmp_path / "runs" / "other"
    wait_for_metrics(run_dir, process)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 130, output
    assert "interrupted (Ctrl-C) at step" in output and "Traceback" not in output
    checkpoints = list((run_dir / "checkpoints").glob("step-*.safetensors"))
    assert len(checkpoints) == 1
    step = int(checkpoints[0].name[5:12])
    assert step >= 10
    hint = next(line for line in output.splitlines() if line.startswith("continue with: "))
    command = shlex.split(hint.removeprefix("continue with: "))
    assert command[:2] == ["mfkit", "train"] and command[2] == str(run_dir)
    done = subprocess.run([sys.executable, "-m", "mfkit", *command[1:], f"train.steps={step + 5}"],
                          capture_output=True, text=True, env=env(), timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"done: {step + 5} steps" in done.stderr and "train.steps: 100000 -> " in done.stderr
    assert "lr: 0.002" in (run_dir / "recipe.yaml").read_text()  # the run's own overrides were kept


@pytest.mark.slow
def test_third_party_plugin_is_found_and_trains(tmp_path):
    """The example plugin package, pip-installed elsewhere, works without any change to mfkit."""
    site = install_example_plugin(tmp_path / "site")
    plugin_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    listing = subprocess.run([sys.executable, "-m", "mfkit", "plugins"], capture_output=True, text=True, env=plugin_env)
    assert "sines" in listing.stdout and "mfkit-sines 0.1.0" in listing.stdout and "conv1d" in listing.stdout
    recipes = subprocess.run([sys.executable, "-m", "mfkit", "recipes"], capture_output=True, text=True, env=plugin_env)
    assert "sines" in recipes.stdout and "mfkit-sines" in recipes.stdout
    trained = subprocess.run([sys.executable, "-m", "mfkit", "train", "sines", "train.steps=20",
                              f"output_dir={tmp_path / 'runs'}", "-q"], capture_output=True, text=True, env=plugin_env, timeout=300)
    assert trained.returncode == 0, trained.stderr
    sampled = subprocess.run([sys.executable, "-m", "mfkit", "sample", "--run", tmp_path / "runs" / "sines",
                              "--cond", "high"], capture_output=True, text=True, env=plugin_env, timeout=120)
    assert sampled.returncode == 0, sampled.stderr
    assert (tmp_path / "runs" / "sines" / "samples" / "step-0000020-1step-n16-seed0-ema-high" / "signals.png").is_file()
    contract = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               str(ROOT / "docs" / "example_plugin" / "tests")], capture_output=True, text=True, env=plugin_env)
    assert contract.returncode == 0, contract.stdout[-2000:]


def test_demo_trains_samples_and_says_where_without_deleting_anything(tmp_path):
    runs = tmp_path / "runs"
    sentinel = runs / "toy2d" / "checkpoints" / "precious.txt"  # the quick start's run folder
    sentinel.parent.mkdir(parents=True)
    sentinel.write_text("keep")
    result = run("demo", "--steps", "20", "--output-dir", runs)
    assert result.exit_code == 0, result.output
    png = runs / "demo" / "samples" / "step-0000020-1step-n4000-seed0-ema" / "samples.png"
    assert str(png) in result.output and png.is_file()
    assert "ONE network call" in result.output
    first = png.read_bytes()
    again = run("demo", "--steps", "10", "--output-dir", runs)
    assert again.exit_code == 0, again.output
    assert f"run folder {runs / 'demo-2'}" in again.output and (runs / "demo-2" / "checkpoints").is_dir()
    assert png.read_bytes() == first and sentinel.read_text() == "keep"


def test_the_console_script_shows_a_user_warning_as_one_plain_line(capsys):
    """Data adapters and the evaluation warn with UserWarning; the `mfkit` script shows each as one
    'warning: ...' line (mfkit's and its plugins' without a code location, a library's with it), and hands
    other warnings, and all with --verbose, to Python's own display (here the recording one of
    catch_warnings)."""
    import warnings

    import mfkit.cli.console
    from mfkit.cli.console import show_warnings_plainly, state

    with warnings.catch_warnings(record=True) as python_shown:
        warnings.simplefilter("always")
        show_warnings_plainly()
        show_warnings_plainly()  # installing twice changes nothing
        warnings.warn_explicit("skipped 2 broken file(s) of 12 in /data", UserWarning, mfkit.cli.console.__file__, 3)
        warnings.warn_explicit("cannot dispatch to the fused kernel", UserWarning, "/venv/torch/nn/functional.py", 7)
        warnings.warn("an API goes away", DeprecationWarning)
        state["verbose"] = True
        try:
            warnings.warn("shown with its place", UserWarning)
        finally:
            state["verbose"] = False
    assert capsys.readouterr().err.splitlines() == [
        "warning: skipped 2 broken file(s) of 12 in /data",  # mfkit's own: no code location
        "warning: cannot dispatch to the fused kernel (/venv/torch/nn/functional.py:7)"]
    assert [str(w.message) for w in python_shown] == ["an API goes away", "shown with its place"]
