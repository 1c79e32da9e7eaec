"""Wall time of a real demo-like sweep under the old checkpoint policy and the current one, in one run.

    python benchmarks/checkpoint_policy.py [--spec search_spaces/demo.yaml] [--budget 2] [--epochs 4] [--rounds 2]

- **before**: ``CheckpointConfig(num_to_keep=1)``: Tune deletes a trial's previous checkpoint at each
  epoch and so forces an experiment-state snapshot per trial per epoch;
- **after**: the policy of :mod:`sweeper.checkpoints` as ``sweeper launch`` uses it: Tune keeps
  every checkpoint (no forced snapshot), the driver deletes those older than the newest snapshot names.

Each variant runs ``sweeper.launch.launch`` on the spec (the demo by default, shrunk by ``--budget``
configurations and ``--epochs``) in a fresh results folder, on one local Ray started here (an untimed
warm-up sweep first); the two alternate within a round (order swapped every round) so a shared
machine's drifting load cancels out. Printed per variant: the launch's wall time, how many
experiment snapshots Tune wrote (``TuneController.save_to_dir`` calls), how many "snapshotting has been
triggered multiple times" warnings it logged, and the checkpoints left on disk at the end.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WARNING = "snapshotting has been triggered multiple times"


class _Counter(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record):
        self.count += WARNING in record.getMessage()


def run(spec, results: Path, variant: str) -> dict:
    """Launches ``spec`` under ``variant``; returns wall seconds, snapshots, warnings, checkpoints left."""
    from ray import tune
    from ray.tune.execution.tune_controller import TuneController

    import sweeper.checkpoints as policy
    from sweeper.launch import launch

    current = policy.checkpoint_config
    if variant == "before":
        policy.checkpoint_config = lambda paths: tune.CheckpointConfig(num_to_keep=1)
    saves = {"n": 0}
    save_to_dir = TuneController.save_to_dir

    def counted(self, *args, **kwargs):
        saves["n"] += 1
        return save_to_dir(self, *args, **kwargs)

    TuneController.save_to_dir = counted
    warnings = _Counter()
    logging.getLogger("ray.tune").addHandler(warnings)
    try:
        start = time.perf_counter()
        paths = launch(spec, results)
        wall = time.perf_counter() - start
    finally:
        policy.checkpoint_config = current
        TuneController.save_to_dir = save_to_dir
        logging.getLogger("ray.tune").removeHandler(warnings)
    left = len(list(paths.tune_dir.glob("*/checkpoint_*")))
    return {"wall": wall, "snapshots": saves["n"], "warnings": warnings.count, "checkpoints": left}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "search_spaces" / "demo.yaml")
    parser.add_argument("--budget", type=int, default=2, help="configurations (search.budget)")
    parser.add_argument("--epochs", type=int, default=4, help="training.epochs")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    args = parser.parse_args(argv)
    import ray
    import yaml

    from sweeper.spec import parse_spec

    raw = yaml.safe_load(args.spec.read_text())
    raw.setdefault("search", {})["budget"] = args.budget
    raw.setdefault("training", {})["epochs"] = args.epochs
    spec = parse_spec(raw, str(args.spec))
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    rows: dict[str, list[dict]] = {"before": [], "after": []}
    try:
        with tempfile.TemporaryDirectory(prefix="sweeper-bench-ckpt-") as tmp:
            warm = parse_spec({**raw, "name": "warmup", "search": {**raw["search"], "budget": 1}}, str(args.spec))
            run(warm, Path(tmp) / "warmup", "after")  # untimed: imports, worker pool, data generation code
            for r in range(args.rounds):
                order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
                for variant in order:
                    row = run(spec, Path(tmp) / f"{variant}{r}", variant)
                    rows[variant].append(row)
                    print(
                        f"  round {r + 1} {variant:6s} wall {row['wall']:6.1f} s  snapshots {row['snapshots']:3d}  "
                        f"warnings {row['warnings']:2d}  checkpoints left {row['checkpoints']}",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        ray.shutdown()

    trials = spec.planned_fold_trials()
    print(
        f"\ncheckpoint policy: {args.spec.name} with {args.budget} configurations x "
        f"{len(spec.data.folds_to_run)} folds = {trials} fold trials of {args.epochs} epochs, {args.cpus} CPUs, "
        f"ray {ray.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"median of {args.rounds} round(s)"
    )
    print(f"{'variant':8s} {'wall s':>7s} {'snapshots':>9s} {'warnings':>8s} {'checkpoints left':>16s}")
    for variant, runs in rows.items():
        print(
            f"{variant:8s} {statistics.median(r['wall'] for r in runs):7.1f} "
            f"{statistics.median(r['snapshots'] for r in runs):9.0f} "
            f"{statistics.median(r['warnings'] for r in runs):8.0f} "
            f"{statistics.median(r['checkpoints'] for r in runs):16.0f}"
        )
    ratios = [a["wall"] / b["wall"] for a, b in zip(rows["after"], rows["before"])]
    print(f"after / before wall time: {statistics.median(ratios):.2f}x (median of per-round ratios)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
