"""The tables' statistics on results whose truth is known: error rates of "below the best", the
confidence interval, equal budgets made visible, and cells of dynamic methods that never
changed their mask."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from sparsebench import load_results, report
from sparsebench.reporting import cells, comparisons, statistics, tables
from sparsebench.storage import paths
from sparsebench.storage.run_files import result_problem

from .fake_results import write_run


@pytest.fixture
def root(tmp_path):
    return tmp_path / "results"


# ---- the tests themselves, simulated --------------------------------------------------------

def test_five_equal_methods_at_three_seeds_are_called_below_the_best_at_most_6_5_percent():
    # 2000 columns of 5 methods with the same truth; a column errs when any method is found
    # significantly below its best. 5 % plus three standard errors of the simulation = 6.5 %.
    values = np.random.default_rng(32).normal(80.0, 0.5, size=(2000, 5, 3))
    _, p = statistics.column_tests(values)
    family_wise = np.mean((p < statistics.ALPHA).any(axis=1))
    assert family_wise <= 0.065, family_wise
    assert family_wise > 0.01  # a test that can reject at all


def test_a_difference_of_three_standard_deviations_at_five_seeds_is_found_in_80_percent():
    values = np.random.default_rng(33).normal(80.0, 1.0, size=(2000, 5, 5))
    values[:, 4] -= 3.0  # method 4 is 3 sd below the other four
    best, p = statistics.column_tests(values)
    assert not (best == 4).any()
    assert np.mean(p[:, 4] < statistics.ALPHA) >= 0.80


def test_the_column_function_of_the_tables_decides_as_the_simulated_one():
    values = np.random.default_rng(34).normal(80.0, 1.0, size=(40, 4, 3))
    values[:, 0] += 1.5
    best, p = statistics.column_tests(values)
    for column, b, row in zip(values, best, p):
        results = statistics.against_best(list(column))
        assert [r.is_best for r in results] == [i == b for i in range(4)]
        for i, r in enumerate(results):
            if i != b:
                assert r.p_vs_best == pytest.approx(row[i])
                assert r.tied_with_best == (row[i] >= statistics.ALPHA)


def test_holm_gives_the_numbers_of_statsmodels():
    rng = np.random.default_rng(35)
    for _ in range(30):
        p = rng.random(int(rng.integers(1, 8))) ** 3
        assert np.allclose(statistics.holm(p), multipletests(p, method="holm")[1])
    # a missing p-value (no test) is not a comparison
    assert np.allclose(statistics.holm([0.01, np.nan, 0.02]), [0.02, np.nan, 0.02],
                       equal_nan=True)


def test_the_interval_is_scipys_t_interval():
    values = [80.0, 82.0, 84.5, 81.0]
    expected = stats.t.interval(0.95, 3, loc=np.mean(values), scale=stats.sem(values))
    assert statistics.mean_interval(values) == pytest.approx(expected)
    assert all(math.isnan(x) for x in statistics.mean_interval([80.0]))
    assert statistics.mean_interval([80.0, 80.0]) == (80.0, 80.0)


def test_no_test_at_one_seed_or_without_any_spread_and_nothing_bold_by_accident():
    # one seed each: nothing can be tested, nothing is tied or below, the best is not bold
    results = statistics.against_best([[80.0], [70.0]])
    assert [r.tied_with_best for r in results] == [None, None]
    # identical seeds in both cells: Welch is undefined, no test
    results = statistics.against_best([[80.0, 80.0], [79.0, 79.0]])
    assert results[1].tied_with_best is None and math.isnan(results[1].p_vs_best)
    assert results[0].tied_with_best is None
    # a cell alone in its column is not bold
    assert statistics.against_best([[80.0, 81.0]])[0].tied_with_best is None


def test_seeds_needed_grow_as_the_difference_shrinks():
    base = [80.0, 81.0, 82.0]
    assert statistics.seeds_needed(base, [79.0, 80.0, 81.0]) > \
        statistics.seeds_needed(base, [77.0, 78.0, 79.0]) >= 2
    assert statistics.seeds_text(17, 3) == "n≥17" and statistics.seeds_text(3, 3) == ""
    assert statistics.seeds_text(1e9, 3) == ">100"


def test_probability_of_improvement_is_mann_whitney_u_over_n_m():
    samples = {"c1": {"a": np.array([1.0, 2.0, 3.0]), "b": np.array([2.0, 2.0])},
               "c2": {"a": np.array([5.0]), "b": np.array([4.0])}}
    matrix = statistics.probability_of_improvement(samples)
    # c1: pairs (1,2)x2 lose, (2,2)x2 tie, (3,2)x2 win -> (2 + 0.5 * 2) / 6 = 0.5; c2: 1
    assert matrix.loc["a", "b"] == pytest.approx((0.5 + 1.0) / 2)
    assert matrix.loc["b", "a"] == pytest.approx((0.5 + 0.0) / 2)


# ---- on result trees ------------------------------------------------------------------------

def three_methods(root, sweep="stat", spread=(0.0, 0.4, -0.4)):
    for seed, noise in enumerate(spread):
        write_run(root, sweep, "static", 0.1, seed, acc=80.0 + noise)
        write_run(root, sweep, "set", 0.1, seed, acc=80.1 + noise)
        write_run(root, sweep, "rigl", 0.1, seed, acc=70.0 + noise)
    return sweep


def test_main_csv_carries_the_interval_the_test_and_the_tie(root):
    sweep = three_methods(root)
    table = tables.main_table(load_results(sweep, root)).set_index("method_label")
    assert bool(table.loc["set", "tied_with_best"]) and bool(table.loc["static", "tied_with_best"])
    assert table.loc["rigl", "tied_with_best"] is False and table.loc["rigl", "p_vs_best"] < 0.05
    low, high = stats.t.interval(0.95, 2, loc=80.0, scale=stats.sem([80.0, 80.4, 79.6]))
    assert (table.loc["static", "acc_ci_low"], table.loc["static", "acc_ci_high"]) == \
        (pytest.approx(low), pytest.approx(high))

    assert report.main([sweep, "--results", str(root), "--no-figures"]) == 0
    main = pd.read_csv(paths.tables_dir(sweep, root) / "main.csv")
    for column in ("acc_ci_low", "acc_ci_high", "p_vs_best", "tied_with_best", "few_mask_updates"):
        assert column in main.columns
    pivot = (paths.tables_dir(sweep, root) / "accuracy_pivot.md").read_text()
    assert "**80.10 ± 0.40**" in pivot and "**80.00 ± 0.40**" in pivot
    assert "70.00 ± 0.40" in pivot and "**70.00" not in pivot
    assert "Welch's two-sided t-test" in pivot and "Holm" in pivot and "α = 0.05" in pivot
    assert "n = 3 seeds per cell" in pivot
    ranks = (paths.tables_dir(sweep, root) / "ranks.md").read_text()
    assert "Probability of improvement" in ranks and "rigl" in ranks


def test_a_table_whose_runs_differ_in_epochs_shows_the_epochs_column(root, capsys):
    # `sweep NAME method.name=set epochs=2` beside the sweep's own 1-epoch static runs
    for seed in (0, 1):
        write_run(root, "budgets", "static", 0.05, seed, acc=41.0 + seed, epochs=1)
        write_run(root, "budgets", "set", 0.05, seed, acc=72.9 + seed, epochs=2)
    df = load_results("budgets", root)
    assert "config.epochs" in cells.cell_keys(df)
    table = tables.main_table(df)
    assert "epochs" in table.columns and sorted(table["epochs"]) == [1, 2]
    # different budgets are different columns: nothing compared, nothing bold
    assert table["tied_with_best"].isna().all()
    assert report.main(["budgets", "--results", str(root), "--no-figures"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].startswith("Differs between runs") and "epochs: 1, 2" in out
    assert "| epochs |" in (paths.tables_dir("budgets", root) / "accuracy_pivot.md").read_text()
    main = pd.read_csv(paths.tables_dir("budgets", root) / "main.csv")
    assert "epochs" in main.columns


def test_a_rerun_of_the_same_config_and_seed_is_counted_once(root, capsys):
    """A sweep rerun after sparsebench grew a method parameter (Top-KAST's ``entering_weight``,
    ``keep_momentum_outside_b``, ``sets``) leaves the older runs beside the new ones under other
    run ids: same method, density and seed, the new fields missing. A missing field is the
    method's default, so they repeat the new runs: the newest of each counts, once."""
    import json
    import shutil

    for seed in (0, 1, 2):
        write_run(root, "older", "topkast", 0.02, seed, acc=87.0 + seed / 10)
        write_run(root, "older", "static", 0.02, seed, acc=86.0 + seed / 10)
    runs = paths.runs_dir("older", root)
    for run in [d for d in sorted(runs.iterdir())]:
        result = json.loads((run / "result.json").read_text())
        if result["config"]["method"]["name"] != "topkast":
            continue
        old = runs / f"old{run.name[3:]}"
        shutil.copytree(run, old)
        for field in ("entering_weight", "keep_momentum_outside_b", "sets"):
            result["config"]["method"].pop(field, None)
        result.update(run_id=old.name, finished_at="2020-01-01T00:00:00+00:00")
        (old / "result.json").write_text(json.dumps(result))
    df = load_results("older", root)
    assert len(df) == 9 and int(df["superseded"].sum()) == 3
    assert set(df.loc[df["superseded"], "run_id"]) == {d.name for d in runs.iterdir()
                                                        if d.name.startswith("old")}
    table = tables.main_table(df).set_index("method_label")
    assert table.loc["topkast", "n"] == 3 and table.loc["topkast", "acc_std"] == pytest.approx(0.1)
    assert "config.method.entering_weight" not in cells.extra_keys(df)
    assert report.main(["older", "--results", str(root), "--no-figures"]) == 0
    assert "Left out: 3 completed run(s) repeating the config and seed" in capsys.readouterr().out


def test_a_field_null_in_some_runs_differs_from_a_value(root):
    for seed in (0, 1):
        write_run(root, "nulls", "static", 0.1, seed, acc=80.0 + seed)
    df = load_results("nulls", root)
    both = pd.concat([df.assign(**{"config.data.train_subset": 2048}),
                      df.assign(**{"config.data.train_subset": None, "run_id": df["run_id"] + "f",
                                   "final_test_acc": df["final_test_acc"] - 10})],
                     ignore_index=True)
    assert cells.extra_keys(both) == ["config.data.train_subset"]
    assert cells.differences(both) == [f"data.train_subset: 2048, {cells.NOT_SET}"]
    assert tables.main_table(both)["n"].tolist() == [2, 2]


def test_a_recipe_field_set_per_method_is_shown_but_compared_across(root):
    for seed in (0, 1):
        write_run(root, "recipe", "static", 0.1, seed, acc=80.0 + seed)
        write_run(root, "recipe", "rigl", 0.1, seed, acc=81.0 + seed)
    df = load_results("recipe", root)  # each method's default distribution, as `own` resolves
    df.loc[df["method"] == "rigl", "config.sparsity.distribution"] = "erk"
    df.loc[df["method"] == "static", "config.sparsity.distribution"] = "er"
    assert cells.recipe_differences(df) == ["config.sparsity.distribution"]
    assert "config.sparsity.distribution" not in cells.extra_keys(df)
    table = tables.main_table(df)
    assert "sparsity.distribution" in table.columns
    assert table["tied_with_best"].notna().all()  # one column: compared

    # two protocols (each method's own distribution under `own`, er_flat under the paper's):
    # the protocol splits, the distribution does not
    both = pd.concat([df.assign(**{"config.protocol": "own"}),
                      df.assign(**{"config.protocol": "gse_paper",
                                   "config.sparsity.distribution": "er_flat",
                                   "run_id": df["run_id"] + "p"})], ignore_index=True)
    assert cells.extra_keys(both) == ["config.protocol"]
    table = tables.main_table(both)
    assert len(table) == 4 and table["tied_with_best"].notna().all()
    # swept as a grid axis within one method and protocol, it splits
    swept = pd.concat([df, df.assign(**{"config.sparsity.distribution": "uniform",
                                        "run_id": df["run_id"] + "u"})], ignore_index=True)
    assert "config.sparsity.distribution" in cells.extra_keys(swept)


def test_every_field_a_protocol_sets_per_method_is_a_recipe_field():
    from sparsebench import protocols

    for name in protocols.available():
        if name == protocols.OWN:
            continue
        protocol = protocols.load(name)
        for fields in protocol.method_run.values():
            for field in fields:
                assert f"config.{field}" in cells.RECIPE_FIELDS, (name, field)


def test_a_dynamic_run_without_mask_updates_is_marked(root, capsys):
    for seed in (0, 1):
        write_run(root, "frozen", "static", 0.05, seed, acc=72.71 + seed, dynamic=False,
                  mask_updates=0)
        write_run(root, "frozen", "gse", 0.05, seed, acc=72.71 + seed, sampler="uniform",
                  dynamic=True, mask_updates=0)
        write_run(root, "frozen", "rigl", 0.05, seed, acc=73.0 + seed)  # an older result
    table = tables.main_table(load_results("frozen", root)).set_index("method_label")
    assert table.loc["gse (uniform)", "few_mask_updates"] == 2
    assert table.loc["static", "few_mask_updates"] == 0      # static never updates: no mark
    assert table.loc["rigl", "few_mask_updates"] == 0        # no keys: no mark, no error
    assert report.main(["frozen", "--results", str(root), "--no-figures"]) == 0
    out = capsys.readouterr().out
    assert f"{tables.FEW_UPDATES_MARK}" in out and "mask_updates" in out
    pivot = (paths.tables_dir("frozen", root) / "accuracy_pivot.md").read_text()
    row = next(line for line in pivot.splitlines() if line.startswith("| gse (uniform)"))
    assert tables.FEW_UPDATES_MARK in row
    static = next(line for line in pivot.splitlines() if line.startswith("| static"))
    assert tables.FEW_UPDATES_MARK not in static
    main = pd.read_csv(paths.tables_dir("frozen", root) / "main.csv")
    assert main["few_mask_updates"].tolist().count(2) == 1


def test_result_json_types_mask_updates_and_dynamic():
    base = {"status": "completed", "mask_updates": 3, "dynamic": True}
    assert result_problem(base) is None
    assert "mask_updates" in result_problem({**base, "mask_updates": True})
    assert "dynamic" in result_problem({**base, "dynamic": 1})
    assert "seed" in result_problem({**base, "seed": True})  # a bool is still no number


def test_ranks_and_the_rank_figure_from_a_sweep(root):
    rng = np.random.default_rng(36)
    for density in (0.1, 0.05, 0.02):
        for seed in range(3):
            for offset, method in enumerate(("static", "set", "rigl")):
                write_run(root, "ranked", method, density, seed,
                          acc=80.0 + 2 * offset + rng.normal(0, 0.2))
    samples = comparisons.column_samples(load_results("ranked", root))
    assert len(samples) == 3
    result = comparisons.ranks(samples)
    assert list(result.average.index) == ["rigl", "set", "static"]
    assert result.average.tolist() == [1.0, 2.0, 3.0] and result.friedman_p < 0.1
    fig = comparisons.rank_figure(samples)
    assert "Friedman p" in fig._suptitle.get_text()
