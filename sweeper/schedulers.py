"""Ray Tune trial schedulers: ``scheduler: {type: fifo | moasha}`` of the sweep spec.

``fifo`` is Tune's own (every fold trial to its last epoch). ``moasha`` is :class:`MoAshaScheduler`:
epoch-level multi-objective asynchronous successive halving (Schmucker R., Donini M., Zafar M. B.,
Salinas D., Archambeau C. "Multi-objective Asynchronous Successive Halving." arXiv:2106.12639, 2021).
Tune's own schedulers (ASHA, Hyperband, PBT) rank trials on one metric; this one ranks them by
non-dominated sorting with crowding-distance ties on every objective of ``search.objectives`` as the
trial reports them each epoch, and compares a fold trial only with trials of the same fold (folds
differ in difficulty). The decisions are :class:`sweeper.pruning.EpochHalving`'s.

State and ``--resume``: Tune saves the searcher and the callbacks with each experiment snapshot but
keeps a scheduler only as it was pickled at the start. So the scheduler writes its rungs to
``state_file`` (JSON, atomic) after each decision and reads them back when it is unpickled by
``Tuner.restore``; ``save``/``restore`` (Tune's interface) write and read the same state.

A stopped trial ends like a finished one (Tune calls ``on_trial_complete`` of the searcher and the
callbacks with its last result): its best epoch so far is its record, marked ``stopped`` in
trials.parquet with the epoch it reached, and the searcher prunes its configuration. Stopping works
with ``reuse_actors`` as Tune's ASHA does: the worker is handed to the next trial.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from sweeper.pruning import SCHEDULER_STATE_FILE as STATE_FILE
from sweeper.pruning import EpochHalving
from sweeper.spec import SweepSpec


class MoAshaScheduler(FIFOScheduler):
    """Stops a fold trial at a rung epoch when it is outside the top ``1/reduction_factor`` of the same
    fold's trials there; trials start in Tune's order (FIFO)."""

    _supports_buffered_results = False  # judge every epoch's result as it comes

    def __init__(self, halving: EpochHalving, state_file: str | Path | None = None):
        super().__init__()
        self.halving = halving
        self.state_file = None if state_file is None else str(state_file)
        self._load()

    def on_trial_result(self, tune_controller, trial, result: dict[str, Any]) -> str:
        config = trial.config
        goes_on = self.halving.decide(
            str(config["config_id"]), int(config["fold"]), result, int(config.get("repeat", 0))
        )
        if result.get("epoch") in self.halving.levels or not goes_on:
            self._write()
        return TrialScheduler.CONTINUE if goes_on else TrialScheduler.STOP

    def debug_string(self) -> str:
        return f"MO-ASHA: rungs at epochs {self.halving.levels}, {len(self.halving.stopped)} fold trial(s) stopped"

    # -- persistence ---------------------------------------------------------------------------
    def save(self, checkpoint_path: str) -> None:
        _write_json(Path(checkpoint_path), self.halving.to_dict())

    def restore(self, checkpoint_path: str) -> None:
        self.halving = EpochHalving.from_dict(json.loads(Path(checkpoint_path).read_text()))

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._load()  # Tuner.restore unpickles the scheduler of the start: take the rungs recorded since

    def _write(self) -> None:
        if self.state_file is not None:
            self.save(self.state_file)

    def _load(self) -> None:
        if self.state_file is not None and Path(self.state_file).is_file():
            self.restore(self.state_file)


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _moasha(spec: SweepSpec, sweep_dir: str | Path) -> MoAshaScheduler:
    chosen = spec.scheduler
    halving = EpochHalving(
        objectives=[obj.metric for obj in spec.search.objectives],
        directions=[obj.direction for obj in spec.search.objectives],
        grace_period=chosen.grace_period,
        reduction_factor=chosen.reduction_factor,
        max_epochs=spec.training.epochs,
    )
    return MoAshaScheduler(halving, Path(sweep_dir) / STATE_FILE)


#: ``scheduler.type`` -> factory(spec, sweep folder); None: Tune's FIFO default
SCHEDULERS = {"fifo": lambda spec, sweep_dir: None, "moasha": _moasha}


def make_scheduler(spec: SweepSpec, sweep_dir: str | Path) -> TrialScheduler | None:
    """Returns the spec's trial scheduler (None: Tune's FIFO default)."""
    return SCHEDULERS[spec.scheduler.type](spec, sweep_dir)
