"""What a sweep launch will do: per run, its earlier outcome and the action, and the plan as
text (``--dry-run`` prints it whole: every cell, the resolved method parameters, a warning for
each dynamic method whose schedule changes the topology fewer than twice in its run, a count of
runs per model x method x density, where they would run)."""
from __future__ import annotations

from pathlib import Path

from . import executors, slurm, spec as sweep_spec
from ..storage import locks, paths
from .. import protocols
from ..training import preflight


def display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


class Plan:
    """What a launch finds: per run, its earlier outcome, and what it will do about it."""

    def __init__(self, sweep: sweep_spec.Sweep, retry_failed: bool):
        self.sweep = sweep
        self.earlier = {c.run_id: executors.read_outcome(c) for c in sweep.cells}
        self.completed = [c for c in sweep.cells if self._status(c) == "completed"]
        self.failed_skipped = [c for c in sweep.cells
                               if self._status(c) in ("failed", "diverged") and not retry_failed]
        rest = [c for c in sweep.cells if c not in self.completed and c not in self.failed_skipped]
        self.attached = slurm.active_records(sweep.name, rest)  # run_id -> SLURM job id
        self.to_run = [c for c in rest if c.run_id not in self.attached]

    def _status(self, cell) -> str | None:
        outcome = self.earlier[cell.run_id]
        return outcome.status if outcome else None

    def action(self, cell) -> str:
        if cell in self.completed:
            return "completed"
        if cell in self.failed_skipped:
            return f"{self._status(cell)} (skip)"
        if cell.run_id in self.attached:
            return f"running as SLURM job {self.attached[cell.run_id]}"
        run_dir = executors.result_path(cell).parent
        holder = locks.holder(run_dir / paths.RUN_LOCK)
        if holder is not None:  # trained right now by a process outside this launcher
            return f"running ({holder})"
        if self._status(cell):
            return "retry"
        return "resume" if (run_dir / paths.CONFIG).is_file() else "to run"


def _what_would_run(executor: str, plan: Plan, workers: int) -> str:
    n = len(plan.to_run)
    if n == 0:
        return "nothing to submit"
    if executor == "slurm":
        spec = plan.sweep.spec.slurm
        params = spec.submitit_parameters()
        text = ", ".join(f"{k}={v}" for k, v in params.items() if v not in ({}, [], None))
        ranks = f", each run data-parallel on {spec.world_size} ranks" if spec.world_size > 1 else ""
        tasks = -(-n // spec.runs_per_task)
        packed = (f" ({n} runs, up to {spec.runs_per_task} side by side in each task)"
                  if spec.runs_per_task > 1 else "")
        return (f"one SLURM array job of {tasks} task{'s' * (tasks > 1)}{packed}, at most "
                f"{min(tasks, spec.array_parallelism)} at once{ranks} ({text})")
    if executor == "local":
        procs = max(1, min(workers, n))
        if procs == 1:
            return f"{n} run{'s' * (n > 1)} one after another in a local process, one torch thread"
        return f"{n} runs in {procs} local processes at once, one torch thread each"
    return f"{n} run{'s' * (n > 1)} one after another in this process"


def print_plan(plan: Plan, executor: str, workers: int, dry_run: bool) -> None:
    sweep = plan.sweep
    dupes = sweep.n_cells - len(sweep.cells)
    print(f"sweep {sweep.name} ({display_path(sweep.path)}): {sweep.n_cells} cells -> "
          f"{len(sweep.cells)} runs" + (f" ({dupes} cell{'s are' if dupes > 1 else ' is'} the same run as another)"
                                    if dupes else ""))
    print(f"  completed {len(plan.completed)}, failed or diverged (not retried) "
          f"{len(plan.failed_skipped)}, running on SLURM {len(plan.attached)}, "
          f"to run {len(plan.to_run)}")
    if dry_run:
        width = max(len(plan.action(c)) for c in sweep.cells)
        print(f"  {'run_id':12}  {'status':{width}}  cell")
        for cell in sweep.cells:
            print(f"  {cell.run_id:12}  {plan.action(cell):{width}}  {cell.describe()}")
        print("resolved method parameters [protocol] method: params | run settings | runs:")
        print("\n".join(protocols.describe(sweep.cells)))
        print("\n".join(few_update_warnings(sweep.cells)))
        print("runs per model x method x density (to run / all):")
        print(count_table(plan))
    print(f"executor {executor}: {_what_would_run(executor, plan, workers)}")


def few_update_warnings(cells) -> list[str]:
    """A line per distinct warning of :func:`preflight.few_updates_warning` among the cells
    (a dynamic method whose schedule changes the topology fewer than twice in its run), with
    the runs it concerns, and one for dynamic runs whose steps are not known here (the steps
    per epoch come from the training set's size)."""
    warned: dict[str, list[str]] = {}
    for cell in cells:
        message = preflight.few_updates_warning(cell.config)
        if message:
            warned.setdefault(message, []).append(cell.run_id)
    unknown = warned.pop(preflight.UNKNOWN_STEPS, [])
    lines = [f"warning: {message} (run{'s' * (len(ids) > 1)} {', '.join(ids)})"
             for message, ids in warned.items()]
    if unknown:
        lines.append(f"mask updates not checked for {len(unknown)} dynamic run"
                     f"{'s' * (len(unknown) > 1)} ({', '.join(unknown)}): the training set's "
                     f"size is not known here (data not found, or ImageNet)")
    return lines


def count_table(plan: Plan) -> str:
    """Runs per model x method (rows) and density (columns), as ``to run/all``."""
    import pandas as pd

    rows = [{"model": c.config.model.name, "method": c.config.method.name,
             "density": c.config.density, "to_run": c in plan.to_run} for c in plan.sweep.cells]
    df = pd.DataFrame(rows)
    total = pd.crosstab([df["model"], df["method"]], df["density"])
    to_run = pd.crosstab([df["model"], df["method"]], df["density"], values=df["to_run"],
                         aggfunc="sum").reindex_like(total).fillna(0).astype(int)
    table = pd.DataFrame(index=total.index)
    for density in sorted(total.columns, reverse=True):
        table[f"d={density:g}"] = [f"{to_run.at[i, density]}/{total.at[i, density]}"
                                   if total.at[i, density] else "" for i in total.index]
    table["all"] = [f"{to_run.loc[i].sum()}/{total.loc[i].sum()}" for i in total.index]
    with pd.option_context("display.width", 200, "display.max_columns", 50, "display.max_rows", 500):
        return "\n".join("  " + line for line in table.to_string().splitlines())
