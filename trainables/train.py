"""The trial: train one (architecture, encoder, loss + knobs, fold) and report each epoch.

:func:`train_fold` is the Ray Tune function trainable. Everything it needs is in its ``config``
(see :class:`TrialConfig`); it reads the prepared cache, never the raw PNGs. Each epoch it reports a
flat dict -- ``train_loss``, ``val_loss``, every validation metric (``dice``, ``dice.small_bowel``,
...), ``best_epoch`` and the same metrics at the best epoch under ``best.`` -- together with a
checkpoint holding the training state and the best weights, and resumes from
``tune.get_checkpoint()`` after a failure.
"""

from __future__ import annotations

import math
import random
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from trainables.data import GI_CLASSES, SliceDataset, build_augmentation, load_index, roi_ratio_subset
from trainables.losses import build_configured_loss
from trainables.metrics import LOWER_IS_BETTER, SegmentationMetrics
from trainables.models import build_model

STATE_FILE = "state.pt"
BEST_WEIGHTS_FILE = "best_model.pt"
BEST_PREFIX = "best."

Report = Callable[[dict[str, Any], "Path | None"], None]


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the trial stops with this reason."""


@dataclass
class TrialConfig:
    """Everything one fold trial needs; built by the sweep driver, passed through Ray as a dict."""

    cache_dir: str
    fold: int
    arch: str
    encoder: str
    loss: str
    loss_params: dict[str, float] = field(default_factory=dict)
    config_id: str = ""
    encoder_weights: str | None = None
    classes: tuple[str, ...] = GI_CLASSES
    context: int = 1
    augmentation: str = "seed000"
    image_size: int = 224
    epochs: int = 18
    batch_size: int = 16
    lr: float = 2e-4
    weight_decay: float = 1e-2
    min_lr: float = 1e-6
    seed: int = 42
    threshold: float = 0.5
    amp: bool = True
    num_workers: int = 0
    select_metric: str = "dice"
    max_train_batches: int | None = None
    roi_ratio: float | None = None
    boundary_metrics: bool = True
    nsd_tolerance_mm: float = 2.0

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> TrialConfig:
        known = {k: v for k, v in config.items() if k in cls.__dataclass_fields__}
        known["classes"] = tuple(known.get("classes", GI_CLASSES))
        return cls(**known)


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def _loaders(cfg: TrialConfig, device: torch.device) -> tuple[DataLoader, DataLoader]:
    n_folds = int(load_index(cfg.cache_dir)["fold"].max()) + 1
    train_folds = [f for f in range(n_folds) if f != cfg.fold]
    train_set = SliceDataset(
        cfg.cache_dir, train_folds, context=cfg.context,
        transform=build_augmentation(cfg.image_size, cfg.augmentation),
    )
    if cfg.roi_ratio is not None:
        train_set.index = roi_ratio_subset(train_set.index, cfg.roi_ratio, cfg.classes, seed=cfg.seed + cfg.fold)
    val_set = SliceDataset(cfg.cache_dir, [cfg.fold], context=cfg.context)
    common = dict(
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=cfg.num_workers > 0,
        worker_init_fn=_seed_worker,
    )
    generator = torch.Generator().manual_seed(cfg.seed + cfg.fold)
    return (
        DataLoader(train_set, shuffle=True, drop_last=len(train_set) > cfg.batch_size, generator=generator, **common),
        DataLoader(val_set, shuffle=False, **common),
    )


def _amp_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def training_fold_statistics(index, cfg: TrialConfig) -> dict[str, Any]:
    """Returns the loss options measured on the TRAINING slices only (never validation):

    - ``class_frequencies``: share of pixels of each class (weighted CE, paper 003);
    - ``foreground_areas``: foreground pixels of each training slice that holds an organ, summed
      over classes (CALF's A_i, paper 002: the distribution of object sizes);
    - ``activation`` / ``n_classes``: sigmoid over one channel per organ (multi-label GI organs).
    """
    areas = index[[f"area_{c}" for c in cfg.classes]].to_numpy(dtype=float)
    pixels = max(len(index), 1) * cfg.image_size * cfg.image_size
    per_slice = areas.sum(axis=1)
    return {
        "activation": "sigmoid",
        "n_classes": len(cfg.classes),
        "class_frequencies": (areas.sum(axis=0) / pixels).tolist(),
        "foreground_areas": per_slice[per_slice > 0].tolist() or [0.0],
    }


def describe_loss_choice(criterion: torch.nn.Module) -> str:
    """Returns what a data-driven loss chose (CALF's transformation), '' for fixed losses."""
    chosen = [f"{type(m).__name__}:{m.transform}" for m in criterion.modules() if isinstance(getattr(m, "transform", None), str)]
    return ",".join(chosen)


def run_fold(config: dict[str, Any], report: Report, checkpoint_dir: Path | None = None) -> dict[str, Any]:
    """Trains one fold and returns the last reported metrics.

    Args:
        config: a :class:`TrialConfig` as a dict.
        report: called each epoch as ``report(metrics, checkpoint_dir)``; the directory is temporary
            and only valid during the call (the caller copies it).
        checkpoint_dir: a directory written by an earlier call to resume from, or ``None``.
    """
    cfg = TrialConfig.from_dict(config)
    seed_everything(cfg.seed + cfg.fold)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    use_amp = cfg.amp and device.type == "cuda"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    train_loader, val_loader = _loaders(cfg, device)
    model = build_model(cfg.arch, cfg.encoder, in_channels=2 * cfg.context + 1, classes=len(cfg.classes),
                        encoder_weights=cfg.encoder_weights).to(device)
    criterion = build_configured_loss(cfg.loss, cfg.loss_params, cfg.classes,
                                      **training_fold_statistics(train_loader.dataset.index, cfg))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs, eta_min=cfg.min_lr)
    amp_dtype = _amp_dtype(device) if use_amp else torch.float32
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp and amp_dtype == torch.float16)

    start_epoch, best_value, best_metrics, best_state = 0, -math.inf, {}, None
    if checkpoint_dir is not None:
        state = torch.load(Path(checkpoint_dir) / STATE_FILE, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, best_value, best_metrics = state["epoch"], state["best_value"], state["best_metrics"]
        best_state = torch.load(Path(checkpoint_dir) / BEST_WEIGHTS_FILE, map_location="cpu", weights_only=True)

    metrics = SegmentationMetrics(cfg.classes, threshold=cfg.threshold, boundary=cfg.boundary_metrics,
                                  nsd_tolerance_mm=cfg.nsd_tolerance_mm)
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
            images = images.to(device, non_blocking=True)
            masks = masks.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                loss = criterion(model(images), masks)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            loss_sum += loss.detach() * images.shape[0]
            seen += images.shape[0]
        scheduler.step()
        train_loss = (loss_sum / max(seen, 1)).item()
        if not math.isfinite(train_loss):
            raise NonFiniteLossError(
                f"{cfg.loss} loss became {train_loss} in epoch {epoch + 1} (config {cfg.config_id}, fold {cfg.fold}); "
                "lower training.lr or check the loss knobs"
            )

        val_loss, scores = _evaluate(model, criterion, val_loader, metrics, device, use_amp, amp_dtype)
        if sign * scores[cfg.select_metric] > best_value:
            best_value = sign * scores[cfg.select_metric]
            best_metrics = {"best_epoch": epoch + 1, **{BEST_PREFIX + k: v for k, v in scores.items()}}
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        result = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "lr": scheduler.get_last_lr()[0],
            **scores,
            **best_metrics,
            "loss_detail": loss_detail,
        }
        with tempfile.TemporaryDirectory(prefix="sweeper-ckpt-") as tmp:
            torch.save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "epoch": epoch + 1,
                    "best_value": best_value,
                    "best_metrics": best_metrics,
                    "config": asdict(cfg),
                },
                Path(tmp) / STATE_FILE,
            )
            torch.save(best_state, Path(tmp) / BEST_WEIGHTS_FILE)
            report(result, Path(tmp))
    return result


@torch.inference_mode()
def _evaluate(model, criterion, loader, metrics: SegmentationMetrics, device, use_amp, amp_dtype):
    model.eval()
    metrics.reset()
    loss_sum = torch.zeros((), device=device)
    seen = 0
    index = loader.dataset.index  # the validation loader is not shuffled: batches follow the index
    for images, masks in loader:
        rows = index.iloc[seen:seen + images.shape[0]]
        images = images.to(device, non_blocking=True)
        masks = masks.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
            logits = model(images)
        loss_sum += criterion(logits.float(), masks) * images.shape[0]
        seen += images.shape[0]
        metrics.update(logits.float(), masks, spacing=rows[["spacing_h", "spacing_w"]].to_numpy(),
                       scan_ids=rows["scan"].tolist(), positions=rows["position"].tolist())
    return (loss_sum / max(seen, 1)).item(), metrics.compute()


def train_fold(config: dict[str, Any]) -> None:
    """Ray Tune function trainable: :func:`run_fold` reporting through ``tune.report``."""
    from ray import tune

    def report(metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        checkpoint = tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        tune.report(metrics, checkpoint=checkpoint)

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        run_fold(config, report)
        return
    with checkpoint.as_directory() as directory:
        run_fold(config, report, Path(directory))
