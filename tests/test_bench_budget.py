"""make bench-width's time budget: a width-scaling sweep starts no configuration predicted to
run past its cap or past what is left of the sweep's budget, and says which stopped it."""
from __future__ import annotations

import argparse
import json
import types

from .conftest import load_benchmark


def _width_scaling():
    return load_benchmark("width_scaling")


def test_predicted_wall_extrapolates_the_last_growth():
    ws = _width_scaling()
    assert ws.predicted_wall([]) == 0.0
    assert ws.predicted_wall([3.0]) == 6.0
    assert ws.predicted_wall([2.0, 3.0]) == 4.5
    assert ws.predicted_wall([3.0, 2.0]) == 2.0       # never predicts a wider one faster


def _args(**kw):
    base = dict(methods=["a:sparse", "b:masked"], widths=[1, 2, 4, 8, 16, 32], mem_cap_gib=1.0,
                time_cap_s=30.0, budget_s=30.0)
    return argparse.Namespace(**(base | kw))


def _sweep(args, wall_of_width):
    """``sweep_widths`` with children that take ``wall_of_width(width)`` seconds of a fake
    clock (killed at their cap, as ``run_configuration`` does), so the test is exact."""
    ws = _width_scaling()
    clock = types.SimpleNamespace(now=0.0)
    ws.time = types.SimpleNamespace(perf_counter=lambda: clock.now)
    caps = []

    def run_configuration(cmd, base, cap):
        width, wall = cmd, wall_of_width(cmd)
        caps.append(cap)
        if wall > cap:
            clock.now += cap
            return {**base, "status": "timeout", "wall_s": cap}
        clock.now += wall
        return {**base, "status": "ok", "step_time_s": width, "peak_mem_bytes": 1,
                "wall_s": wall}

    ws.run_configuration = run_configuration
    rows = ws.sweep_widths(args, lambda m, e, w: {"method": m, "engine": e, "width": w,
                                                  "active_params": w},
                           lambda method, engine, width, cap: width, lambda engine, width: 0)
    return rows, caps, clock.now


def test_a_sweep_stops_each_method_at_its_predicted_time_cap():
    # walls 1 + w: 2, 3, 5, 9, 17: w = 16 predicted 9·9/5 = 16.2 ≤ 20 runs (17 s);
    # w = 32 predicted 17·17/9 = 32 > 20 is not started
    rows, caps, _ = _sweep(_args(time_cap_s=20.0, budget_s=1000.0), lambda w: 1.0 + w)
    status = {(r["method"], r["width"]): r["status"] for r in rows}
    for m in "ab":
        assert [status[(m, w)] for w in (1, 2, 4, 8, 16)] == ["ok"] * 5
        assert status[(m, 32)] == "predicted_timeout"
    assert set(caps) == {20.0}


def test_the_budget_is_shared_in_order_and_bounds_the_whole_sweep():
    # a: walls 2, 3, 5 (10 s), w = 8 predicted 8.3 > 2 left → over_budget;
    # b: w = 1 gets the last 2 s as its cap and runs (2 s); nothing is left for w = 2
    rows, caps, spent = _sweep(_args(budget_s=12.0), lambda w: 1.0 + w)
    status = {(r["method"], r["width"]): r["status"] for r in rows}
    assert [status[("a", w)] for w in (1, 2, 4, 8, 16, 32)] == ["ok"] * 3 + ["over_budget"] * 3
    assert [status[("b", w)] for w in (1, 2)] == ["ok", "over_budget"]
    assert caps == [12.0, 10.0, 7.0, 2.0]               # each child: what was left
    assert spent <= 12.0


def test_a_child_that_outgrows_its_prediction_is_stopped_at_its_cap():
    # walls 2, 3, then 40 at w = 4 (predicted 4.5): killed at the 20-s cap, wider not run
    rows, _, _ = _sweep(_args(time_cap_s=20.0, methods=["a:sparse"]),
                        lambda w: {1: 2.0, 2: 3.0}.get(w, 40.0))
    assert [r["status"] for r in rows] == ["ok", "ok", "timeout"] + \
        ["not run: timeout at a smaller width"] * 3
    json.dumps(rows)                                      # rows stay plain data (for the CSV)
