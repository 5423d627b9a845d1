"""Generate the CLI reference (docs/cli.md) from the Typer app, so the two cannot drift.

    python -m mfkit.cli.reference > docs/cli.md
"""
from __future__ import annotations

import sys

import typer

from mfkit.cli.app import app

HEADER = """# CLI reference

Generated from the Typer app by `python -m mfkit.cli.reference > docs/cli.md`; a test fails when this
file and the code disagree. Every command also answers `--help`.

Exit codes: 0 success; 1 training stopped (non-finite loss, processes out of sync); 2 a mistake the
user can fix (bad recipe or override, unknown plugin, missing run or checkpoint, a run folder another
process is writing, an output path that cannot be written, a checkpoint that could not be saved),
reported as one message (add `--verbose` before the command for the traceback); 130 training stopped
by Ctrl-C (SIGINT) and 143 by SIGTERM, both after saving a checkpoint.
"""


def _usage(command, name: str) -> list[str]:
    lines = [f"## `mfkit {name}`", "", (command.help or "").strip().replace("\n\n  ", "\n\n    "), ""]
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    options = [p for p in command.params if p.param_type_name == "option" and p.name != "help"]
    if arguments:
        lines += ["| argument | meaning |", "|---|---|"]
        for p in arguments:
            lines.append(f"| `{p.name.upper()}`{'...' if p.nargs == -1 else ''} | {getattr(p, 'help', '') or ''} |")
        lines.append("")
    if options:
        lines += ["| option | default | meaning |", "|---|---|---|"]
        for p in options:
            flags = ", ".join(f"`{o}`" for o in [*p.opts, *p.secondary_opts])
            default = "" if p.is_flag or p.default is None else f"`{p.default}`"
            lines.append(f"| {flags} | {default} | {p.help or ''} |")
        lines.append("")
    return lines


def reference() -> str:
    group = typer.main.get_command(app)
    lines = [HEADER, "## `mfkit`", "", "| option | meaning |", "|---|---|"]
    for p in group.params:
        if p.param_type_name == "option" and p.name != "help":
            lines.append(f"| {', '.join(f'`{o}`' for o in p.opts)} | {p.help or ''} |")
    lines.append("")
    for name, command in group.commands.items():
        lines += _usage(command, name)
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(reference())
