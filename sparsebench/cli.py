"""What every command-line tool shares: invalid input is one line on stderr and exit code 2."""
from __future__ import annotations

import sys
from contextlib import contextmanager

from .config import ConfigError


@contextmanager
def config_errors_exit(source: str = ""):
    try:
        yield
    except ConfigError as err:
        # Messages about a whole file already start with its name: say it once.
        where = f"{source}: " if source and not str(err).startswith(str(source)) else ""
        print(f"error: {where}{err}", file=sys.stderr)
        raise SystemExit(2) from None
