"""benchmarks/compile_speed.py (make bench-compile) end to end at its smallest: the MLP, two
blocks of one step, traced with aot_eager (inductor's code generation is what the benchmark
times, not what this test checks)."""
from __future__ import annotations

import pandas as pd

from .conftest import load_benchmark


def test_compile_speed_writes_ratios_and_compile_times(tmp_path, capsys):
    bench = load_benchmark("compile_speed")
    out = tmp_path / "compile_speed.csv"
    assert bench.main(["--models", "mlp", "--repeats", "2", "--steps", "1", "--backend",
                       "aot_eager", "--out", str(out)]) == 0
    rows = pd.read_csv(out)
    assert list(rows["block"]) == [0, 1] and set(rows["model"]) == {"mlp"}
    assert (rows["ratio"] > 0).all() and (rows["graphs"] >= 1).all() and (rows["compile_s"] > 0).all()
    assert (rows["ratio"] - rows["compiled_ms"] / rows["eager_ms"]).abs().max() < 1e-9
    assert "mlp: compiled/eager step" in capsys.readouterr().out
