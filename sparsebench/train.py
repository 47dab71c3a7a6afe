"""One training run: ``python -m sparsebench.train CONFIG.yaml [key=value ...]``.

Writes ``results/<sweep>/runs/<run_id>/{config.yaml,result.json,metrics.jsonl,log}`` and prints
the run folder as the last line of standard output. A completed run is not repeated (use
``--force``); an interrupted one resumes from its last epoch checkpoint.

Exit codes: 0 completed; 1 failed or diverged, or another process is training the same run,
or the results could not be written (the last line says which, naming the file); 2 invalid
input (a config field, a missing data set or device, a batch larger than the training set),
found before anything is written; 130 interrupted (Ctrl-C).

Data-parallel on N processes: ``torchrun --nproc_per_node=N -m sparsebench.train CONFIG.yaml
[key=value ...]`` (``data.batch_size`` stays the global batch; see sparsebench.distributed).
"""
from __future__ import annotations

import argparse
import json
import signal
import sys

from .storage import atomic, locks, paths
from . import distributed, resolve
from .training import preflight
from .cli import config_errors_exit, prog, warn_method_problems
from .config.files import check_unique_overrides
from .training import run_folder, train


def _exit_on_sigterm(*_) -> None:
    raise SystemExit(143)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog("train"), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="a run config YAML, or the name of one in configs/ (e.g. fmnist_mlp)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="dotted overrides, e.g. method.name=static density=0.05 optim.lr=0.05")
    parser.add_argument("--force", action="store_true", help="train again even if completed")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config and its run folder, then exit")
    args = parser.parse_args(argv)
    with config_errors_exit(args.config):
        check_unique_overrides(args.overrides)
        cfg = resolve.load(paths.config_file(args.config), args.overrides)
        distributed.validate(cfg, distributed.launched_world_size())  # torchrun, SLURM tasks
        if not args.print_config:
            preflight.check(cfg)
    warn_method_problems()   # after the check: a clash this run asks for stopped it in one line
    if args.print_config:
        from .config.schema import to_dict
        import yaml

        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        print(run_folder(cfg))
        return 0
    # SIGTERM (kill, a scheduler) unwinds the run like Ctrl-C: its log says so, temporary
    # files go, and the exit code is 143 as for the signal itself.
    previous_sigterm = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        result = train(cfg, force=args.force)
        distributed.teardown()
    except KeyboardInterrupt:
        print(f"\ninterrupted: run {run_folder(cfg)} stopped; the same command resumes it from "
              f"its last epoch checkpoint", file=sys.stderr)
        return 130
    except (locks.Busy, atomic.WriteError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
    summary = {k: result.get(k) for k in ("status", "final_test_acc", "actual_density", "wall_clock_s")}
    print(json.dumps(summary), file=sys.stderr)
    print(run_folder(cfg))
    return 0 if result.get("status") == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
