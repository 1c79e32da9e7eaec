"""The trial: train one (architecture, encoder, loss + knobs, fold) and report each epoch.

:func:`train_fold` is the Ray Tune function trainable. Everything it needs is in its ``config``
(see :class:`trainables.contract.TrialConfig`); it reads the prepared cache, never the raw PNGs. Each epoch it reports a
flat dict -- ``train_loss``, ``val_loss``, every validation metric (``dice``, ``dice.small_bowel``,
...), ``best_epoch`` and the same metrics at the best epoch under ``best.`` -- together with a
checkpoint holding the training state, the best weights and the best epoch's out-of-fold case
records (``cases.parquet``: per validation image and class, :mod:`trainables.metrics.cases`), and
last a manifest of those files with the epoch and the reported result
(:mod:`trainables.checkpoint_files`). The checkpoint comes every ``training.checkpoint_every`` epochs
(default 1) and always with the last epoch; the best weights and records of an epoch without one are
kept in memory until the next.

After a failure it resumes from ``tune.get_checkpoint()``, or, on a local or NFS storage, from a newer
complete checkpoint of the same fold trial found on storage: after a ``--resume`` Tune names the
checkpoint of its last experiment snapshot, and the killed driver may have let the trial write newer
ones, or end, after it. A checkpoint of the last epoch trains nothing: its stored result is reported
once more (``replayed: True``), so Tune, the searcher, the leaderboard and MLflow record the trial once.

References:

- paper 002: "CALF: a conditionally adaptive loss function to mitigate class-imbalanced
  segmentation." Anonymised MICCAI submission (authors and year not given).
- paper 003: Furtado P. "Investigation of loss functions for improving deep segmentation of
  abdominal organs from MRI." University of Coimbra, undated manuscript; related published study:
  Furtado P. "Testing segmentation popular loss and variations in three multiclass medical imaging
  problems." J. Imaging 7(2):16, 2021. doi:10.3390/jimaging7020016
"""

from __future__ import annotations

import contextlib
import io
import math
import random
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from trainables.checkpoint_files import (
    StoredCheckpoint,
    fold_trial_dirs,
    fold_trial_identity,
    highest_checkpoint_index,
    newest_complete_checkpoint,
    read_manifest,
    write_manifest,
)
from trainables.contract import BEST_PREFIX, BEST_WEIGHTS_FILE, CASES_FILE, REPLAYED_KEY, STATE_FILE, TrialConfig
from trainables.data import SliceDataset, build_augmentation, load_index, roi_ratio_subset
from trainables.data.augment import seed_transform
from trainables.data.gpu_augment import BatchGeometricAugment
from trainables.heads import HEADS
from trainables.inference import build_network, validation_slices
from trainables.losses import build_configured_loss
from trainables.metrics import LOWER_IS_BETTER, SegmentationMetrics
from trainables.optim import build_optimizer, build_scheduler

Report = Callable[[dict[str, Any], "Path | None"], None]


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the trial stops with this reason."""


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 -- the legacy global generator is what Albumentations draws from
    torch.manual_seed(seed)


def _init_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seeds NumPy, ``random`` and the dataset's Albumentations
    pipeline from the worker's torch seed (the loader generator's base seed + worker id, so the
    trial's seed fixes every batch)."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # noqa: NPY002 -- the legacy global generator is what Albumentations draws from
    random.seed(worker_seed)
    info = torch.utils.data.get_worker_info()
    seed_transform(getattr(info.dataset, "transform", None), worker_seed)


def loader_workers(num_workers: int | None, cpus_per_trial: float | None, device: torch.device) -> int:
    """Returns the DataLoader worker processes of a trial: ``num_workers`` when set, else from its CPUs.

    On CUDA the main process mostly waits on the GPU, so every CPU but one loads (at least one
    worker, even on one CPU: loading then overlaps the GPU's work). On CPU the training step
    itself uses all the trial's cores through torch's threads and loading is ~1% of a step, so
    no worker (none competing with the step, no process memory to duplicate).
    """
    if num_workers is not None:
        return int(num_workers)
    if device.type != "cuda":
        return 0
    return max(1, int(cpus_per_trial or 1) - 1)


def loader_settings(cfg: TrialConfig, device: torch.device) -> dict[str, Any]:
    """Returns the DataLoader keyword arguments both loaders of a trial share."""
    workers = loader_workers(cfg.num_workers, cfg.cpus_per_trial, device)
    settings: dict[str, Any] = dict(
        batch_size=cfg.batch_size,
        num_workers=workers,
        pin_memory=device.type == "cuda",  # page-locked batches: the copy to the GPU is async
        persistent_workers=workers > 0,  # no worker start-up (imports, mmaps) every epoch
        worker_init_fn=_init_worker if workers > 0 else None,
    )
    if workers > 0:
        # a deeper queue absorbs the spread of per-slice augmentation cost (elastic vs none)
        settings["prefetch_factor"] = 4 if workers <= 2 else 2
        # one OpenCV thread per worker (torch already keeps workers to one), else each worker's
        # warps fan out over every core. Set here, before the fork: cv2.setNumThreads inside a
        # forked worker hangs when the parent had started OpenCV's thread pool. The trial process
        # itself does no OpenCV work once it has workers.
        import cv2

        cv2.setNumThreads(1)
    return settings


def make_loaders(cfg: TrialConfig, device: torch.device) -> tuple[DataLoader, DataLoader]:
    """Returns the (training, validation) loaders of a fold trial, reproducible from ``cfg.seed``.

    The training set's order comes from a generator seeded with the run's seed (``seed + fold``, further
    for each repeat: :attr:`TrialConfig.run_seed`); its augmentation
    stream from the same seed (``num_workers=0``) or from each worker's seed, derived from that
    generator (:func:`_init_worker`). With ``gpu_augmentation`` the workers do only the intensity
    transforms; the geometric ones happen in the training step.
    """
    n_folds = int(load_index(cfg.cache_dir)["fold"].max()) + 1
    train_folds = [f for f in range(n_folds) if f != cfg.fold]
    transform = build_augmentation(
        cfg.image_size, cfg.augmentation, geometric=not cfg.gpu_augmentation, seed=cfg.run_seed
    )
    train_set = SliceDataset(cfg.cache_dir, train_folds, context=cfg.context, transform=transform)
    if cfg.roi_ratio is not None:
        train_set.index = roi_ratio_subset(train_set.index, cfg.roi_ratio, cfg.foreground_classes, seed=cfg.run_seed)
    val_set = validation_slices(cfg)
    common = loader_settings(cfg, device)
    generator = torch.Generator().manual_seed(cfg.run_seed)
    return (
        DataLoader(train_set, shuffle=True, drop_last=len(train_set) > cfg.batch_size, generator=generator, **common),
        DataLoader(val_set, shuffle=False, **common),
    )


class TrainStep:
    """One optimisation step on a batch: ``loss = step(images, masks)`` (a detached 0-d tensor on
    the device; nothing in the step waits for the GPU).

    Mixed precision (``amp_dtype`` bf16, or fp16 with the ``scaler``), channels-last activations
    when the model was moved to channels-last, the optional compiled forward and the optional
    on-device geometric augmentation. ``model`` stays the plain module (its ``state_dict`` keys are
    the same with or without ``torch.compile``).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        criterion: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        *,
        device: torch.device,
        amp_dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
        compile: bool = False,
        augment: BatchGeometricAugment | None = None,
    ):
        self.model, self.criterion, self.optimizer, self.scaler = model, criterion, optimizer, scaler
        self.device, self.amp_dtype, self.augment = device, amp_dtype, augment
        self.use_amp = amp_dtype != torch.float32
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            model.to(memory_format=torch.channels_last)
        self.forward = torch.compile(model) if compile else model

    def to_device(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the batch on the device (async from pinned memory) in the model's memory format."""
        images = images.to(self.device, non_blocking=True)
        masks = masks.to(self.device, non_blocking=True)
        if self.augment is not None:
            images, masks = self.augment(images, masks)
        return images.contiguous(memory_format=self.memory_format), masks

    def __call__(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        images, masks = self.to_device(images, masks)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
            loss = self.criterion(self.forward(images), masks)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach()


def _match_param_layout(optimizer: torch.optim.Optimizer) -> None:
    """Gives loaded optimizer state (AdamW's moments) the memory format of its parameters: a
    checkpoint holds them contiguous, channels-last weights want them channels-last."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            for key, value in optimizer.state.get(param, {}).items():
                if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                    optimizer.state[param][key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def _amp_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def training_fold_statistics(index, cfg: TrialConfig) -> dict[str, Any]:
    """Returns the loss options measured on the TRAINING slices only (never validation):

    - ``class_frequencies``: share of pixels of each class (weighted CE, paper 003);
    - ``foreground_areas``: foreground pixels of each training slice that holds an organ, summed
      over classes (CALF's A_i, paper 002: the distribution of object sizes);
    - ``activation`` / ``n_classes``: sigmoid over one channel per organ (multi-label GI organs).
    """
    areas = index[[f"area_{c}" for c in cfg.foreground_classes]].to_numpy(dtype=float)
    pixels = max(len(index), 1) * cfg.image_size * cfg.image_size
    per_slice = areas.sum(axis=1)
    frequencies = (areas.sum(axis=0) / pixels).tolist()
    if cfg.activation == "softmax":  # channel 0 is background: every pixel no class holds
        frequencies = [max(0.0, 1.0 - sum(frequencies)), *frequencies]
    return {
        "activation": cfg.activation,
        "include_background": cfg.loss_include_background if cfg.activation == "softmax" else True,
        "n_classes": len(cfg.classes),
        "class_frequencies": frequencies,
        "foreground_areas": per_slice[per_slice > 0].tolist() or [0.0],
    }


def build_criterion(cfg: TrialConfig, index) -> torch.nn.Module:
    """Returns the trial's loss, its options measured on the training slices ``index``: the configured
    loss, or under ``heads: uniclass`` the sum of each class's binary loss (:mod:`trainables.heads`)."""

    def loss(part: TrialConfig) -> torch.nn.Module:
        return build_configured_loss(part.loss, part.loss_params, part.classes, **training_fold_statistics(index, part))

    return HEADS[cfg.heads].loss(cfg, loss)


def describe_loss_choice(criterion: torch.nn.Module) -> str:
    """Returns what a data-driven loss chose (CALF's transformation), '' for fixed losses."""
    chosen = [
        f"{type(m).__name__}:{m.transform}"
        for m in criterion.modules()
        if isinstance(getattr(m, "transform", None), str)
    ]
    return ",".join(chosen)


@contextlib.contextmanager
def checkpoint_scratch(name: str | None = None) -> Iterator[Path]:
    """Yields an empty folder in the system temp folder for one epoch's checkpoint, deleted afterwards.

    ``name`` (a Tune trial id) gives the folder a fixed name: it is cleared before use. A worker killed
    while Tune copies the checkpoint leaves the folder behind, and the trial's retry then reuses and
    clears it, so the leftover stays one checkpoint per killed trial. Without a name the folder is a
    fresh ``mkdtemp``."""
    if name is None:
        with tempfile.TemporaryDirectory(prefix="sweeper-ckpt-") as tmp:
            yield Path(tmp)
        return
    folder = Path(tempfile.gettempdir()) / f"sweeper-ckpt-{name}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_fold(
    config: TrialConfig | Mapping[str, Any],
    report: Report,
    checkpoint_dir: Path | None = None,
    *,
    scratch_name: str | None = None,
    replay: bool = False,
) -> dict[str, Any]:
    """Trains one fold and returns the last reported metrics.

    A checkpoint of the last epoch (``training.epochs``) trains nothing: the result stored in its manifest is
    reported once more, with the checkpoint and ``replayed: True``, and returned. With ``replay`` the
    result of any checkpoint is reported so before training goes on from it: a resumed trial whose
    checkpoint is newer than the one Tune knows (:func:`train_fold`) lets Tune's scheduler decide on it
    again (MO-ASHA stops a trial it had stopped at that epoch before the driver died).

    Args:
        config: a :class:`TrialConfig`, or one as a dict (:meth:`TrialConfig.to_dict`).
        report: called each epoch as ``report(metrics, checkpoint_dir)``; the directory is temporary
            and only valid during the call (the caller copies it); ``None`` in an epoch that writes
            no checkpoint (``training.checkpoint_every``).
        checkpoint_dir: a directory written by an earlier call to resume from, or ``None``.
        scratch_name: names the temp folder each epoch's checkpoint is written to before ``report``
            (see :func:`checkpoint_scratch`); ``None``: a fresh temp folder each epoch.
        replay: report the checkpoint's stored result first (see above).
    """
    cfg = config if isinstance(config, TrialConfig) else TrialConfig.from_dict(config)
    manifest = read_manifest(checkpoint_dir) if checkpoint_dir is not None else None  # None: none, or older
    if manifest is not None and manifest["epoch"] >= cfg.epochs:  # the trial had ended: nothing to train
        stored = {**manifest["result"], REPLAYED_KEY: True}
        report(stored, Path(checkpoint_dir))
        return stored
    seed_everything(cfg.run_seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    use_amp = cfg.amp and device.type == "cuda"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    train_loader, val_loader = make_loaders(cfg, device)
    model = build_network(cfg).to(device)
    criterion = build_criterion(cfg, train_loader.dataset.index)
    # fused on CUDA: one kernel for all parameters, and it reads the fp16 scaler's inf flag on the
    # device (GradScaler.step would otherwise sync on it every step)
    optimizer = build_optimizer(model.parameters(), cfg, fused=device.type == "cuda")
    per_batch = cfg.schedule.step_every == "batch"
    batches = min(len(train_loader), cfg.max_train_batches or len(train_loader))
    scheduler = build_scheduler(optimizer, cfg, batches_per_epoch=batches)
    amp_dtype = _amp_dtype(device) if use_amp else torch.float32
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp and amp_dtype == torch.float16)

    augment = (
        BatchGeometricAugment(cfg.augmentation, seed=cfg.run_seed, device=device, one_hot=cfg.activation == "softmax")
        if cfg.gpu_augmentation
        else None
    )
    step_fn = TrainStep(
        model,
        criterion,
        optimizer,
        scaler,
        device=device,
        amp_dtype=amp_dtype,
        channels_last=cfg.channels_last and device.type == "cuda",
        compile=cfg.compile,
        augment=augment,
    )

    start_epoch, best_value, best_metrics, best_state = 0, -math.inf, {}, None
    best_cases: bytes | None = None  # the best epoch's case records as Parquet, copied into each checkpoint
    if checkpoint_dir is not None:
        state = torch.load(Path(checkpoint_dir) / STATE_FILE, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        _match_param_layout(optimizer)
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, best_value, best_metrics = state["epoch"], state["best_value"], state["best_metrics"]
        best_state = torch.load(Path(checkpoint_dir) / BEST_WEIGHTS_FILE, map_location="cpu", weights_only=True)
        cases_file = Path(checkpoint_dir) / CASES_FILE
        best_cases = cases_file.read_bytes() if cases_file.is_file() else None
        if replay and manifest is not None:  # after loading: the folder may be cleaned up once Tune has the copy
            report({**manifest["result"], REPLAYED_KEY: True}, Path(checkpoint_dir))

    metrics = SegmentationMetrics(
        cfg.classes,
        threshold=cfg.threshold,
        boundary=cfg.boundary_metrics,
        nsd_tolerance_mm=cfg.nsd_tolerance_mm,
        activation=cfg.activation,
        include_background=cfg.include_background,
        object_min_overlap=cfg.object_min_overlap,
        case_bins=cfg.threshold_bins,
    )
    sign = -1.0 if cfg.select_metric.split(".")[0] in LOWER_IS_BETTER else 1.0
    loss_detail = describe_loss_choice(criterion)
    result: dict[str, Any] = {}
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        loss_sum = torch.zeros((), device=device)
        seen = 0
        for step, (images, masks) in enumerate(train_loader):
            if cfg.max_train_batches is not None and step >= cfg.max_train_batches:
                break
            loss_sum += step_fn(images, masks) * images.shape[0]  # stays on the device: no sync per step
            seen += images.shape[0]
            if per_batch:
                scheduler.step()
        if not per_batch:
            scheduler.step()
        train_loss = (loss_sum / max(seen, 1)).item()
        if not math.isfinite(train_loss):
            raise NonFiniteLossError(
                f"{cfg.loss} loss became {train_loss} in epoch {epoch + 1} (config {cfg.config_id}, fold {cfg.fold}); "
                "lower training.lr or check the loss knobs"
            )

        val_loss, scores = _evaluate(step_fn, criterion, val_loader, metrics, device, use_amp, amp_dtype)
        if sign * scores[cfg.select_metric] > best_value:
            best_value = sign * scores[cfg.select_metric]
            best_metrics = {"best_epoch": epoch + 1, **{BEST_PREFIX + k: v for k, v in scores.items()}}
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            best_cases = _parquet_bytes(metrics.cases.frame(val_loader.dataset.index))
        result = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "lr": scheduler.get_last_lr()[0],
            **scores,
            **best_metrics,
            "loss_detail": loss_detail,
        }
        if (epoch + 1) % cfg.checkpoint_every and epoch + 1 < cfg.epochs:
            report(result, None)  # no checkpoint this epoch (training.checkpoint_every)
            continue
        with checkpoint_scratch(scratch_name) as tmp:
            torch.save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "epoch": epoch + 1,
                    "best_value": best_value,
                    "best_metrics": best_metrics,
                    "config": cfg.to_dict(),
                },
                tmp / STATE_FILE,
            )
            torch.save(best_state, tmp / BEST_WEIGHTS_FILE)
            if best_cases is not None:
                (tmp / CASES_FILE).write_bytes(best_cases)
            write_manifest(tmp, result, fold_trial_identity(cfg.config_id, cfg.fold, cfg.repeat))  # last
            report(result, tmp)
    return result


def _parquet_bytes(frame) -> bytes:
    """Returns a DataFrame as the bytes of a Parquet file (written once, copied into every checkpoint);
    zstd: about a fifth smaller than the default snappy on case records."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False, compression="zstd")
    return buffer.getvalue()


@torch.inference_mode()
def _evaluate(step: TrainStep, criterion, loader, metrics: SegmentationMetrics, device, use_amp, amp_dtype):
    step.model.eval()
    metrics.reset()
    loss_sum = torch.zeros((), device=device)
    seen = 0
    index = loader.dataset.index  # the validation loader is not shuffled: batches follow the index
    for images, masks in loader:
        rows = index.iloc[seen : seen + images.shape[0]]
        images = images.to(device, non_blocking=True).contiguous(memory_format=step.memory_format)
        masks = masks.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
            logits = step.forward(images)
        loss_sum += criterion(logits.float(), masks) * images.shape[0]
        seen += images.shape[0]
        metrics.update(
            logits.float(),
            masks,
            spacing=rows[["spacing_h", "spacing_w"]].to_numpy(),
            scan_ids=rows["scan"].tolist(),
            positions=rows["position"].tolist(),
        )
    return (loss_sum / max(seen, 1)).item(), metrics.compute()


def newer_checkpoint_on_storage(
    trial_dir: str | Path, trial_id: str, cfg: TrialConfig, known: str | Path | None
) -> StoredCheckpoint | None:
    """Returns the newest complete checkpoint of the fold trial on storage (its trial folder and those of the
    same fold trial under other trial ids, :func:`trainables.checkpoint_files.fold_trial_dirs`) when its epoch
    is above that of ``known`` (the checkpoint Tune hands the trial, None: none), else None. A ``known``
    checkpoint without a readable manifest counts as epoch 0."""
    identity = fold_trial_identity(cfg.config_id, cfg.fold, cfg.repeat)
    found = newest_complete_checkpoint(fold_trial_dirs(trial_dir, trial_id), identity)
    if found is None:
        return None
    known_manifest = read_manifest(known) if known is not None else None
    known_epoch = known_manifest["epoch"] if known_manifest is not None else 0
    return found if found.epoch > known_epoch else None


def _local_trial_storage():
    """Returns Tune's storage context of this trial when its storage is a local or NFS folder, else None (an
    object store: the trial folder cannot be listed; or an API this Ray does not have)."""
    from ray import tune

    try:
        import pyarrow.fs

        storage = tune.get_context().get_storage()  # DeveloperAPI (Ray 2.60)
        if isinstance(storage.storage_filesystem, pyarrow.fs.LocalFileSystem):
            return storage
    except Exception:  # noqa: BLE001 - another Ray or no session: keep Tune's checkpoint
        pass
    return None


def train_fold(config: dict[str, Any]) -> None:
    """Ray Tune function trainable: :func:`run_fold` reporting through ``tune.report``.

    It resumes from ``tune.get_checkpoint()`` unless, on a local or NFS storage, a newer complete checkpoint
    of the same fold trial is on storage (:func:`newer_checkpoint_on_storage`): one written after Tune's last
    experiment snapshot by a driver killed since. That one's result is reported again first
    (``run_fold(replay=True)``): a trial that had ended (its last epoch) trains nothing, one the scheduler had
    stopped is stopped again, one still running goes on from its next epoch. Tune numbers the next checkpoint
    from the snapshot's count, so the count is first moved past the trial folder's highest, never writing
    into a folder already there."""
    from ray import tune

    def report(metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        checkpoint = tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        tune.report(metrics, checkpoint=checkpoint)

    cfg = TrialConfig.from_dict(config)
    if cfg.cpus_per_trial is None:  # size the DataLoader from the CPUs Ray gave this trial
        try:
            import ray

            cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
            cfg = cfg.model_copy(update={"cpus_per_trial": float(cpus)}) if cpus else cfg
        except Exception:  # noqa: BLE001 - outside a Ray worker: keep the default
            pass
    scratch = tune.get_context().get_trial_id()  # kept across the trial's retries
    checkpoint = tune.get_checkpoint()
    storage = _local_trial_storage()
    if storage is not None:
        trial_dir = Path(storage.trial_fs_path)
        known = Path(checkpoint.path) if checkpoint is not None else None
        newer = newer_checkpoint_on_storage(trial_dir, scratch, cfg, known)
        storage.current_checkpoint_index = max(storage.current_checkpoint_index, highest_checkpoint_index(trial_dir))
        if newer is not None:
            run_fold(cfg, report, newer.path, scratch_name=scratch, replay=True)
            return
    if checkpoint is None:
        run_fold(cfg, report, scratch_name=scratch)
        return
    with checkpoint.as_directory() as directory:
        run_fold(cfg, report, Path(directory), scratch_name=scratch)
