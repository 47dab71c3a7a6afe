"""notebooks/results.ipynb executes (nbclient, this venv's python3 kernel) on tiny results."""
from __future__ import annotations

import nbclient
import nbformat

from .conftest import REPO
from .fake_results import write_run

NOTEBOOK = REPO / "notebooks" / "results.ipynb"


def test_results_notebook_shows_the_main_table_and_figure(tmp_path, monkeypatch):
    root = tmp_path / "results"
    for seed, acc in ((0, 81.0), (1, 83.0)):
        write_run(root, "nb_sweep", "static", 0.1, seed, acc=acc)
        write_run(root, "nb_sweep", "static", 0.05, seed, acc=acc - 5)
        write_run(root, "nb_sweep", "dense", 1.0, seed, acc=acc + 8)
    write_run(root, "nb_sweep", "static", 0.05, 2, status="running")
    monkeypatch.setenv("SPARSEBENCH_RESULTS", str(root))
    monkeypatch.setenv("SPARSEBENCH_NOTEBOOK_SWEEP", "nb_sweep")

    nb = nbformat.read(NOTEBOOK, as_version=4)
    # jupyter_client runs the "python3" kernel with this interpreter (sys.executable).
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=120,
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError on any failing cell

    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "\n".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs)
    assert "sweep nb_sweep: 7 runs" in text
    assert "82.00 ± 1.41" in text            # static at density 0.1: mean ± std of 81 and 83
    assert "77.00 ± 1.41 †" in text          # a running seed is counted, not averaged in
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the figure was drawn
