"""`mfkit validate`: every file given is checked and reported; any problem makes the exit code 2."""
from tests.cli.util import run
from tests.helpers import small_recipe, write_recipe


def test_validates_every_file_and_fails_if_any_fails(tmp_path):
    good = write_recipe(tmp_path / "good.yaml", small_recipe(tmp_path))
    also_good = write_recipe(tmp_path / "also.yaml", small_recipe(tmp_path, "also"))
    bad_data = small_recipe(tmp_path, "../bad")
    bad_data["train"]["lr"] = "fast"
    bad = write_recipe(tmp_path / "bad.yaml", bad_data)
    result = run("validate", good, bad, also_good)
    assert result.exit_code == 2, result.output
    assert f"ok: {good} is a valid recipe" in result.output and f"ok: {also_good} is a valid recipe" in result.output
    assert f"{bad}: 2 problem(s)" in result.output and "train.lr: Input should be a valid number" in result.output
    assert "name: '../bad' starts with '.'" in result.output
    assert "2 of 3 recipes are valid" in result.output and "Traceback" not in result.output
    result = run("validate", good, also_good, "train.steps=7", "--show")
    assert result.exit_code == 0 and result.output.count("steps: 7") == 2
    result = run("validate", good, tmp_path / "missing.yaml")
    assert result.exit_code == 2 and "no recipe file" in result.output
