"""The training loop: recipe in, run folder out.

Run folder ``<output_dir>/<name>/``: ``recipe.yaml`` (resolved), ``metrics.jsonl``, ``checkpoints/``
(with ``latest``), ``previews/step-NNNNNNN/`` (the modality's own files). The same code runs as one
process or as several under torchrun (DistributedDataParallel; gloo on CPU, NCCL on CUDA).
"""
from __future__ import annotations

import copy
import math
import shutil
import signal
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from rich.console import Console
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

import mfkit
from mfkit.recipe.build import build_backbone, build_modality, build_objective
from mfkit.recipe.loading import apply_overrides, parse_recipe, recipe_to_yaml
from mfkit.recipe.schema import Recipe
from mfkit.train import distributed as dist_utils
from mfkit.train.checkpoint import Checkpoint, CheckpointError, checkpoint_step, latest_checkpoint, load_checkpoint, save_checkpoint
from mfkit.train.data import StepBatchSampler
from mfkit.train.ema import EMA, decay_key
from mfkit.train.logging import MetricsLog, TrainingProgress


class RunFolderError(RuntimeError):
    """The run folder is in a state the command cannot use (exists without --resume, nothing to resume)."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    checkpoint: Path | None
    interrupted: bool = False


def resolve_device(setting: str, group: dist_utils.ProcessGroup) -> torch.device:
    if setting == "cuda" and not torch.cuda.is_available():
        raise RunFolderError("train.device is 'cuda' but no CUDA device is available; use device=auto or cpu")
    if setting == "cuda" or (setting == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", group.local_rank)
    return torch.device("cpu")


def split_batch(batch) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(batch, (list, tuple)):
        return batch[0], batch[1]
    return batch, None


def _rng_state(generator: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    state = {"torch_cpu": torch.get_rng_state(), "generator": generator.get_state()}
    if device.type == "cuda":
        state["torch_cuda"] = torch.cuda.get_rng_state(device)
    return state


def lr_factor(step: int, warmup: int, total: int, schedule: str) -> float:
    """Multiplier of the peak lr for the update at ``step`` (0-based): linear warm-up, then the schedule."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0 - progress


class Trainer:
    """Trains the recipe's backbone with its objective. ``fit()`` runs to ``train.steps`` or an interrupt."""

    def __init__(self, recipe: Recipe, *, resume: bool = False, overwrite: bool = False,
                 console: Console | None = None, progress: bool = True) -> None:
        self.recipe, self.console, self.show_progress = recipe, console or Console(stderr=True), progress
        self.group = dist_utils.init_from_environment("cuda" if recipe.train.device != "cpu" and torch.cuda.is_available() else "cpu")
        self.device = resolve_device(recipe.train.device, self.group)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.run_dir = Path(recipe.output_dir) / recipe.name
        self.checkpoints = self.run_dir / "checkpoints"
        self._prepare_run_dir(resume, overwrite)
        self._stop_requested = False

    # ------------------------------------------------------------------ set-up
    def _prepare_run_dir(self, resume: bool, overwrite: bool) -> None:
        existing = latest_checkpoint(self.checkpoints)
        if resume and existing is None:
            raise RunFolderError(f"--resume: no checkpoint in {self.checkpoints}; start without --resume")
        if not resume and self.run_dir.exists() and any(self.run_dir.iterdir()):
            if not overwrite:
                raise RunFolderError(
                    f"run folder {self.run_dir} already exists. Continue it with --resume, start over with "
                    f"--overwrite (deletes it), or pick another name (name=... on the command line)")
            if self.group.is_main:
                shutil.rmtree(self.run_dir)
        if self.group.distributed:
            torch.distributed.barrier()
        self.resume_from = existing if resume else None

    def _build(self) -> None:
        recipe, train = self.recipe, self.recipe.train
        torch.manual_seed(train.seed)
        self.modality = build_modality(recipe)
        self.dataset = self.modality.dataset("train")
        self.model = build_backbone(recipe, self.modality).to(self.device)
        self.preview_model = copy.deepcopy(self.model).eval()
        self.objective = build_objective(recipe.objective, self.modality.num_classes)
        optimizer_cls = torch.optim.AdamW if train.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = optimizer_cls(self.model.parameters(), lr=train.lr, betas=tuple(train.betas),
                                       weight_decay=train.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, train.warmup_steps, train.steps, train.lr_schedule))
        self.ema = EMA(self.model, train.ema_decays)
        self.generator = torch.Generator(self.device).manual_seed(train.seed + 1)
        self.step = 0
        if self.resume_from is not None:
            self._restore(load_checkpoint(self.resume_from))
        forward_model = self.model
        if train.compile:
            forward_model = torch.compile(forward_model)
        if self.group.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            forward_model = DistributedDataParallel(forward_model, device_ids=ids)
        self.train_model = forward_model

    def _restore(self, checkpoint: Checkpoint) -> None:
        try:
            self.model.load_state_dict(checkpoint.model)
        except RuntimeError as error:
            first = str(error).strip().splitlines()[0]
            raise CheckpointError(f"{self.resume_from} does not fit the model this recipe builds ({first}); "
                                  f"resume with the backbone settings the run was trained with") from None
        self.ema.load(checkpoint.ema)
        if checkpoint.optimizer is not None:
            self.optimizer.load_state_dict(checkpoint.optimizer)
        if checkpoint.scheduler is not None:
            self.scheduler.load_state_dict(checkpoint.scheduler)
        if "torch_cpu" in checkpoint.rng:
            torch.set_rng_state(checkpoint.rng["torch_cpu"])
        if "generator" in checkpoint.rng:
            self.generator.set_state(checkpoint.rng["generator"])
        if "torch_cuda" in checkpoint.rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(checkpoint.rng["torch_cuda"], self.device)
        self.step = checkpoint.step

    def _loader(self) -> DataLoader:
        train = self.recipe.train
        sampler = StepBatchSampler(len(self.dataset), train.batch_size, self.group.rank, self.group.world_size,
                                   train.seed, self.step, train.steps)
        return DataLoader(self.dataset, batch_sampler=sampler, num_workers=train.num_workers,
                          pin_memory=self.device.type == "cuda")

    # ------------------------------------------------------------------ saving
    def save(self) -> Path | None:
        """Write a checkpoint of the current step (main process), after checking processes agree."""
        dist_utils.assert_in_sync(self.model, self.group, self.device)
        path = None
        if self.group.is_main:
            checkpoint = Checkpoint(
                step=self.step, recipe_yaml=recipe_to_yaml(self.recipe), model=self.model.state_dict(),
                ema=dict(self.ema.shadows), optimizer=self.optimizer.state_dict(),
                scheduler=self.scheduler.state_dict(), rng=_rng_state(self.generator, self.device),
                extra={"mfkit_version": mfkit.__version__, "world_size": self.group.world_size},
            )
            path = save_checkpoint(self.checkpoints, checkpoint, self.recipe.train.keep_last)
        if self.group.distributed:
            torch.distributed.barrier()
        return path or latest_checkpoint(self.checkpoints)

    def preview(self) -> list[Path]:
        """Draw samples with the first EMA (one step) and save them with the modality's own writer."""
        if not self.group.is_main:
            return []
        train = self.recipe.train
        self.preview_model.load_state_dict(self.ema.state(train.ema_decays[0]))
        generator = torch.Generator(self.device).manual_seed(train.seed + 2)
        count = train.preview_count
        noise = torch.randn((count, *self.modality.sample_shape), device=self.device, generator=generator)
        cond = None
        if self.modality.num_classes:
            cond = torch.arange(count, device=self.device) % self.modality.num_classes
        sampler = mfkit.euler_sample if self.recipe.objective.kind == "flow_matching" else mfkit.sample
        samples = sampler(self.preview_model, noise, steps=self.recipe.sample.steps, cond=cond)
        return self.modality.save(samples.cpu(), self.run_dir / "previews" / f"step-{self.step:07d}",
                                  cond.cpu() if cond is not None else None)

    # ------------------------------------------------------------------ the loop
    def _request_stop(self, signum, frame) -> None:
        if self._stop_requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self._stop_requested = True
        self.console.print("[yellow]interrupt: finishing this step, saving a checkpoint (Ctrl-C again to abort)")

    def _autocast(self):
        if self.recipe.train.precision == "bf16" and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def _train_step(self, batch, last_saved: Path | None) -> tuple[dict[str, float], float | None]:
        """One optimisation step on this process's share of the global batch; returns metrics, grad norm."""
        train = self.recipe.train
        x, cond = split_batch(batch)
        x = x.to(self.device, non_blocking=True).float()
        cond = cond.to(self.device, non_blocking=True) if cond is not None else None
        share = train.batch_size // self.group.world_size
        draw = self.objective.draw((train.batch_size, *self.modality.sample_shape), device=self.device,
                                   generator=self.generator)[self.group.rank * share:(self.group.rank + 1) * share]
        with self._autocast():
            out = self.objective(self.train_model, x, cond, draw=draw)
        if dist_utils.any_true(not math.isfinite(out.loss.item()), self.group, self.device):
            where = f"the last good checkpoint is {last_saved}" if last_saved else "no checkpoint was saved yet"
            raise TrainingDiverged(f"the loss became non-finite at step {self.step + 1}; {where}. "
                                   f"Lower train.lr, raise train.warmup_steps or use precision=fp32")
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        grad_norm = None
        if train.grad_clip:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), train.grad_clip))
        self.optimizer.step()
        self.scheduler.step()
        self.ema.update(self.model)
        self.step += 1
        return out.metrics(), grad_norm

    def _log(self, log: MetricsLog | None, metrics: dict[str, float], grad_norm: float | None,
             speed: float) -> dict[str, float]:
        """Average the metrics over processes and write them (main process); returns the averages."""
        metrics = dist_utils.mean_over_processes(metrics, self.group, self.device)
        if log is not None:
            extra = {"lr": self.scheduler.get_last_lr()[0], "it_per_s": round(speed, 3)}
            if grad_norm is not None:
                extra["grad_norm"] = grad_norm
            log.write(self.step, {**metrics, **extra})
        return metrics

    def fit(self) -> TrainResult:
        """Train to ``train.steps`` (or until Ctrl-C), checkpointing and previewing on the way."""
        self._build()
        train = self.recipe.train
        if self.group.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "recipe.yaml").write_text(recipe_to_yaml(self.recipe))
        dist_utils.assert_in_sync(self.model, self.group, self.device)
        log = MetricsLog(self.run_dir) if self.group.is_main else None
        progress = TrainingProgress(train.steps, self.step, self.console, self.show_progress and self.group.is_main)
        previous = signal.signal(signal.SIGINT, self._request_stop)
        last_saved = latest_checkpoint(self.checkpoints)
        interrupted = False
        try:
            for batch in self._loader():
                metrics, grad_norm = self._train_step(batch, last_saved)
                log_now = self.step % train.log_every == 0 or self.step == train.steps
                if log_now:
                    metrics = self._log(log, metrics, grad_norm, progress.speed(self.step))
                progress.update(self.step, metrics["loss"], metrics["mse"], log_now)
                if self.step % train.checkpoint_every == 0 and self.step < train.steps:
                    last_saved = self.save()
                if train.preview_every and self.step % train.preview_every == 0 and self.step < train.steps:
                    self.preview()
                if dist_utils.any_true(self._stop_requested, self.group, self.device):
                    interrupted = True
                    break
        finally:
            signal.signal(signal.SIGINT, previous)
            progress.close()
            if log is not None:
                log.close()
        if last_saved is None or checkpoint_step(last_saved) != self.step:
            last_saved = self.save()
        if not interrupted:
            self.preview()
        return TrainResult(self.run_dir, self.step, last_saved, interrupted)


def recipe_from_checkpoint(checkpoint: Checkpoint, overrides=()) -> Recipe:
    """The recipe a checkpoint was trained with, optionally with key.path=value overrides."""
    data = yaml.safe_load(checkpoint.recipe_yaml)
    if overrides:
        data = apply_overrides(data, overrides)
    return parse_recipe(data, "recipe stored in the checkpoint")


def ema_weights(checkpoint: Checkpoint, use_ema: bool = True) -> dict[str, torch.Tensor]:
    """The weights to sample with: the first EMA of the recipe if kept and wanted, else the raw weights."""
    if use_ema and checkpoint.ema:
        recipe = recipe_from_checkpoint(checkpoint)
        key = decay_key(recipe.train.ema_decays[0]) if recipe.train.ema_decays else next(iter(checkpoint.ema))
        return checkpoint.ema.get(key) or next(iter(checkpoint.ema.values()))
    return checkpoint.model
