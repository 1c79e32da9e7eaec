"""Speed of the metrics: batched confusion metrics vs per-image reference loops; boundary cost.

Run: ``.venv/bin/python benchmarks/metrics.py [--batches 20] [--rounds 5] [--threads N]
[--clock wall|cpu] [--device cpu|cuda] [--batch-size 16] [--image-size 224]``. Prints, on the
same 16 x 3 x 224 x 224 masks (``--batch-size`` x 3 x ``--image-size``^2):

- images/s of ``SegmentationMetrics(boundary=False).update`` over all batches + ``compute``
  (from logits: sigmoid, threshold, confusion counts, dice, iou, sensitivity, specificity,
  precision, accuracy, MAE, per-image and pooled), against per-image loops of
  segmentation_models_pytorch (``get_stats`` + its six metric functions per image, given the
  probabilities ready-made) and of numpy (counts, six metrics and MAE per image);
- the ratios ours / smp and ours / numpy, each the median over rounds of the ratio taken within a
  round (every round times them all in a shuffled order, so a shared machine's drifting load
  cancels out), and the target (ours >= 10x the smp loop);
- the rate of ``torch.sigmoid`` alone on the same logits: MAE needs every probability, so no path
  from logits is faster, and smp / that is the ceiling of the ours / smp ratio;
- the boundary metrics' cost per image (nsd, hd95, boundary_f1 together) and gi_score's per scan.

``--clock cpu`` measures process CPU-seconds instead of wall time: with ``--threads 1`` that is the
rate per core whatever else the machine runs (with more threads it counts their spin-waits too).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import segmentation_models_pytorch.metrics as smp_metrics
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainables.metrics import SegmentationMetrics, compute_boundary_metrics, compute_gi_score  # noqa: E402

CLASSES = ("large_bowel", "small_bowel", "stomach")


def make_batches(batches: int, n: int = 16, size: int = 224, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Ellipse organs (some slices empty) and logits of a slightly wrong, noisy prediction."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    out = []
    for _ in range(batches):
        target = torch.zeros(n, len(CLASSES), size, size)
        logits = torch.empty(n, len(CLASSES), size, size)
        for i in range(n):
            for c in range(len(CLASSES)):
                cy, cx = (torch.rand(2, generator=gen) * size * 0.6 + size * 0.2).tolist()
                ry, rx = (torch.rand(2, generator=gen) * 30 + 5).tolist()
                if torch.rand(1, generator=gen).item() < 0.7:  # organ present
                    target[i, c] = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1).float()
                dy, dx = (torch.randn(2, generator=gen) * 2).tolist()
                inside = ((yy - cy - dy) / ry) ** 2 + ((xx - cx - dx) / rx) ** 2 <= 1
                present = target[i, c].any()
                logits[i, c] = torch.where(inside & present, 4.0, -4.0)
        # soft probabilities with a few stray pixels (about 3e-5 of them flip), like a trained model
        logits += torch.randn(logits.shape, generator=gen)
        out.append((logits, target))
    return out


def timed(fn, device: torch.device, clock) -> float:
    """Time of one call of ``fn`` on ``clock``, device-synchronised."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = clock()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return clock() - start


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Prints the comparison; returns images/s (``ours``, ``smp``, ``numpy``, ``sigmoid``), the
    ratios ``ours/smp`` and ``ours/numpy``, and ``boundary_ms`` (boundary metrics, ms per image)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds of every variant (after a warm-up)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall time, or process CPU time (per core with --threads 1)",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=16, help="images per batch")
    parser.add_argument("--image-size", type=int, default=224, help="side of the square masks")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    device = torch.device(args.device)
    batches = [(x.to(device), t.to(device)) for x, t in make_batches(args.batches, args.batch_size, args.image_size)]
    images = sum(x.shape[0] for x, _ in batches)
    print(
        f"device {device} ({platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"{os.cpu_count()} cores), torch {torch.__version__}, "
        f"{args.batches} batches of {tuple(batches[0][0].shape)} = {images} images, "
        f"{args.clock} clock, median of {args.rounds} rounds"
    )

    ours = SegmentationMetrics(CLASSES, boundary=False)

    def run_ours():
        ours.reset()
        for logits, target in batches:
            ours.update(logits, target)
        return ours.compute()

    # the references get probabilities and long targets ready-made (their input conversions not timed)
    probs = [torch.sigmoid(x) for x, _ in batches]
    targets_long = [t.long() for _, t in batches]
    smp_fns = (
        smp_metrics.f1_score,
        smp_metrics.iou_score,
        smp_metrics.recall,
        smp_metrics.specificity,
        smp_metrics.precision,
        smp_metrics.accuracy,
    )

    def run_smp():
        sums = torch.zeros(len(smp_fns), len(CLASSES), dtype=torch.float64, device=device)
        for p, t in zip(probs, targets_long):
            for i in range(p.shape[0]):
                stats = smp_metrics.get_stats(p[i : i + 1], t[i : i + 1], mode="multilabel", threshold=0.5)
                sums += torch.cat([fn(*stats, reduction="none", zero_division=1.0) for fn in smp_fns]).double()
        return (sums / images).cpu()

    probs_np = [p.cpu().numpy() for p in probs]
    targets_np = [t.cpu().numpy().astype(bool) for _, t in batches]

    def run_numpy():
        sums = np.zeros((7, len(CLASSES)))
        for p, t in zip(probs_np, targets_np):
            for i in range(p.shape[0]):
                pred, true = p[i] >= 0.5, t[i]
                tp = (pred & true).sum(axis=(1, 2))
                fp = (pred & ~true).sum(axis=(1, 2))
                fn = (~pred & true).sum(axis=(1, 2))
                tn = (~pred & ~true).sum(axis=(1, 2))
                s = 1.0
                sums += np.stack(
                    [
                        (2 * tp + s) / (2 * tp + fp + fn + s),
                        (tp + s) / (tp + fp + fn + s),
                        (tp + s) / (tp + fn + s),
                        (tn + s) / (tn + fp + s),
                        (tp + s) / (tp + fp + s),
                        (tp + tn + s) / (tp + fp + fn + tn + s),
                        np.abs(p[i] - true).mean(axis=(1, 2)),
                    ]
                )
        return sums / images

    sigmoid_out = torch.empty_like(batches[0][0])

    def run_sigmoid():  # what any path from logits must do at least: MAE needs every probability
        for logits, _ in batches:
            torch.sigmoid(logits, out=sigmoid_out)

    runs = {"ours": run_ours, "smp": run_smp, "numpy": run_numpy, "sigmoid": run_sigmoid}
    for fn in runs.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        order = list(runs)
        random.shuffle(order)
        for name in order:
            times[name].append(timed(runs[name], device, clock))
    rate = {name: images / statistics.median(t) for name, t in times.items()}
    ratio = {name: [r / o for r, o in zip(times[name], times["ours"])] for name in ("smp", "numpy")}
    ceiling = [r / o for r, o in zip(times["smp"], times["sigmoid"])]
    per_round = {name: ", ".join(f"{r:.1f}" for r in ratio[name]) for name in ratio}
    print("confusion metrics (counts -> 6 scores [+ MAE, pooled for ours]), images/s (median):")
    print(f"  ours batched SegmentationMetrics.update   {rate['ours']:10.0f}")
    print(f"  smp per-image get_stats + 6 metric fns    {rate['smp']:10.0f}")
    print(f"  numpy per-image counts + 6 scores + MAE   {rate['numpy']:10.0f}")
    print("ratios (median of per-round ratios; each round's in brackets):")
    print(f"  ours / smp     {statistics.median(ratio['smp']):6.2f}x   [{per_round['smp']}]")
    print(f"  ours / numpy   {statistics.median(ratio['numpy']):6.2f}x   [{per_round['numpy']}]")
    target = statistics.median(ratio["smp"])
    print(
        f"  sigmoid alone of the same logits          {rate['sigmoid']:10.0f}   (ceiling of any path from "
        f"logits: {statistics.median(ceiling):.1f}x smp)"
    )
    print(f"target: {'PASS' if target >= 10 else 'MISS'}  ours / smp >= 10x: {target:.1f}x")

    result = run_ours()
    mean_dice = float(np.mean(run_numpy()[0]))
    print(f"  check: ours dice {result['dice']:.6f} vs numpy {mean_dice:.6f}")
    smp_counts = sum(
        torch.stack(smp_metrics.get_stats(p, t, mode="multilabel", threshold=0.5)).sum(dim=1)
        for p, t in zip(probs, targets_long)
    )
    same = torch.equal(ours._pooled[:4].cpu(), smp_counts.cpu().double())
    print(f"  check: ours tp/fp/fn/tn per class equal smp get_stats: {same}")

    pred_np = [p >= 0.5 for p in probs_np]
    n_bnd = min(4, len(batches))
    start = time.perf_counter()
    for p, t in zip(pred_np[:n_bnd], targets_np[:n_bnd]):
        compute_boundary_metrics(p, t, spacing=(1.5, 1.5), nsd_tolerance_mm=2.0)
    per_image = (time.perf_counter() - start) / (n_bnd * pred_np[0].shape[0])
    print(
        f"boundary metrics (nsd + hd95 + boundary_f1, {len(CLASSES)} classes, CPU): "
        f"{per_image * 1e3:.2f} ms/image = {1 / per_image:.0f} images/s"
    )
    volume_p = np.concatenate(pred_np).transpose(1, 0, 2, 3)[:, :80]
    volume_t = np.concatenate(targets_np).transpose(1, 0, 2, 3)[:, :80]
    start = time.perf_counter()
    compute_gi_score(volume_p, volume_t)
    print(
        f"gi_score of one {volume_p.shape[1]}-slice scan ({len(CLASSES)} classes, CPU): "
        f"{(time.perf_counter() - start) * 1e3:.1f} ms"
    )
    with_boundary = SegmentationMetrics(CLASSES, boundary=True)
    start = time.perf_counter()
    for logits, target in batches[:n_bnd]:
        with_boundary.update(logits, target)
    with_boundary.compute()
    t_b = time.perf_counter() - start
    print(f"SegmentationMetrics(boundary=True): {n_bnd * batches[0][0].shape[0] / t_b:.0f} images/s")
    return {
        **rate,
        "ours/smp": statistics.median(ratio["smp"]),
        "ours/numpy": statistics.median(ratio["numpy"]),
        "boundary_ms": per_image * 1e3,
    }


if __name__ == "__main__":
    main()
