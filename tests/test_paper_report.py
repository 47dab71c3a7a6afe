"""The paper's report on fake result trees: tables spanning sweeps, the paper's numbers beside
ours, and artifacts whose runs are missing."""
from __future__ import annotations

import math

import matplotlib
import pandas as pd
import pytest

from sparsebench.launch import spec as sweep_spec
from sparsebench.config.schema import ConfigError
from sparsebench.paper import published, report, tables
from sparsebench.paper.artifacts import BY_ID
from sparsebench.paper.names import Names
from sparsebench.paper.runs import Library
from sparsebench.reporting.results import method_label

from .fake_results import write_config_run

matplotlib.use("Agg")

# Two small stand-ins for the paper's Table 1 sweeps (same names, so the artifacts find them),
# on data sets that need no files to expand: an MLP and LeNet-5 at two densities.
TABLE1_SWEEP = """
name: {name}
description: fake Table 1 sweep
base: configs/fmnist_mlp.yaml
overrides: {{epochs: 2, data.name: {data}}}
grid:
  model.name: [mlp, lenet5]
  method: [dense, static, {{name: gse, sampler: uniform}}, {{name: gse, sampler: grabo}}]
  density: [0.1, 0.02]
  seed: [0, 1]
"""
EPOCHS_SWEEP = """
name: paper_table3_epochs
description: fake extended-training sweep
extends: {parent}
grid:
  model.name: [mlp]
  method: [{{name: gse, sampler: uniform}}]
  density: [0.02]
  epochs: [3, 4]
"""


@pytest.fixture
def fake(tmp_path):
    folder = tmp_path / "sweeps"
    folder.mkdir()
    for name, data in (("cifar10_densities", "fashion_mnist"), ("cifar100_densities", "mnist")):
        (folder / f"{name}.yaml").write_text(TABLE1_SWEEP.format(name=name, data=data))
    (folder / "paper_table3_epochs.yaml").write_text(
        EPOCHS_SWEEP.format(parent=folder / "cifar100_densities.yaml"))
    root = tmp_path / "results"
    lib = Library(root, lambda n: folder / f"{n}.yaml")
    return root, lib, folder


def accuracy_of(data, model, label, density, seed=0, epochs=2) -> float:
    """A known accuracy per cell: data set, model, method, density and seed all move it."""
    base = {"fashion_mnist": 80.0, "mnist": 90.0}[data] + {"mlp": 0.0, "lenet5": 2.0}[model]
    base += {"dense": 5.0, "static": 0.0, "gse (uniform)": 1.0, "gse (grabo)": 1.5}[label]
    return base - 10 * (0.1 - density if density < 1 else 0) + seed + epochs / 10


def accuracy(cfg) -> float:
    return accuracy_of(cfg.data.name, cfg.model.name,
                       method_label(cfg.method.name, cfg.method.params.get("sampler")),
                       cfg.density, cfg.seed, cfg.epochs)


def land(root, folder, name, skip=lambda cfg: False, **kw):
    """Write a completed result for every cell of a sweep (but those ``skip`` says)."""
    sweep = sweep_spec.expand(str(folder / f"{name}.yaml"))
    for cell in sweep.cells:
        if not skip(cell.config):
            write_config_run(root, cell.config, acc=accuracy(cell.config),
                             curve=[accuracy(cell.config) - 5, accuracy(cell.config)], **kw)
    return sweep


def ctx(**kw):
    return report.Context(names=Names(), **kw)


def test_table1_spans_both_sweeps_in_the_papers_layout(fake):
    root, lib, folder = fake
    land(root, folder, "cifar10_densities")
    land(root, folder, "cifar100_densities",
         skip=lambda c: c.method.name == "static" and c.seed == 1)  # one missing run
    ev = lib.evidence(BY_ID["table1"].sources)
    table = tables.table1(ev, ctx(published=published.load()))

    header = table.markdown.splitlines()[2]
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns == ["method"] + [f"{d} · {m} · {s}" for d in ("Fashion-MNIST", "MNIST")
                                    for m in ("MLP", "LeNet-5") for s in ("90%", "98%")]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")[1:]]
            for line in table.markdown.splitlines()[4:] if line.startswith("|")}
    # The paper's rows in its order: Dense, then the methods; absent ones are dashes.
    order = [line.split("|")[1].strip() for line in table.markdown.splitlines()[4:]
             if line.startswith("|")]
    assert order[:4] == ["Dense", "Lottery", "Gradual", "Static"]
    assert order.index("GSE (uniform)") < order.index("GSE (GraBo)")
    assert rows["Lottery"] == ["—"] * 8
    # Mean ± sample std of seeds 0 and 1 (accuracies differ by 1): std = 0.71.
    mean = accuracy_of("fashion_mnist", "mlp", "gse (uniform)", 0.02) + 0.5
    # Bold: every sparse method not significantly below the column's best (Welch, Holm): at 2
    # seeds 0.71 apart, GSE (uniform) 0.5 below GSE (GraBo) is tied with it.
    assert rows["GSE (uniform)"][1] == f"**{mean:.2f} ± 0.71**"
    # Dense appears in every sparsity column of its model, never bold (not a competitor).
    assert rows["Dense"][0] == rows["Dense"][1] != "—" and not rows["Dense"][0].startswith("**")
    assert rows["GSE (GraBo)"][0].startswith("**") and rows["GSE (uniform)"][0].startswith("**")
    best = table.csv[(table.csv["method"] == "GSE (GraBo)") & (table.csv["dataset"] == "mnist")]
    assert best["tied_with_best"].tolist() == [True] * 4 and best["p_vs_best"].isna().all()
    assert {"acc_ci_low", "acc_ci_high"} <= set(table.csv.columns)
    assert "Welch's two-sided t-test" in table.markdown
    # CIFAR-100's static at 90 %, MLP: one of two seeds landed, shown without a std.
    assert rows["Static"][4] == f"{accuracy_of('mnist', 'mlp', 'static', 0.1):.2f}"
    absent = next(n for n in table.notes if "in none of these sweeps" in n)
    assert "Lottery" in absent and "SET" in absent
    csv = table.csv
    assert set(csv["dataset"]) == {"fashion_mnist", "mnist"} and len(csv) == 8 * 13
    assert r"\textbf{" in table.latex and r"\multicolumn" in table.latex
    assert ev.counts()["missing"] == 4  # static, seed 1, on MNIST: 2 models x 2 densities


def test_table1_splits_runs_of_different_budgets_into_rows_of_their_own(fake):
    """A sweep whose cells differ in a field that is not one of the table's axes (here its grid
    adds ``epochs: [2, 3]``) never averages them into one cell: ``epochs`` becomes a column
    beside the method, each value a row of its own, each compared within its own column."""
    root, lib, folder = fake
    path = folder / "cifar10_densities.yaml"
    path.write_text(path.read_text() + "  epochs: [2, 3]\n")
    land(root, folder, "cifar10_densities")
    land(root, folder, "cifar100_densities")
    table = tables.table1(lib.evidence(BY_ID["table1"].sources), ctx(published=published.load()))
    lines = [line for line in table.markdown.splitlines() if line.startswith("|")]
    columns = [c.strip() for c in lines[0].strip("|").split("|")]
    assert columns[:2] == ["method", "epochs"]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    gse = {r[1]: r[2] for r in rows if r[0] == "GSE (uniform)"}
    assert set(gse) == {"2", "3"}
    for epochs, text in gse.items():   # seeds 0 and 1 of that budget only: std 0.71
        mean = accuracy_of("fashion_mnist", "mlp", "gse (uniform)", 0.1, epochs=int(epochs)) + 0.5
        assert text.strip("*") == f"{mean:.2f} ± 0.71"
    assert "epochs: 2, 3" in table.markdown
    csv = table.csv[(table.csv["method"] == "GSE (uniform)") & (table.csv["dataset"] == "fashion_mnist")]
    assert sorted(set(csv["epochs"])) == [2, 3] and set(csv["n"]) == {2}


def test_published_numbers_file_holds_the_issues_values():
    df = published.load()
    t3 = df[df["artifact"] == "table3"]
    assert len(t3) == 9 and set(t3["epochs"]) == {200, 300, 400}
    row = t3[(t3["model"] == "vgg16_small") & (t3["epochs"] == 300)].iloc[0]
    assert (row["value"], row["pm"], row["sparsity"]) == (44.1, 0.4, 0.98)
    t4 = df[df["artifact"] == "table4"].sort_values("width")
    assert list(t4["value"]) == [60.3, 62.5, 62.2, 62.2] and list(t4["pm"]) == [0.6, 0.5, 0.4, 0.1]
    assert all("Table" in s for s in df["source"])
    hit = published.lookup(df, "table3", dataset="cifar100", model="simple_vit_tiny",
                           method="gse (uniform)", sparsity=0.98, epochs=400)
    assert (hit.value, hit.pm) == (47.8, 0.5) and hit.text() == "47.8 ± 0.5"
    assert published.lookup(df, "table3", model="resnet56", epochs=250) is None


def test_a_malformed_published_file_names_the_line_and_field(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text(",".join(published.COLUMNS) + "\n"
                    "table3,cifar100,resnet56,gse (uniform),0.98,200,1,high,0.5,src,\n")
    with pytest.raises(ConfigError, match="value: .* line 2: got 'high'; allowed: a number"):
        published.load(path)


def test_table3_prints_the_papers_numbers_beside_ours_with_the_difference(fake, tmp_path):
    root, lib, folder = fake
    land(root, folder, "cifar100_densities")
    land(root, folder, "paper_table3_epochs")
    path = tmp_path / "published.csv"
    path.write_text(",".join(published.COLUMNS) + "\n"
                    'table3,mnist,mlp,gse (uniform),0.98,3,1,85.0,0.4,"Made-up Table 3",7\n')
    ev = lib.evidence(BY_ID["table3"].sources)
    table = tables.table3(ev, ctx(published=published.load(path)))
    ours = accuracy_of("mnist", "mlp", "gse (uniform)", 0.02, epochs=3) + 0.5  # seeds 0, 1
    line = next(l for l in table.markdown.splitlines() if l.startswith("| MLP"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    header = [c.strip() for c in table.markdown.splitlines()[2].strip("|").split("|")]
    # 2 epochs come from the Table 1 sweep, 3 and 4 from the extended-training one.
    assert header == ["model"] + [f"{e} epochs: {k}" for e in (2, 3, 4)
                                  for k in ("ours", "paper", "Δ")]
    assert cells[4:7] == [f"{ours:.2f} ± 0.71", "85.0 ± 0.4", f"{ours - 85:+.1f}".replace("-", "−")]
    assert cells[2] == "—" and cells[3] == "—"  # no published number at 2 epochs
    beside = [b for b in table.beside if b["paper"] != "—"]
    assert beside == [{"what": "MLP, 3 epochs", "ours": f"{ours:.2f} ± 0.71",
                       "paper": "85.0 ± 0.4", "difference": f"{ours - 85:+.1f}".replace("-", "−"),
                       "source": "Made-up Table 3, p. 7"}]
    row = table.csv[(table.csv["epochs"] == 3)].iloc[0]
    assert row["difference"] == pytest.approx(ours - 85)
    # A miniature shows the paper's number for orientation, never a difference.
    mini = tables.table3(ev, ctx(published=published.load(path), comparable=False))
    assert "Δ" not in mini.markdown and "paper (full size)" in mini.markdown


def test_missing_runs_are_reported_and_never_fail_the_report(fake):
    root, lib, folder = fake
    land(root, folder, "cifar10_densities", skip=lambda c: c.method.name == "gse")
    out = root / "paper"
    entries = report.write(out, lib, ctx(published=published.load(), kernels_dir=out / "kernels"),
                           only=["table1", "table2", "fig2", "fig6", "fig8"])
    state = {e.artifact.id: e for e in entries}
    index = (out / "index.md").read_text()
    # table1: CIFAR-10's GSE runs and all of CIFAR-100 are missing, and the index says which.
    assert state["table1"].state == "partial"
    n10 = len(sweep_spec.expand(str(folder / "cifar10_densities.yaml")).cells)
    assert state["table1"].counts.startswith(f"{2 * n10} needed: {n10 - 16} completed")
    assert "cifar10_densities · fashion_mnist · mlp · gse (uniform)" in index
    assert (out / "table1.md").is_file() and (out / "table1.tex").is_file()
    # Sweeps that do not exist here: a problem line, tables of dashes, figures not drawn.
    assert "sweep paper_table2_imagenet cannot be expanded" in index
    assert state["fig2"].state == "not drawn" and not (out / "fig2.png").exists()
    assert "sweep paper_fig2_gamma cannot be expanded" in index
    assert state["fig8"].state == "not drawn" and "no sparse_layer*.csv" in index
    # fig6 is drawn from what landed, with its caption counting runs per point.
    assert (out / "fig6.png").is_file() and "2 runs per point" in state["fig6"].caption


def test_fig8_reads_the_benchmark_csv(tmp_path):
    from sparsebench.paper import kernels

    rows = [{"width": n, "sparsity": s, "density": 1 - s, "nnz": 1, "batch": 128, "variant": v,
             "mode": mode, "time_s": (1e-3 if v == "dense" else 1e-3 * (1 - s) * 10) * n / 256,
             "speedup_vs_dense": 1.0, "reps": 3, "status": "ok", "threads": 1, "device": "cpu"}
            for n in (256, 512) for s in (0.9, 0.99) for v in ("dense", "coo", "csr")
            for mode in ("forward", "forward_backward")]
    rows.append({**rows[0], "variant": "csr", "time_s": None, "status": "skipped: too slow"})
    (tmp_path / "sparse_layer_cpu.csv").write_text(pd.DataFrame(rows).to_csv(index=False))
    data = kernels.load(tmp_path)
    assert set(data["mode"]) == {"forward"} and data["time_s"].notna().all()
    assert len(data) == 2 * 2 * 3
    fig = kernels.figure(data)
    panel = fig.axes[0]
    assert panel.get_ylabel().startswith("time per product (ms")
    assert {t.get_text() for t in fig.legends[0].get_texts()} == {"Dense", "COO", "CSR"}


def test_fig4_matches_the_rigl_papers_formula():
    """Evci et al. 2020, App. H: RigL costs (3 f_S ΔT + 2 f_S + f_D) / (ΔT + 1) per example."""
    from sparsebench.paper import flops_model

    fl = flops_model.count("resnet50", 1000, (3, 224, 224))
    # ResNet-50 v1.5 is 4.1 G multiply-adds per 224² image (He et al. 2016): 8.2 GFLOPs.
    assert fl.dense == pytest.approx(8.2e9, rel=0.02) and fl.rest == 0
    for sparsity in (0.9, 0.99):
        d, dt = 1 - sparsity, 1000
        f_s = d * fl.dense  # every layer prunable, uniform density
        assert flops_model.rigl(fl, d, dt) == pytest.approx((3 * f_s * dt + 2 * f_s + fl.dense)
                                                            / (dt + 1))
        # GSE swaps the dense gradient for γ·|A| sampled candidates (γ = 1): a sparse-step cost.
        assert flops_model.gse(fl, d, dt) == pytest.approx((3 * f_s * dt + 3 * f_s + f_s)
                                                           / (dt + 1))
    curve = flops_model.curve(fl)
    last = curve[curve["density"] == curve["density"].min()].set_index("method")
    assert curve["sparsity"].min() == pytest.approx(0.5) and last["density"].iloc[0] == pytest.approx(1e-8)
    # RigL's dense gradient every ΔT steps floors it at f_D / (ΔT + 1); GSE keeps falling.
    assert last.loc["RigL", "train_flops_rel_dense"] == pytest.approx(1 / (3 * 1001), rel=1e-3)
    assert last.loc["GSE", "train_flops_rel_dense"] < 1e-7
    fig = flops_model.figure(curve)
    ax = fig.axes[0]
    assert ax.get_xscale() == ax.get_yscale() == "log"
    assert "FLOPs" in ax.get_ylabel() and "sparsity" in ax.get_xlabel()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["RigL", "GSE"]
    assert not math.isnan(last.loc["GSE", "train_flops"])


def test_curves_of_methods_with_rounds_show_their_last_round():
    from sparsebench.paper.fig_curves import last_round

    rows = pd.DataFrame([{"run_id": "a", "round": r, "round_epoch": e, "epoch": 2 * r + e,
                          "test_acc": 10 * r + e} for r in (0, 1, 2) for e in (1, 2)]
                        + [{"run_id": "b", "round": 0, "round_epoch": e, "epoch": e,
                            "test_acc": e} for e in (1, 2)])
    out = last_round(rows)
    assert sorted(zip(out["run_id"], out["epoch"], out["test_acc"])) == [
        ("a", 1, 21), ("a", 2, 22), ("b", 1, 1), ("b", 2, 2)]
