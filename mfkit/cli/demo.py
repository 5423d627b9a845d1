"""The embedded demo recipe: MeanFlow on a 2-D checkerboard, small enough for a laptop CPU.

`recipes/toy2d.yaml` is the same recipe as a file (a test keeps the two identical).
"""
from __future__ import annotations

import yaml

DEMO_RECIPE_YAML = """\
# MeanFlow on a 2-D checkerboard: the demo recipe. One-step samples look like the checkerboard.
# Expects: any CPU (a laptop or 2 cores), about 2 minutes; no GPU needed.
# Departures from the ImageNet defaults, measured on this data: t ~ logit-normal(0, 1) (not -0.4),
# half the samples with r != t (not 25%), adaptive p = 0.5 (not 1), and a large batch: the MeanFlow
# target is noisy, and batch 1024 beat 3x more steps at batch 256.
name: toy2d
modality:
  name: toy2d
  params:
    distribution: checkerboard
backbone:
  name: mlp
  params:
    width: 256
    depth: 4
objective:
  kind: meanflow
  time_sampler: {kind: logit_normal, mean: 0.0, std: 1.0}
  r_neq_t_share: 0.5
  adaptive_p: 0.5
train:
  steps: 3000
  batch_size: 1024
  lr: 0.001
  lr_schedule: cosine
  grad_clip: null
  ema_decays: [0.995, 0.999]
  checkpoint_every: 1000
  log_every: 100
sample:
  steps: 1
  count: 4000
  batch_size: 4000
"""


def demo_recipe_data() -> dict:
    return yaml.safe_load(DEMO_RECIPE_YAML)
