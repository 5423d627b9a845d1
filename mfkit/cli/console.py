"""Where the CLI writes: results (paths, tables, YAML) to stdout, messages and progress to stderr."""
from __future__ import annotations

from rich.console import Console

err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)
state = {"verbose": False}


def show_warnings_plainly() -> None:
    """Show each UserWarning (files skipped, a setting cut to a limit) as one yellow ``warning: ...`` line on
    stderr, as the CLI's other messages; other warnings, and every warning with ``--verbose``, as Python
    shows them (with the code location)."""
    import warnings

    if getattr(warnings.showwarning, "mfkit_plain", False):
        return
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, UserWarning) and not state["verbose"]:
            err.print(f"warning: {message}", style="yellow", markup=False, highlight=False)
        else:
            default(message, category, filename, lineno, file, line)

    show.mfkit_plain = True
    warnings.showwarning = show
