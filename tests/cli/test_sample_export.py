"""`mfkit sample` and `mfkit export`: the right sampler and steps, new folders every time, clear errors."""
import numpy as np
import pytest
import torch

from tests.cli.util import run
from tests.helpers import small_recipe, write_recipe


@pytest.fixture(scope="module")
def meanflow_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("meanflow")
    path = write_recipe(tmp_path / "tiny.yaml", small_recipe(tmp_path, steps=10, checkpoint_every=10))
    assert run("train", path).exit_code == 0
    return tmp_path / "runs" / "tiny"


def test_flow_matching_samples_with_its_recipes_steps_and_says_so(tmp_path):
    data = small_recipe(tmp_path, "fm", steps=10)
    data["objective"] = {"kind": "flow_matching"}
    data["sample"]["steps"] = 4
    path = write_recipe(tmp_path / "fm.yaml", data)
    result = run("train", path)
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "fm"
    assert f"next: mfkit sample --run {run_dir}" in result.output and "sample.steps = 4" in result.output
    result = run("sample", "--run", run_dir, "--n", "20")
    assert result.exit_code == 0, result.output
    assert "with 4 step(s)" in result.output
    assert (run_dir / "samples" / "step-0000010-4step-n20-seed0-ema" / "samples.npy").is_file()


def test_repeated_sampling_never_replaces_earlier_samples(meanflow_run):
    first = run("sample", "--run", meanflow_run, "--n", "20", "--seed", "5")
    second = run("sample", "--run", meanflow_run, "--n", "20", "--seed", "5")
    raw = run("sample", "--run", meanflow_run, "--n", "20", "--seed", "5", "--no-ema")
    assert first.exit_code == second.exit_code == raw.exit_code == 0
    folder = meanflow_run / "samples" / "step-0000010-1step-n20-seed5-ema"
    assert str(folder / "samples.npy") in first.output
    assert str(folder.with_name(folder.name + "-2") / "samples.npy") in second.output
    assert str(folder.with_name("step-0000010-1step-n20-seed5-raw") / "samples.npy") in raw.output
    assert np.array_equal(np.load(folder / "samples.npy"), np.load(folder.with_name(folder.name + "-2") / "samples.npy"))


def test_large_counts_show_progress(meanflow_run):
    result = run("sample", "--run", meanflow_run, "--n", "120")  # batches of 50
    assert result.exit_code == 0 and "sampling" in result.output and "120/120" in result.output
    small = run("sample", "--run", meanflow_run, "--n", "30")
    assert small.exit_code == 0 and "30/30" not in small.output


def test_bad_out_paths_are_one_line(meanflow_run, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("keep")
    used = tmp_path / "used"
    used.mkdir()
    (used / "samples.npy").write_text("keep")
    for out, message in ((a_file, "is a file, not a folder"), (a_file / "sub", "Not a directory"),
                         (used, "already holds files")):
        result = run("sample", "--run", meanflow_run, "--out", out)
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, result.output
    assert a_file.read_text() == "keep" and (used / "samples.npy").read_text() == "keep"


def test_weights_that_do_not_fit_the_recipe_are_one_line(meanflow_run):
    result = run("sample", "--run", meanflow_run, "backbone.params.width=128")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "does not fit the model this recipe builds (size mismatch for" in result.output


def test_export_writes_weights_and_recipe_loadable_in_one_call(meanflow_run, tmp_path):
    import mfkit.export
    from mfkit.train.checkpoint import latest_checkpoint, load_checkpoint

    result = run("export", meanflow_run)
    assert result.exit_code == 0, result.output
    path = meanflow_run / "exports" / "tiny-step-0000010-ema.safetensors"
    assert str(path) in result.output and path.with_suffix(".yaml").is_file()
    exported = mfkit.export.load_exported(path)
    checkpoint = load_checkpoint(latest_checkpoint(meanflow_run / "checkpoints"))
    assert exported.step == 10 and exported.weights == "ema-0.9" and not exported.model.training
    assert exported.recipe.name == "tiny"
    for key, value in exported.model.state_dict().items():
        assert torch.equal(value, checkpoint.ema["0.9"][key]), key
    assert exported.sample(7).shape == (7, 2)
    assert path.stat().st_size < (meanflow_run / "checkpoints" / "step-0000010.safetensors").stat().st_size / 3

    again = run("export", meanflow_run)
    assert again.exit_code == 0 and str(path.with_name("tiny-step-0000010-ema-2.safetensors")) in again.output

    out = tmp_path / "shared.safetensors"
    assert run("export", meanflow_run, "--raw", "--out", out).exit_code == 0
    raw = mfkit.export.load_exported(out)
    assert raw.weights == "raw" and torch.equal(raw.model.state_dict()["inp.weight"], checkpoint.model["inp.weight"])
    refused = run("export", meanflow_run, "--out", out)
    assert refused.exit_code == 2 and "already exists" in refused.output and "--overwrite" in refused.output
    assert run("export", meanflow_run, "--out", out, "--overwrite").exit_code == 0
    assert mfkit.export.load_exported(out).weights == "ema-0.9"


def test_loading_something_else_is_a_clear_error(meanflow_run):
    from mfkit.export import load_exported
    from mfkit.train.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="is not an mfkit export"):
        load_exported(meanflow_run / "checkpoints" / "step-0000010.safetensors")


def test_any_kept_ema_can_be_chosen_by_decay(meanflow_run, tmp_path):
    """--ema DECAY picks one of the recipe's EMAs (0.9 and 0.99 here) in sample, eval and export; the files
    say which, and a decay the run did not keep is one line naming the kept ones."""
    import json

    import mfkit.export
    from mfkit.train.checkpoint import latest_checkpoint, load_checkpoint

    checkpoint = load_checkpoint(latest_checkpoint(meanflow_run / "checkpoints"))
    first = run("sample", "--run", meanflow_run, "--n", "20", "--seed", "9")
    chosen = run("sample", "--run", meanflow_run, "--n", "20", "--seed", "9", "--ema", "0.99")
    assert first.exit_code == chosen.exit_code == 0, chosen.output
    default_folder = meanflow_run / "samples" / "step-0000010-1step-n20-seed9-ema"
    chosen_folder = meanflow_run / "samples" / "step-0000010-1step-n20-seed9-ema0.99"
    assert str(chosen_folder / "samples.npy") in chosen.output
    assert not np.array_equal(np.load(default_folder / "samples.npy"), np.load(chosen_folder / "samples.npy"))
    again = run("sample", "--run", meanflow_run, "--n", "20", "--seed", "9", "--ema", "0.9")
    assert np.array_equal(np.load(default_folder / "samples.npy"),
                          np.load(chosen_folder.with_name(default_folder.name + "0.9") / "samples.npy")), again.output

    figures = tmp_path / "eval.json"
    result = run("eval", "--run", meanflow_run, "--ema", "0.99", "--steps", "1", "--n", "50", "--reference", "100",
                 "--json", figures)
    assert result.exit_code == 0, result.output
    assert json.loads(figures.read_text())["info"]["weights"] == "ema-0.99"

    result = run("export", meanflow_run, "--ema", "0.99")
    assert result.exit_code == 0, result.output
    path = meanflow_run / "exports" / "tiny-step-0000010-ema0.99.safetensors"
    exported = mfkit.export.load_exported(path)
    assert exported.weights == "ema-0.99"
    for key, value in exported.model.state_dict().items():
        assert torch.equal(value, checkpoint.ema["0.99"][key]), key

    for command in (["sample", "--run", meanflow_run], ["eval", "--run", meanflow_run, "--n", "50"],
                    ["export", meanflow_run]):
        missing = run(*command, "--ema", "0.5")
        assert missing.exit_code == 2 and "Traceback" not in missing.output, missing.output
        assert "no EMA with decay 0.5; it keeps 0.9, 0.99" in " ".join(missing.output.split())
    both = run("export", meanflow_run, "--raw", "--ema", "0.9")
    assert both.exit_code == 2 and "not both" in both.output


def _conditional_run(tmp_path, name, guidance):
    data = small_recipe(tmp_path, name, steps=10, checkpoint_every=10)
    data["modality"] = {"name": "toy2d", "params": {"distribution": "eight_gaussians", "conditional": True}}
    data["objective"] = {"kind": "flow_matching", **({"guidance": guidance} if guidance else {})}
    assert run("train", write_recipe(tmp_path / f"{name}.yaml", data)).exit_code == 0
    return tmp_path / "runs" / name


def test_guidance_at_sampling_time_needs_a_run_that_learned_the_null_condition(meanflow_run, tmp_path):
    """--guidance S draws with u_null + S (u_c - u_null) (sample and eval); refused in one line, before any folder
    is made, for an unconditional modality, a run trained without class dropout, a run that folds guidance into
    training, and --cond null."""
    import json

    dropout = _conditional_run(tmp_path, "dropout", {"w_cfg": 1.0, "kappa": 0.0, "class_dropout": 0.1})
    plain = _conditional_run(tmp_path, "plain", None)
    folded = _conditional_run(tmp_path, "folded", {"w_cfg": 1.0, "kappa": 0.5, "class_dropout": 0.1})
    for run_dir, extra, message in ((meanflow_run, (), "offers no conditions"),
                                    (plain, (), "trained without class dropout"),
                                    (folded, (), "folds guidance into training (w_cfg 1, kappa 0.5: scale 2"),
                                    (dropout, ("--cond", "null"), "nothing to guide towards")):
        before = sorted((run_dir / "samples").glob("*")) if (run_dir / "samples").exists() else []
        for command in (("sample", "--n", "20"), ("eval", "--euler", "2", "--n", "20", "--reference", "40")):
            result = run(*command, *extra, "--run", run_dir, "--guidance", "1.5")
            assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
            assert "Traceback" not in result.output
        after = sorted((run_dir / "samples").glob("*")) if (run_dir / "samples").exists() else []
        assert before == after
    guided = run("sample", "--run", dropout, "--n", "20", "--steps", "2", "--guidance", "1.5")
    unguided = run("sample", "--run", dropout, "--n", "20", "--steps", "2")
    assert guided.exit_code == unguided.exit_code == 0, guided.output
    folder = dropout / "samples" / "step-0000010-2step-n20-seed0-ema-cfg1.5"
    assert str(folder / "samples.npy") in guided.output
    assert not np.allclose(np.load(folder / "samples.npy"),
                           np.load(folder.with_name("step-0000010-2step-n20-seed0-ema") / "samples.npy"))
    figures = {}
    for scale in ("1", "1.5"):
        figures[scale] = tmp_path / f"eval-{scale}.json"
        result = run("eval", "--run", dropout, "--euler", "2", "--n", "20", "--reference", "40", "--guidance", scale,
                     "--json", figures[scale])
        assert result.exit_code == 0, result.output
        assert ("guidance 1.5 at sampling time" in result.output) == (scale == "1.5")
    guided, unguided = (json.loads(figures[scale].read_text()) for scale in ("1.5", "1"))
    assert guided["info"]["guidance"] == 1.5 and "guidance" not in unguided["info"]
    assert guided["rows"][0]["metrics"] != unguided["rows"][0]["metrics"]  # the samples were guided
