"""What every command-line tool shares (invalid input is one line on stderr and exit code 2),
and the ``sparsebench`` command that dispatches to them."""
from __future__ import annotations

import sys
from contextlib import contextmanager

from .config.schema import ConfigError


@contextmanager
def config_errors_exit(source: str = ""):
    try:
        yield
    except ConfigError as err:
        # Messages about a whole file already start with its name: say it once.
        where = f"{source}: " if source and not str(err).startswith(str(source)) else ""
        print(f"error: {where}{err}", file=sys.stderr)
        raise SystemExit(2) from None


# The `sparsebench` command: each subcommand is one module's own parser and main().
COMMANDS = {
    "train": ("sparsebench.train", "one training run (CONFIG [key=value ...])"),
    "sweep": ("sparsebench.sweep", "run a sweep (NAME_OR_PATH [key=value ...] [--executor ...])"),
    "report": ("sparsebench.report", "tables and figures of sweeps' results (NAME ... | --paper)"),
    "paper": ("sparsebench.paper.full", "every GSE-paper sweep, then results/paper/"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {what}" for name, (_, what) in COMMANDS.items()]
    return ("usage: sparsebench COMMAND [ARGS ...]   (sparsebench COMMAND -h for its options)\n"
            "commands:\n" + "\n".join(lines) + "\n"
            "(`python -m sparsebench.train` and the others take the same arguments)")


def main(argv: list[str] | None = None) -> int:
    import importlib

    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    command, *rest = argv
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}; allowed: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return importlib.import_module(COMMANDS[command][0]).main(rest)
