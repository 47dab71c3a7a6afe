"""Adding a method is one file: the README's example, dropped in a folder on
$SPARSEBENCH_METHODS_PATH, trains under the common trainer with no edit anywhere else."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from .conftest import REPO, needs_fmnist


def readme_method_example() -> str:
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    [block] = [b for b in blocks if "@register" in b]
    return block


def run_train(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sparsebench.train",
                           str(REPO / "configs" / "fmnist_mlp.yaml"), *args],
                          capture_output=True, text=True, env=env, timeout=300, cwd=REPO)


@needs_fmnist
def test_readme_method_plugs_in_from_one_file(tmp_path):
    folder = tmp_path / "my_methods"
    folder.mkdir()
    (folder / "my_set.py").write_text(readme_method_example())
    env = {**os.environ, "SPARSEBENCH_METHODS_PATH": str(folder),
           "SPARSEBENCH_RESULTS": str(tmp_path / "results")}
    common = ["data.train_subset=1024", "data.batch_size=64", "epochs=2", "density=0.1",
              "progress=false"]
    proc = run_train(["method.name=my_set", *common], env)
    assert proc.returncode == 0, proc.stderr
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "completed" and result["method"] == "my_set"
    assert abs(result["actual_density"] - 0.1) < 1e-3
    assert result["update_time_s"] > 0  # its end-of-epoch updates ran
    # It changed the topology: the run differs from static with the same seed.
    static = run_train(["method.name=static", *common], env)
    assert static.returncode == 0, static.stderr
    static_result = json.loads((Path(static.stdout.strip().splitlines()[-1]) / "result.json").read_text())
    assert static_result["final_train_loss"] != result["final_train_loss"]

    # Its parameters are validated like the built-in ones: exit 2 naming the field.
    bad = run_train(["method.name=my_set", "method.drop_fraction=lots", *common], env)
    assert bad.returncode == 2
    assert "method.drop_fraction" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    # And without the folder the name is unknown, with the available names listed.
    env.pop("SPARSEBENCH_METHODS_PATH")
    unknown = run_train(["method.name=my_set", *common], env)
    assert unknown.returncode == 2 and "rigl" in unknown.stderr
