"""What `mfkit train` reports and writes: the unweighted MSE first, grad_norm always, bf16 on a CPU, file modes."""
import json
import os

from mfkit.folders import file_mode
from tests.cli.util import run
from tests.helpers import small_recipe, write_recipe


def test_progress_metrics_precision_and_permissions(tmp_path):
    path = write_recipe(tmp_path / "r.yaml", small_recipe(tmp_path, "r", steps=10, log_every=5, checkpoint_every=5,
                                                          grad_clip=None, precision="bf16"))
    result = run("train", path)
    assert result.exit_code == 0, result.output
    assert ("warning: train.precision is bf16, but this run is on the CPU: it trains in fp32 (bf16 autocast is used "
            "on CUDA only)") in result.output
    line = next(line for line in result.output.splitlines() if line.startswith("step 5 "))
    assert line.index("mse") < line.index("weighted loss")
    run_dir = tmp_path / "runs" / "r"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [5, 10] and all(r["grad_norm"] > 0 for r in records)
    for checkpoint in (run_dir / "checkpoints").glob("step-*.safetensors"):
        assert os.stat(checkpoint).st_mode & 0o777 == file_mode() == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
