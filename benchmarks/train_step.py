"""Images per second of the training step, ours vs a plain fp32 loop on the naive loader, per model.

    python benchmarks/train_step.py [--image-size 224] [--batch 16] [--steps 10] [--rounds 3]
                                    [--models unet/mit_b2,unet/resnet34,fpn/resnet34] [--workers N]
                                    [--compile]
    python benchmarks/train_step.py --image-size 96 --batch 4 --steps 3 --rounds 3   # CPU, ~2 minutes

- **plain**: ``NaivePngDataset`` (PNG decode + RLE + resize per item, stock Albumentations seed000;
  see ``benchmarks/loader.py``) in a DataLoader with the same worker count, fp32, contiguous
  tensors, non-fused AdamW, and ``loss.item()`` every step (the host waits for the device each step,
  as a loop that logs or checks the loss does).
- **ours**: what ``trainables.train`` runs: ``SliceDataset`` over the memory-mapped cache with the
  cheaper seed000 pipeline, ``loader_settings`` (workers from ``--cpus``, pinned memory,
  persistent workers, prefetch), ``TrainStep``: AMP (bf16, or fp16 + scaler) and channels-last
  on CUDA, fused AdamW on CUDA, optional ``torch.compile``, no host sync per step.

Per model, a round runs ``--steps`` timed steps of each variant (order alternating between
rounds) after 2 warm-up steps the first time; the ratio is the median of per-round ratios. The
device is synchronised at the end of each timed block. On CPU with in-process loading the clock is
this process's CPU time (one torch thread by default), elsewhere wall time. On CUDA the GPU's utilisation is sampled
(``torch.cuda.utilization``, else ``nvidia-smi``) every 50 ms while each variant runs.

Two more modes measure the step alone, fed one fixed batch from pinned host memory (what the step
consumes, whatever the loader delivers), used by ``benchmarks/gpu_check.py``:

    python benchmarks/train_step.py --matrix [--models ...] [--batch 16] [--compile] [--device cuda]
    python benchmarks/train_step.py --packing-worker --models unet/resnet34 --batch 16 --seconds 10

- ``--matrix``: per model, fp32 vs AMP (bf16 on CUDA where supported, else fp16; bf16 on CPU) x
  contiguous vs channels-last, in alternating rounds; with ``--compile`` also ``torch.compile`` vs
  eager at AMP + channels-last. Images/s, GPU utilisation, peak memory of each variant, and ratios
  against the group's first variant (medians of per-round ratios).
- ``--packing-worker``: one process of a packing measurement: warms up, prints ``ready``, waits for
  ``go`` on stdin, steps for ``--seconds`` and prints ``{"images": N, "seconds": S}``.
"""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field, replace  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from loader import NaivePngDataset, stock_seed000  # noqa: E402

from trainables.data import SliceDataset, build_augmentation, generate_uwmgi, prepare_cache  # noqa: E402
from trainables.data.augment import seed_transform  # noqa: E402
from trainables.losses import build_loss  # noqa: E402
from trainables.models import build_model  # noqa: E402
from trainables.train import TrainStep, TrialConfig, _amp_dtype, loader_settings  # noqa: E402


class UtilisationSampler:
    """Samples GPU utilisation (%) in a thread while active; ``mean()`` of the samples (None off CUDA)."""

    def __init__(self, device: torch.device, period: float = 0.05):
        self.device, self.period, self.samples = device, period, []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> float | None:
        try:
            return float(torch.cuda.utilization(self.device))
        except Exception:  # noqa: BLE001 - no pynvml: ask nvidia-smi
            try:
                out = subprocess.run(
                    [
                        "nvidia-smi",
                        "--query-gpu=utilization.gpu",
                        "--format=csv,noheader,nounits",
                        "-i",
                        str(self.device.index or 0),
                    ],
                    capture_output=True,
                    text=True,
                    timeout=5,
                )
                return float(out.stdout.strip().splitlines()[0])
            except Exception:  # noqa: BLE001
                return None

    def __enter__(self):
        if self.device.type == "cuda":

            def loop():
                while not self._stop.is_set():
                    value = self._read()
                    if value is not None:
                        self.samples.append(value)
                    self._stop.wait(self.period)

            self._thread = threading.Thread(target=loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def mean(self) -> float | None:
        return statistics.mean(self.samples) if self.samples else None


def device_name(device: torch.device) -> str:
    """``cuda (NVIDIA H200)`` or ``cpu (x86_64)``."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    return f"{device.type} ({name})"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Plain:
    """The naive loop: fp32, contiguous, non-fused AdamW, ``loss.item()`` each step."""

    def __init__(self, arch, encoder, root, args, device, workers):
        self.device = device
        self.model = build_model(arch, encoder, in_channels=3, classes=3).to(device)
        self.criterion = build_loss("dice")
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=2e-4, foreach=False)
        transform = stock_seed000()
        seed_transform(transform, 0)
        loader = DataLoader(
            NaivePngDataset(root, args.image_size, transform=transform),
            batch_size=args.batch,
            shuffle=True,
            drop_last=True,
            num_workers=workers,
            persistent_workers=workers > 0,
        )
        self.batches = itertools.chain.from_iterable(itertools.repeat(loader))

    def step(self) -> None:
        images, masks = next(self.batches)
        images, masks = images.to(self.device), masks.to(self.device)
        self.optimizer.zero_grad()
        loss = self.criterion(self.model(images), masks)
        loss.backward()
        self.optimizer.step()
        loss.item()


class Ours:
    """``trainables.train``'s loaders and ``TrainStep``."""

    def __init__(self, arch, encoder, cache, args, device, workers):
        self.device = device
        cfg = TrialConfig(
            cache_dir=str(cache),
            fold=0,
            arch=arch,
            encoder=encoder,
            loss="dice",
            image_size=args.image_size,
            batch_size=args.batch,
            num_workers=workers,
            cpus_per_trial=args.cpus,
            compile=args.compile,
        )
        model = build_model(arch, encoder, in_channels=3, classes=3).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4, fused=device.type == "cuda")
        amp_dtype = _amp_dtype(device) if device.type == "cuda" else torch.float32
        scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        self.step_fn = TrainStep(
            model,
            build_loss("dice"),
            optimizer,
            scaler,
            device=device,
            amp_dtype=amp_dtype,
            channels_last=device.type == "cuda",
            compile=args.compile,
        )
        dataset = SliceDataset(cache, [0, 1], transform=build_augmentation(args.image_size, seed=0))
        loader = DataLoader(dataset, shuffle=True, drop_last=True, **loader_settings(cfg, device))
        self.batches = itertools.chain.from_iterable(itertools.repeat(loader))
        self.loss_sum = torch.zeros((), device=device)

    def step(self) -> None:
        images, masks = next(self.batches)
        self.loss_sum += self.step_fn(images, masks)


def _block(variant, steps: int, device: torch.device, clock=time.perf_counter) -> float:
    _sync(device)
    start = clock()
    for _ in range(steps):
        variant.step()
    _sync(device)
    return clock() - start


# --- the step alone: variants of one model in alternating rounds, and packing workers -------------------


@dataclass(frozen=True)
class StepVariant:
    """One training-step setting: model, batch, input size, precision, memory layout, compilation."""

    arch: str
    encoder: str
    batch: int
    image_size: int
    amp: bool = True
    channels_last: bool = True
    compile: bool = False

    @property
    def model(self) -> str:
        return f"{self.arch}/{self.encoder}"

    @classmethod
    def parse(cls, spec: str, batch: int, image_size: int, **settings) -> StepVariant:
        """Returns the variant of ``"arch/encoder"`` with ``settings`` (amp, channels_last, compile)."""
        arch, encoder = spec.split("/")
        return cls(arch, encoder, batch, image_size, **settings)


class SyntheticStep:
    """``TrainStep`` (Sweeper's own: AMP, channels-last, fused AdamW on CUDA, optional compile) of
    one :class:`StepVariant`, fed the same batch each step from pinned host memory.

    ``peak_bytes`` is set by :meth:`warm_up`: the most device memory this variant held at once
    (weights, gradients, AdamW state, activations, workspaces; CUDA only). ``first_step_s`` is the
    first step's time (where ``torch.compile`` compiles).
    """

    def __init__(self, variant: StepVariant, device: torch.device, compile_backend: str = "inductor"):
        self.variant, self.device = variant, device
        self.base_bytes = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
        model = build_model(variant.arch, variant.encoder, in_channels=3, classes=3).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4, fused=device.type == "cuda")
        if not variant.amp:
            amp_dtype = torch.float32
        else:  # CPU autocast runs bf16 only
            amp_dtype = _amp_dtype(device) if device.type == "cuda" else torch.bfloat16
        self.amp_dtype = amp_dtype
        scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        inductor = compile_backend == "inductor"
        self.step_fn = TrainStep(
            model,
            build_loss("dice"),
            optimizer,
            scaler,
            device=device,
            amp_dtype=amp_dtype,
            channels_last=variant.channels_last,
            compile=variant.compile and inductor,
        )
        if variant.compile and not inductor:  # a cheaper backend for dry runs: same dynamo capture
            self.step_fn.forward = torch.compile(model, backend=compile_backend)
        generator = torch.Generator().manual_seed(0)
        shape = (variant.batch, 3, variant.image_size, variant.image_size)
        self.images = torch.randn(shape, generator=generator)
        self.masks = (torch.rand(shape, generator=generator) > 0.8).float()
        if device.type == "cuda":
            self.images, self.masks = self.images.pin_memory(), self.masks.pin_memory()
        self.loss_sum = torch.zeros((), device=device)
        self.peak_bytes: int | None = None
        self.first_step_s: float | None = None

    def step(self) -> None:
        self.loss_sum += self.step_fn(self.images, self.masks)

    def warm_up(self, steps: int = 3) -> None:
        """Runs ``steps`` steps (compile, cudnn's algorithm search), then 2 more for the peak memory."""
        self.first_step_s = _block(self, 1, self.device)
        if steps > 1:
            _block(self, steps - 1, self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            _block(self, 2, self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self.base_bytes


@dataclass
class VariantResult:
    """Per-round images/s, mean GPU utilisation (%) per round, and peak memory of one variant."""

    rates: list[float] = field(default_factory=list)
    utilisation: list[float] = field(default_factory=list)
    peak_bytes: int | None = None
    first_step_s: float | None = None

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)

    @property
    def gpu_percent(self) -> float | None:
        return statistics.mean(self.utilisation) if self.utilisation else None


def measure_variants(
    steps: dict[str, SyntheticStep],
    device: torch.device,
    *,
    rounds: int = 3,
    block_s: float = 1.0,
    deadline: float | None = None,
    calibrate: int = 2,
    clock=time.perf_counter,
) -> dict[str, VariantResult]:
    """Returns images/s of each warmed-up step in alternating rounds (at least one round; no new
    round once ``time.monotonic()`` passes ``deadline``). Each block runs about ``block_s`` seconds
    (steps calibrated on ``calibrate`` timed steps), long enough for the utilisation sampler."""
    per_block = {}
    for name, s in steps.items():
        t = _block(s, calibrate, device, clock) / calibrate
        per_block[name] = max(1, min(500, round(block_s / max(t, 1e-6))))
    results = {name: VariantResult(peak_bytes=s.peak_bytes, first_step_s=s.first_step_s) for name, s in steps.items()}
    for r in range(rounds):
        if r and deadline is not None and time.monotonic() > deadline:
            break
        names = list(steps) if r % 2 == 0 else list(reversed(steps))
        for name in names:
            s, n = steps[name], per_block[name]
            with UtilisationSampler(device) as sampler:
                results[name].rates.append(n * s.variant.batch / _block(s, n, device, clock))
            if sampler.mean() is not None:
                results[name].utilisation.append(sampler.mean())
    return results


def ratio(results: dict[str, VariantResult], a: str, b: str) -> float:
    """Median over rounds of a's images/s over b's, each ratio taken within one round."""
    return statistics.median(x / y for x, y in zip(results[a].rates, results[b].rates))


def variant_label(v: StepVariant, precision: str) -> str:
    """One table row's settings; ``precision`` names the AMP dtype (see :func:`amp_name`)."""
    return (
        f"{v.model:16s} {v.batch:5d} {precision if v.amp else 'fp32':9s} "
        f"{'channels-last' if v.channels_last else 'contiguous':13s} {'compile' if v.compile else 'eager':8s}"
    )


MATRIX_HEADER = (
    f"{'model':16s} {'batch':>5s} {'precision':9s} {'layout':13s} {'compile':8s} "
    f"{'img/s':>8s} {'GPU%':>5s} {'peak GiB':>8s} {'ratio':>7s}"
)


def matrix_row(v: StepVariant, result: VariantResult, versus: float, precision: str) -> str:
    """A row under :data:`MATRIX_HEADER`; ``versus`` is the ratio to the group's first variant."""
    util = f"{result.gpu_percent:5.0f}" if result.gpu_percent is not None else f"{'-':>5s}"
    peak = f"{result.peak_bytes / 2**30:8.2f}" if result.peak_bytes is not None else f"{'-':>8s}"
    return f"{variant_label(v, precision)} {result.rate:8.1f} {util} {peak} {versus:6.2f}x"


def precision_matrix(
    spec: str, batch: int, image_size: int, device: torch.device, **measure
) -> tuple[dict[str, StepVariant], dict[str, VariantResult]]:
    """Returns the variants (fp32 / AMP x contiguous / channels-last, eager) of one model and batch
    and their results, measured in alternating rounds."""
    variants = {
        f"{'amp' if amp else 'fp32'} {'cl' if cl else 'contiguous'}": StepVariant.parse(
            spec, batch, image_size, amp=amp, channels_last=cl
        )
        for amp in (False, True)
        for cl in (False, True)
    }
    return variants, _measure_built(variants, device, **measure)


def compile_pair(
    spec: str, batch: int, image_size: int, device: torch.device, *, compile_backend: str = "inductor", **measure
) -> tuple[dict[str, StepVariant], dict[str, VariantResult]]:
    """Returns eager vs ``torch.compile`` at AMP + channels-last for one model and batch, measured
    in alternating rounds (dynamo's caches cleared first, so the compiled graph is static)."""
    torch._dynamo.reset()
    base = StepVariant.parse(spec, batch, image_size)
    variants = {"eager": base, "compile": replace(base, compile=True)}
    return variants, _measure_built(variants, device, compile_backend=compile_backend, **measure)


def _measure_built(
    variants: dict[str, StepVariant],
    device: torch.device,
    *,
    compile_backend: str = "inductor",
    warmup: int = 3,
    **measure,
) -> dict[str, VariantResult]:
    steps = {}
    for name, v in variants.items():
        torch.manual_seed(0)
        steps[name] = SyntheticStep(v, device, compile_backend)
        steps[name].warm_up(warmup)
    results = measure_variants(steps, device, **measure)
    del steps
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return results


def amp_name(device: torch.device) -> str:
    """The AMP dtype ``TrainStep`` gets on ``device`` (bf16 where CUDA supports it, else fp16; CPU bf16)."""
    return str(_amp_dtype(device)).removeprefix("torch.") if device.type == "cuda" else "bfloat16"


def print_matrix(
    variants: dict[str, StepVariant], results: dict[str, VariantResult], baseline: str, device: torch.device
) -> None:
    for name, v in variants.items():
        print(matrix_row(v, results[name], ratio(results, name, baseline), amp_name(device)), flush=True)


def packing_worker(variant: StepVariant, device: torch.device, seconds: float, compile_backend: str) -> int:
    """One process of a packing measurement (see the module docstring); returns the exit status."""
    step = SyntheticStep(variant, device, compile_backend)
    step.warm_up(3)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1
    _sync(device)
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        step.step()
        n += 1
    _sync(device)
    print(json.dumps({"images": n * variant.batch, "seconds": time.perf_counter() - start}), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", default="unet/mit_b2,unet/resnet34,fpn/resnet34")
    parser.add_argument(
        "--cpus",
        type=float,
        default=float(len(os.sched_getaffinity(0))),
        help="the trial's CPUs (sizes our loader's workers)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="DataLoader workers of BOTH variants (default: ours from --cpus, plain the same)",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile our model (not the plain one)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: 1 on CPU -- thread barriers stall on a shared machine -- "
        "torch's default on CUDA)",
    )
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument(
        "--matrix",
        action="store_true",
        help="the step alone: fp32 / AMP x contiguous / channels-last (+ compile with --compile)",
    )
    parser.add_argument("--block-s", type=float, default=1.0, help="--matrix: seconds per timed block")
    parser.add_argument(
        "--compile-backend",
        default="inductor",
        help="torch.compile backend of --matrix and --packing-worker (eager: a fast dry run)",
    )
    parser.add_argument("--packing-worker", action="store_true", help="one process of a packing measurement")
    parser.add_argument("--seconds", type=float, default=10.0, help="--packing-worker: seconds of steps")
    args = parser.parse_args(argv)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if args.threads or device.type == "cpu":
        torch.set_num_threads(args.threads or 1)
    if args.packing_worker:
        variant = StepVariant.parse(args.models.split(",")[0], args.batch, args.image_size, compile=args.compile)
        return packing_worker(variant, device, args.seconds, args.compile_backend)
    if args.matrix:
        print(
            f"device: {device_name(device)}, torch {torch.__version__}; the step alone, one batch from pinned "
            f"memory; {args.rounds} rounds of ~{args.block_s} s blocks per variant"
        )
        print(MATRIX_HEADER)
        for spec in args.models.split(","):
            variants, results = precision_matrix(
                spec, args.batch, args.image_size, device, rounds=args.rounds, block_s=args.block_s
            )
            print_matrix(variants, results, "fp32 contiguous", device)
            if args.compile:
                variants, results = compile_pair(
                    spec,
                    args.batch,
                    args.image_size,
                    device,
                    rounds=args.rounds,
                    block_s=args.block_s,
                    compile_backend=args.compile_backend,
                )
                print_matrix(variants, results, "eager", device)
        return 0
    source = args.image_size + 64
    work = args.data or Path(tempfile.gettempdir()) / f"sweeper-bench-step-{source}"
    root = generate_uwmgi(work / "data", cases=4, slices_per_scan=32, image_size=source, seed=0)
    cache = prepare_cache(root, work / "cache", image_size=args.image_size, n_folds=2)
    from trainables.train import loader_workers

    workers = args.workers if args.workers is not None else loader_workers(None, args.cpus, device)
    # on CPU with in-process loading, this process's CPU time is the work (other sessions' load on a
    # shared machine does not count); with workers or a GPU, wall time
    clock = time.process_time if device.type == "cpu" and workers == 0 else time.perf_counter
    print(
        f"device: {device_name(device)}, torch {torch.__version__}, {torch.get_num_threads()} torch threads, "
        f"{os.cpu_count()} cores; batch {args.batch} x 3 x {args.image_size}^2; loader workers {workers} (both); "
        f"{args.rounds} rounds x {args.steps} steps; compile={args.compile}; "
        f"clock: {'process CPU time' if clock is time.process_time else 'wall'}"
    )
    if device.type == "cuda":
        print(f"ours: AMP {_amp_dtype(device)}, channels-last, fused AdamW, pinned memory, no per-step sync")
    else:
        print("ours on CPU: fp32 (AMP is CUDA-only), contiguous; the difference is the loader and no per-step sync")
    print(
        f"\n{'model':18s} {'plain img/s':>11s} {'ours img/s':>11s} {'ours/plain':>10s} "
        f"{'GPU% plain':>10s} {'GPU% ours':>9s}"
    )
    for spec in args.models.split(","):
        arch, encoder = spec.split("/")
        torch.manual_seed(0)
        variants = {
            "plain": Plain(arch, encoder, root, args, device, workers),
            "ours": Ours(arch, encoder, cache, args, device, workers),
        }
        for v in variants.values():  # warm-up: workers start, cudnn picks kernels, compile
            _block(v, 2, device)
        rates: dict[str, list[float]] = {k: [] for k in variants}
        utilisation: dict[str, list[float]] = {k: [] for k in variants}
        ratios = []
        for r in range(args.rounds):
            names = list(variants) if r % 2 == 0 else list(reversed(variants))
            got = {}
            for n in names:
                with UtilisationSampler(device) as sampler:
                    got[n] = args.steps * args.batch / _block(variants[n], args.steps, device, clock)
                if sampler.mean() is not None:
                    utilisation[n].append(sampler.mean())
                rates[n].append(got[n])
            ratios.append(got["ours"] / got["plain"])

        def util(n, utilisation=utilisation):
            return f"{statistics.mean(utilisation[n]):9.0f}%" if utilisation[n] else f"{'-':>10s}"

        print(
            f"{spec:18s} {statistics.median(rates['plain']):11.1f} {statistics.median(rates['ours']):11.1f} "
            f"{statistics.median(ratios):9.2f}x {util('plain'):>10s} {util('ours'):>9s}",
            flush=True,
        )
        del variants
    return 0


if __name__ == "__main__":
    sys.exit(main())
