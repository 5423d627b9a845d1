"""The recipe schema. Extra keys are forbidden everywhere; plugin parameters are validated by the
plugin's own pydantic model (see :mod:`mfkit.recipe.loading`). Names resolve only to registered
plugins and built-in choices, so no recipe can import or execute arbitrary code.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mfkit.core import presets


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PluginRef(Strict):
    """A registered plugin by name, with the parameters its own schema accepts."""

    name: str = Field(description="registered plugin name (see `mfkit plugins`)")
    package: str | None = Field(None, description="the package that registers it, when two packages register the "
                                                  "same name (null: the only one)")
    params: dict[str, Any] = Field(default_factory=dict, description="the plugin's parameters (defaults filled in "
                                                                     "when the recipe is resolved)")


class TimeDistribution(Strict):
    """A distribution over [0, 1]: logit-normal sigmoid(N(mean, std^2)) or uniform."""

    kind: Literal["logit_normal", "uniform"] = Field("logit_normal", description="distribution family")
    mean: float = Field(-0.4, description="logit-normal mean")
    std: float = Field(1.0, gt=0, description="logit-normal standard deviation")


class GuidanceSettings(Strict):
    """Classifier-free guidance folded into training (needs a conditional modality)."""

    w_cfg: float = Field(1.0, description="weight of the conditional velocity v")
    kappa: float = Field(0.5, lt=1, description="weight of the network's conditional prediction")
    t_min: float = Field(0.0, ge=0, le=1, description="guidance window start")
    t_max: float = Field(1.0, ge=0, le=1, description="guidance window end")
    class_dropout: float = Field(0.1, ge=0, lt=1, description="share of labels dropped to the null label")


class AlphaCurriculumSettings(Strict):
    """alpha-Flow's curriculum: trajectory flow matching (alpha = 1), then alpha falls to 0 (MeanFlow)."""

    flow_matching_until: float = Field(0.25, ge=0, le=1, description="share of training steps with alpha = 1")
    meanflow_from: float = Field(0.75, ge=0, le=1, description="share of training steps after which alpha = 0 "
                                                               "(MeanFlow with the exact JVP)")
    shape: Literal["cosine", "linear"] = Field("cosine", description="how alpha falls from 1 to 0 in between")

    @model_validator(mode="after")
    def _ordered(self) -> "AlphaCurriculumSettings":
        if self.flow_matching_until > self.meanflow_from:
            raise ValueError(f"flow_matching_until ({self.flow_matching_until}) must not exceed meanflow_from "
                             f"({self.meanflow_from})")
        return self


class IntervalWeightingSettings(Strict):
    """Progressive interval weighting: loss terms times exp(-lambda (t - r)), lambda falling from strength to 0."""

    strength: float = Field(4.0, ge=0, le=1000, allow_inf_nan=False,
                            description="lambda at the first step (exp(-4) = 0.018 for the interval (0, 1))")
    balanced_from: float = Field(0.5, gt=0, le=1, description="share of training steps from which lambda = 0 "
                                                               "(every interval weighs 1)")
    shape: Literal["cosine", "linear"] = Field("cosine", description="how lambda falls from strength to 0")


#: Objective fields that only MeanFlow uses; a flow-matching recipe must leave them at their defaults.
MEANFLOW_ONLY = ("r_sampler", "r_neq_t_share", "time_pair_order", "full_jump_share", "jvp_backend", "fd_step",
                 "jvp_precision", "jvp_guard", "jvp_rows", "formulation", "alpha_curriculum", "interval_weighting")


class ObjectiveSettings(Strict):
    """The training objective and every knob of the paper (defaults: ImageNet settings)."""

    kind: Literal["meanflow", "flow_matching"] = Field("meanflow", description="objective")
    preset: Literal["imagenet", "cifar10", "small"] | None = Field(
        None, description="start from a preset: the paper's imagenet or cifar10, or mfkit's small (small data, "
                          "CPU budgets; docs/concepts.md) - its objective fields here, its optimisation settings "
                          "in train; fields set explicitly win")
    time_sampler: TimeDistribution = Field(default_factory=TimeDistribution, description="distribution of t (and r)")
    r_sampler: TimeDistribution | None = Field(None, description="separate distribution of r (CIFAR 'v1'); null: same as t")
    r_neq_t_share: float = Field(0.25, ge=0, le=1, description="share of samples with r != t, chosen per sample")
    time_pair_order: Literal["sort", "clip"] = Field(
        "sort", description="sort: t = max, r = min of the two draws (the paper); clip: keep t, r = min(t, r) "
                            "after choosing r = t (the official CIFAR-10 'v1'; gives fewer r != t than r_neq_t_share)")
    full_jump_share: float = Field(
        0.0, ge=0, le=1, description="share of samples trained on (r, t) = (0, 1), the interval one-step sampling "
                                     "evaluates, drawn after the pairs above (0: none)")
    adaptive_p: float = Field(1.0, ge=0, description="adaptive loss weight power p (0: plain L2; kind flow_matching: 0 unless set or preset)")
    adaptive_c: float = Field(1e-2, gt=0, description="adaptive loss weight constant c (per-sample squared norm)")
    jvp_backend: Literal["forward_ad", "forward_ad_plain", "nograd", "finite_difference"] = Field(
        "forward_ad", description="how d/dt u is computed")
    fd_step: float = Field(1e-3, gt=0, description="step h of the finite-difference backend")
    jvp_precision: Literal["fp32", "tf32", "autocast"] = Field(
        "fp32", description="fp32: under bf16 autocast the JVP, the guidance passes, the target and the loss "
                            "reduction run in float32 (autocast off; on CUDA with exact float32 products, TF32 off); "
                            "only the forward that carries the gradient runs in bf16 (one extra no-grad forward). "
                            "tf32: the same with those passes' float32 matmuls and convolutions on CUDA's TF32 "
                            "tensor cores (about 4e-4 relative error, faster on a GPU; same as fp32 on a CPU). "
                            "autocast: the JVP runs in bf16 too (one pass, about 1e-2 relative error); no effect "
                            "without autocast. The finite_difference backend always runs as fp32 (its division by "
                            "h would magnify bf16 or TF32 rounding)")
    jvp_guard: int = Field(3, ge=0, description="stop if the JVP is all zero or not finite on any of the first N "
                                                "steps with r != t (0: off)")
    jvp_rows: Literal["auto", "all", "r_neq_t", "fastest"] = Field(
        "auto", description="which rows get a JVP (same loss and gradients up to float rounding). auto: only the "
                            "rows with r != t (the others have target v and get a plain forward), unless the "
                            "backbone couples samples or draws random numbers (batch norm in training, dropout, a "
                            "layer that updates buffers: detected, see docs/concepts.md), then every row; all: "
                            "every row; r_neq_t: only r != t rows, unchecked (exact only without coupling or "
                            "randomness); fastest: the trainer times auto and all on a real batch before the "
                            "first step and takes the faster (stored in checkpoints; two fresh runs may choose "
                            "differently)")
    guidance: GuidanceSettings | None = Field(None, description="classifier-free guidance in training")
    coupling: Literal["independent", "ot"] = Field(
        "independent", description="independent: noise and data paired as drawn; ot: minibatch optimal transport, "
                                   "an exact assignment that pairs each data row with nearby noise, class by class "
                                   "(straighter paths; also with kind flow_matching, as OT-CFM; cost in "
                                   "docs/concepts.md)")
    coupling_block: int | None = Field(
        None, ge=2, description="coupling ot: at most this many rows per exact assignment (each group cut into "
                                "near-equal blocks); bounds the cost at any batch size (null: one assignment per "
                                "group, O(B^3))")
    set_coupling: Literal["independent", "ot"] = Field(
        "independent", description="for modalities whose samples are sets (they declare a set axis, e.g. point "
                                   "clouds): ot reorders each sample's elements to meet the noise elements by an "
                                   "exact assignment (straighter paths per element; a set reordered is the same "
                                   "item); 3-10 ms per 256-element sample on a CPU; also with kind "
                                   "flow_matching")
    formulation: Literal["meanflow", "imf"] = Field(
        "meanflow", description="meanflow: the JVP along (v, 0, 1); imf: improved MeanFlow, the JVP along the "
                                "network's own velocity u(z_t, t, t) (one extra no-grad forward of the r != t rows)")
    alpha_curriculum: AlphaCurriculumSettings | None = Field(
        None, description="alpha-Flow curriculum from flow matching to MeanFlow over training (null: MeanFlow "
                          "from the first step)")
    interval_weighting: IntervalWeightingSettings | None = Field(
        None, description="progressive interval weighting (short intervals first; docs/concepts.md; null: every "
                          "interval weighs the same throughout)")

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        """Fill the fields a recipe leaves unset from its preset, so the resolved recipe holds the values."""
        if not isinstance(data, dict):
            return data
        fields: dict[str, Any] = {}
        if data.get("kind") == "flow_matching":
            fields["adaptive_p"] = 0.0  # plain L2 unless set: written into the resolved recipe
        if data.get("preset") in presets.OBJECTIVE:
            fields.update(presets.recipe_objective_fields(data["preset"]))
            if data.get("kind") == "flow_matching":
                fields = {k: v for k, v in fields.items() if k not in MEANFLOW_ONLY}
        return {**fields, **data}

    @model_validator(mode="after")
    def _flow_matching_takes_no_meanflow_fields(self) -> "ObjectiveSettings":
        if self.kind == "flow_matching":
            defaults = ObjectiveSettings()
            changed = [name for name in MEANFLOW_ONLY if getattr(self, name) != getattr(defaults, name)]
            if changed:
                raise ValueError(f"kind flow_matching computes no JVP and uses r = t; remove {', '.join(changed)} "
                                 f"(or use kind: meanflow)")
        return self


class TrainSettings(Strict):
    """Optimisation and run mechanics."""

    steps: int = Field(2000, gt=0, description="optimizer steps")
    batch_size: int = Field(256, gt=0, description="global batch size (split across processes)")
    optimizer: Literal["adamw", "adam"] = Field("adamw", description="optimizer")
    lr: float = Field(1e-3, gt=0, description="peak learning rate")
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam betas")
    weight_decay: float = Field(0.0, ge=0, description="decoupled weight decay (adamw)")
    warmup_steps: int = Field(0, ge=0, description="linear learning-rate warm-up steps")
    lr_schedule: Literal["constant", "cosine", "linear"] = Field(
        "constant", description="after warm-up: keep lr, or decay it to 0 at the last step (cosine or linear)")
    grad_clip: float | None = Field(1.0, gt=0, description="clip the global gradient norm (null: off)")
    ema_decays: list[float] = Field(default_factory=lambda: [0.999], description="EMA decays kept (first: sampling default)")
    ema_warmup: bool = Field(False, description="EMA warm-up: decay min(d, (1 + n) / (10 + n)) at update n, so a "
                                                "short run's average forgets the initial weights (without it, "
                                                "0.999 keeps 13.5% of them after 2,000 steps)")
    seed: int = Field(0, description="seed of weights, data order, noise and times")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when available")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="bf16: autocast on CUDA for the network's forward and backward; the MeanFlow JVP, "
                            "target, guidance passes and loss stay float32 (see objective.jvp_precision)")
    compile: bool = Field(False, description="torch.compile the backbone")
    num_workers: int = Field(0, ge=0, description="data loader worker processes")
    threads: int | None = Field(None, gt=0, description="CPU threads of PyTorch in each process (null: PyTorch's "
                                                       "default, one per core; 1 on a machine shared with other jobs)")
    log_every: int = Field(50, gt=0, description="steps between metric log lines")
    checkpoint_every: int = Field(500, gt=0, description="steps between checkpoints")
    keep_last: int = Field(3, gt=0, description="checkpoints kept")
    preview_every: int = Field(0, ge=0, description="steps between sample previews (0: only at the end)")
    preview_count: int = Field(512, gt=0, description="samples per preview")
    eval_every: int = Field(0, ge=0, description="steps between evaluations of the first EMA with the modality's "
                                                 "evaluator, as `mfkit eval` scores it (0: off); figures go to "
                                                 "metrics.jsonl and the progress output")
    eval_count: int = Field(2000, gt=0, description="samples per evaluated step count")
    eval_steps: list[int] = Field(default_factory=lambda: [1], description="MeanFlow step counts to evaluate (a "
                                                                           "flow-matching run: Euler step counts)")
    eval_euler: list[int] = Field(default_factory=list, description="Euler step counts to evaluate as well")
    eval_evaluator: str | None = Field(None, description="evaluator name (null: the one installed for the modality)")
    eval_params: dict[str, Any] = Field(default_factory=dict, description="the evaluator's parameters (see `mfkit "
                                                                          "plugins --params NAME`)")
    keep_best: str | None = Field(
        None, description="keep checkpoints/best.safetensors, the checkpoint that scored best on this figure: "
                          "eval/mf1/fd (MeanFlow, 1 step), eval/euler8/fd, or a bare metric name (the first "
                          "evaluated step count); needs eval_every")

    @model_validator(mode="after")
    def _check_decays(self) -> "TrainSettings":
        for decay in self.ema_decays:
            if not 0 < decay < 1:
                raise ValueError(f"every EMA decay must lie in (0, 1), got {decay}")
        return self

    @model_validator(mode="after")
    def _check_evaluation(self) -> "TrainSettings":
        counts = [*self.eval_steps, *self.eval_euler]
        if any(count < 1 for count in counts):
            raise ValueError(f"eval_steps and eval_euler must be at least 1, got {counts}")
        if self.eval_every and not counts:
            raise ValueError("eval_every is set but eval_steps and eval_euler are both empty: give a step count")
        if self.keep_best is not None and not self.eval_every:
            raise ValueError("keep_best needs evaluations during training: set eval_every (e.g. 500) too")
        return self


class SampleSettings(Strict):
    """Defaults of `mfkit sample` for runs of this recipe."""

    steps: int = Field(1, gt=0, description="network calls per sample")
    count: int = Field(1000, gt=0, description="samples to draw")
    batch_size: int = Field(1000, gt=0, description="samples per network call")


class Recipe(Strict):
    """A whole recipe: what to train (modality, backbone, objective) and how (train, sample, output)."""

    name: str = Field(description="run name; the run folder is <output_dir>/<name>")
    modality: PluginRef = Field(description="registered modality and its parameters")
    backbone: PluginRef = Field(description="registered backbone and its parameters")
    objective: ObjectiveSettings = Field(default_factory=ObjectiveSettings, description="training objective")
    train: TrainSettings = Field(default_factory=TrainSettings, description="optimisation and run mechanics")
    sample: SampleSettings = Field(default_factory=SampleSettings, description="sampling defaults")
    output_dir: str = Field("runs", description="folder that holds run folders")

    @model_validator(mode="before")
    @classmethod
    def _apply_preset_training(cls, data: Any) -> Any:
        """A preset also brings the paper's optimisation settings, wherever ``train`` leaves them unset."""
        if not isinstance(data, dict) or not isinstance(data.get("objective"), dict):
            return data
        preset = data["objective"].get("preset")
        if preset not in presets.TRAINING or not isinstance(data.get("train", {}), dict):
            return data
        return {**data, "train": {**presets.training_settings(preset), **(data.get("train") or {})}}
