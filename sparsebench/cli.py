"""What every command-line tool shares (invalid input is one line on stderr and exit code 2,
usage lines and hints that name the command as the user typed it), and the ``sparsebench``
command that dispatches to them: ``sparsebench train|sweep|report|paper|list ...``,
``sparsebench --version``."""
from __future__ import annotations

import os
import shlex
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

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
    "paper": ("sparsebench.paper.full", "every GSE-paper sweep, then results/paper/ "
                                        "(paper cost|mini|width|kernels: below)"),
    "list": ("sparsebench.cli", "the sweeps, configs, methods and protocols found here "
                                "([sweeps|configs|methods|protocols])"),
}
# `sparsebench paper WHAT ...`; anything else after `paper` goes to paper.full.
PAPER_COMMANDS = {
    "cost": ("sparsebench.paper.cost", "GPU-hours of every paper sweep, from FLOP counts"),
    "mini": ("sparsebench.paper.mini", "the paper in miniature on this CPU: results/paper_mini/"),
    "width": ("sparsebench.paper.width", "the widened models' active connections (figure 3)"),
    "kernels": ("sparsebench.paper.kernel_bench", "figure 8's sparse × dense matmul benchmark "
                                                  "(CSV for report --paper)"),
}
LIST_KINDS = ("sweeps", "configs", "methods", "protocols")


def via_command() -> bool:
    """Whether this process was started as ``sparsebench ...`` (the installed script or
    ``python -m sparsebench``) rather than as ``python -m sparsebench.X``."""
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path()
    return (argv0.name in ("sparsebench", "sparsebench.exe")
            or (argv0.name == "__main__.py" and argv0.parent.name == "sparsebench"))


def prog(command: str) -> str:
    """The name of ``command`` (``sweep``, ``paper cost``) in usage lines and hints:
    ``sparsebench sweep`` when invoked through the ``sparsebench`` command, else
    ``python -m sparsebench.sweep``."""
    if via_command():
        return f"sparsebench {command}"
    return f"python -m {_module(command)}"


def _module(command: str) -> str:
    first, *rest = command.split()
    if first == "paper" and rest:
        return PAPER_COMMANDS[rest[0]][0]
    return COMMANDS[first][0]


def _typed_as(name: str, path: str) -> str:
    """``name`` where the PATH finds ``path`` under it (so the line stays short), else the path."""
    found = shutil.which(name)
    try:
        if found and Path(found).resolve() == Path(path).resolve():
            return name
    except OSError:
        pass
    return shlex.quote(path)


def again(command: str, args: list[str]) -> str:
    """A command line that runs ``command`` with ``args`` again when pasted into a shell here.

    ``$SPARSEBENCH_COMMAND`` wins (the Makefile sets it to the ``make ...`` line the user
    typed); else the same script or the same python (by name when the PATH finds that one).
    """
    typed = os.environ.get("SPARSEBENCH_COMMAND", "").strip()
    if typed:
        return typed
    words = " ".join(shlex.quote(a) for a in args)
    argv0 = sys.argv[0] if sys.argv else ""
    if Path(argv0).name in ("sparsebench", "sparsebench.exe"):
        head = f"{_typed_as('sparsebench', argv0)} {command}"
    else:
        python = next((n for n in ("python", "python3") if _typed_as(n, sys.executable) == n),
                      shlex.quote(sys.executable))
        head = (f"{python} -m sparsebench {command}" if via_command()
                else f"{python} -m {_module(command)}")
    return f"{head} {words}".strip()


def usage() -> str:
    width = max(map(len, [*COMMANDS, *(f"paper {c}" for c in PAPER_COMMANDS)]))
    lines = [f"  {name:<{width}}  {what}" for name, (_, what) in COMMANDS.items()]
    lines += [f"  {'paper ' + name:<{width}}  {what}" for name, (_, what) in PAPER_COMMANDS.items()]
    return ("usage: sparsebench COMMAND [ARGS ...]   (sparsebench COMMAND -h for its options)\n"
            "       sparsebench --version\n"
            "commands:\n" + "\n".join(lines) + "\n"
            "(`python -m sparsebench.train` and the others take the same arguments)")


def version() -> str:
    from . import __version__

    return f"sparsebench {__version__}"


def list_main(argv: list[str]) -> int:
    """``sparsebench list [KIND ...]``: every sweep, config, method and protocol found here,
    with the file it comes from (your folders first, then the built-in ones)."""
    import argparse

    parser = argparse.ArgumentParser(prog=prog("list"), description=list_main.__doc__)
    parser.add_argument("kinds", nargs="*", metavar="KIND",
                        help=f"one or more of {', '.join(LIST_KINDS)} (default: all)")
    args = parser.parse_args(argv)
    for kind in args.kinds:
        if kind not in LIST_KINDS:
            parser.error(f"KIND: got {kind!r}; allowed: {', '.join(LIST_KINDS)}")
    for kind in args.kinds or LIST_KINDS:
        found = list_methods() if kind == "methods" else list_files(kind)
        print(f"{kind} ({len(found)}):")
        width = max((len(name) for name in found), default=0)
        for name, where in found.items():
            print(f"  {name:<{width}}  {where}")
    return 0


def list_files(kind: str) -> dict[str, str]:
    from .storage import paths

    out = {}
    for name in paths.resource_names(kind):
        found = paths.find_resource(kind, f"{name}.yaml")
        out[name] = str(found) if found is not None else "?"
    return out


def list_methods() -> dict[str, str]:
    from . import methods

    warn_method_problems()
    return {name: methods.source(name) for name in methods.available()}


def warn_method_problems() -> None:
    """One line on stderr per method file (or entry point) that did not load, so that a file
    meant to add or replace a method is never silently ignored."""
    from . import methods

    for where, why in methods.problems().items():
        print(f"warning: method file {where} did not load ({why}); its methods are not "
              f"available", file=sys.stderr)
    for name, files in methods.claimed_twice().items():
        print(f"warning: method {name!r} is registered by more than one file "
              f"({', '.join(files)}); runs that ask for it stop", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    import importlib

    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        print(version())
        return 0
    command, *rest = argv
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}; allowed: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    if command == "list":
        return list_main(rest)
    module = COMMANDS[command][0]
    if command == "paper" and rest and rest[0] in PAPER_COMMANDS:
        module, rest = PAPER_COMMANDS[rest[0]][0], rest[1:]
    return importlib.import_module(module).main(rest)


if __name__ == "__main__":
    sys.exit(main())
