"""The training loop: recipe in, run folder out.

Run folder ``<output_dir>/<name>/``: ``.mfkit-run`` (marker), ``recipe.yaml`` (resolved), ``metrics.jsonl``,
``checkpoints/`` (with ``latest``), ``previews/step-NNNNNNN/`` (the modality's own files), and while a
process writes it ``.mfkit-lock``. The same code runs as one process or as several under torchrun
(DistributedDataParallel; gloo on CPU, NCCL on CUDA); only the main process (rank 0) touches the folder.
"""
from __future__ import annotations

import copy
import math
import os
import shutil
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from rich.console import Console
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

import mfkit
from mfkit.core.conditions import move_condition
from mfkit.plugins.spec import Modality, save_samples
from mfkit.recipe.build import build_backbone, build_modality, build_objective_for, plugin_context
from mfkit.recipe.loading import recipe_to_yaml
from mfkit.recipe.schema import Recipe
from mfkit.train import distributed as dist_utils
from mfkit.train.checkpoint import (
    Checkpoint, CheckpointError, CheckpointSaveError, checkpoint_step, free_name, latest_checkpoint, list_checkpoints,
    load_checkpoint, load_weights, read_metadata, save_checkpoint, set_aside_after, set_aside_best,
    set_aside_previews, write_checkpoint,
)
from mfkit.train.data import StepBatchSampler
from mfkit.train.ema import EMA
from mfkit.train.evaluating import PeriodicEvaluation
from mfkit.train.lock import RunLock
from mfkit.train.logging import MetricsLog, TrainingProgress
from mfkit.train.preflight import first_batch, preflight
from mfkit.train.resume import (
    check_resume_recipe, checkpoint_recipe, kept_on_resume, saved_recipe, schedule_jump_warning,
)
from mfkit.train.row_plan import has_two_plans, time_row_plans
from mfkit.train.run_folder import RunFolderError, open_run_folder, run_dir_of
from mfkit.train.schedules import lr_factor
from mfkit.train.signals import GracefulStop, signal_label, write_to_descriptor
from mfkit.train.weights import ema_weights, recipe_from_checkpoint, select_weights

__all__ = ["RunFolderError", "TrainResult", "Trainer", "TrainingDiverged", "ema_weights", "lr_factor",
           "recipe_from_checkpoint", "select_weights"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    checkpoint: Path | None
    signal: int | None = None  # the signal that stopped the run early (SIGINT, SIGTERM), None if it finished
    started: bool = True  # False: the signal came during the set-up; nothing was trained or changed

    @property
    def interrupted(self) -> bool:
        return self.signal is not None


def resolve_device(setting: str, group: dist_utils.ProcessGroup) -> torch.device:
    if setting == "cuda" and not torch.cuda.is_available():
        raise RunFolderError("train.device is 'cuda' but no CUDA device is available; use device=auto or cpu")
    if setting == "cuda" or (setting == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", group.local_rank)
    return torch.device("cpu")


def _rng_state(generator: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    state = {"torch_cpu": torch.get_rng_state(), "generator": generator.get_state()}
    if device.type == "cuda":
        state["torch_cuda"] = torch.cuda.get_rng_state(device)
    return state


def busy_cores() -> float | None:
    """The 1-minute load average (None where the system does not report one)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def gradient_norm(parameters) -> torch.Tensor:
    """The global L2 norm of the gradients (what clipping would measure), without changing them."""
    norms = [torch.linalg.vector_norm(p.grad.detach()) for p in parameters if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())


class Trainer:
    """Trains the recipe's backbone with its objective. ``fit()`` runs to ``train.steps`` or a stop signal.

    ``resume``: continue from the latest checkpoint (or ``resume_from``, a checkpoint file); the recipe
    may then differ from the run's saved one only in run-length settings unless ``allow_changes``.
    ``overwrite``: clear the run folder first (only a folder mfkit created). The main process holds the
    run folder's lock from the start of ``fit()`` to its end.
    """

    def __init__(self, recipe: Recipe, *, resume: bool = False, overwrite: bool = False,
                 resume_from: Path | str | None = None, allow_changes: bool = False,
                 console: Console | None = None, progress: bool = True) -> None:
        resume = resume or resume_from is not None
        if resume and overwrite:
            raise RunFolderError("--resume and --overwrite exclude each other: continue the run, or start it over")
        self.recipe, self.console, self.show_progress = recipe, console or Console(stderr=True), progress
        self.run_dir = run_dir_of(recipe.output_dir, recipe.name)
        self.checkpoints = self.run_dir / "checkpoints"
        self.resume, self.overwrite, self.allow_changes = resume, overwrite, allow_changes
        self.explicit_checkpoint = Path(resume_from) if resume_from is not None else None
        self.resume_from: Path | None = None
        self._resumed_step = 0  # the checkpoint step a resume starts from (set when the run folder opens)
        self._best_restarted = False  # the resumed best record was measured otherwise and starts again
        self.lock: RunLock | None = None
        self.group = dist_utils.init_from_environment("cuda" if recipe.train.device != "cpu" and torch.cuda.is_available() else "cpu")
        self.device = resolve_device(recipe.train.device, self.group)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self._stop = GracefulStop(self._on_signal)
        self._pending_notice: str | None = None
        self._training = False  # set once the set-up is done and the loop may start
        self._row_plan_reasons: set[str] = set()
        self.evaluation: PeriodicEvaluation | None = None

    def _say(self, message: str, style: str | None = None) -> None:
        """Print a message (main process only), taken literally (paths and values may hold brackets)."""
        if self.group.is_main:
            self.console.print(message, style=style, markup=False, highlight=False)

    def _warn(self, message: str) -> None:
        self._say(f"warning: {message}", style="yellow")

    def _tell_row_plan(self) -> None:
        """Say once per reason when ``jvp_rows: auto`` gave every row a JVP (slower, equally exact)."""
        reason = getattr(self.objective, "jvp_rows_reason", None)
        if reason is not None and reason not in self._row_plan_reasons:
            self._row_plan_reasons.add(reason)
            self._say(f"jvp_rows auto: this step gives every row a JVP, not only the r != t rows: {reason}")

    # ------------------------------------------------------------------ the run folder
    def _checkpoint_to_resume(self) -> Path:
        if self.explicit_checkpoint is not None:
            return self.explicit_checkpoint
        found = latest_checkpoint(self.checkpoints)
        if found is None:
            raise RunFolderError(f"--resume: no checkpoint in {self.checkpoints} yet; start the run over with "
                                 f"--overwrite")
        return found

    def _damaged(self, error: CheckpointError, path: Path) -> CheckpointError:
        """The error of an unreadable resume checkpoint, with the command that resumes from the one before."""
        earlier = [p for p in list_checkpoints(self.checkpoints) if p != path]
        if not earlier or "cannot read" not in str(error):
            return error
        return CheckpointError(f"{error}. To resume from the previous one: mfkit train {self.run_dir} --resume "
                               f"--from {earlier[-1]}")

    def _open_as_main(self) -> None:
        mode = "resume" if self.resume else "overwrite" if self.overwrite else "new"
        self.lock = open_run_folder(self.run_dir, mode)
        if self.lock.took_over is not None:
            self._say(f"taking over the stale lock of {self.lock.took_over.describe()}, which no longer runs")
        if self.resume:
            path = self._checkpoint_to_resume()
            try:
                metadata = read_metadata(path)
            except CheckpointError as error:
                raise self._damaged(error, path) from None
            trained_with = checkpoint_recipe(metadata.get("recipe"))  # what this checkpoint was trained with
            # the latest checkpoint goes on with the run's recipe.yaml (written once a resume is set up, so it
            # holds changes an earlier resume accepted); an earlier one (--from) with the recipe it was saved under
            saved = trained_with if self.explicit_checkpoint is not None else None
            if saved is None:
                try:
                    saved = saved_recipe(self.run_dir)
                except RunFolderError as error:
                    if trained_with is not None:
                        saved = trained_with
                    elif not self.allow_changes:
                        raise
                    else:
                        self._warn(f"{error}; resuming with the recipe given (--allow-changes)")
                        saved = self.recipe
            changes = check_resume_recipe(saved, self.recipe, self.allow_changes)
            step = int(metadata["step"])
            if step > self.recipe.train.steps:
                raise RunFolderError(f"--resume: {path.name} is at step {step}, past train.steps="
                                     f"{self.recipe.train.steps}, so there is nothing to train (a run does not "
                                     f"go back); raise train.steps to train on, or sample the run as it is "
                                     f"(mfkit sample --run {self.run_dir})")
            if changes:
                self._say("resuming with changes: " + "; ".join(str(c) for c in changes))
                for warning in kept_on_resume(changes):
                    self._warn(warning)
            jumps = schedule_jump_warning(trained_with or saved, self.recipe, step)
            if jumps:
                self._warn(jumps)
            self._resumed_step = step
        else:
            (self.run_dir / "recipe.yaml").write_text(recipe_to_yaml(self.recipe))

    def _on_main(self, action, failed: str, cleanup=None) -> None:
        """Run ``action`` on the main process; every process learns whether it worked, and all raise if not
        (after ``cleanup``): the main process its error, the others a RunFolderError saying what ``failed``."""
        failure: Exception | None = None
        if self.group.is_main:
            try:
                action()
            except Exception as error:  # noqa: BLE001 - re-raised below, after the other processes know
                failure = error
        if dist_utils.any_true(failure is not None, self.group, self.device):
            if cleanup is not None:
                cleanup()
            if failure is not None:
                raise failure
            raise RunFolderError(f"the main process (rank 0) could not {failed}; see its message")

    def _settle_resume(self) -> None:
        """After a resumed run is set up (main process): record its recipe in ``<run>/recipe.yaml`` and, when
        resuming from an earlier checkpoint, set the later ones (previews, a later best) aside; set aside a best
        checkpoint whose record no longer compares. Done only now, so a resume whose set-up fails leaves the
        run folder as it was."""
        if not self.resume:
            return
        if self.explicit_checkpoint is not None:
            moved = set_aside_after(self.checkpoints, self._resumed_step)
            if moved:
                self._say(f"set aside {len(moved)} later checkpoint(s) in {moved[0].parent} (kept, not deleted)")
            previews = set_aside_previews(self.run_dir / "previews", self._resumed_step)
            if previews:
                self._say(f"set aside {len(previews)} later preview(s) in {previews[0].parent} (kept, not deleted)")
            self._restore_best_file()
        if self._best_restarted:
            moved_best = set_aside_best(self.checkpoints)
            if moved_best is not None:
                self._say(f"set aside the earlier best checkpoint as {moved_best} (kept, not deleted)")
        (self.run_dir / "recipe.yaml").write_text(recipe_to_yaml(self.recipe))

    def _restore_best_file(self) -> None:
        """After --from: when the best record (from the resumed checkpoint) names a step whose best.safetensors
        was set aside with the abandoned attempt, put that step's checkpoint back as best.safetensors, or,
        when it is no longer kept, start the record again (and say so)."""
        best = self.evaluation.best if self.evaluation is not None else None
        target = self.checkpoints / "best.safetensors"
        if best is None or best.best_step is None or target.is_file():
            return
        source = self.checkpoints / f"step-{best.best_step:07d}.safetensors"
        if not source.is_file() and self.resume_from is not None and checkpoint_step(self.resume_from) == best.best_step:
            source = self.resume_from
        if source.is_file():
            shutil.copyfile(source, target)
            self._say(f"best.safetensors is again the step-{best.best_step} checkpoint, the best before the "
                      f"resumed step")
        else:
            self._warn(f"the best checkpoint so far (step {best.best_step}) is no longer kept (train.keep_last), so "
                       f"the best record starts again at the next evaluation")
            best.best, best.best_step = None, None

    def _open_run_folder(self) -> None:
        """Main process: check, lock and prepare the run folder; every process learns whether that worked."""
        self._on_main(self._open_as_main, "open the run folder", self._release)
        if self.resume:
            self.resume_from = self._checkpoint_to_resume()

    def _release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def _stopped_during_set_up(self, signum: int) -> TrainResult:
        """A stop signal arrived while setting up: train nothing, leave a resumed run folder as it was and
        remove what a new run wrote (as after a failed set-up)."""
        self._say_pending_notice()
        self._release()
        self._discard_if_unstarted()
        return TrainResult(self.run_dir, self.step, self.resume_from, signum, started=False)

    def _discard_if_unstarted(self) -> None:
        """After a failure before the first step of a new run: remove what this run wrote (marker, recipe,
        modality state), so the same command can simply be run again. Never anything else."""
        if self.resume or not self.group.is_main or list_checkpoints(self.checkpoints):
            return
        ours = {".mfkit-run", "recipe.yaml", "modality_state.safetensors", ".mfkit-lock"}
        for name in ours:
            (self.run_dir / name).unlink(missing_ok=True)
        for folder in (self.checkpoints, self.run_dir):
            try:
                folder.rmdir()  # only if empty
            except OSError:
                pass

    # ------------------------------------------------------------------ set-up
    def _build(self) -> None:
        recipe, train = self.recipe, self.recipe.train
        self._set_threads()
        torch.manual_seed(train.seed)
        checkpoint = None
        if self.resume_from is not None:
            try:
                checkpoint = load_checkpoint(self.resume_from)
            except CheckpointError as error:
                raise self._damaged(error, self.resume_from) from None
        context = plugin_context(recipe, device=self.device, run_dir=self.run_dir, rank=self.group.rank,
                                 world_size=self.group.world_size, purpose="train")
        self.modality = build_modality(recipe, context=context)
        self.dataset = self._prepare_data(checkpoint)
        self.model = build_backbone(recipe, self.modality, context=context).to(self.device)
        self.preview_model = copy.deepcopy(self.model).eval()
        self.objective = build_objective_for(recipe, self.modality)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            preflight(self.modality, self.dataset, self.model, copy.deepcopy(self.objective),  # randomness untouched
                      modality_name=recipe.modality.name, backbone_name=recipe.backbone.name, device=self.device)
        optimizer_cls = torch.optim.AdamW if train.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = optimizer_cls(self.model.parameters(), lr=train.lr, betas=tuple(train.betas),
                                       weight_decay=train.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, train.warmup_steps, train.steps, train.lr_schedule))
        self.ema = EMA(self.model, train.ema_decays, warmup=train.ema_warmup)
        self.generator = torch.Generator(self.device).manual_seed(train.seed + 1)
        self.step, self.last_lr = 0, train.lr
        if checkpoint is not None:
            self._restore(checkpoint)
        self.row_plan = self._choose_row_plan(checkpoint)
        self.evaluation = self._prepare_evaluation(context, checkpoint)
        if train.precision == "bf16" and self.device.type != "cuda":
            self._warn("train.precision is bf16, but this run is on the CPU: it trains in fp32 "
                       "(bf16 autocast is used on CUDA only)")
        forward_model = self.model
        if train.compile:
            forward_model = torch.compile(forward_model)
        if self.group.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            forward_model = DistributedDataParallel(forward_model, device_ids=ids)
        self.train_model = forward_model

    def _choose_row_plan(self, checkpoint: Checkpoint | None) -> str | None:
        """``objective.jvp_rows: fastest``: the row plan ("auto" or "all") this run uses, timed on a real batch
        before the first step (:mod:`mfkit.train.row_plan`) or, on resume, the one the checkpoint stored;
        None for any other setting."""
        if self.recipe.objective.jvp_rows != "fastest" or not has_two_plans(self.objective):
            return None
        if checkpoint is not None:
            plan = checkpoint.extra.get("jvp_rows", "auto")
        elif self.group.distributed or self.recipe.train.compile:
            plan = "auto"
            self._say("jvp_rows fastest: not timed under torch.distributed or train.compile; this run uses auto")
        else:
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                x, cond = first_batch(self.modality, self.dataset, self.recipe.train.batch_size)  # augmentation
                timing = time_row_plans(self.model, self.objective, x.to(self.device).float(),
                                        move_condition(cond, self.device), autocast=self._autocast)
            plan = timing.choice
            self._say(timing.describe())
        if plan == "all":
            self.objective = replace(self.objective, jvp_rows="all")
        return plan

    def _set_threads(self) -> None:
        """``train.threads``; on a busy CPU without it, say that fewer threads train faster."""
        threads = self.recipe.train.threads
        if threads is not None:
            torch.set_num_threads(threads)
            return
        if self.device.type != "cpu" or "OMP_NUM_THREADS" in os.environ or torch.get_num_threads() < 2:
            return
        busy, cores = busy_cores(), os.cpu_count() or 1
        if busy is not None and busy >= 1.0 and busy + torch.get_num_threads() > cores + 1.0:  # no noise warnings
            self._warn(f"the CPU is busy (load average {busy:.1f} on {cores} cores) and PyTorch uses "
                       f"{torch.get_num_threads()} threads: they compete with the other jobs, which can make each "
                       f"step several times slower. Set train.threads=1 (or OMP_NUM_THREADS=1) on a shared machine")

    def _prepare_evaluation(self, context, checkpoint: Checkpoint | None) -> PeriodicEvaluation | None:
        """``train.eval_every``: find and fit the evaluator once (main process; randomness untouched)."""
        if not self.recipe.train.eval_every or not self.group.is_main:
            return None
        self._say("preparing the evaluation during training (train.eval_every): loading real data, fitting "
                  "the evaluator")
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            evaluation = PeriodicEvaluation.from_recipe(self.recipe, self.modality, context)
        if checkpoint is not None:
            reason = evaluation.load(checkpoint.extra.get("best"))
            if reason:
                self._warn(reason)
                self._best_restarted = True  # its best.safetensors is set aside once the resume is set up
        return evaluation

    def _prepare_data(self, checkpoint: Checkpoint | None):
        """The training set, after the modality's state is fitted (new run) or loaded (resume).

        The state is fitted on every process and rank 0's copy is broadcast, so all processes agree;
        the main process also keeps it in the run folder (``modality_state.safetensors``).
        """
        modality = self.modality
        fits = type(modality).fit is not Modality.fit
        if checkpoint is not None and (checkpoint.modality_state or not fits):
            modality.load_state_dict(checkpoint.modality_state)
            return modality.dataset("train")
        dataset = modality.dataset("train")
        if not fits:
            return dataset
        modality.fit(dataset)
        state = modality.state_dict()
        if self.group.distributed and state:
            for tensor in state.values():
                moved = tensor.to(self.device)
                torch.distributed.broadcast(moved, src=0)
                tensor.copy_(moved.to(tensor.device))
            modality.load_state_dict(state)
        if self.group.is_main and state:
            from safetensors.torch import save_file

            save_file({k: v.detach().cpu().contiguous() for k, v in state.items()},
                      str(self.run_dir / "modality_state.safetensors"))
        return modality.dataset("train")

    def _restore(self, checkpoint: Checkpoint) -> None:
        load_weights(self.model, checkpoint.model, self.resume_from,
                     "resume with the backbone settings the run was trained with")
        fresh = self.ema.load(checkpoint.ema, self.model)
        if fresh:
            self._say(f"EMA decay(s) {', '.join(fresh)} not in the checkpoint: started from its step-"
                      f"{checkpoint.step} weights")
        if checkpoint.optimizer is not None:
            self.optimizer.load_state_dict(checkpoint.optimizer)
        if checkpoint.scheduler is not None:
            self.scheduler.load_state_dict(checkpoint.scheduler)
        self._apply_optimizer_settings(checkpoint.step)
        if "torch_cpu" in checkpoint.rng:
            torch.set_rng_state(checkpoint.rng["torch_cpu"])
        if "generator" in checkpoint.rng:
            self._restore_generator(checkpoint.rng["generator"], checkpoint.step)
        if "torch_cuda" in checkpoint.rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(checkpoint.rng["torch_cuda"], self.device)
        self.step = checkpoint.step

    def _restore_generator(self, saved: torch.Tensor, step: int) -> None:
        """Continue the generator of noise and times; a state from another device type (CPU and CUDA keep
        different generators) cannot be, so the stream restarts from train.seed and the step, with a warning."""
        if saved.numel() == self.generator.get_state().numel():
            self.generator.set_state(saved)
            return
        self.generator.manual_seed(self.recipe.train.seed + 1 + step)
        self._warn(f"the checkpoint's random state comes from another device type than this resume's "
                   f"({self.device.type}): weights, optimizer and EMA continue exactly, but the noise and times "
                   f"are drawn afresh from step {step} on, so the run will not repeat one that was not interrupted")

    def _apply_optimizer_settings(self, step: int) -> None:
        """Give the restored optimizer the recipe's settings for the update at ``step``.

        A checkpoint's optimizer and scheduler state carry the peak lr, betas, weight decay (and whether it is
        decoupled, AdamW's) they were saved with, and the lr of the old schedule at ``step``; a resume with
        another train.steps (or other settings under --allow-changes) must train with the recipe's from its
        first update. Unchanged settings give the very values the checkpoint held (lr = peak lr x
        lr_factor(step), as LambdaLR computes it).
        """
        train = self.recipe.train
        lr = train.lr * lr_factor(step, train.warmup_steps, train.steps, train.lr_schedule)
        settings = {key: value for key, value in self.optimizer.defaults.items() if key != "lr"}
        for group in self.optimizer.param_groups:  # every setting of the recipe's optimizer (AdamW's decoupled
            group.update(settings, initial_lr=train.lr, lr=lr)  # decay flag too), not the checkpoint's
        self.scheduler.base_lrs = [train.lr for _ in self.optimizer.param_groups]

    def _loader(self) -> DataLoader:
        train = self.recipe.train
        sampler = StepBatchSampler(len(self.dataset), train.batch_size, self.group.rank, self.group.world_size,
                                   train.seed, self.step, train.steps)
        collate = self.modality.collate()
        return DataLoader(self.dataset, batch_sampler=sampler, num_workers=train.num_workers,
                          pin_memory=self.device.type == "cuda", **({"collate_fn": collate} if collate else {}))

    # ------------------------------------------------------------------ saving
    def save(self) -> Path | None:
        """Write a checkpoint of the current step (main process), after checking processes agree.

        Returns the checkpoint's path, or None when it could not be written (the reason is in
        :attr:`save_failure`; the previous checkpoints are untouched).
        """
        dist_utils.assert_in_sync(self.model, self.group, self.device)
        path, self.save_failure = None, None
        if self.group.is_main:
            try:
                path = save_checkpoint(self.checkpoints, self._checkpoint_content(), self.recipe.train.keep_last)
            except CheckpointSaveError as error:
                self.save_failure = error
        if self.group.distributed:
            torch.distributed.barrier()
        if dist_utils.any_true(self.save_failure is not None, self.group, self.device):
            return None
        return path or latest_checkpoint(self.checkpoints)

    def _checkpoint_content(self) -> Checkpoint:
        """Everything a checkpoint of the current step holds (main process)."""
        extra = {"mfkit_version": mfkit.__version__, "world_size": self.group.world_size}
        if self.evaluation is not None and self.evaluation.state() is not None:
            extra["best"] = self.evaluation.state()
        if self.row_plan is not None:
            extra["jvp_rows"] = self.row_plan
        return Checkpoint(
            step=self.step, recipe_yaml=recipe_to_yaml(self.recipe), model=self.model.state_dict(),
            ema=dict(self.ema.shadows), optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(), rng=_rng_state(self.generator, self.device),
            extra=extra, modality_state=self.modality.state_dict(),
        )

    def evaluate(self, log: MetricsLog | None = None, progress: TrainingProgress | None = None) -> dict[str, float]:
        """Score the first EMA with the evaluator (``train.eval_every``), log the figures, keep the best
        checkpoint (``train.keep_best``); other processes wait. Returns the figures (empty elsewhere)."""
        values: dict[str, float] = {}
        if self.evaluation is not None:
            self.preview_model.load_state_dict(self._sampling_weights())
            values, improved = self.evaluation(self.preview_model, self.step)
            if log is not None:
                log.write(self.step, values)
            if improved:
                try:
                    write_checkpoint(self.checkpoints / "best.safetensors", self._checkpoint_content())
                except CheckpointSaveError as error:
                    self._warn(f"{error}; training goes on (the next better evaluation tries again)")
                    self.evaluation.forget_last_best()  # not on disk: a later improvement must be saved
                    improved = False
            line = self.evaluation.summary(self.step, values, improved)
            if progress is not None:
                progress.note(line)
            else:
                self._say(line)
        if self.group.distributed:
            torch.distributed.barrier()
        return values

    def _sampling_weights(self) -> dict[str, torch.Tensor]:
        """The weights previews and evaluations sample with: the first EMA, or the raw weights when the recipe
        keeps none (``train.ema_decays: []``), as ``mfkit sample`` does."""
        decays = self.recipe.train.ema_decays
        return self.ema.state(decays[0]) if decays else self.model.state_dict()

    def preview(self) -> list[Path]:
        """Draw samples with the first EMA (the recipe's sample.steps) and save them with the modality's writer."""
        if not self.group.is_main:
            return []
        train = self.recipe.train
        self.preview_model.load_state_dict(self._sampling_weights())
        generator = torch.Generator(self.device).manual_seed(train.seed + 2)
        count = self.modality.preview_count(train.preview_count)
        noise = torch.randn((count, *self.modality.sample_shape), device=self.device, generator=generator)
        condition = self.modality.condition()
        cond = move_condition(condition.preview(count), self.device) if condition is not None else None
        sampler = mfkit.euler_sample if self.recipe.objective.kind == "flow_matching" else mfkit.sample
        samples = sampler(self.preview_model, noise, steps=self.recipe.sample.steps, cond=cond)
        try:
            return save_samples(self.modality, samples.cpu(), self.run_dir / "previews" / f"step-{self.step:07d}",
                                move_condition(cond, "cpu"), kind="preview", step=self.step)
        except OSError as error:
            self._warn(f"could not write the preview of step {self.step} ({error.strerror or error}); training goes on")
            return []

    # ------------------------------------------------------------------ the loop
    def _on_signal(self, signum: int) -> None:
        """Runs inside the signal handler, which may have interrupted rich mid-print or a lazy import (printing
        through rich there crashed a run): the notice goes straight to the console's file descriptor, or,
        where there is none (captured output), the loop prints it after the step."""
        if self._training:
            notice = f"{signal_label(signum)}: finishing this step, saving a checkpoint (send it again to stop at once)"
        else:
            notice = (f"{signal_label(signum)}: stopping once the set-up is done, before training and without "
                      "changing the run folder (send it again to stop at once)")
        if self.group.is_main and not write_to_descriptor(self.console.file, notice + "\n"):
            self._pending_notice = notice

    def _say_pending_notice(self) -> None:
        if self._pending_notice is not None:
            notice, self._pending_notice = self._pending_notice, None
            self._say(notice, style="yellow")

    def _autocast(self):
        if self.recipe.train.precision == "bf16" and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def _train_step(self, batch, last_saved: Path | None, want_grad_norm: bool):
        """One optimisation step on this process's share of the global batch; returns metrics, grad norm (tensor)."""
        train = self.recipe.train
        x, cond = self.modality.unpack(batch)
        x = x.to(self.device, non_blocking=True).float()
        cond = move_condition(cond, self.device)
        share = train.batch_size // self.group.world_size
        # drawn for the global batch in the shape of the batch actually produced, then sliced
        draw = self.objective.draw((train.batch_size, *x.shape[1:]), device=self.device,
                                   generator=self.generator)[self.group.rank * share:(self.group.rank + 1) * share]
        with self._autocast():
            out = self.objective(self.train_model, x, cond, draw=draw, progress=self.step / train.steps)
        self._tell_row_plan()
        if dist_utils.any_true(not math.isfinite(out.loss.item()), self.group, self.device):
            where = f"the last good checkpoint is {last_saved}" if last_saved else "no checkpoint was saved yet"
            raise TrainingDiverged(f"the loss became non-finite at step {self.step + 1}; {where}. "
                                   f"Lower train.lr, raise train.warmup_steps or use precision=fp32")
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        grad_norm = None
        if train.grad_clip:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), train.grad_clip)
        elif want_grad_norm:
            grad_norm = gradient_norm(self.model.parameters())
        self.last_lr = self.optimizer.param_groups[0]["lr"]  # what this update used (logged)
        self.optimizer.step()
        self.scheduler.step()
        self.ema.update(self.model, self.step)
        self.step += 1
        return out.metrics(), grad_norm

    def _log(self, log: MetricsLog | None, metrics: dict[str, float], grad_norm, speed: float) -> dict[str, float]:
        """Average the metrics over processes and write them (main process); returns the averages."""
        if grad_norm is not None:
            metrics = {**metrics, "grad_norm": float(grad_norm)}
        metrics = dist_utils.mean_over_processes(metrics, self.group, self.device)
        if log is not None:
            extra = {"lr": self.last_lr, "it_per_s": round(speed, 3)}
            log.write(self.step, {**metrics, **extra})
        return metrics

    def _checkpoint(self, last_saved: Path | None) -> Path | None:
        """A periodic checkpoint; when it cannot be written, say so and keep training (the next one retries)."""
        saved = self.save()
        if saved is not None:
            return saved
        nxt = self.step + self.recipe.train.checkpoint_every
        then = f"tries again at step {nxt}" if nxt < self.recipe.train.steps else "tries again at the end"
        self._warn(f"{self.save_failure}; the last good checkpoint is {last_saved or 'none yet'}; "
                   f"training goes on and {then}")
        return last_saved

    def _loop(self) -> tuple[Path | None, int | None]:
        """Steps until ``train.steps`` or a stop signal; returns the last checkpoint written and the signal."""
        train = self.recipe.train
        set_aside = (free_name(self.checkpoints / "set-aside" / f"metrics-after-step-{self.step:07d}.jsonl")
                     if self.explicit_checkpoint is not None else None)  # an abandoned attempt's lines: kept
        log = (MetricsLog(self.run_dir, self.step if self.resume_from else None, self._warn, set_aside)
               if self.group.is_main else None)
        progress = TrainingProgress(train.steps, self.step, self.console, self.show_progress and self.group.is_main)
        last_saved = self.resume_from if self.resume_from is not None else latest_checkpoint(self.checkpoints)
        stopped_by = None
        try:
            for batch in self._loader():
                log_now = (self.step + 1) % train.log_every == 0 or self.step + 1 == train.steps
                metrics, grad_norm = self._train_step(batch, last_saved, log_now)
                if log_now:
                    metrics = self._log(log, metrics, grad_norm, progress.speed(self.step))
                progress.update(self.step, metrics["loss"], metrics["mse"], log_now)
                if train.eval_every and (self.step % train.eval_every == 0 or self.step == train.steps):
                    try:  # before the checkpoint, so it holds this step's best record
                        self.evaluate(log, progress)
                    except BaseException:
                        if self.step % train.checkpoint_every == 0 and self.step < train.steps:
                            self._checkpoint(last_saved)  # the step's checkpoint is not lost with the evaluation
                        raise
                if self.step % train.checkpoint_every == 0 and self.step < train.steps:
                    last_saved = self._checkpoint(last_saved)
                if train.preview_every and self.step % train.preview_every == 0 and self.step < train.steps:
                    self.preview()
                self._say_pending_notice()
                stopped_by = dist_utils.max_over_processes(self._stop.received or 0, self.group, self.device) or None
                if stopped_by is not None:
                    break
        finally:
            progress.close()
            if log is not None:
                log.close()
        return last_saved, stopped_by

    def _is_current(self, checkpoint: Path | None) -> bool:
        """Whether ``checkpoint`` is this run's checkpoint of the current step (nothing left to save)."""
        return (checkpoint is not None and checkpoint_step(checkpoint) == self.step
                and checkpoint.resolve().parent == self.checkpoints.resolve())

    def fit(self) -> TrainResult:
        """Train to ``train.steps`` (or until Ctrl-C / SIGTERM), checkpointing and previewing on the way."""
        with self._stop:
            self._open_run_folder()
            try:
                try:
                    self._build()
                except BaseException:
                    self._release()
                    self._discard_if_unstarted()
                    raise
                signum = dist_utils.max_over_processes(self._stop.received or 0, self.group, self.device)
                if signum:
                    return self._stopped_during_set_up(signum)
                self._training = True
                self._on_main(self._settle_resume, "settle the resumed run folder")
                dist_utils.assert_in_sync(self.model, self.group, self.device)
                last_saved, stopped_by = self._loop()
                if not self._is_current(last_saved):
                    saved = self.save()
                    if saved is None:
                        raise CheckpointSaveError(
                            f"{self.save_failure}; the last good checkpoint is {last_saved or 'none'}: free some "
                            f"space, then continue with mfkit train {self.run_dir} --resume") from None
                    last_saved = saved
                if stopped_by is None:
                    self.preview()
            finally:
                self._release()
        return TrainResult(self.run_dir, self.step, last_saved, stopped_by)
