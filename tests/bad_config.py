"""One check for "bad input exits 2 naming the field", shared by the method test files."""
from __future__ import annotations

import pytest

from sparsebench import resolve
from sparsebench.config.schema import ConfigError
from sparsebench.train import main as train_main


def assert_exits_2_naming(base: str, overrides: list[str], field: str, capsys) -> None:
    """resolve raises ConfigError for ``field``; the CLI exits 2 with the field on stderr."""
    with pytest.raises(ConfigError) as exc:
        resolve.load(base, overrides)
    assert exc.value.field == field
    with pytest.raises(SystemExit) as code:
        train_main([base, *overrides])
    assert code.value.code == 2 and field in capsys.readouterr().err
