"""Every check that runs before Ray starts, and :class:`BadInputError`, the error each one raises.

In the order of ``sweeper launch``:

1. :func:`spec_problems` (through :func:`sweeper.spec.load_spec`, also ``sweeper validate``): the data
   set against its format and the folds, the MLflow server of ``tracking.uri``; each problem names
   the spec field and the fix, and :class:`sweeper.spec.SpecError` lists them all at once.
2. :func:`check_local_resources`: a trial's CPUs and GPUs against a private local Ray's one node.
3. :func:`check_writable`: the results folder and the sweep folder.
4. :func:`check_disk_space`: the checkpoints still to be written against the free disk.

(The MLflow server named by ``$MLFLOW_TRACKING_URI`` is probed by
:func:`sweeper.tracking.check_tracking_server` next; a data set the adapter cannot read is refused
while the cache is prepared, still before Ray starts.) Each of 2-4 raises :class:`BadInputError`.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from trainables import usable_cpus

if TYPE_CHECKING:
    from sweeper.paths import SweepPaths
    from sweeper.spec import DataSpec, SweepSpec

logger = logging.getLogger(__name__)


class BadInputError(ValueError):
    """The data set, the folders or the machine cannot run the sweep; raised before Ray starts, naming the file,
    folder or field and the fix (README "Bad input")."""


# -- the spec against the files and the tracking server ----------------------------------------------
def spec_problems(spec: SweepSpec) -> list[str]:
    """Returns the problems of a parsed spec that only the file system or the network show: the data set
    against its format and the folds (the format adapter's own ``preflight``), the split file, the MLflow
    server (empty when the spec can run)."""
    problems = _check_data_paths(spec.data) or _check_adapter(spec.data)
    problems.extend(_check_input_size(spec))
    if spec.tracking.uri:
        problems.extend(_check_server(spec.tracking.uri))
        problems.extend(_check_local_store(spec.tracking.uri))
    return problems


#: the largest output stride of an smp encoder: an image_size divisible by it suits every network
LARGEST_STRIDE = 32


def _check_input_size(spec: SweepSpec) -> list[str]:
    """Returns each network of the spec that cannot take ``data.image_size`` (smp refuses an input not divisible
    by the encoder's output stride, inside every trial), or []."""
    size = spec.data.image_size
    if size % LARGEST_STRIDE == 0:
        return []
    from trainables.models import input_multiple

    problems = []
    for arch in spec.model.architectures:
        for encoder in spec.model.encoders:
            try:
                multiple = input_multiple(arch, encoder)
            except Exception:  # noqa: BLE001 - an unknown name is refused by the spec's own check
                continue
            if size % multiple:
                fit = sorted({size // multiple * multiple, (size // multiple + 1) * multiple} - {0})
                problems.append(
                    f"data.image_size: {arch} with {encoder} needs a size divisible by {multiple}, not {size}; "
                    f"use {' or '.join(map(str, fit))}"
                )
    return problems


def _check_local_store(uri: str, field: str = "tracking.uri") -> list[str]:
    """Returns why the folder of a local MLflow store (``sqlite:///PATH``) cannot be created or written, or []."""
    from sweeper.tracking import local_store_folder

    folder = local_store_folder(uri)
    if folder is None:
        return []
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        what = "is a file" if not existing.is_dir() else "is not writable"
        return [
            f"{field}: the store's folder {folder} cannot be created ({existing} {what}); give a sqlite:/// path "
            "in a folder you can write to, or leave it out (RESULTS/mlflow.db)"
        ]
    return []


def check_tracking_environment() -> None:
    """Raises BadInputError when ``$MLFLOW_TRACKING_URI`` (used when the spec gives no ``tracking.uri``) has no
    known scheme, or names a sqlite store in a folder that cannot be created."""
    from sweeper.spec import tracking_uri_problem

    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return
    field = "$MLFLOW_TRACKING_URI"
    problem = tracking_uri_problem(uri, field)
    problems = [problem] if problem else _check_local_store(uri, field)
    if problems:
        raise BadInputError(problems[0].replace("or leave it out", "or unset it"))


#: forms of ``--address`` besides HOST:PORT and ray://HOST:PORT
RAY_ADDRESS_WORDS = ("auto", "local")


def address_problem(address: str | None) -> str | None:
    """Returns what is wrong with a ``--address`` (``auto``, ``local``, ``HOST:PORT``, ``ray://HOST:PORT``), or None."""
    if not address or address in RAY_ADDRESS_WORDS:
        return None
    text = address.removeprefix("ray://")
    host, _, port = text.rpartition(":")
    if "://" not in text and host and port.isdigit() and 0 < int(port) < 65536 and "/" not in host:
        return None
    return (
        f"--address {address!r} is not a Ray address; give auto (the cluster this machine belongs to), "
        "HOST:6379 (join a cluster from one of its nodes) or ray://HOST:10001 (Ray Client), or leave it out "
        "(a private local Ray)"
    )


def check_address(address: str | None) -> None:
    """Raises BadInputError for a ``--address`` Ray could not connect to by its form (before Ray starts)."""
    problem = address_problem(address)
    if problem:
        raise BadInputError(problem)


# -- the data the cache holds, against the spec ---------------------------------------------------------
def check_classes_present(cache_dir: Path, data: DataSpec) -> None:
    """Raises BadInputError naming each class of ``data.classes`` that no slice of the prepared data set holds:
    such a class would train an empty channel and enter every overall metric (a class of another data set,
    e.g. ``liver`` on GI data, or ``label_values`` that miss it)."""
    from trainables.data import load_index

    index = load_index(cache_dir)
    absent = [c for c in data.classes if f"has_{c}" in index and not index[f"has_{c}"].any()]
    if absent:
        raise BadInputError(
            f"data.classes: {absent} never appear in the data set ({len(index)} slices at {data.root or cache_dir}); "
            "remove them from data.classes, or fix data.label_values so that their labels map to them"
        )


# -- resume -----------------------------------------------------------------------------------------------
#: spec fields a resumed sweep may change with --force-spec: a restored Tune experiment keeps its searcher,
#: schedule and callbacks, and takes only the trial resources from the new spec
SAFE_ON_RESUME = ("resources.cpus_per_trial", "resources.gpus_per_trial")


def _flatten(value, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        out: dict[str, object] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def spec_changes(frozen: dict, spec: SweepSpec) -> list[str]:
    """Returns ``field: old -> new`` for every field where ``spec`` differs from the sweep's frozen copy."""
    old, new = _flatten(frozen or {}), _flatten(spec.model_dump(mode="json"))
    return [
        f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
        for key in sorted(old.keys() | new.keys())
        if old.get(key) != new.get(key) and not (key not in old and new.get(key) is None)
    ]


def check_resume_spec(spec: SweepSpec, paths: SweepPaths, *, force_spec: bool = False) -> list[str]:
    """Raises BadInputError when ``spec`` differs from the sweep's frozen ``spec.yaml`` in what runs, listing the
    differences and the two ways out; returns the changes allowed (only :data:`SAFE_ON_RESUME`, with
    ``force_spec``), for the caller to freeze."""
    import yaml

    if not paths.spec_file.is_file():
        return []
    changes = spec_changes(yaml.safe_load(paths.spec_file.read_text()), spec)
    if not changes:
        return []
    unsafe = [c for c in changes if c.split(":", 1)[0] not in SAFE_ON_RESUME]
    if unsafe or not force_spec:
        listed = "\n".join(f"    {c}" for c in changes)
        allowed = ", ".join(SAFE_ON_RESUME)
        raise BadInputError(
            f"--resume: the spec differs from the one {paths.sweep} was started with ({paths.spec_file}):\n{listed}\n"
            "  A resumed sweep must run what it started. Either give the changed spec a new `name` (a new sweep), "
            f"or undo the changes; only {allowed} may change on resume, with --force-spec"
        )
    return changes


def _check_data_paths(data: DataSpec) -> list[str]:
    """Returns what is wrong with ``data.root`` and ``data.split_file`` as kinds of path (a file where a folder
    belongs, and back) before the adapter reads them; [] when neither is."""
    from trainables.data.formats import ADAPTERS

    problems = []
    root = Path(data.root).expanduser() if data.root is not None else None
    if root is not None and not ADAPTERS[data.format].generates_data:
        if root.exists() and not root.is_dir():  # a missing root: the adapter says what it expected there
            problems.append(f"data.root: {root} is a file; give the folder holding the data set")
    split = Path(data.split_file).expanduser() if data.split_file is not None else None
    if split is not None and split.is_dir():  # a missing split file: load_split names it
        problems.append(f"data.split_file: {split} is a folder; give the split YAML/JSON file inside it")
    return problems


def _check_adapter(data: DataSpec) -> list[str]:
    """Returns the problems the format's adapter finds (its ``preflight``: file names only, nothing decoded
    or written) and those of the split file."""
    from trainables.data import build_adapter, load_split

    problems = []
    # a generated data set goes to the sweep's folder, not known yet; such an adapter's preflight reads no files
    root = Path(data.root).expanduser() if data.root is not None else Path("data")
    try:
        adapter = build_adapter(
            data.format,
            root,
            data.options,
            classes=data.classes,
            label_values=data.label_values,
            label_mode=data.label_mode,
        )
    except (ValueError, KeyError) as err:
        problems.append(f"data: {err}")
    else:
        problems.extend(adapter.preflight(data.folds, fixed_split=data.split_file is not None))
    if data.split_file is not None:
        try:
            load_split(data.split_file)
        except (OSError, ValueError) as err:
            problems.append(f"data.split_file: {err}")
    return problems


def _check_server(uri: str) -> list[str]:
    """Probes a tracking server (``http(s)://``) as the launch does; sqlite/file stores need no probe."""
    from sweeper.tracking import is_server_uri, server_reachable

    why = server_reachable(uri) if is_server_uri(uri) else None
    return (
        [] if why is None else [f"tracking.uri: cannot reach MLflow server {uri} ({why}); start it or fix the address"]
    )


# -- the folders, the disk and the machine -----------------------------------------------------------
def check_writable(paths: SweepPaths) -> None:
    """Raises BadInputError unless the results folder and the (local) sweep folder can be created and written."""
    for what, folder in (
        ("results folder (--results)", paths.results),
        ("sweep folder (--storage / the spec's storage, then name)", paths.sweep),
    ):
        if folder == paths.sweep and paths.storage_uri:
            continue
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".sweeper-write-test-"):
                pass
        except OSError as err:
            raise BadInputError(
                f"{what} {folder} is not a writable folder ({err.strerror or err}); "
                "pass a folder you can write to, or fix its permissions"
            ) from None


def check_results_root(paths: SweepPaths) -> None:
    """Raises BadInputError when ``--results`` is itself a sweep folder (``results/NAME`` instead of ``results``):
    the sweep would nest inside it, beside that sweep's own files, with the MLflow store inside it too."""
    from sweeper.paths import SPEC_FILE, SweepPaths

    results = paths.results
    inside = SweepPaths.at(results)  # a spec.yaml alone may be the user's own spec beside --results .
    if inside.spec_file.is_file() and (inside.optuna_db.exists() or inside.tune_dir.exists() or inside.cache.exists()):
        raise BadInputError(
            f"results folder (--results) {results} is a sweep folder (it holds {SPEC_FILE}); pass the results root "
            f"that holds the sweep folders, e.g. --results {results.parent}"
        )


def check_local_resources(spec: SweepSpec, address: str | None) -> None:
    """Raises BadInputError when a trial asks for more GPUs or CPUs than the one node of a private local Ray has
    (Tune would wait for such a node forever). On a cluster (``address`` or ``RAY_ADDRESS``) nodes may still
    join, so nothing is checked here."""
    if address or os.environ.get("RAY_ADDRESS"):
        return
    res = spec.resources
    cpus = usable_cpus()
    if res.cpus_per_trial > cpus:
        raise BadInputError(
            f"resources.cpus_per_trial: {res.cpus_per_trial:g} CPUs per trial but this machine "
            f"has {cpus}; give at most {cpus}, or launch on a cluster (--address)"
        )
    if res.gpus_per_trial > 0:
        import torch

        gpus = torch.cuda.device_count()
        if res.gpus_per_trial > gpus:
            raise BadInputError(
                f"resources.gpus_per_trial: {res.gpus_per_trial:g} GPUs per trial but this machine "
                f"has {gpus}; give at most {gpus} (0 trains on the CPU), or launch on a cluster "
                "with GPU nodes (--address)"
            )


#: one fold trial's checkpoint bytes, in fp32 copies of its network: Tune keeps the trial's last checkpoint
#: (weights + AdamW's two moments, plus the best epoch's weights: 4) and a local MLflow store logs the best
#: weights once more (1)
TUNE_CHECKPOINT_COPIES = 4
MLFLOW_CHECKPOINT_COPIES = 1
#: free space asked beyond the estimate (logs, tables, the report, Tune's state files)
DISK_MARGIN = 1.2


def network_bytes(arch: str, encoder: str, *, in_channels: int, classes: int) -> int:
    """Returns the fp32 size of an smp network's parameters and buffers, built on the meta device (no memory,
    no download) or, for encoders whose constructor reads tensor values (MiT), on the CPU without weights."""
    import itertools

    import torch

    from trainables.models import build_model

    try:
        with torch.device("meta"):
            model = build_model(arch, encoder, in_channels=in_channels, classes=classes)
    except RuntimeError:
        model = build_model(arch, encoder, in_channels=in_channels, classes=classes)
    return sum(t.numel() * 4 for t in itertools.chain(model.parameters(), model.buffers()))


def _free_bytes(folder: Path) -> tuple[Path, int]:
    """Returns the nearest existing ancestor of ``folder`` and the bytes free on its file system."""
    while not folder.exists():
        folder = folder.parent
    return folder, shutil.disk_usage(folder).free


def check_disk_space(
    spec: SweepSpec, paths: SweepPaths, *, local_mlflow: bool, mlflow_folder: Path | None = None
) -> None:
    """Raises BadInputError when the checkpoints still to be written do not fit on the local disk(s) holding
    Tune's storage and the MLflow store: a sweep that fills its disk fails trials mid-way with torch's
    ``inline_container.cc ... unexpected pos`` instead. Object-store storage and a remote MLflow are not
    counted. The estimate is the largest network of the spec times :data:`TUNE_CHECKPOINT_COPIES` (plus
    :data:`MLFLOW_CHECKPOINT_COPIES`) per fold trial not yet in the Tune folder, times :data:`DISK_MARGIN`.
    ``mlflow_folder``: the local store's folder (its artifacts lie beside it), default the results folder."""
    copies = {}
    if not paths.storage_uri:
        copies[paths.sweep] = TUNE_CHECKPOINT_COPIES
    if local_mlflow:
        store = mlflow_folder or paths.results
        copies[store] = copies.get(store, 0) + MLFLOW_CHECKPOINT_COPIES
    if not copies:
        return

    done = sum(1 for p in paths.tune_dir.iterdir() if p.is_dir()) if paths.tune_dir.is_dir() else 0
    remaining = max(spec.planned_fold_trials() - done, 0)
    try:
        largest = max(
            network_bytes(arch, enc, in_channels=2 * spec.data.context + 1, classes=len(spec.data.channel_classes))
            for arch, enc in spec.model.pairs()
        ) * (len(spec.data.classes) if "uniclass" in spec.model.heads else 1)  # uniclass: one network per class
    except Exception as err:  # an estimate is never what stops a launch; the trial reports a real build error
        logger.warning("disk space not checked: the network could not be sized (%s)", err)
        return
    per_disk: dict[int, tuple[Path, int, int]] = {}  # file system -> (folder, bytes free, network copies)
    for folder, n_copies in copies.items():
        where, free = _free_bytes(folder)
        _, _, before = per_disk.get(where.stat().st_dev, (where, free, 0))
        per_disk[where.stat().st_dev] = (where, free, before + n_copies)
    for where, free, n_copies in per_disk.values():
        needed = DISK_MARGIN * remaining * n_copies * largest
        if needed > free:
            gb = 1024**3
            raise BadInputError(
                f"disk space at {where}: the {remaining} fold trials still to run need about {needed / gb:.1f} GB "
                f'of checkpoints ({largest / 2**20:.0f} MB network x {n_copies} copies each, see README "Disk '
                f'space") but {free / gb:.1f} GB is free; free space there, point --results/--storage at a larger '
                "disk (or an object store), or run fewer trials (search.budget, data.run_folds)"
            )
