"""What a reader sees: figures that say what they show, one vocabulary (sparsity in %), one
palette, result files without Python reprs or leftover locks, and messages that name the
place of a mistake."""
from __future__ import annotations

import json
import re
import threading
import time

import matplotlib
import pandas as pd
import pytest
import yaml
from matplotlib.colors import to_rgb
from matplotlib.text import Text

import sparsebench
from sparsebench.storage import atomic, locks, paths
from sparsebench.launch import executors, slurm, spec as sweep_spec
from sparsebench.reporting import plotting, results
from sparsebench import report
from sparsebench.config.schema import ConfigError
from sparsebench.config.files import load_yaml
from sparsebench.reporting.figures import FIGURES, layer_sparsity, training_progress
from sparsebench.paper import fig_curves
from sparsebench.paper.names import METHODS, Names
from sparsebench.paper.plotting import colors_for
from sparsebench.sweep import main as sweep_main

from .conftest import REPO
from .fake_results import MLP_LAYERS, write_run
from .test_report import make_full_sweep

matplotlib.use("Agg")


@pytest.fixture
def root(tmp_path):
    return tmp_path / "results"


def texts(fig) -> list[str]:
    """Every piece of text drawn in a figure: titles, axis labels, ticks, legends."""
    return [t.get_text() for t in fig.findobj(Text) if t.get_visible() and t.get_text()]


def line_colours(fig) -> dict[str, tuple]:
    """Legend label -> colour of its mark, over the figure's legends."""
    out = {}
    for legend in fig.legends:
        for handle, text in zip(legend.legend_handles, legend.get_texts()):
            colour = getattr(handle, "get_color", lambda: None)()
            if colour is None and hasattr(handle, "get_facecolor"):
                colour = handle.get_facecolor()
            out[text.get_text()] = to_rgb(colour)
    return out


# ---- figures --------------------------------------------------------------------------------

def test_progress_figure_draws_dense_when_the_sweep_has_it_and_says_so_only_then(root):
    for seed in (0, 1):
        write_run(root, "with", "dense", 1.0, seed, acc=90.0, curve=[85.0, 90.0])
        write_run(root, "with", "static", 0.1, seed, acc=80.0, curve=[70.0, 80.0])
        write_run(root, "without", "static", 0.1, seed, acc=80.0, curve=[70.0, 80.0])
    def drawn(fig, label):  # the curves drawn in a label's colour (legend proxies are empty)
        colour = to_rgb(plotting.METHOD_COLORS[label])
        return [list(line.get_ydata()) for line in fig.axes[0].get_lines()
                if len(line.get_ydata()) and to_rgb(line.get_color()) == colour]

    fig = training_progress(sparsebench.load_results("with", root))
    assert drawn(fig, "dense") == [[85.0, 90.0]]              # the dense runs' mean curve
    assert drawn(fig, "static") == [[70.0, 80.0]]
    assert "dense (dashed) for reference" in fig._suptitle.get_text()

    fig = training_progress(sparsebench.load_results("without", root))
    assert drawn(fig, "dense") == [] and drawn(fig, "static") == [[70.0, 80.0]]
    assert "no dense run in this sweep" in fig._suptitle.get_text()
    assert "for reference" not in fig._suptitle.get_text()


def test_a_run_of_one_epoch_is_drawn_as_a_marker(root):
    write_run(root, "one", "static", 0.1, 0, acc=80.0, curve=[80.0])
    fig = training_progress(sparsebench.load_results("one", root))
    [line] = [l for l in fig.axes[0].get_lines() if len(l.get_ydata())]
    assert list(line.get_ydata()) == [80.0] and line.get_marker() not in (None, "", "None")


def test_curves_that_coincide_are_named_and_keep_their_own_markers(root):
    for method in ("static", "set", "rigl"):
        write_run(root, "same", method, 0.1, 0, acc=80.0, curve=[70.0, 80.0])
    write_run(root, "same", "gse", 0.1, 0, acc=81.0, curve=[71.0, 81.0])
    df = sparsebench.load_results("same", root)
    for fig in (training_progress(df),
                fig_curves.per_method(df[df["status"] == "completed"], Names()).figure):
        assert "coincide" in fig._suptitle.get_text()
        lines = [l for l in fig.axes[0].get_lines() if len(l.get_ydata())]
        assert len({l.get_marker() for l in lines}) == len(lines) == 4  # one shape per method
    assert "static, set and rigl coincide" in training_progress(df)._suptitle.get_text()


def test_non_linear_axes_say_so_and_sparsity_bands_stay_on_the_axis(root):
    df = sparsebench.load_results(make_full_sweep(root), root)
    assert "log₂ scale" in FIGURES["width_scaling"](df).axes[0].get_xlabel()
    lo, hi = plotting.sd_within_range([99.0, 100.0, 100.0])  # mean + std would pass 100 %
    assert hi == 100.0 and lo == pytest.approx(100 - 1 / 3 - (1 / 3) ** 0.5)
    assert plotting.sd_within_range([5.0]) == (5.0, 5.0)
    equal = [91.27555772777217] * 3  # their mean rounds one ulp above them
    lo, hi = plotting.sd_within_range(equal)
    assert lo <= pd.Series(equal).mean() <= hi  # seaborn's mean, inside the band it draws
    first, second, *_ = MLP_LAYERS  # a dense-ish layer: mean - std would pass below 0 %
    for seed, dens in ((0, {first: 1.0, second: 0.001}), (1, {first: 0.7, second: 0.0})):
        write_run(root, "band", "static", 0.1, seed, acc=80.0, layer_densities=dens)
    fig = layer_sparsity(sparsebench.load_results("band", root))
    ax = fig.axes[0]
    scale = ax.yaxis.get_transform()  # compare where things are drawn (the nines scale)
    bottom, top = scale.transform(ax.get_ylim())
    drawn = [y for line in ax.get_lines() for y in line.get_ydata() if y == y]
    drawn += [y for bars in ax.collections if hasattr(bars, "get_segments")  # the error bars
              for segment in bars.get_segments() for _, y in segment]
    assert min(drawn) == 0.0  # the band of the 0 % / 30 % layer stops at 0 %
    assert all(bottom <= scale.transform([y])[0] <= top for y in drawn)


def test_titles_and_axis_labels_name_the_same_quantity_and_never_density(root):
    df = sparsebench.load_results(make_full_sweep(root), root)
    for name, draw in FIGURES.items():
        fig = draw(df)
        title = fig._suptitle.get_text().lower()
        for ax in fig.axes:
            if not ax.get_visible():
                continue
            labels = (ax.get_ylabel() + " | " + ax.get_xlabel()).lower()
            for quantity in ("accuracy", "sparsity", "step time", "mask updates", "flops",
                             "wall-clock", "width"):
                if quantity in labels:
                    assert quantity in title, (name, quantity, title)
        shown = " | ".join(texts(fig)).lower()
        assert "density" not in shown, (name, shown)           # one word for it: sparsity
        assert "compression" not in shown, name
    fig = layer_sparsity(df)
    assert fig.axes[0].get_ylabel() == "sparsity of the layer (%, log scale of the share kept)"
    assert fig._suptitle.get_text().startswith("Sparsity of each layer at overall sparsity 98%")
    assert all(t.endswith("%") for t in (x.get_text() for x in fig.axes[0].get_yticklabels())
               if t)


def test_the_per_epoch_and_per_layer_figures_are_drawn_at_the_chosen_sparsity(root, capsys):
    sweep = make_full_sweep(root)
    df = sparsebench.load_results(sweep, root)
    assert "sparsity 90%" in training_progress(df, density=0.1)._suptitle.get_text()
    assert "sparsity 90%" in layer_sparsity(df, density=0.1)._suptitle.get_text()
    assert report.main([sweep, "--results", str(root), "--sparsity", "97"]) == 0
    out = capsys.readouterr().out
    assert ("figure training_progress skipped: no completed sparse runs at sparsity 97%; "
            "completed: 90%, 98% (--sparsity PCT picks one)") in out
    with pytest.raises(SystemExit) as exit_:
        report.main([sweep, "--results", str(root), "--sparsity", "100"])
    assert exit_.value.code == 2
    assert "--sparsity 100: a percentage from 0 to below 100" in capsys.readouterr().err


def test_panel_titles_and_tables_say_width_and_sparsity(root):
    df = sparsebench.load_results(make_full_sweep(root), root)
    fig = FIGURES["accuracy_vs_density"](df)
    assert [ax.get_title() for ax in fig.axes] == ["fashion_mnist · mlp · width ×1",
                                                   "fashion_mnist · mlp · width ×2"]
    from sparsebench.reporting import tables

    shown = tables.main_display(tables.main_table(df))
    assert "sparsity" in shown.columns and "density" not in shown.columns
    assert set(shown["sparsity"]) == {"0%", "90%", "98%"}


# ---- one palette ----------------------------------------------------------------------------

def test_a_method_has_one_colour_in_the_sweep_report_and_the_papers_figures(root):
    for label, paper_name in METHODS.items():  # the palette itself
        assert colors_for([paper_name])[paper_name] == plotting.METHOD_COLORS[label], label
    assert len(set(plotting.METHOD_COLORS.values())) == len(plotting.METHOD_COLORS)
    # ... and as drawn: the sweep's progress figure and the paper's figure 6, same runs
    for seed in (0, 1):
        write_run(root, "s", "dense", 1.0, seed, acc=90.0, curve=[85.0, 90.0])
        for method in ("static", "set", "rigl"):
            write_run(root, "s", method, 0.02, seed, acc=80.0, curve=[70.0, 80.0])
        write_run(root, "s", "gse", 0.02, seed, acc=81.0, curve=[71.0, 81.0], sampler="grabo")
    df = sparsebench.load_results("s", root)
    sweep_colours = line_colours(training_progress(df))
    paper = fig_curves.per_method(df[df["status"] == "completed"], Names())
    paper_colours = line_colours(paper.figure)
    for label in ("dense", "static", "set", "rigl", "gse (grabo)"):
        assert sweep_colours[label] == to_rgb(plotting.METHOD_COLORS[label])
        assert paper_colours[METHODS[label]] == sweep_colours[label], label


# ---- files ----------------------------------------------------------------------------------

def test_summary_csv_holds_json_never_python_reprs(root):
    run = write_run(root, "reprs", "lottery", 0.1, 0, acc=79.0)
    result = json.loads((run / paths.RESULT).read_text())
    result["device_names"] = ["vm cpu"]
    result["rounds"] = [{"best_test_acc": 79.21, "density": 0.3}, {"best_test_acc": 78.5}]
    atomic.write_json(run / paths.RESULT, result)
    text = results.write_summary("reprs", root).read_text()
    assert not re.search(r"\(['{]|\{'|'\)|\(\)", text), text    # no tuple/dict reprs
    row = pd.read_csv(paths.summary_csv("reprs", root)).iloc[0]
    assert json.loads(row["device_names"]) == ["vm cpu"]
    assert json.loads(row["rounds"])[0] == {"best_test_acc": 79.21, "density": 0.3}
    assert json.loads(row["layer_sizes"])["net.1"] == 784 * 300


def test_a_lock_file_is_gone_once_released_and_a_waiter_never_shares_it(tmp_path):
    path = tmp_path / "run" / paths.RUN_LOCK
    with locks.hold(path, str):
        assert locks.holder(path).startswith("pid ")
    assert not path.exists() and locks.holder(path) is None

    # Many processes (threads here, each with its own file) taking turns: one holder at a time.
    inside, overlaps, done = [], [], []

    def worker():
        for _ in range(20):
            with locks.hold(path, str, wait_s=30):
                inside.append(1)
                if len(inside) > 1:
                    overlaps.append(1)
                time.sleep(0.001)
                inside.pop()
        done.append(1)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(done) == 4 and not overlaps and not path.exists()


def test_a_lock_left_by_a_dead_process_is_not_a_holder(tmp_path):
    path = tmp_path / paths.RUN_LOCK
    path.write_text("pid 999999 on gone-host since 2026-01-01T00:00:00+00:00\n")
    assert locks.holder(path) is None
    taken = []
    with locks.hold(path, str, on_takeover=taken.append):
        pass
    assert taken == ["pid 999999 on gone-host since 2026-01-01T00:00:00+00:00"]
    assert not path.exists()


def test_each_slurm_run_folder_names_its_jobs_logs(write_sweep, monkeypatch):
    path = write_sweep("logs", {"base": "configs/fmnist_mlp.yaml", "grid": {"seed": [0, 1]}})
    sweep = sweep_spec.expand(str(path))

    class Job:
        def __init__(self, i):
            self.job_id = f"77_{i}"
            self.paths = type("P", (), {"stdout": tmp_log(i, "out"), "stderr": tmp_log(i, "err")})

    def tmp_log(i, kind):
        return paths.submitit_dir("logs") / f"77_{i}_0_log.{kind}"

    class FakeExecutor:
        def map_array(self, job, configs):
            return [Job(i) for i, _ in enumerate(configs)]

    monkeypatch.setattr(slurm, "slurm_executor", lambda sweep, spec: FakeExecutor())
    jobs = slurm.submit_slurm("logs", sweep.spec.slurm, sweep.cells)
    for i, cell in enumerate(sweep.cells):
        record = json.loads((executors.result_path(cell).parent / paths.SLURM_JOB).read_text())
        assert record["job_id"] == jobs[cell.run_id] == f"77_{i}"
        assert record["stderr"] == str(tmp_log(i, "err"))
        assert record["stdout"] == str(tmp_log(i, "out"))
    # a folder with only this file is a run not started yet: not a row of the results
    assert sparsebench.load_results("logs").empty


# ---- messages -------------------------------------------------------------------------------

def test_a_yaml_syntax_error_names_line_and_column(tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: broken\nbase: configs/fmnist_mlp.yaml\ngrid: {density: [0.1\n")
    with pytest.raises(ConfigError) as err:
        load_yaml(broken)
    assert ("not valid YAML at the end of the file (line 4, column 1): expected ',' or ']', "
            "but got '<stream end>' (in a flow sequence that starts at line 3, column 17)"
            ) in str(err.value)
    with pytest.raises(SystemExit) as exit_:
        sweep_main([str(broken), "--dry-run"])
    assert exit_.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "line 4, column 1" in line and "check the brackets" in line

    tabs = tmp_path / "tabs.yaml"
    tabs.write_text("epochs: 1\n\tdensity: 0.1\n")
    with pytest.raises(ConfigError, match="at line 2, column 1: .*indents with spaces, never tabs"):
        load_yaml(tabs)


def test_dry_run_says_running_for_a_run_being_trained(write_sweep, capsys):
    path = write_sweep("busy", {"base": "configs/fmnist_mlp.yaml",
                                "overrides": {"epochs": 1, "data.train_subset": 512},
                                "grid": {"seed": [0, 1, 2]}})
    sweep = sweep_spec.expand(str(path))
    busy, started = (executors.result_path(c).parent for c in sweep.cells[:2])
    busy.mkdir(parents=True)
    started.mkdir(parents=True)
    atomic.write_yaml(started / paths.CONFIG, {"sweep": "busy"})  # interrupted earlier
    import fcntl

    with open(busy / paths.RUN_LOCK, "w") as held:
        held.write("pid 4242 on node7 since 2026-12-01T09:00:00+00:00\n")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX)
        assert sweep_main([str(path), "--dry-run", "--executor", "local",
                           "--skip-data-check"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()
            if line.startswith("  ") and len(line.split()) > 1}
    assert "running (pid 4242 on node7" in rows[sweep.cells[0].run_id]
    assert rows[sweep.cells[1].run_id].split()[1] == "resume"
    assert rows[sweep.cells[2].run_id].split()[1:3] == ["to", "run"]


def test_paper_report_counts_the_runs_it_still_needs(tmp_path, capsys):
    from sparsebench.paper import report as paper_report
    from sparsebench.paper.runs import Library

    from .test_paper_report import TABLE1_SWEEP

    folder = tmp_path / "sweeps"
    folder.mkdir()
    for name, data in (("cifar10_densities", "fashion_mnist"), ("cifar100_densities", "mnist")):
        (folder / f"{name}.yaml").write_text(TABLE1_SWEEP.format(name=name, data=data))
    lines = []
    lib = Library(tmp_path / "results", lambda n: folder / f"{n}.yaml")
    paper_report.write(tmp_path / "out", lib, paper_report.Context(names=Names()),
                       only=["table1", "fig6"], say=lines.append)
    # 2 sweeps × 2 models × (1 dense + 3 sparse methods × 2 densities) × 2 seeds = 56 runs
    assert lines == ["paper: 56 runs needed: 56 missing; 0 of 2 artifacts complete; index.md "
                     "says what each artifact lacks; `make paper` trains what is missing"]


def test_load_metrics_is_exported_and_takes_a_sweep_name(root):
    assert "load_metrics" in sparsebench.__all__ and "load_metrics" in results.__all__
    write_run(root, "m", "static", 0.1, 0, acc=80.0, curve=[70.0, 75.0, 80.0])
    write_run(root, "m", "static", 0.1, 1, status="running", curve=[60.0])
    rows = sparsebench.load_metrics("m", root)
    assert list(rows["epoch"]) == [1, 2, 3] and list(rows["test_acc"]) == [70.0, 75.0, 80.0]
    assert set(rows["method_label"]) == {"static"} and set(rows["density"]) == {0.1}
    both = sparsebench.load_metrics(sparsebench.load_results("m", root),
                                    statuses=("completed", "running"))
    assert len(both) == 4


# ---- the README -----------------------------------------------------------------------------

def test_readme_sweep_table_lists_every_sweep_with_its_methods():
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("| `SWEEP=` | what |"):]
    table = table[:table.index("\n\n")]
    listed = {}
    for row in table.splitlines()[2:]:
        names_cell, what = row.split(" | ", 1)
        for name in re.findall(r"`([a-z0-9_]+)`", names_cell):
            listed[name] = what
    on_disk = {p.stem for p in (REPO / "sweeps").glob("*.yaml")}
    assert set(listed) == on_disk
    known = {m.split(" ")[0] for m in METHODS}
    for name, what in listed.items():
        named = set(re.findall(r"`([a-z]+)`", what)) & known
        if not named or "all eleven methods" in what:
            continue
        spec = yaml.safe_load((REPO / "sweeps" / f"{name}.yaml").read_text())
        while not {"method", "method.name"} & set(spec.get("grid", {})) and "extends" in spec:
            spec = yaml.safe_load((REPO / "sweeps" / f"{spec['extends']}.yaml").read_text())
        grid = spec.get("grid", {})
        methods = {m if isinstance(m, str) else m["name"]
                   for m in grid.get("method", []) + grid.get("method.name", [])}
        methods |= {row["method"] if isinstance(row["method"], str) else row["method"]["name"]
                    for row in spec.get("include", [])}
        assert named == methods, (name, named, methods)


def test_a_mistyped_config_path_names_the_file_meant(tmp_path):
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "fmnist_mlp.yaml").write_text("{}\n")
    (folder / "cifar10_resnet56.yaml").write_text("{}\n")
    with pytest.raises(ConfigError, match=r"fmnist_mpl.yaml; did you mean .*configs/fmnist_mlp.yaml\?"):
        load_yaml(folder / "fmnist_mpl.yaml")
    with pytest.raises(ConfigError, match=r"zzz.yaml; YAML files in .*configs: "
                                          r"cifar10_resnet56.yaml, fmnist_mlp.yaml$"):
        load_yaml(folder / "zzz.yaml")
