"""make bench-width's time budget: a width-scaling sweep starts no configuration predicted to
run past its cap or past what is left of the sweep's budget, and says which stopped it."""
from __future__ import annotations

import argparse
import json
import sys

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
    base = dict(methods=["a:sparse", "b:masked"], widths=[1, 2, 4, 8, 16], mem_cap_gib=1.0,
                time_cap_s=30.0, budget_s=30.0)
    return argparse.Namespace(**(base | kw))


def _sleeping_child(seconds_per_width: float):
    """A child that sleeps ``seconds_per_width``·width and reports a JSON row, as the real one."""
    def command(method, engine, width, cap):
        code = (f"import json, time; time.sleep({seconds_per_width * width}); "
                f"print(json.dumps({{'step_time_s': {width}, 'peak_mem_bytes': 1, "
                f"'status': 'ok', 'cap': {cap}}}))")
        return [sys.executable, "-c", code]
    return command


def _sweep(args, child):
    ws = _width_scaling()
    return ws.sweep_widths(args, lambda m, e, w: {"method": m, "engine": e, "width": w,
                                                  "active_params": w},
                           child, lambda engine, width: 0)


def test_a_sweep_stops_each_method_at_its_predicted_time_cap():
    args = _args(time_cap_s=1.5, budget_s=60.0, widths=[1, 2, 4, 8, 16, 32])
    rows = _sweep(args, _sleeping_child(0.05))
    status = {(r["method"], r["width"]): r["status"] for r in rows}
    # walls ≈ start-up + 0.05·w: w = 16 runs (≲ 1.1 s), w = 32 is predicted past 1.5 s
    assert status[("a", 1)] == status[("b", 1)] == "ok"
    assert status[("a", 32)] == status[("b", 32)] == "predicted_timeout"
    assert "timeout" not in status.values()


def test_the_budget_is_shared_in_order_and_each_child_gets_at_most_what_is_left():
    rows = _sweep(_args(budget_s=2.5), _sleeping_child(0.15))
    by = {(r["method"], r["width"]): r for r in rows}
    assert by[("a", 1)]["status"] == "ok"
    assert by[("a", 1)]["cap"] <= 2.5
    assert any(r["status"] == "over_budget" for r in rows)
    # once over budget, that method's wider widths are recorded, not run
    a = [by[("a", w)]["status"] for w in (1, 2, 4, 8, 16)]
    first = a.index("over_budget") if "over_budget" in a else len(a)
    assert all(s == "over_budget" for s in a[first:])
    # the second method starts with what the first left, and is cut by it too
    assert by[("b", 16)]["status"] in ("over_budget", "predicted_timeout")
    caps = [r["cap"] for r in rows if r["status"] == "ok"]
    assert caps == sorted(caps, reverse=True)            # each child's cap: what was left
    json.dumps(rows)                                      # rows stay plain data (for the CSV)
