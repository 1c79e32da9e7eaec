"""Wall time of a local Ray Tune sweep of N short trials vs the ideal N x trial time / slots.

    python benchmarks/sweep_overhead.py [--trials 8,32] [--epochs 3] [--epoch-s 5] [--slots 2] [--compare]

The trainable does no work: it sleeps ``--epoch-s`` per epoch and reports each epoch with a small
checkpoint, exactly as ``trainables.train.train_fold`` reports (metrics + checkpoint every epoch),
so the wall time over the ideal is Ray Tune's own overhead: actor start-up per trial, result
processing, trial checkpoints and experiment-state snapshots. The default trial, 3 epochs of 5 s,
is shorter than the shortest real one (a `sweeper demo` fold trial takes about 30 s on 2 cores).

- **as launch.py**: the Tuner set up as ``sweeper.launch.launch`` does: ``tune.with_resources``,
  the spec's default ``resources.reuse_actors`` (on), ``CheckpointConfig(num_to_keep=1)``,
  ``FailureConfig``; the PASS/MISS lines judge this row.

``--compare`` adds, for the record:

- **fresh actors**: ``reuse_actors=False``, a new Python process (imports included) per trial;
- **+ no auto loggers**: also ``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1`` (no CSV / JSON /
  TensorBoard files per trial; ``sweeper report`` reads the CSV for its curves, so launch keeps them);
- **+ num_to_keep=None**: also no forced experiment-state snapshot after every trial checkpoint
  (Ray forces one every ``num_to_keep`` checkpoints of a trial: with 1, every report). The cost is
  disk (every epoch's checkpoint is kept), so it is here to measure the snapshot's share.

Trials use 1 CPU each on a private local Ray with ``--slots`` CPUs, after an untimed warm-up
sweep. Each setting runs once per N; ratios are wall / ideal; "s/trial over" is the overhead per
trial per slot.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

TARGET = 1.1


def sleeper(config: dict) -> None:
    """Trivial trainable: sleeps per epoch and reports metrics + a checkpoint, as train_fold does."""
    from ray import tune

    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            start = int((Path(directory) / "epoch").read_text())
    for epoch in range(start, config["epochs"]):
        time.sleep(config["epoch_s"])
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "epoch").write_text(str(epoch + 1))
            (Path(tmp) / "state.pt").write_bytes(b"\0" * config["checkpoint_bytes"])
            tune.report(
                {"epoch": epoch + 1, "dice": 0.5 + 0.01 * epoch}, checkpoint=tune.Checkpoint.from_directory(tmp)
            )


def run_sweep(n: int, args, storage: Path, *, reuse_actors: bool, auto_loggers: bool, num_to_keep) -> float:
    """Returns the wall seconds of ``tuner.fit()`` for ``n`` trials."""
    from ray import tune

    if auto_loggers:
        os.environ.pop("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", None)
    else:
        os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    trainable = tune.with_resources(sleeper, {"cpu": 1, "gpu": 0})
    tuner = tune.Tuner(
        trainable,
        param_space={
            "epochs": args.epochs,
            "epoch_s": args.epoch_s,
            "checkpoint_bytes": args.checkpoint_kb * 1024,
            "trial": tune.grid_search(list(range(n))),
        },
        tune_config=tune.TuneConfig(num_samples=1, reuse_actors=reuse_actors),
        run_config=tune.RunConfig(
            name=f"n{n}-{time.time_ns()}",
            storage_path=str(storage),
            failure_config=tune.FailureConfig(max_failures=1),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=num_to_keep),
            verbose=args.verbose,
        ),
    )
    start = time.perf_counter()
    results = tuner.fit()
    wall = time.perf_counter() - start
    assert not results.errors, results.errors
    return wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", default="8,32")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--epoch-s", type=float, default=5.0)
    parser.add_argument("--slots", type=int, default=2, help="CPUs of the local Ray (1 per trial)")
    parser.add_argument("--checkpoint-kb", type=int, default=256)
    parser.add_argument("--verbose", type=int, default=0, help="Tune verbosity (launch.py: 0)")
    parser.add_argument("--compare", action="store_true", help="also the settings launch.py does not use")
    args = parser.parse_args(argv)

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    import ray

    ray.init(
        address="local",
        num_cpus=args.slots,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=True,
        logging_level="ERROR",
    )
    from sweeper.spec import ResourcesSpec

    launch_reuses = ResourcesSpec().reuse_actors  # what sweeper.launch.tune_config passes by default
    configurations = {"as launch.py": dict(reuse_actors=launch_reuses, auto_loggers=True, num_to_keep=1)}
    if args.compare:
        configurations |= {
            "fresh actors": dict(reuse_actors=False, auto_loggers=True, num_to_keep=1),
            "+ no auto loggers": dict(reuse_actors=launch_reuses, auto_loggers=False, num_to_keep=1),
            "+ num_to_keep=None": dict(reuse_actors=launch_reuses, auto_loggers=False, num_to_keep=None),
        }
    trial_s = args.epochs * args.epoch_s
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="sweeper-bench-sweep-") as tmp:
            # untimed: Ray's worker pool and Tune's imports warm up before the first measured sweep
            run_sweep(args.slots, args, Path(tmp), reuse_actors=False, auto_loggers=True, num_to_keep=1)
            for n in [int(x) for x in args.trials.split(",")]:
                ideal = n * trial_s / args.slots
                for name, settings in configurations.items():
                    wall = run_sweep(n, args, Path(tmp), **settings)
                    rows.append((n, name, wall, ideal))
                    print(
                        f"  N={n:3d} {name:20s} wall {wall:6.1f} s  ideal {ideal:6.1f} s  {wall / ideal:5.2f}x",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        ray.shutdown()

    print(
        f"\nsweep overhead: trials of {args.epochs} x {args.epoch_s:.1f} s (a report + {args.checkpoint_kb} KiB "
        f"checkpoint per epoch), {args.slots} slots, ray {ray.__version__}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    )
    print(f"{'N':>4s} {'settings':20s} {'wall s':>7s} {'ideal s':>8s} {'wall/ideal':>10s} {'s/trial over':>12s}")
    for n, name, wall, ideal in rows:
        print(
            f"{n:4d} {name:20s} {wall:7.1f} {ideal:8.1f} {wall / ideal:9.2f}x {(wall - ideal) * args.slots / n:12.2f}"
        )
    as_launched = {n: wall / ideal for n, name, wall, ideal in rows if name == "as launch.py"}
    print("\ntarget: wall within " + f"{TARGET}x of ideal, as launch.py runs a sweep")
    for n, ratio in sorted(as_launched.items()):
        print(f"  {'PASS' if ratio <= TARGET else 'MISS'}  N={n}: {ratio:.2f}x")
    return 0 if all(r <= TARGET for r in as_launched.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
