"""Run under torchrun by test_distributed.py: train a recipe, then save this rank's weights."""
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from mfkit.recipe import load_recipe
from mfkit.train.trainer import Trainer

torch.set_num_threads(1)
recipe_path, out_dir = sys.argv[1], Path(sys.argv[2])
trainer = Trainer(load_recipe(recipe_path, sys.argv[3:]), progress=False)
trainer.fit()
rank = dist.get_rank() if dist.is_initialized() else 0
save_file({k: v.contiguous() for k, v in trainer.model.state_dict().items()}, str(out_dir / f"rank{rank}.safetensors"))
if dist.is_initialized():
    dist.destroy_process_group()
# Leave without the interpreter's teardown: on a busy CPU, gloo's threads sometimes abort the process while
# C++ static destructors run ("terminate called without an active exception", SIGABRT) after everything
# above has finished and the weights are on disk, which made this test flaky in CI.
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)
