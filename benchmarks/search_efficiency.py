"""Hypervolume reached against fold-trial-epochs spent: pruning strategies x Optuna samplers on a recorded sweep.

    python benchmarks/search_efficiency.py                # the demo with pruning off and on, then the replay
    python benchmarks/search_efficiency.py --replay-only  # the replay alone (about 3 minutes on 2 cores)
    python benchmarks/search_efficiency.py --record       # record the table again (a real sweep, ~1 h here)

**The table** (``benchmarks/data/``): a real full sweep recorded once --
``search_efficiency_spec.yaml`` (the demo's data, losses and loss knobs: 8 losses x 5 learning rates =
40 configurations, 3 folds, 6 epochs, a plain U-Net of width 16 at 32 px) run by ``sweeper launch``,
every configuration over every fold to its last epoch -- and every epoch's validation metrics of every
fold trial exported from the sweep's Tune records (``result.json``) to ``search_efficiency_curves.csv``
(one row per configuration, fold and epoch). ``--record`` runs the sweep and the export again.

**The replay** (:func:`benchmarks.replay.replay_search`): the sweep's own searcher
(:class:`sweeper.search.FoldSearcher`) with a real Optuna sampler (TPE, GP or random, multi-objective on
sensitivity and precision, seeded) asks for configurations in the recorded spec's search space, fans
them out over folds, halves folds and tells Optuna fold means or PRUNED; MO-ASHA's decisions are
:class:`sweeper.pruning.EpochHalving`'s; each fold trial's epochs are looked up in the table instead of
trained (its record: the epoch of the best Dice so far, as the trial keeps it). The search space is the
recorded grid itself: the spec switched to ``search.mode: optuna`` draws the loss entry and the learning
rate as categorical choices (a listed learning rate is one, as in any sweep), so every proposal is a
recorded configuration and nothing is interpolated. Each search gets a budget of ``--budget``
distinct configurations (default 20: half the table, so the samplers' choices matter). Strategies:
``full`` (full fan-out), ``folds`` (``min_folds 1, eta 3``), ``moasha`` (``grace_period 2,
reduction_factor 3``), ``both``.

Printed per sampler and strategy, median over seeds [min, max]: the fold-trial-epochs spent as a share of
full fan-out's (same sampler, same seed), the final hypervolume (front of the configurations told
complete, reference point (0, 0)) as a share of full fan-out's final one, and the hypervolume reached
within 10, 20, 40, 60 and 100% of full fan-out's epochs. Target: a pruned strategy reaches >= 95% of
full fan-out's final hypervolume with <= 40% of its epochs (medians over seeds).

**The demo side by side** (without ``--replay-only``): ``sweeper launch search_spaces/demo.yaml`` with
pruning off and with ``--demo-pruning`` (default ``both``) on, one after the other, printing both wall
times and both hypervolumes (the front of the finished configurations' fold means).
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.replay import STRATEGIES, SearchTrace, Strategy, front_hypervolume, replay_search  # noqa: E402

DATA = ROOT / "benchmarks" / "data"
SPEC_PATH = DATA / "search_efficiency_spec.yaml"
CURVES_PATH = DATA / "search_efficiency_curves.csv"
DEMO_SPEC = ROOT / "search_spaces" / "demo.yaml"
#: every epoch's metrics kept in the table (the trial's overall validation metrics)
METRICS = ("dice", "iou", "sensitivity", "precision", "specificity", "val_loss", "train_loss")
IDENTITY = ("config_id", "loss", "loss_params", "lr", "fold", "epoch")
SAMPLERS = ("tpe", "gp", "random")
REPLAYED = ("full", "folds", "moasha", "both")
FRACTIONS = (0.1, 0.2, 0.4, 0.6, 1.0)
TARGET_HV, TARGET_EPOCHS = 0.95, 0.40


# -- the table ------------------------------------------------------------------------------------
def export_curves(*sweep_dirs: str | Path, path: str | Path | None = None) -> int:
    """Writes every epoch's :data:`METRICS` of every fold trial of the sweeps in ``sweep_dirs`` to ``path``
    (default :data:`CURVES_PATH`; CSV, one row per configuration, fold and epoch, 6 significant digits) from
    Tune's per-trial records (``ray/tune/<trial>/params.json`` and ``result.json``); returns the rows
    written. An epoch reported twice (a trial resumed from a checkpoint) keeps its last report. Several
    sweeps of the same spec, each over some of its loss entries, make one table."""
    rows = {}
    params_files = [f for d in sweep_dirs for f in sorted(Path(d).glob("ray/tune/*/params.json"))]
    for params_file in params_files:
        params = json.loads(params_file.read_text())
        knobs = ";".join(f"{k}={v:g}" for k, v in sorted(params["loss_params"].items()))
        result_file = params_file.with_name("result.json")
        for line in result_file.read_text().splitlines() if result_file.is_file() else []:
            result = json.loads(line)
            key = (params["config_id"], int(params["fold"]), int(result["epoch"]))
            identity = [params["config_id"], params["loss"], knobs, f"{params['lr']:g}", key[1], key[2]]
            rows[key] = identity + [f"{float(result[m]):.6g}" for m in METRICS]
    with open(CURVES_PATH if path is None else path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*IDENTITY, *METRICS])
        writer.writerows(rows[key] for key in sorted(rows))
    return len(rows)


def load_curves(
    path: str | Path | None = None,
    objectives=("sensitivity", "precision"),
    select_metric: str = "dice",
    *,
    partial: bool = False,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Returns ``{config_id: (values (folds, epochs, objectives), select (folds, epochs))}`` from the table
    (default :data:`CURVES_PATH`); raises ValueError when a configuration lacks a fold or an epoch another
    one has (``partial``: leaves it out instead, for a recording that was interrupted)."""
    path = CURVES_PATH if path is None else path
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    folds = sorted({int(r["fold"]) for r in rows})
    epochs = sorted({int(r["epoch"]) for r in rows})
    columns = [*objectives, select_metric]
    grids: dict[str, np.ndarray] = {}
    for r in rows:
        grid = grids.setdefault(r["config_id"], np.full((len(folds), len(epochs), len(columns)), np.nan))
        grid[folds.index(int(r["fold"])), epochs.index(int(r["epoch"]))] = [float(r[c]) for c in columns]
    for cid, grid in list(grids.items()):
        if np.isnan(grid).any() and partial:
            del grids[cid]
        elif np.isnan(grid).any():
            raise ValueError(
                f"{path}: configuration {cid} lacks a fold or an epoch (every one has {len(folds)} x {len(epochs)})"
            )
    return {cid: (grid[..., :-1], grid[..., -1]) for cid, grid in grids.items()}


def recorded_spec():
    """Returns the recorded sweep's spec (:data:`SPEC_PATH`)."""
    from sweeper.spec import load_spec

    return load_spec(SPEC_PATH, check_files=False)


def search_spec(base, sampler: str, seed: int, budget: int, strategy: Strategy):
    """Returns ``base`` (the recorded spec) as an Optuna search: ``sampler`` seeded with ``seed``, ``budget``
    configurations, and the prunings of ``strategy``; the search space stays the recorded grid."""
    from sweeper.spec import FoldPruningSpec, PruningSpec, SchedulerSpec

    sections = strategy.spec_sections()
    folds = sections["pruning"].get("folds")
    search = base.search.model_copy(
        update={
            "mode": "optuna",
            "sampler": sampler,
            "seed": seed,
            "budget": budget,
            "pruning": PruningSpec(folds=FoldPruningSpec(**folds) if folds else None),
        }
    )
    return base.model_copy(update={"search": search, "scheduler": SchedulerSpec(**sections["scheduler"])})


def space_config_ids(spec) -> list[str]:
    """Returns the config_id of every configuration the spec's search space holds (its grid, drawn through
    :func:`sweeper.search.sample_configuration` as a search would draw it)."""
    import optuna

    from sweeper.search import config_id, grid_params, sample_configuration

    return [config_id(sample_configuration(optuna.trial.FixedTrial(grid_params(spec, e)), spec)) for e in spec.grid()]


def recorded_space(spec, curves: Mapping):
    """Returns ``spec`` with only the loss entries whose every configuration the table holds (all of them once
    the recording is complete; a partial recording, interrupted, still replays on the losses it finished).
    Raises SystemExit when none is complete."""
    ids = space_config_ids(spec)
    per_loss = len(ids) // len(spec.losses)  # the grid is loss-major: each entry's configurations together
    keep = [loss for i, loss in enumerate(spec.losses) if set(ids[i * per_loss : (i + 1) * per_loss]) <= set(curves)]
    if not keep:
        raise SystemExit(f"the table lacks configurations of every loss of {SPEC_PATH}: record it again (--record)")
    if len(keep) < len(spec.losses):
        print(
            f"partial table: replaying {len(keep)} of {len(spec.losses)} loss entries ({len(keep) * per_loss} configurations)"
        )
    return spec.model_copy(update={"losses": keep})


# -- the replay -----------------------------------------------------------------------------------
def replay_job(job: tuple[str, int, int, tuple[str, ...]]) -> tuple[str, int, dict[str, SearchTrace], float]:
    """Returns (sampler, seed, {strategy: trace}, seconds) of one sampler and seed over every strategy."""
    sampler, seed, budget, strategies = job
    import optuna
    import torch

    torch.set_num_threads(1)  # GP's many small tensor ops: threads only contend (2x faster on one thread here)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    started = time.perf_counter()
    base, curves = _job_inputs()
    traces = {
        name: replay_search(search_spec(base, sampler, seed, budget, STRATEGIES[name]), curves) for name in strategies
    }
    return sampler, seed, traces, time.perf_counter() - started


_INPUTS: tuple | None = None


def _job_inputs():
    """The recorded spec and table, read once per process."""
    global _INPUTS
    if _INPUTS is None:
        _INPUTS = (recorded_spec(), load_curves())
    return _INPUTS


def summarise(traces: Mapping[int, Mapping[str, SearchTrace]]) -> dict[str, dict[str, np.ndarray]]:
    """Returns per strategy, per seed: ``epochs`` (spent / full fan-out's), ``hv`` (final / full's final) and
    ``curve`` (hypervolume within each of :data:`FRACTIONS` of full's epochs / full's final)."""
    out: dict[str, dict[str, list]] = {}
    for by_strategy in traces.values():
        full = by_strategy["full"]
        for name, trace in by_strategy.items():
            row = out.setdefault(name, {"epochs": [], "hv": [], "curve": []})
            row["epochs"].append(trace.spent / full.spent)
            row["hv"].append(trace.final / full.final)
            row["curve"].append([trace.hypervolume_at(f * full.spent) / full.final for f in FRACTIONS])
    return {name: {k: np.array(v) for k, v in row.items()} for name, row in out.items()}


def _cell(values: np.ndarray) -> str:
    return f"{np.median(values):6.1%} [{values.min():6.1%}, {values.max():6.1%}]"


def print_summary(sampler: str, summary: dict[str, dict[str, np.ndarray]], n_seeds: int, budget: int) -> list[str]:
    """Prints one sampler's table and returns its target lines."""
    print(f"\nsampler {sampler}: {n_seeds} seeds, {budget} configurations each; median [min, max] over seeds")
    print(f"{'':<10} {'':>24} {'':>24}   HV / full's final HV, within this share of full's epochs")
    print(
        f"{'strategy':<10} {'epochs vs full':>24} {'final HV vs full':>24}   "
        + " ".join(f"{f:>6.0%}" for f in FRACTIONS)
    )
    targets = []
    for name, row in summary.items():
        curve = " ".join(f"{v:6.1%}" for v in np.median(row["curve"], axis=0))
        print(f"{name:<10} {_cell(row['epochs']):>24} {_cell(row['hv']):>24}   {curve}")
        if name != "full":
            hv, spent = np.median(row["hv"]), np.median(row["epochs"])
            verdict = "PASS" if hv >= TARGET_HV and spent <= TARGET_EPOCHS else "MISS"
            targets.append(
                f"  {verdict}  {sampler:<6} {name:<7} HV {hv:6.1%} (>= {TARGET_HV:.0%}) with {spent:6.1%} of the epochs (<= {TARGET_EPOCHS:.0%})"
            )
    return targets


def run_replay(
    samplers, seeds: int, gp_seeds: int, budget: int, processes: int, strategies=REPLAYED, curves_path=None
) -> None:
    """Replays every sampler x seed x strategy (``gp_seeds`` seeds for GP) on the table at ``curves_path``
    (default :data:`CURVES_PATH`), in ``processes`` forked processes."""
    global _INPUTS
    curves_path = Path(curves_path or CURVES_PATH)
    curves = load_curves(curves_path, partial=True)
    base = recorded_space(recorded_spec(), curves)
    _INPUTS = (base, curves)  # the forked workers inherit them, and the modules imported here
    import sweeper.search  # noqa: F401  (Ray Tune's Searcher, Optuna: seconds to import, once)

    n_folds, n_epochs = next(iter(curves.values()))[1].shape
    print(
        f"table {curves_path.name}: {len(curves)} configurations x {n_folds} folds x {n_epochs} epochs; "
        f"budget {budget} configurations a search; full fan-out spends {budget * n_folds * n_epochs} fold-trial-epochs"
    )
    jobs = [(s, seed, budget, tuple(strategies)) for s in samplers for seed in range(gp_seeds if s == "gp" else seeds)]
    jobs.sort(key=lambda job: job[0] != "gp")  # the slowest first, so both processes end together
    started = time.perf_counter()
    traces: dict[str, dict[int, dict[str, SearchTrace]]] = {s: {} for s in samplers}
    seconds: dict[str, list[float]] = {s: [] for s in samplers}
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        for sampler, seed, by_strategy, took in pool.imap_unordered(replay_job, jobs):
            traces[sampler][seed] = by_strategy
            seconds[sampler].append(took)
    targets = []
    for sampler in samplers:
        summary = summarise(traces[sampler])
        targets += print_summary(sampler, summary, len(traces[sampler]), budget)
        print(f"  ({np.median(seconds[sampler]):.1f} s per seed for {len(strategies)} strategies)")
    print(
        f"\ntarget: a pruned strategy reaches >= {TARGET_HV:.0%} of full fan-out's final hypervolume with <= {TARGET_EPOCHS:.0%} of its epochs (medians)"
    )
    print("\n".join(targets))
    print(f"\nreplay: {time.perf_counter() - started:.0f} s in {processes} processes")


# -- the real runs --------------------------------------------------------------------------------
def launch(spec_path: Path, results: Path) -> float:
    """Runs ``sweeper launch spec_path --results results`` and returns its wall time in seconds."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "sweeper.cli", "launch", str(spec_path), "--results", str(results)], check=True
    )
    return time.perf_counter() - started


def finished_hypervolume(sweep_dir: Path, objectives=("sensitivity", "precision")) -> tuple[float, int, int]:
    """Returns (hypervolume of the finished configurations' fold means, finished, all configurations) of a sweep."""
    from sweeper.leaderboard import FINISHED, read_configs

    configs = read_configs(sweep_dir)
    done = configs[configs["status"] == FINISHED]
    return front_hypervolume(done[list(objectives)].to_numpy()), len(done), len(configs)


def pruned_spec(raw: dict, strategy_name: str) -> dict:
    """Returns the spec ``raw`` (as read from YAML) renamed ``NAME_pruned`` with ``strategy_name``'s
    ``search.pruning`` and ``scheduler``; with MO-ASHA also ``training.checkpoint_every: 1`` (a trial it
    stops keeps its last epoch's checkpoint: the demo checkpoints every 4 epochs, which the spec refuses
    with MO-ASHA); the rest is ``raw``'s, untouched."""
    sections = STRATEGIES[strategy_name].spec_sections()
    pruned = {**raw, "name": f"{raw['name']}_pruned", "scheduler": sections["scheduler"]}
    pruned["search"] = {**raw.get("search", {}), "pruning": sections["pruning"]}
    if sections["scheduler"]["type"] == "moasha":
        pruned["training"] = {**raw.get("training", {}), "checkpoint_every": 1}
    return pruned


def run_demo_pair(spec_path: Path, strategy_name: str, results: Path) -> None:
    """Runs the spec with pruning off, then with ``strategy_name``'s prunings on; prints wall times and hypervolumes."""
    raw = yaml.safe_load(spec_path.read_text())
    pruned = pruned_spec(raw, strategy_name)
    results.mkdir(parents=True, exist_ok=True)
    pruned_path = results / f"{pruned['name']}.yaml"
    pruned_path.write_text(yaml.safe_dump(pruned, sort_keys=False))
    rows = []
    for label, path, name in (("off", spec_path, raw["name"]), (f"on ({strategy_name})", pruned_path, pruned["name"])):
        wall = launch(path, results)
        rows.append((label, wall, *finished_hypervolume(results / name)))
    print(
        f"\n{spec_path.relative_to(ROOT) if spec_path.is_relative_to(ROOT) else spec_path}, pruning off and on (one after the other)"
    )
    print(f"{'pruning':<16} {'wall s':>8} {'hypervolume':>12} {'finished':>9}")
    for label, wall, hv, done, total in rows:
        print(f"{label:<16} {wall:8.0f} {hv:12.4f} {done:>4}/{total:<4}")
    print(f"on / off: wall {rows[1][1] / rows[0][1]:.2f}x, hypervolume {rows[1][2] / rows[0][2]:.1%}")


def record(results: Path) -> None:
    """Runs the recorded spec's full sweep and exports its curves to :data:`CURVES_PATH`."""
    wall = launch(SPEC_PATH, results)
    rows = export_curves(results / recorded_spec().name)
    print(f"recorded in {wall / 60:.1f} min: {rows} rows -> {CURVES_PATH.relative_to(ROOT)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replay-only", action="store_true", help="skip the demo's real runs")
    parser.add_argument("--record", action="store_true", help="record the table again (a real sweep), then exit")
    parser.add_argument(
        "--export", type=Path, nargs="+", metavar="SWEEP_DIR", help="only export the sweeps' curves to the table"
    )
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=SAMPLERS)
    parser.add_argument("--seeds", type=int, default=10, help="seeds per sampler")
    parser.add_argument("--gp-seeds", type=int, default=3, help="seeds for gp (its asks cost ~100x TPE's)")
    parser.add_argument("--budget", type=int, default=20, help="distinct configurations per search")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--curves", type=Path, default=CURVES_PATH, help="the table to replay")
    parser.add_argument("--demo-spec", type=Path, default=DEMO_SPEC)
    parser.add_argument("--demo-pruning", default="both", choices=[s for s in STRATEGIES if s != "full"])
    parser.add_argument("--results", type=Path, help="results root of the real runs (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.export:
        print(f"{export_curves(*args.export)} rows -> {CURVES_PATH}")
        return
    results = args.results or Path(tempfile.mkdtemp(prefix="sweeper-search-efficiency-"))
    try:
        if args.record:
            record(results)
            return
        if not args.replay_only:
            run_demo_pair(args.demo_spec.resolve(), args.demo_pruning, results)
        run_replay(args.samplers, args.seeds, args.gp_seeds, args.budget, args.processes, curves_path=args.curves)
    finally:
        if args.results is None:
            shutil.rmtree(results, ignore_errors=True)


if __name__ == "__main__":
    main()
