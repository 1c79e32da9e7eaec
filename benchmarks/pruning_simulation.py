"""Fold-trial-epochs saved by fold halving and MO-ASHA, and whether the true front survives: a simulated sweep.

    python benchmarks/pruning_simulation.py [--configs 60] [--folds 5] [--epochs 18] [--seeds 10]

No training: each configuration gets a true end point (sensitivity, precision) scattered under a
trade-off curve, each fold a shared difficulty offset and a per-configuration deviation, and each
fold trial a noisy learning curve rising to its end point with a configuration-specific time constant
(slow starters exist, so early ranks are not final ranks). Four strategies are replayed on the same
curves with the sweep's own decision code (:class:`sweeper.pruning.Rungs` for fold halving,
:class:`sweeper.pruning.EpochHalving` for MO-ASHA), configurations in the order Optuna would hand them
out with one trial at a time (a promoted configuration's next folds run first, as the searcher queues
them):

- **full**: every configuration, every fold, every epoch (Tune's FIFO, no pruning);
- **folds**: ``search.pruning.folds: {min_folds: 1, eta: 3}``;
- **moasha**: ``scheduler: {type: moasha, grace_period: 2, reduction_factor: 3}`` (a stopped fold trial
  prunes its configuration);
- **both**: the two above together;
- **both, gentle**: ``min_folds: 2, eta: 2`` and ``grace_period: 3, reduction_factor: 2``.

Printed per strategy, median over seeds (and the range): fold-trial-epochs spent as a share of full
fan-out's, the share of the true front's configurations (non-dominated on the noiseless end points)
that finish unpruned, and the hypervolume of the measured front of the configurations that finish,
as a share of full fan-out's (reference point (0, 0)). All strategies in one run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.replay import STRATEGIES, Strategy, front_hypervolume, replay_in_order  # noqa: E402
from sweeper.pareto import non_dominated  # noqa: E402

#: scenario -> the slowest learning curve's time constant (epochs): curves that rarely cross, slow starters
SCENARIOS = {"curves rarely cross": 2.0, "slow starters": 6.0}


def simulate_curves(
    rng: np.random.Generator, n_configs: int, n_folds: int, n_epochs: int, tau_high: float
) -> tuple[np.ndarray, np.ndarray]:
    """Returns (true end points (c, 2), curves (c, folds, epochs, 2)) of a synthetic sweep; each configuration
    rises with a time constant drawn from [1, tau_high] epochs."""
    sens = rng.uniform(0.55, 0.95, n_configs)
    gap = rng.exponential(0.06, n_configs)  # distance below the trade-off curve
    prec = np.clip(1.55 - sens - gap, 0.3, 0.97)
    true = np.stack([sens, prec], axis=1)
    fold_offset = rng.normal(0, 0.02, (1, n_folds, 1))
    end = np.clip(true[:, None, :] + fold_offset + rng.normal(0, 0.015, (n_configs, n_folds, 2)), 0, 1)
    tau = rng.uniform(1.0, tau_high, (n_configs, 1, 1, 1))  # a wide range: slow starters catch up late
    epochs = np.arange(1, n_epochs + 1)[None, None, :, None]
    rise = 1 - 0.6 * np.exp(-epochs / tau)
    curves = np.clip(end[:, :, None, :] * rise + rng.normal(0, 0.01, (n_configs, n_folds, n_epochs, 2)), 0, 1)
    return true, curves


def replay(curves: np.ndarray, strategy: Strategy) -> tuple[int, dict[int, np.ndarray]]:
    """Returns (fold-trial-epochs spent, {configuration: measured fold means} of those finishing unpruned); a fold
    trial keeps its epoch of the highest sensitivity + precision (:func:`replay.replay_in_order`)."""
    return replay_in_order(curves, curves.sum(axis=-1), strategy)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", type=int, default=60)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=18)
    parser.add_argument("--seeds", type=int, default=10)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    for scenario, tau_high in SCENARIOS.items():
        rows = run_scenario(args, tau_high)
        print(
            f"\n{scenario} (time constants 1-{tau_high:g} epochs): {args.configs} configurations x {args.folds} "
            f"folds x {args.epochs} epochs, {args.seeds} seeds, median [min, max]"
        )
        print(f"{'strategy':<12} {'epochs spent vs full':>24} {'true front kept':>24} {'hypervolume vs full':>24}")
        for name, values in rows.items():
            cells = [
                f"{np.median(column):6.1%} [{column.min():6.1%}, {column.max():6.1%}]" for column in np.array(values).T
            ]
            print(f"{name:<12} " + " ".join(f"{cell:>24}" for cell in cells))
    print(f"\n{time.perf_counter() - started:.1f} s")


def run_scenario(args: argparse.Namespace, tau_high: float) -> dict[str, list[tuple[float, float, float]]]:
    """Returns per strategy, per seed: (epochs spent / full's, true front kept, hypervolume / full's)."""
    rows: dict[str, list[tuple[float, float, float]]] = {name: [] for name in STRATEGIES}
    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        true, curves = simulate_curves(rng, args.configs, args.folds, args.epochs, tau_high)
        true_front = set(np.flatnonzero(non_dominated(true)))
        full_spent, full_finished = replay(curves, STRATEGIES["full"])
        full_hv = front_hypervolume(np.array(list(full_finished.values())))
        for name, strategy in STRATEGIES.items():
            spent, finished = replay(curves, strategy)
            kept = len(true_front & set(finished)) / len(true_front)
            hv = front_hypervolume(np.array(list(finished.values()))) / full_hv
            rows[name].append((spent / full_spent, kept, hv))
    return rows


if __name__ == "__main__":
    main()
