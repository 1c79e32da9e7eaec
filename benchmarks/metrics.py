"""Speed of the metrics: batched confusion metrics vs per-image reference loops; boundary cost.

Run: ``.venv/bin/python benchmarks/metrics.py [--batches 20] [--device cpu|cuda]``. Prints, on
the same 16 x 3 x 224 x 224 masks:

- images/s of ``SegmentationMetrics(boundary=False).update`` over all batches + ``compute``
  (confusion counts, dice, iou, sensitivity, specificity, precision, accuracy, MAE, per-image
  and pooled), against per-image loops of segmentation_models_pytorch (``get_stats`` + its six
  metric functions per image) and of numpy (counts, six metrics and MAE per image);
- the boundary metrics' cost per image (nsd, hd95, boundary_f1 together) and gi_score's per scan.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import segmentation_models_pytorch.metrics as smp_metrics
import torch

from trainables.metrics import SegmentationMetrics, compute_boundary_metrics, compute_gi_score

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


def timed(fn, device: torch.device, repeat: int = 5) -> float:
    """Best wall time of ``repeat`` runs (after one warm-up), device-synchronised."""
    fn()
    best = math.inf
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    batches = [(x.to(device), t.to(device)) for x, t in make_batches(args.batches)]
    images = sum(x.shape[0] for x, _ in batches)
    print(f"device {device}, torch threads {torch.get_num_threads()}, {args.batches} batches of "
          f"{tuple(batches[0][0].shape)} = {images} images")

    ours = SegmentationMetrics(CLASSES, boundary=False)

    def run_ours():
        ours.reset()
        for logits, target in batches:
            ours.update(logits, target)
        return ours.compute()

    # the references get probabilities and long targets ready-made (their input conversions not timed)
    probs = [torch.sigmoid(x) for x, _ in batches]
    targets_long = [t.long() for _, t in batches]
    smp_fns = (smp_metrics.f1_score, smp_metrics.iou_score, smp_metrics.recall, smp_metrics.specificity,
               smp_metrics.precision, smp_metrics.accuracy)

    def run_smp():
        sums = torch.zeros(len(smp_fns), len(CLASSES), dtype=torch.float64, device=device)
        for p, t in zip(probs, targets_long):
            for i in range(p.shape[0]):
                stats = smp_metrics.get_stats(p[i:i + 1], t[i:i + 1], mode="multilabel", threshold=0.5)
                sums += torch.cat([fn(*stats, reduction="none", zero_division=1.0) for fn in smp_fns]).double()
        return (sums / images).cpu()

    probs_np = [p.cpu().numpy() for p in probs]
    targets_np = [t.cpu().numpy().astype(bool) for _, t in batches]

    def run_numpy():
        sums = np.zeros((7, len(CLASSES)))
        for p, t in zip(probs_np, targets_np):
            for i in range(p.shape[0]):
                pred, true = p[i] >= 0.5, t[i]
                tp = (pred & true).sum(axis=(1, 2)); fp = (pred & ~true).sum(axis=(1, 2))
                fn = (~pred & true).sum(axis=(1, 2)); tn = (~pred & ~true).sum(axis=(1, 2))
                s = 1.0
                sums += np.stack([(2 * tp + s) / (2 * tp + fp + fn + s), (tp + s) / (tp + fp + fn + s),
                                  (tp + s) / (tp + fn + s), (tn + s) / (tn + fp + s), (tp + s) / (tp + fp + s),
                                  (tp + tn + s) / (tp + fp + fn + tn + s), np.abs(p[i] - true).mean(axis=(1, 2))])
        return sums / images

    t_ours = timed(run_ours, device)
    t_smp = timed(run_smp, device)
    t_np = timed(run_numpy, device)
    print("confusion metrics (counts -> 6 scores [+ MAE, pooled for ours]), images/s:")
    print(f"  ours batched SegmentationMetrics.update   {images / t_ours:10.0f}")
    print(f"  smp per-image get_stats + 6 metric fns    {images / t_smp:10.0f}   ours is {t_smp / t_ours:5.1f}x faster")
    print(f"  numpy per-image counts + 6 scores + MAE   {images / t_np:10.0f}   ours is {t_np / t_ours:5.1f}x faster")

    result = run_ours()
    mean_dice = float(np.mean(run_numpy()[0]))
    print(f"  check: ours dice {result['dice']:.6f} vs numpy {mean_dice:.6f}")

    pred_np = [p >= 0.5 for p in probs_np]
    n_bnd = min(4, len(batches))
    start = time.perf_counter()
    for p, t in zip(pred_np[:n_bnd], targets_np[:n_bnd]):
        compute_boundary_metrics(p, t, spacing=(1.5, 1.5), nsd_tolerance_mm=2.0)
    per_image = (time.perf_counter() - start) / (n_bnd * pred_np[0].shape[0])
    print(f"boundary metrics (nsd + hd95 + boundary_f1, {len(CLASSES)} classes, CPU): "
          f"{per_image * 1e3:.2f} ms/image = {1 / per_image:.0f} images/s")
    volume_p = np.concatenate(pred_np).transpose(1, 0, 2, 3)[:, :80]
    volume_t = np.concatenate(targets_np).transpose(1, 0, 2, 3)[:, :80]
    start = time.perf_counter()
    compute_gi_score(volume_p, volume_t)
    print(f"gi_score of one {volume_p.shape[1]}-slice scan ({len(CLASSES)} classes, CPU): "
          f"{(time.perf_counter() - start) * 1e3:.1f} ms")
    with_boundary = SegmentationMetrics(CLASSES, boundary=True)
    start = time.perf_counter()
    for logits, target in batches[:n_bnd]:
        with_boundary.update(logits, target)
    with_boundary.compute()
    t_b = time.perf_counter() - start
    print(f"SegmentationMetrics(boundary=True): {n_bnd * batches[0][0].shape[0] / t_b:.0f} images/s")


if __name__ == "__main__":
    main()
