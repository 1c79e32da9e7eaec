"""Every folder and file of a sweep, named once: :class:`SweepPaths`.

Folder of a sweep (``SWEEP_DIR = RESULTS/<spec.name>``, or ``STORAGE/<spec.name>`` for a path
``--storage``)::

    spec.yaml                    frozen copy of the spec
    data/                        the generated data set (synthetic format only)
    cache/                       prepared arrays + index.parquet that trials read
    optuna.db                    the Optuna study (SQLite)
    ray/tune/                    Ray Tune's experiment folder (state, trial checkpoints)
    leaderboard/                 trials.parquet, configs.parquet, cases.parquet/ (out-of-fold records),
                                 intervals.parquet (patient-level), comparisons.csv, indistinguishable.csv
    pareto/                      pareto.csv (+ .parquet, .png, .svg, .json), pareto_<class>.* per class,
                                 front_probability.csv (+ .parquet), matched_precision.csv
    report/                      report.html and its PNGs
    logs/                        console logs of the driver
    mlflow_pending.pkl           MLflow writes that waited out a server outage, for ``--resume``

MLflow lives one level up, shared by the sweeps of a results root: ``RESULTS/mlflow.db`` and
``RESULTS/mlartifacts/`` (unless ``tracking.uri`` or ``$MLFLOW_TRACKING_URI`` names a server).
With an object-store ``--storage`` (``s3://bucket/prefix``) only Tune's folder lives there
(``URI/<name>/ray``); the rest stays under ``RESULTS/<name>`` on the driver.

The launch builds the paths with :meth:`SweepPaths.of`; the read-only commands (status,
leaderboard, pareto, compare, report) with :meth:`SweepPaths.at`. Imports neither torch nor Ray.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sweeper.preflight import BadInputError

if TYPE_CHECKING:
    from sweeper.spec import SweepSpec

SPEC_FILE = "spec.yaml"
DATA_DIR = "data"
CACHE_DIR = "cache"
OPTUNA_DB = "optuna.db"
RAY_DIR = "ray"
#: Ray Tune's experiment name: its folder under Tune's storage_path
TUNE_NAME = "tune"
LEADERBOARD_DIR = "leaderboard"
TRIALS_FILE = "trials.parquet"
CONFIGS_FILE = "configs.parquet"
CASES_FILE = "cases.parquet"
INTERVALS_FILE = "intervals.parquet"
COMPARISONS_FILE = "comparisons.csv"
INDISTINGUISHABLE_FILE = "indistinguishable.csv"
FRONT_PROBABILITY_STEM = "front_probability"
MATCHED_PRECISION_FILE = "matched_precision.csv"
PARETO_DIR = "pareto"
PARETO_STEM = "pareto"
REPORT_DIR = "report"
REPORT_FILE = "report.html"
LOGS_DIR = "logs"
PENDING_FILE = "mlflow_pending.pkl"
MLFLOW_DB = "mlflow.db"
MLFLOW_ARTIFACTS = "mlartifacts"


def mlflow_db(results: str | os.PathLike) -> Path:
    """Returns the results root's embedded MLflow store, ``RESULTS/mlflow.db``."""
    return Path(results).resolve() / MLFLOW_DB


def mlflow_artifacts(results: str | os.PathLike) -> Path:
    """Returns the artifact folder beside the embedded store, ``RESULTS/mlartifacts``."""
    return Path(results).resolve() / MLFLOW_ARTIFACTS


def _local_path(location: str | os.PathLike) -> Path:
    text = str(location)
    return Path(text.removeprefix("file://")).expanduser().resolve()


@dataclass(frozen=True)
class SweepPaths:
    """The folders and files of one sweep. ``storage_uri`` is set when Tune's storage is an object store."""

    results: Path
    sweep: Path
    storage_uri: str | None = None

    @classmethod
    def of(cls, spec: SweepSpec, results: str | Path, storage: str | None = None) -> SweepPaths:
        """Returns the paths a launch of ``spec`` uses; ``storage`` (else ``spec.storage``): None, a
        local/NFS path, or an object-store URI. Raises BadInputError for an unknown URI scheme."""
        from sweeper.spec import is_uri, storage_problem

        results = Path(results).expanduser().resolve()
        storage = storage if storage is not None else getattr(spec, "storage", None)
        problem = storage_problem(storage)
        if problem:
            raise BadInputError(f"storage (--storage or the spec's storage): {problem}")
        if storage and is_uri(storage):
            return cls(results, results / spec.name, f"{str(storage).rstrip('/')}/{spec.name}")
        root = _local_path(storage) if storage else results
        return cls(results, root / spec.name)

    @classmethod
    def at(cls, sweep_dir: str | Path) -> SweepPaths:
        """Returns the paths of an existing sweep folder, for the commands that only read it; the results
        root (the default MLflow store's folder) is taken to be its parent."""
        sweep = Path(sweep_dir)
        return cls(sweep.parent, sweep)

    # -- the spec and the data ----------------------------------------------------------------------
    @property
    def spec_file(self) -> Path:
        return self.sweep / SPEC_FILE

    @property
    def data(self) -> Path:
        """Where the synthetic format writes its generated data set (other formats read ``data.root``)."""
        return self.sweep / DATA_DIR

    @property
    def cache(self) -> Path:
        return self.sweep / CACHE_DIR

    # -- the search and Ray Tune ----------------------------------------------------------------------
    @property
    def optuna_db(self) -> Path:
        return self.sweep / OPTUNA_DB

    @property
    def optuna_storage(self) -> str:
        """The Optuna storage URL of the study, ``sqlite:///SWEEP_DIR/optuna.db``."""
        return f"sqlite:///{self.optuna_db}"

    @property
    def tune_storage(self) -> str:
        """Tune's ``storage_path``: ``SWEEP_DIR/ray`` or ``URI/<name>/ray``."""
        return f"{self.storage_uri}/{RAY_DIR}" if self.storage_uri else str(self.sweep / RAY_DIR)

    @property
    def tune_path(self) -> str:
        """The Tune experiment folder (path or URI) that ``Tuner.restore`` reads."""
        return f"{self.tune_storage}/{TUNE_NAME}"

    @property
    def tune_dir(self) -> Path:
        """The local Tune experiment folder (meaningful when Tune's storage is not an object store)."""
        return self.sweep / RAY_DIR / TUNE_NAME

    def tune_started(self) -> bool:
        """True when Tune's experiment folder exists (a sweep ran here before)."""
        if not self.storage_uri:
            return self.tune_dir.exists()
        import pyarrow.fs

        fs, path = pyarrow.fs.FileSystem.from_uri(self.tune_path)
        return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound

    def trials_started(self) -> bool:
        """True when a trial of this sweep started here before (a trial folder in Tune's experiment folder, or a
        leaderboard), so that there is something to resume; a Tune folder without trials (a launch that failed
        before its first trial) is not. With object-store storage: Tune's experiment folder exists."""
        if self.trials_table.exists():  # a trial ended here, whatever became of Tune's folder since
            return True
        if self.storage_uri:
            return self.tune_started()
        return self.tune_dir.is_dir() and any(p.is_dir() for p in self.tune_dir.iterdir())

    def clear_unstarted(self) -> None:
        """Removes what a launch that never started a trial left (Tune's experiment folder, the Optuna study, the
        frozen spec), so that a clean launch or ``--resume`` starts afresh; the data cache is kept (its digest
        decides whether it is reused). Never call it when :meth:`trials_started`."""
        import shutil

        if self.storage_uri:
            return
        if self.tune_dir.is_dir():
            shutil.rmtree(self.tune_dir)
        for path in (self.optuna_db, self.spec_file):
            path.unlink(missing_ok=True)

    # -- what the driver writes -----------------------------------------------------------------------
    @property
    def leaderboard(self) -> Path:
        return self.sweep / LEADERBOARD_DIR

    @property
    def trials_table(self) -> Path:
        """One row per fold trial at its best epoch."""
        return self.leaderboard / TRIALS_FILE

    @property
    def configs_table(self) -> Path:
        """One row per configuration over its finished folds."""
        return self.leaderboard / CONFIGS_FILE

    @property
    def cases_table(self) -> Path:
        """The out-of-fold per-case records of the fold trials."""
        return self.leaderboard / CASES_FILE

    @property
    def intervals_table(self) -> Path:
        """Per configuration with case records: out-of-fold values and patient-bootstrap intervals."""
        return self.leaderboard / INTERVALS_FILE

    @property
    def comparisons_table(self) -> Path:
        """``sweeper compare --all``: every pair of configurations with Holm-adjusted p-values."""
        return self.leaderboard / COMPARISONS_FILE

    @property
    def indistinguishable_table(self) -> Path:
        """``sweeper compare --all``: per metric, the configurations not distinguishable from the best."""
        return self.leaderboard / INDISTINGUISHABLE_FILE

    @property
    def pareto(self) -> Path:
        return self.sweep / PARETO_DIR

    def front_probability_file(self, suffix: str = ".csv") -> Path:
        """Every configuration's probability of being on the front, overall and per class (``.csv``, ``.parquet``)."""
        return self.pareto / f"{FRONT_PROBABILITY_STEM}{suffix}"

    @property
    def matched_precision_table(self) -> Path:
        """Precision at matched sensitivity across configurations, with intervals."""
        return self.pareto / MATCHED_PRECISION_FILE

    def pareto_file(self, class_name: str | None = None, suffix: str = ".csv") -> Path:
        """Returns ``pareto/pareto<suffix>`` (overall front) or ``pareto/pareto_<class><suffix>``; suffix one of
        ``.csv``, ``.parquet``, ``.png``, ``.svg``, ``.json``."""
        stem = f"{PARETO_STEM}_{class_name}" if class_name else PARETO_STEM
        return self.pareto / f"{stem}{suffix}"

    @property
    def report(self) -> Path:
        return self.sweep / REPORT_DIR

    @property
    def report_file(self) -> Path:
        return self.report / REPORT_FILE

    @property
    def logs(self) -> Path:
        return self.sweep / LOGS_DIR

    @property
    def mlflow_pending(self) -> Path:
        """MLflow writes kept through a server outage, written first by the next ``--resume``."""
        return self.sweep / PENDING_FILE

    # -- the results root's default MLflow store ----------------------------------------------------------
    @property
    def mlflow_db(self) -> Path:
        return mlflow_db(self.results)

    @property
    def mlflow_artifacts(self) -> Path:
        return mlflow_artifacts(self.results)
