"""User mistakes as one message and exit code 2; failed training as 1; signals as 128 + their number.

``--verbose`` (before the command) adds the traceback.
"""
from __future__ import annotations

import functools
import traceback
from typing import Callable

import typer

from mfkit.cli.console import err, state


class UserError(Exception):
    """A mistake the user can fix; printed as one line, exit code 2."""


def user_error_types() -> tuple[type[BaseException], ...]:
    from mfkit.plugins.discovery import UnknownPluginError
    from mfkit.recipe.loading import RecipeError
    from mfkit.train.checkpoint import CheckpointError
    from mfkit.train.lock import RunLockedError
    from mfkit.train.run_folder import RunFolderError

    # ValueError: bad values handed to the library (labels, devices, output folders, ...)
    return (UserError, RecipeError, UnknownPluginError, CheckpointError, RunFolderError, RunLockedError, ValueError)


def _training_failure_types() -> tuple[type[BaseException], ...]:
    from mfkit.core.jvp import JVPError
    from mfkit.train.distributed import OutOfSyncError
    from mfkit.train.trainer import TrainingDiverged

    return (TrainingDiverged, OutOfSyncError, JVPError)


def report(error: BaseException | str, prefix: str = "error") -> None:
    """Print one error message (and the traceback with --verbose)."""
    if state["verbose"] and isinstance(error, BaseException):
        err.print(traceback.format_exc(), markup=False, highlight=False)
    err.print(f"[bold red]{prefix}:[/] ", end="")
    err.print(str(error), markup=False, highlight=False)
    if not state["verbose"] and isinstance(error, BaseException):
        err.print("[dim](run with --verbose for the traceback)[/]")


def handle_errors(command: Callable) -> Callable:
    """Turn user mistakes into one message and exit code 2; training failures into exit code 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from mfkit.train.signals import Terminated

        try:
            return command(*args, **kwargs)
        except typer.Exit:
            raise
        except KeyboardInterrupt:  # outside the training loop (which saves and exits by itself)
            err.print("interrupted")
            raise typer.Exit(130) from None
        except Terminated:
            err.print("terminated (SIGTERM)")
            raise typer.Exit(128 + Terminated.signum) from None
        except Exception as error:
            if isinstance(error, user_error_types()):
                report(error, "error")
                raise typer.Exit(2) from None
            if isinstance(error, _training_failure_types()):
                report(error, "training stopped")
                raise typer.Exit(1) from None
            raise

    return wrapper
