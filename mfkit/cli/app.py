"""The `mfkit` command line: the Typer app and its commands (each in its own module).

Importing this module (and running `mfkit --help`, `mfkit recipes`) does not import torch: commands
import the library inside their bodies. User mistakes exit with code 2 and one clear message
(`--verbose` shows the traceback); Ctrl-C and SIGTERM exit with 130 and 143.
"""
from __future__ import annotations

import sys

import typer

from mfkit.cli import demo as demo_module
from mfkit.cli import eval as eval_module
from mfkit.cli import export as export_module
from mfkit.cli import info, sample as sample_module, train as train_module
from mfkit.cli.console import state

app = typer.Typer(
    help="mfkit: one-step generative modeling with MeanFlow.\n\n"
         "Quick start:\n\n"
         "  mfkit demo\n\n"
         "  mfkit train recipes/toy2d.yaml\n\n"
         "  mfkit sample",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def root(verbose: bool = typer.Option(False, "--verbose", "-v", help="show tracebacks of errors")) -> None:
    state["verbose"] = verbose


app.command()(train_module.train)
app.command()(sample_module.sample)
app.command(name="eval")(eval_module.evaluate)
app.command()(export_module.export)
app.command()(demo_module.demo)
app.command()(info.validate)
app.command()(info.plugins)
app.command()(info.recipes)


def main() -> None:
    """The `mfkit` console script: SIGTERM outside training exits like Ctrl-C (clean-up runs, code 143);
    warnings as one ``warning: ...`` line each."""
    from mfkit.cli.console import show_warnings_plainly
    from mfkit.train.signals import raise_on_sigterm

    raise_on_sigterm()
    show_warnings_plainly()
    app()


if __name__ == "__main__":
    sys.exit(main())
