"""Run a sweep: ``python -m sparsebench.sweep NAME_OR_PATH [key=value ...] [--executor ...]``.

Expands ``sweeps/NAME.yaml`` (see :mod:`sparsebench.launch.spec`) into one run per distinct config,
validates every cell before anything is submitted (an invalid one exits 2 naming the sweep
file, the cell and the field), skips runs whose result.json says completed, reports failed and
diverged runs without running them again (unless ``--retry-failed``), and runs the rest:

  slurm   one SLURM array job through submitit; runs that hit the time limit are requeued
          and resume from their last epoch checkpoint
  local   a pool of local processes, one per core by default, one torch thread each
  inline  in this process, one after another (tests, debugging)
  auto    slurm where `sbatch` is on the PATH, else local

``key=value`` overrides apply to every cell (after the sweep's own values); ``key=a,b,c`` is
one more axis of the grid (or replaces the file's axis of that key), as in Hydra's multirun;
``slurm.FIELD=value`` changes the sweep's SLURM settings. While waiting it shows a bar over the
runs and, at most every ``--lines-every`` seconds, a line per run and finished epoch with its
accuracy and ETA (also in a log file, where the bar does not go); ``--no-wait`` (slurm)
submits and returns, and the same command later reattaches or reports. At the end, mean final test accuracy per method and density with
counts, and a table of the runs that failed with the first line of their error.

Before anything is submitted every cell also passes :mod:`sparsebench.training.preflight` (data set
installed, device present, batch within the training set, no zero-unit layer); on SLURM the
device is checked on the node each run starts on instead (a login node has no GPU); with
``--skip-data-check`` the data-set check is left to each run, which then fails with the same
line. ``--dry-run`` needs no data: it says what the data check found and shows the plan with
a count of runs per model x method x density. Exit code 0 when every run completed; 1 when any failed, diverged or left no result
(the last line counts each); 2 for invalid input; 130 on Ctrl-C.

Ctrl-C leaves submitted SLURM jobs running and every result in place; the same command again
reattaches to the jobs still queued or running (recorded in results/NAME/jobs/submitted.json)
instead of submitting them twice. Local runs stop and resume from their last epoch checkpoint.
"""
from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time
from collections import Counter
from contextlib import contextmanager

from .storage import atomic, locks, paths
from .launch import executors, local_pool, slurm, spec as sweep_spec
from .cli import again as again_command, config_errors_exit, prog, warn_method_problems
from .config.schema import ConfigError
from .config.files import check_unique_overrides
from .launch.executors import Outcome
from .launch.plan import Plan, display_path, print_plan
from .launch.progress import EpochLines, EpochReporter, RunLines, read_result, run_labels

EXECUTORS = ("auto", "slurm", "local", "inline")


class Progress:
    """A bar over the sweep's runs (done / running / failed) on a terminal, and a line per run
    that ends, everywhere (:class:`~sparsebench.launch.progress.RunLines`: done/total, failures
    so far, the sweep's ETA)."""

    def __init__(self, plan: Plan, file=None, disable: bool | None = None):
        from tqdm.auto import tqdm

        self.outcomes: dict[str, Outcome] = {}
        self.file = file
        self.cells = {c.run_id: c for c in plan.sweep.cells}
        self.lines = RunLines(len(plan.sweep.cells), run_labels(plan.sweep.cells),
                              done=len(plan.completed) + len(plan.failed_skipped),
                              failed=len(plan.failed_skipped))
        self.bar = tqdm(total=len(plan.sweep.cells), initial=len(plan.completed) + len(plan.failed_skipped),
                        desc=plan.sweep.name, unit="run", dynamic_ncols=True, file=file,
                        disable=disable)  # None: no bar when the output is not a terminal
        self.failed = len(plan.failed_skipped)
        self.set(running=0)

    def set(self, **counts) -> None:
        self.bar.set_postfix(**counts, failed=self.failed, refresh=True)

    def done(self, outcome: Outcome, **counts) -> None:
        self.outcomes[outcome.run_id] = outcome
        self.failed += outcome.status != "completed"
        cell = self.cells.get(outcome.run_id)
        self.write(self.lines.line(outcome, read_result(cell) if cell is not None else None))
        self.bar.update(1)
        self.set(**counts)

    def write(self, line: str) -> None:
        """A line above the bar (a plain line where there is no bar)."""
        self.bar.write(line, file=self.file)

    def close(self) -> None:
        self.bar.close()


def execute(plan: Plan, executor: str, workers: int, poll_s: float, command: str,
            *, no_wait: bool = False, lines_every_s: float = 30.0) -> dict[str, Outcome]:
    """Run the plan's runs and follow them to the end; ``command`` relaunches (for Ctrl-C).
    ``no_wait`` (slurm): submit and return. A line per run and finished epoch (with an ETA)
    is written every ``lines_every_s`` seconds at most (:mod:`sparsebench.launch.progress`)."""
    sweep = plan.sweep
    progress = Progress(plan)
    cells = {c.run_id: c for c in sweep.cells}
    watched = plan.to_run + [c for c in sweep.cells if c.run_id in plan.attached]
    reporter = EpochReporter(EpochLines(watched, run_labels(sweep.cells)),
                             progress.write, lines_every_s)
    try:
        with reporter if watched and not no_wait else contextlib.nullcontext():
            if executor == "inline":
                left = len(plan.to_run)
                for outcome in executors.run_inline(plan.to_run):
                    left -= 1
                    progress.done(outcome, running=min(1, left))
            elif executor == "local":
                n = max(1, min(workers, len(plan.to_run)))
                left = len(plan.to_run)
                for outcome in local_pool.run_local(plan.to_run, workers):
                    left -= 1
                    progress.done(outcome, running=min(n, left))
            jobs = dict(plan.attached)
            if executor == "slurm" and plan.to_run:
                submitted = slurm.submit_slurm(sweep.name, sweep.spec.slurm, plan.to_run)
                arrays = sorted({j.split("_")[0] for j in submitted.values()})
                progress.write(f"submitted array job {', '.join(arrays)}: {len(submitted)} "
                                   f"run{'s' * (len(submitted) != 1)} "
                                   f"(logs in {display_path(paths.submitit_dir(sweep.name))})")
                jobs.update(submitted)
            if no_wait:
                return progress.outcomes
            if jobs:
                watch = slurm.SlurmWatch(sweep.name, cells, jobs)
                while watch.jobs:
                    for outcome in watch.poll():
                        progress.done(outcome, **watch.counts)
                    progress.set(**watch.counts)
                    if watch.jobs:
                        time.sleep(poll_s)
    except KeyboardInterrupt:
        progress.close()
        _interrupted(plan, command)
        raise SystemExit(130) from None
    finally:
        progress.close()
    return progress.outcomes


def _interrupted(plan: Plan, again: str) -> None:
    pending = [c for c in plan.sweep.cells if executors.read_outcome(c) is None]
    try:
        running = slurm.active_records(plan.sweep.name, pending)
    except RuntimeError:  # squeue failed: name every recorded job rather than none
        records = slurm.read_records(plan.sweep.name)
        running = {c.run_id: records[c.run_id]["job_id"] for c in pending if c.run_id in records}
    job_ids = sorted({j.split("_")[0] for j in running.values()})
    if job_ids:
        print(f"\ninterrupted: SLURM jobs {', '.join(job_ids)} keep running and write their results "
              f"under {paths.runs_dir(plan.sweep.name)}.\n"
              f"  reattach (waits for them, submits nothing twice): {again}\n"
              f"  or cancel them: scancel {' '.join(job_ids)}", file=sys.stderr)
    else:
        print(f"\ninterrupted: runs in progress stopped; each resumes from its last epoch "
              f"checkpoint when you run again: {again}", file=sys.stderr)


def summary(plan: Plan, outcomes: dict[str, Outcome] | None = None) -> Counter:
    """Print the method x density table and the failures; returns the runs per status.
    A run without a result.json is ``missing``, with the launcher's word on it (a worker or
    SLURM job that died) where this launch ran it."""
    import pandas as pd

    sweep = plan.sweep
    labels = sweep_spec.row_labels(sweep.cells)
    outcomes = outcomes or {}
    rows = []
    for cell in sweep.cells:
        result = atomic.read_json(executors.result_path(cell)) or {}
        error = result.get("error") if result else getattr(outcomes.get(cell.run_id), "error", None)
        rows.append({"run": labels[cell.run_id], "density": cell.config.density,
                     "status": result.get("status", "missing"),
                     "acc": result.get("final_test_acc"), "error": error,
                     "run_id": cell.run_id, "cell": sweep_spec.format_label(cell.label)})
    df = pd.DataFrame(rows)
    done = df[(df["status"] == "completed") & df["acc"].notna()]
    grid = dict(index="run", columns="density", aggfunc="count")
    runs = df.pivot_table(values="run_id", **grid)
    completed = done.pivot_table(values="acc", **grid).reindex_like(runs).fillna(0)
    mean = done.pivot_table(values="acc", index="run", columns="density", aggfunc="mean").reindex_like(runs)
    table = pd.DataFrame(index=list(dict.fromkeys(df["run"])))
    for density in sorted(runs.columns, reverse=True):
        table[f"sparsity {100 * (1 - density):.4g}%"] = [
            "" if pd.isna(runs.at[r, density]) else
            f"{'-' if pd.isna(mean.at[r, density]) else format(mean.at[r, density], '.2f')} "
            f"({int(completed.at[r, density])}/{int(runs.at[r, density])})"
            for r in table.index]
    print(f"\nfinal test accuracy (%), mean over seeds (completed/runs) - sweep {sweep.name}")
    with pd.option_context("display.width", 200, "display.max_columns", 50, "display.max_rows", 500):
        print(table.to_string())
    bad = df[df["status"] != "completed"]
    if len(bad):
        print(f"\n{len(bad)} run{'s' * (len(bad) > 1)} not completed:")
        first_lines = bad["error"].map(lambda e: str(e).strip().splitlines()[0][:160] if e else "")
        with pd.option_context("display.width", 250, "display.max_colwidth", 170,
                               "display.max_rows", 500):
            print(bad.assign(error=first_lines)[["run_id", "status", "cell", "error"]]
                  .to_string(index=False))
    counts = Counter(df["status"])
    print(f"\nresults: {paths.runs_dir(sweep.name).resolve()} ({len(df)} runs: "
          + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + ")")
    print(f"tables and figures: {prog('report')} {sweep.name}")
    return counts


SweepBusy = locks.Busy  # another launcher holds the sweep


@contextmanager
def launcher_lock(sweep: str):
    """One launcher per sweep at a time (a second one would start the same runs again)."""
    with locks.hold(paths.launcher_lock(sweep),
                    lambda holder: f"another launcher is working on sweep {sweep} ({holder}); "
                                   f"wait for it or stop it (Ctrl-C) first"):
        yield


def preflight_cells(sweep: sweep_spec.Sweep, data: bool = True, device: bool = True) -> None:
    """Every cell through :func:`sparsebench.training.preflight.check` before any is submitted."""
    from .training import preflight

    for cell in sweep.cells:
        try:
            preflight.check(cell.config, data=data, device=device)
        except ConfigError as err:
            raise sweep_spec.CellError(cell.label, err) from None


def device_note(sweep: sweep_spec.Sweep) -> str:
    """What a SLURM launch says about the devices it did not check here."""
    devices = sorted({c.config.device for c in sweep.cells})
    return (f"device: {', '.join(devices)}: checked on the node where each run starts, not here "
            f"(a run that finds no CUDA device it needs fails at once with one line in its "
            f"result.json and log)")


def _raise_interrupt(*_) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog("sweep"), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", help="a name in sweeps/ (e.g. fmnist_smoke) or a path to a sweep YAML")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="applied to every cell, e.g. epochs=2 device=cpu")
    parser.add_argument("--executor", choices=EXECUTORS, default="auto",
                        help="where runs execute (default auto: slurm if sbatch is on the PATH, else local)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the cells, which are complete and what would be submitted; submit nothing")
    parser.add_argument("--retry-failed", action="store_true",
                        help="run failed and diverged runs again (they are skipped otherwise)")
    parser.add_argument("--skip-data-check", action="store_true",
                        help="leave the data-set check to each run (data visible only on the "
                             "compute nodes); a run without its data then fails with the same line")
    parser.add_argument("--workers", type=int, default=local_pool.default_workers(),
                        help="local executor: processes at once (default: every core, %(default)s here)")
    parser.add_argument("--poll", type=float, default=5.0, metavar="SECONDS",
                        help="slurm executor: seconds between looks at the queue (default %(default)s)")
    parser.add_argument("--no-wait", action="store_true",
                        help="slurm executor: submit and return; the same command without "
                             "--no-wait later reattaches (waits) or, once all ended, reports")
    parser.add_argument("--lines-every", type=float, default=30.0, metavar="SECONDS",
                        help="at most this often, a line per run and finished epoch with its "
                             "accuracy and ETA (also into logs; default %(default)s)")
    args = parser.parse_intermixed_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")

    executor = args.executor
    if executor == "auto":
        executor = "slurm" if slurm.slurm_available() else "local"
    # On SLURM the device is checked on the node each run starts on (a login node has no GPU).
    device_here = executor != "slurm"
    with config_errors_exit(args.sweep):
        path = sweep_spec.find(args.sweep)
    with config_errors_exit(display_path(path)):
        check_unique_overrides(args.overrides)
        sweep = sweep_spec.expand(str(path), args.overrides)
        # A plan needs no data: a dry run checks everything else, then says what the data
        # check found (on a login node the data usually lives on the compute nodes only).
        preflight_cells(sweep, data=not (args.skip_data_check or args.dry_run), device=device_here)
    # After the config's own check: a run that asks for a clashing method has already stopped
    # with one line naming the files; the others go on and say which files clash.
    warn_method_problems()
    data_note = "data: not checked (--skip-data-check); each run checks it where it starts"
    if args.dry_run and not args.skip_data_check:
        try:
            preflight_cells(sweep, data=True, device=device_here)
            data_note = "data: checked, present for every run"
        except ConfigError as err:
            data_note = (f"data: not checked here ({err}); each run checks it where it starts "
                         f"(--skip-data-check to launch from here)")

    if executor == "slurm" and not slurm.slurm_available():
        print("error: --executor slurm: sbatch is not on the PATH (make slurm-up starts a local "
              "cluster; --executor local runs here)", file=sys.stderr)
        return 2
    if args.no_wait and executor != "slurm":
        print(f"error: --no-wait: only with the slurm executor (got {executor}: its runs live "
              "in this process)", file=sys.stderr)
        return 2
    if args.dry_run:
        try:
            plan = Plan(sweep, args.retry_failed)
        except RuntimeError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print_plan(plan, executor, args.workers, dry_run=True)
        print(data_note)
        if not device_here:
            print(device_note(sweep))
        print("dry run: nothing submitted")
        return 0
    # `kill` (SIGTERM) stops the launcher the way Ctrl-C does: jobs and results stay.
    previous_sigterm = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with launcher_lock(sweep.name):
            plan = Plan(sweep, args.retry_failed)
            print_plan(plan, executor, args.workers, dry_run=False)
            t0 = time.perf_counter()
            again = again_command("sweep", resume_args(
                sys.argv[1:] if argv is None else argv, executor))
            outcomes = execute(plan, executor, args.workers, args.poll, again,
                               no_wait=args.no_wait, lines_every_s=args.lines_every)
            wall = time.perf_counter() - t0
    except slurm.SubmissionError as err:
        print(f"error: {err} (is the cluster up? `make slurm-up` starts the local one)",
              file=sys.stderr)
        return 1
    except RuntimeError as err:  # SweepBusy, or squeue failing while jobs are recorded
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
    if args.no_wait:
        print(f"submitted; not waiting. `{again}` reattaches (submits nothing twice) or, "
              f"once every run has ended, reports")
        return 0
    counts = summary(plan, outcomes)
    if plan.to_run or plan.attached:
        print(timing_line(plan, wall))
    return outcome_line(sweep.name, counts)


def resume_args(args: list[str], executor: str) -> list[str]:
    """The launch's arguments as they resume it: the executor this launch used in place of
    ``auto`` (so the hint names where the runs went), ``--no-wait`` dropped (the resumed
    command waits for the runs)."""
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--executor":
            skip = True
        elif not arg.startswith("--executor=") and arg != "--no-wait":
            out.append(arg)
    return out + ["--executor", executor]


# Statuses after which a script must not take the sweep as done.
NOT_DONE = ("failed", "diverged", "missing")


def outcome_line(name: str, counts: Counter) -> int:
    """Print the last line, counting each status that is not ``completed``; returns the exit
    code: 0 when every run completed, 1 when any failed, diverged or has no result."""
    bad = {s: counts.get(s, 0) for s in NOT_DONE}
    if any(bad.values()):
        print(f"sweep {name}: not all runs completed: {counts.get('completed', 0)} completed, "
              + ", ".join(f"{n} {s}" for s, n in bad.items()) + " (exit code 1)")
        return 1
    print(f"sweep {name}: all {counts.get('completed', 0)} runs completed")
    return 0


def timing_line(plan: Plan, wall_s: float) -> str:
    """How well the launch ran its runs side by side: its wall-clock against the sum of the
    training wall-clocks (``wall_clock_s`` in result.json) of the runs it ran. Runs that
    overlapped finish sooner than their sum; start-up and data loading (not in a run's
    wall_clock_s) are why a launch of small runs takes longer than the sum."""
    ran = plan.to_run + [c for c in plan.sweep.cells if c.run_id in plan.attached]
    times = [(atomic.read_json(executors.result_path(c)) or {}).get("wall_clock_s") for c in ran]
    times = [t for t in times if isinstance(t, (int, float))]
    total = sum(times)
    text = (f"time: {len(ran)} run{'s' * (len(ran) != 1)} took {wall_s:.1f} s from launch to "
            f"the last result")
    if total <= 0:
        return text
    text += f"; their training alone adds up to {total:.1f} s"
    if len(times) < len(ran):
        text += f" ({len(times)} of the {len(ran)} runs report a time)"
    if wall_s < total:
        return text + f": {total / wall_s:.1f}× faster side by side than one after another"
    return (text + ": the rest is start-up (starting Python and torch, loading the data), "
                   "which a run's own time leaves out")

if __name__ == "__main__":
    sys.exit(main())
