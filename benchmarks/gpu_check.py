"""What decides a trial's speed on a GPU, measured in one run of at most 8 minutes.

    bash benchmarks/gpu_check.sh                        # on a CUDA machine (installs .gpu-wheels if needed)
    bash benchmarks/gpu_check.sh --device cpu --tiny    # dry run on a CPU: tiny sizes, about 3 minutes

Every figure is a rate (images or slices per second) or a ratio, printed after the GPU's name and
the torch, CUDA and cuDNN versions. Sections, each with its own time budget (seconds a section
leaves unused pass to the next; what does not fit is skipped with a line saying so):

1. **train step**: Sweeper's ``TrainStep`` alone (``benchmarks/train_step.py --matrix``), fed one
   batch from pinned host memory, for U-Net/ResNet-34 and U-Net/MiT-B2 at 224 x 224, batch 16 and
   32: fp32 vs AMP (bf16 where supported) x contiguous vs channels-last; images/s, GPU utilisation
   (NVML, sampled every 50 ms), peak memory, ratios to fp32 contiguous.
2. **torch.compile**: compiled vs eager at AMP + channels-last, and the first step's (compile) time.
3. **data path**: slices/s the trial's DataLoader delivers with the machine's cores (seed000
   augmentation, and intensity only), against the step's consumption; the on-device geometric
   augmentation's slices/s (``benchmarks/loader.py --workers --device``).
4. **metrics**: ``benchmarks/metrics.py --device cuda``, batched metrics vs per-image loops.
5. **epoch**: a training pass (``make_loaders``, ``TrainStep``; CPU augmentation and
   ``gpu_augmentation``) against the validation pass (``_evaluate``) without and with boundary
   metrics, per slice and scaled to paper 000's fold (30,800 training, 7,700 validation slices).
6. **packing**: total images/s of two training processes on one GPU (``gpus_per_trial: 0.5``)
   against one.

A summary at the end lists the figures the recommended settings follow from. No Ray, MLflow or
Optuna is imported. Exit status 0, or 2 when a required package or the device is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import math
import platform
import queue
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
ROOT = BENCHMARKS.parent

#: import name -> what to install; all needed by trainables or the benchmarks
REQUIRED = {
    "torch": "torch",
    "numpy": "numpy",
    "scipy": "scipy",
    "pandas": "pandas",
    "pyarrow": "pyarrow",
    "yaml": "PyYAML",
    "cv2": "opencv-python-headless",
    "segmentation_models_pytorch": "segmentation-models-pytorch",
    "albumentations": "albumentations",
    "pydicom": "pydicom",
    "nibabel": "nibabel",
}
#: import name -> what is lost without it
OPTIONAL = {
    "pynvml": "GPU utilisation read through nvidia-smi instead (nvidia-ml-py missing)",
    "triton": "torch.compile on CUDA cannot build kernels (triton missing): the compile section is skipped",
}

#: UW-Madison GI tract training set: 38,496 slices; paper 000 validates on one of 5 folds
PAPER_SLICES, PAPER_FOLDS = 38_496, 5

BOUNDARY_OPTIONS = (
    "compute them on fewer epochs: every k-th epoch and the last (the selection metric, dice, needs none);",
    (
        "on the GPU: NSD and boundary F1 only ask whether a boundary pixel lies within the tolerance, a "
        "dilation by a disk (max-pooling or a convolution on the device); HD95 needs exact distances "
        "(a GPU distance transform, e.g. CuPy);"
    ),
    (
        "in parallel on the machine's cores: each image's distance transforms are independent (a process "
        "pool over images, fed the thresholded masks the validation pass already copies to the CPU);"
    ),
    "overlapped with training: hand the masks to that pool and read its result one epoch later.",
)


@dataclass(frozen=True)
class Sizes:
    """Sizes and seconds of one run (``FULL`` on a GPU, ``TINY`` for a CPU dry run)."""

    image_size: int
    batches: tuple[int, ...]
    models: tuple[str, ...]
    source_size: int  # side of the generated PNGs
    cases: int
    slices: int  # slices per scan
    rounds: int  # alternating rounds per step comparison
    block_s: float  # seconds per timed block
    warmup: int  # warm-up steps per variant
    calibrate: int  # timed steps that size a variant's blocks
    loader_seconds: float
    metric_batches: int
    metric_batch_size: int
    metric_rounds: int
    epochs: int  # timed epochs of the epoch section
    train_batches: int | None  # batches of a training pass (None: the whole fold)
    packing_seconds: float
    budget: dict[str, float] = field(default_factory=dict)


FULL = Sizes(
    image_size=224,
    batches=(16, 32),
    models=("unet/resnet34", "unet/mit_b2"),
    source_size=288,
    cases=12,
    slices=80,
    rounds=3,
    block_s=1.0,
    warmup=3,
    calibrate=2,
    loader_seconds=5.0,
    metric_batches=20,
    metric_batch_size=16,
    metric_rounds=5,
    epochs=3,
    train_batches=None,
    packing_seconds=10.0,
    budget={"setup": 25, "step": 90, "compile": 130, "data": 35, "metrics": 30, "epoch": 55, "packing": 75},
)
TINY = Sizes(
    image_size=32,
    batches=(2, 4),
    models=("unet/resnet34", "unet/mit_b2"),
    source_size=48,
    cases=4,
    slices=8,
    rounds=1,
    block_s=0.1,
    warmup=1,
    calibrate=1,
    loader_seconds=1.0,
    metric_batches=2,
    metric_batch_size=4,
    metric_rounds=1,
    epochs=1,
    train_batches=2,
    packing_seconds=1.0,
    budget={"setup": 15, "step": 70, "compile": 20, "data": 10, "metrics": 10, "epoch": 25, "packing": 60},
)


class Budget:
    """Seconds per section, cumulative: a section may use what the ones before it left unused.

    ``at_least_one`` (dry runs): each section's first measurement runs whatever the clock says,
    with the section's own seconds from then on, so every code path runs once on a busy machine.
    """

    def __init__(self, shares: dict[str, float], at_least_one: bool = False):
        self.shares, self.start, self.planned = shares, time.monotonic(), 0.0
        self.at_least_one = at_least_one

    @contextlib.contextmanager
    def section(self, key: str, title: str):
        self.planned += self.shares[key]
        section = Section(self.start + self.planned, self.shares[key] if self.at_least_one else None)
        print(
            f"\n== {title} (budget until {self.planned:.0f} s; at {time.monotonic() - self.start:.0f} s now)",
            flush=True,
        )
        begun = time.monotonic()
        try:
            yield section
        except Exception as error:  # noqa: BLE001 - one section's failure must not cost the others
            print(f"  section failed: {type(error).__name__}: {error}")
            print("  " + "".join(traceback.format_exc().splitlines(keepends=True)[-12:]).replace("\n", "\n  "))
        print(f"  ({time.monotonic() - begun:.0f} s)", flush=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.start


@dataclass
class Section:
    """A section's deadline (``time.monotonic()``); ``grace``: seconds its first measurement gets
    when it is late (dry runs), None: none."""

    deadline: float
    grace: float | None = None
    started: bool = False

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def fits(self, seconds: float, what: str) -> bool:
        """True when ``seconds`` fit before the deadline; else prints that ``what`` is skipped."""
        first, self.started = not self.started, True
        if first and self.grace is not None and self.left() < max(seconds, self.grace):
            self.deadline = time.monotonic() + max(seconds, self.grace)
        if self.left() >= seconds:
            return True
        print(f"  skipped (time budget: needs ~{seconds:.0f} s, {max(self.left(), 0):.0f} s left): {what}")
        return False


def missing_packages() -> list[str]:
    """Imports each required package; returns one line per package that fails."""
    lines = []
    for module, package in REQUIRED.items():
        try:
            importlib.import_module(module)
        except Exception as error:  # noqa: BLE001 - any import failure makes it unusable
            lines.append(f"missing: {package} ({type(error).__name__}: {error})")
    return lines


def header(device, sizes: Sizes, tiny: bool, compile_backend: str) -> None:
    import torch

    from trainables import usable_cpus

    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        driver = ""
        with contextlib.suppress(Exception):
            import pynvml

            pynvml.nvmlInit()
            driver = f", driver {pynvml.nvmlSystemGetDriverVersion()}"
        print(
            f"GPU: {props.name}, {props.total_memory / 2**30:.1f} GiB, {props.multi_processor_count} SMs, "
            f"compute capability {props.major}.{props.minor}{driver}"
        )
        print(
            f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}; "
            f"bf16 supported: {torch.cuda.is_bf16_supported()}; fp32 = torch's defaults: TF32 convolutions "
            f"{torch.backends.cudnn.allow_tf32}, TF32 matmuls {torch.backends.cuda.matmul.allow_tf32}; "
            f"cudnn.benchmark on"
        )
    else:
        print(
            f"device: cpu ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
            f"{torch.get_num_threads()} torch threads (a dry run: rates mean nothing here)"
        )
    print(
        f"host: {usable_cpus()} usable CPU cores, Python {platform.python_version()}; sizes: "
        f"{'tiny' if tiny else 'full'} ({sizes.image_size} px, batches {', '.join(map(str, sizes.batches))}); "
        f"compile backend {compile_backend}; budget {sum(sizes.budget.values()):.0f} s"
    )
    for module, loss in OPTIONAL.items():
        if device.type == "cuda" and importlib.util.find_spec(module) is None:
            print(f"note: {loss}")


@dataclass
class Findings:
    """What later sections and the summary need from earlier ones."""

    step: dict = field(default_factory=dict)  # (model, batch) -> images/s at AMP + channels-last, eager
    compiled: dict = field(default_factory=dict)  # (model, batch) -> images/s compiled
    lines: list[str] = field(default_factory=list)  # the summary

    def best_step(self, model: str, batch: int) -> tuple[float, str] | None:
        """The fastest measured step of ``model`` at ``batch`` (else at its largest measured batch)
        and how it was set."""
        measured = sorted(b for m, b in {*self.step, *self.compiled} if m == model)
        if not measured:
            return None
        if batch not in measured:
            batch = measured[-1]
        eager, compiled = self.step.get((model, batch)), self.compiled.get((model, batch))
        if compiled is not None and (eager is None or compiled > eager):
            return compiled, f"b{batch}, AMP + channels-last + compile"
        return eager, f"b{batch}, AMP + channels-last"


def step_section(sec: Section, device, sizes: Sizes, found: Findings, compile_backend: str) -> None:
    import train_step as ts

    print(
        "the step alone: one batch from pinned host memory, no loader; ratio = vs fp32 contiguous of the same "
        f"model and batch; median of {sizes.rounds} rounds of ~{sizes.block_s} s blocks"
    )
    print(ts.MATRIX_HEADER)
    cost = None
    for batch in sizes.batches:
        for spec in sizes.models:
            if not sec.fits(cost or 0, f"{spec} batch {batch}"):
                continue
            begun = time.monotonic()
            variants, results = ts.precision_matrix(
                spec,
                batch,
                sizes.image_size,
                device,
                rounds=sizes.rounds,
                block_s=sizes.block_s,
                warmup=sizes.warmup,
                calibrate=sizes.calibrate,
                compile_backend=compile_backend,
                deadline=sec.deadline,
            )
            ts.print_matrix(variants, results, "fp32 contiguous", device)
            cost = max(cost or 0, time.monotonic() - begun)
            found.step[(spec, batch)] = results["amp cl"].rate
            amp = ts.amp_name(device)
            found.lines.append(
                f"step {spec} b{batch}: {results['amp cl'].rate:.0f} img/s at {amp} + channels-last; "
                f"{amp} / fp32 {ts.ratio(results, 'amp contiguous', 'fp32 contiguous'):.2f}x, channels-last "
                f"under {amp} {ts.ratio(results, 'amp cl', 'amp contiguous'):.2f}x, both "
                f"{ts.ratio(results, 'amp cl', 'fp32 contiguous'):.2f}x; GPU "
                f"{_percent(results['amp cl'].gpu_percent)}, peak {_gib(results['amp cl'].peak_bytes)}"
            )


def compile_section(sec: Section, device, sizes: Sizes, found: Findings, compile_backend: str) -> None:
    import train_step as ts

    if device.type == "cuda" and compile_backend == "inductor" and importlib.util.find_spec("triton") is None:
        print("  skipped: triton is missing, torch.compile cannot build CUDA kernels")
        return
    print(
        f"torch.compile (backend {compile_backend}) vs eager, both AMP + channels-last; ratio = vs eager; "
        "first step = compile + first run"
    )
    print(ts.MATRIX_HEADER + f" {'1st step s':>10s}")
    spent: dict[str, float] = {}
    for batch in sizes.batches:
        for spec in sizes.models:
            # a compile costs about what the same model's last one did (else the slowest so far, else a guess)
            guess = 1.3 * spent.get(spec, max(spent.values(), default=90.0 if device.type == "cuda" else 5.0))
            if not sec.fits(guess, f"compile {spec} batch {batch}"):
                continue
            begun = time.monotonic()
            try:
                variants, results = ts.compile_pair(
                    spec,
                    batch,
                    sizes.image_size,
                    device,
                    rounds=sizes.rounds,
                    block_s=sizes.block_s,
                    warmup=sizes.warmup,
                    calibrate=sizes.calibrate,
                    compile_backend=compile_backend,
                    deadline=sec.deadline,
                )
            except Exception as error:  # noqa: BLE001 - one failure says it for every model
                print(
                    f"  torch.compile failed on {spec} batch {batch}: {type(error).__name__}: "
                    f"{str(error).splitlines()[0] if str(error) else ''}"
                )
                return
            spent[spec] = time.monotonic() - begun
            for name, v in variants.items():
                row = ts.matrix_row(v, results[name], ts.ratio(results, name, "eager"), ts.amp_name(device))
                print(f"{row} {results[name].first_step_s:10.1f}", flush=True)
            found.compiled[(spec, batch)] = results["compile"].rate
            found.lines.append(
                f"compile {spec} b{batch}: {ts.ratio(results, 'compile', 'eager'):.2f}x eager "
                f"({results['compile'].rate:.0f} img/s); first step {results['compile'].first_step_s:.0f} s"
            )


def make_data(sizes: Sizes) -> Path:
    from trainables.data import generate_uwmgi, prepare_cache

    work = Path(tempfile.gettempdir()) / f"sweeper-gpu-check-{sizes.source_size}-{sizes.cases}x{sizes.slices}"
    begun = time.monotonic()
    root = generate_uwmgi(
        work / "data", cases=sizes.cases, slices_per_scan=sizes.slices, image_size=sizes.source_size, seed=0
    )
    cache = prepare_cache(root, work / "cache", image_size=sizes.image_size, n_folds=2)
    print(
        f"data: {sizes.cases} generated scans x {sizes.slices} slices of {sizes.source_size} px -> cache at "
        f"{sizes.image_size} px, 2 folds ({time.monotonic() - begun:.1f} s)"
    )
    return cache


def data_section(sec: Section, device, sizes: Sizes, found: Findings, cache: Path, workers: int) -> None:
    import loader as ld

    from trainables.data import SliceDataset, build_augmentation

    batch = max(sizes.batches)
    print(
        f"the trial's DataLoader (loader_settings): {workers} worker processes, batch {batch}, pinned memory on "
        f"CUDA; {sizes.loader_seconds:.0f} s wall each after 2 warm-up batches"
    )
    rates = {}
    for name, geometric in (("augmented (seed000)", True), ("intensity only (gpu_augmentation)", False)):
        if not sec.fits(sizes.loader_seconds + 3, name):
            continue
        dataset = SliceDataset(
            cache, [0, 1], transform=build_augmentation(sizes.image_size, geometric=geometric, seed=0)
        )
        rates[geometric] = ld.pipeline_rate(
            dataset, workers=workers, batch=batch, seconds=sizes.loader_seconds, device=device
        )
        print(
            f"  {name:36s} {rates[geometric]:9.0f} slices/s = {rates[geometric] / max(workers, 1):.0f} per worker",
            flush=True,
        )
    augment = None
    if sec.fits(2, "on-device augmentation"):
        augment = ld.device_augment_rate(batch, sizes.image_size, device, min(2.0, sizes.loader_seconds))
        print(f"  on-device geometric augmentation (BatchGeometricAugment, batch {batch}) {augment:9.0f} slices/s")
    print("against the step's consumption (the fastest measured step of each model at this batch):")
    for spec in sizes.models:
        best = found.best_step(spec, batch)
        if best is None:
            print(f"  {spec}: no step measured")
            continue
        step, how = best
        if True in rates:
            per_worker = rates[True] / max(workers, 1)
            verdict = "keeps the GPU fed" if rates[True] >= step else "STARVES the GPU"
            line = (
                f"{spec} ({how}, {step:.0f} img/s): CPU augmentation delivers {rates[True] / step:.2f}x "
                f"the step's need, {verdict}; workers to feed it ~{math.ceil(step / per_worker)}"
            )
            print(f"  {line}")
            found.lines.append(f"data path: {line}")
        if False in rates and augment:
            consumed = 1 / (1 / step + 1 / augment)  # the warp runs on the same GPU, in series with the step
            verdict = "keeps the GPU fed" if rates[False] >= consumed else "STARVES the GPU"
            line = (
                f"{spec} ({how}) with gpu_augmentation: step + warp {consumed:.0f} img/s, intensity-only loader "
                f"{rates[False] / consumed:.2f}x that, {verdict}"
            )
            print(f"  {line}")
            found.lines.append(f"data path: {line}")


def metrics_section(sec: Section, device, sizes: Sizes, found: Findings) -> None:
    import metrics as mt

    argv = [
        "--device",
        device.type,
        "--batches",
        str(sizes.metric_batches),
        "--rounds",
        str(sizes.metric_rounds),
        "--batch-size",
        str(sizes.metric_batch_size),
        "--image-size",
        str(sizes.image_size),
    ]
    print(f"python benchmarks/metrics.py {' '.join(argv)}", flush=True)
    result = mt.main(argv)
    found.lines.append(
        f"metrics on {device.type}: batched {result['ours']:.0f} img/s = {result['ours/smp']:.1f}x the "
        f"smp per-image loop, {result['ours/numpy']:.1f}x numpy; boundary metrics (CPU) "
        f"{result['boundary_ms']:.2f} ms/image"
    )


def epoch_section(sec: Section, device, sizes: Sizes, found: Findings, cache: Path, workers: int) -> None:
    import torch

    from trainables.data.gpu_augment import BatchGeometricAugment
    from trainables.losses import build_loss
    from trainables.metrics import SegmentationMetrics
    from trainables.models import build_model
    from trainables.train import (
        TrainStep,
        TrialConfig,
        _amp_dtype,
        _evaluate,
        make_loaders,
    )

    spec, batch = sizes.models[0], sizes.batches[0]
    arch, encoder = spec.split("/")
    cuda = device.type == "cuda"
    cfg = TrialConfig(
        cache_dir=str(cache),
        fold=0,
        arch=arch,
        encoder=encoder,
        loss="dice",
        image_size=sizes.image_size,
        batch_size=batch,
        num_workers=workers,
    )
    amp_dtype = _amp_dtype(device) if cuda else torch.float32
    model = build_model(arch, encoder, in_channels=3, classes=3).to(device)
    criterion = build_loss("dice")
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, fused=cuda)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    steps, loaders = {}, {}
    for gpu_augmentation in (False, True):
        trial = replace(cfg, gpu_augmentation=gpu_augmentation)
        loaders[gpu_augmentation] = make_loaders(trial, device)
        augment = (
            BatchGeometricAugment(trial.augmentation, seed=trial.seed, device=device) if gpu_augmentation else None
        )
        steps[gpu_augmentation] = TrainStep(
            model, criterion, optimizer, scaler, device=device, amp_dtype=amp_dtype, channels_last=cuda, augment=augment
        )
    val_loader = loaders[False][1]
    n_train, n_val = len(loaders[False][0].dataset), len(val_loader.dataset)
    metrics = {
        False: SegmentationMetrics(cfg.classes, boundary=False),
        True: SegmentationMetrics(cfg.classes, boundary=True, nsd_tolerance_mm=cfg.nsd_tolerance_mm),
    }

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    def train_pass(gpu_augmentation: bool) -> float:
        model.train()
        step_fn, loss_sum, seen = steps[gpu_augmentation], torch.zeros((), device=device), 0
        sync()
        begun = time.perf_counter()
        for k, (images, masks) in enumerate(loaders[gpu_augmentation][0]):
            if sizes.train_batches is not None and k >= sizes.train_batches:
                break
            loss_sum += step_fn(images, masks) * images.shape[0]
            seen += images.shape[0]
        loss_sum.item()  # the epoch's one sync, as run_fold
        return seen / (time.perf_counter() - begun)

    def val_pass(boundary: bool) -> float:
        begun = time.perf_counter()
        _evaluate(steps[False], criterion, val_loader, metrics[boundary], device, cuda, amp_dtype)
        return n_val / (time.perf_counter() - begun)

    passes = {
        "training pass, CPU augmentation": lambda: train_pass(False),
        "training pass, gpu_augmentation": lambda: train_pass(True),
        "validation pass, no boundary metrics": lambda: val_pass(False),
        "validation pass, boundary metrics": lambda: val_pass(True),
    }
    print(
        f"{spec}, batch {batch}, {'AMP ' + str(amp_dtype).removeprefix('torch.') + ' + channels-last' if cuda else 'fp32'}"
        f", {workers} loader workers; fold 0: {n_train} training, {n_val} validation slices; slices/s per pass "
        f"(Sweeper's make_loaders, TrainStep, _evaluate), best of {sizes.epochs} after a warm-up pass"
    )
    rates: dict[str, float] = {}
    cost = 0.0
    for name, run in passes.items():
        if not sec.fits(cost, name):
            continue
        begun = time.monotonic()
        run()  # warm-up: workers start, cudnn picks its kernels
        measured = [run() for _ in range(sizes.epochs)]
        cost = max(cost, (time.monotonic() - begun) / (sizes.epochs + 1))
        rates[name] = max(measured)
        print(f"  {name:40s} {rates[name]:9.0f} slices/s", flush=True)
    train_key, val_key, bnd_key = (
        "training pass, CPU augmentation",
        "validation pass, no boundary metrics",
        "validation pass, boundary metrics",
    )
    if not {train_key, val_key} <= rates.keys():
        return
    per_fold = PAPER_SLICES / PAPER_FOLDS
    train_s, val_s = (PAPER_SLICES - per_fold) / rates[train_key], per_fold / rates[val_key]
    line = (
        f"at paper 000's scale ({PAPER_SLICES - per_fold:,.0f} training + {per_fold:,.0f} validation slices a "
        f"fold): training {train_s:.1f} s, validation {val_s:.1f} s ({val_s / train_s:.2f}x training)"
    )
    if bnd_key in rates:
        bnd_s = per_fold / rates[bnd_key]
        line += f", with boundary metrics {bnd_s:.1f} s ({bnd_s / train_s:.2f}x training)"
    print(f"  {line}")
    found.lines.append(f"epoch {spec} b{batch}: {line}")
    if bnd_key in rates and per_fold / rates[bnd_key] > train_s:
        print("  boundary metrics dominate the epoch; the options (not implemented here):")
        for option in BOUNDARY_OPTIONS:
            print(f"    - {option}")
        found.lines.append("epoch: boundary metrics dominate the epoch (options listed in the epoch section)")


def _start_worker(spec: str, batch: int, sizes: Sizes, device, compile_backend: str, log: Path):
    command = [
        sys.executable,
        str(BENCHMARKS / "train_step.py"),
        "--packing-worker",
        "--device",
        device.type,
        "--models",
        spec,
        "--batch",
        str(batch),
        "--image-size",
        str(sizes.image_size),
        "--seconds",
        str(sizes.packing_seconds),
        "--compile-backend",
        compile_backend,
    ]
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log.open("w"), text=True, cwd=ROOT
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line.strip()) for line in process.stdout], daemon=True).start()
    return process, lines


def _expect(worker: tuple[subprocess.Popen, queue.Queue], deadline: float, what: str) -> str:
    """Returns the worker's next line that is ``what`` (or a JSON report); raises when the worker
    ended or ``deadline`` passed first."""
    process, lines = worker
    while True:
        try:
            line = lines.get(timeout=min(1.0, max(0.1, deadline - time.monotonic())))
        except queue.Empty:
            if process.poll() is not None and lines.empty():
                raise RuntimeError(
                    f"a packing worker ended (exit status {process.returncode}) before {what!r}"
                ) from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {what!r} from a packing worker in time") from None
            continue
        if line == what or line.startswith("{"):
            return line


def packing_section(sec: Section, device, sizes: Sizes, found: Findings, compile_backend: str) -> None:
    import json

    import torch
    import train_step as ts

    batch = sizes.batches[0]
    print(
        f"separate processes stepping for {sizes.packing_seconds:.0f} s each, AMP + channels-last, eager, batch "
        f"{batch}: one alone, then two at once (as gpus_per_trial: 0.5); images/s in total"
    )
    cost = None
    for spec in sizes.models:
        if not sec.fits(cost or 3 * sizes.packing_seconds, f"packing {spec}"):
            continue
        begun = time.monotonic()
        logs = [Path(tempfile.gettempdir()) / f"sweeper-gpu-check-packing-{k}.log" for k in range(3)]
        workers = [_start_worker(spec, batch, sizes, device, compile_backend, log) for log in logs]
        failed = True
        try:
            for worker in workers:  # all three warm up together, then wait
                _expect(worker, sec.deadline, "ready")
            totals, utilisation = {}, {}
            for label, group in (("one process", workers[:1]), ("two processes", workers[1:])):
                with ts.UtilisationSampler(device) as sampler:
                    for process, _ in group:
                        process.stdin.write("go\n")
                        process.stdin.flush()
                    reports = [
                        json.loads(_expect(worker, time.monotonic() + 3 * sizes.packing_seconds + 30, "{"))
                        for worker in group
                    ]
                totals[label] = sum(r["images"] / r["seconds"] for r in reports)
                utilisation[label] = sampler.mean()
                print(
                    f"  {spec:16s} {label:14s} {totals[label]:9.1f} img/s in total, GPU {_percent(utilisation[label])}",
                    flush=True,
                )
            gain = totals["two processes"] / totals["one process"]
            print(f"  {spec:16s} two / one      {gain:9.2f}x")
            found.lines.append(
                f"packing {spec} b{batch}: two processes give {gain:.2f}x one "
                f"({totals['one process']:.0f} -> {totals['two processes']:.0f} img/s)"
            )
            failed = False
        except Exception:
            for log in logs:
                tail = log.read_text().strip().splitlines()[-5:] if log.exists() else []
                if tail:
                    print(f"  worker log {log.name}: " + " | ".join(tail))
            raise
        finally:
            for process, _ in workers:
                _stop(process, at_once=failed)
            for log in logs:
                log.unlink(missing_ok=True)
        cost = time.monotonic() - begun
        if device.type == "cuda":
            torch.cuda.empty_cache()


def _stop(process: subprocess.Popen, at_once: bool) -> None:
    """Ends a packing worker (by its own handle): its stdin closes (a waiting worker then exits);
    killed ``at_once`` (after a failure) or when still running 10 s later."""
    with contextlib.suppress(Exception):
        process.stdin.close()
    if at_once and process.poll() is None:
        process.kill()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _percent(value: float | None) -> str:
    return f"{value:.0f}%" if value is not None else "-"


def _gib(value: int | None) -> str:
    return f"{value / 2**30:.2f} GiB" if value is not None else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (a dry run)")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes and budgets: a dry run of every section")
    parser.add_argument(
        "--compile-backend",
        default=None,
        help="torch.compile backend (default inductor; eager with --tiny on CPU, where inductor "
        "needs minutes per model)",
    )
    parser.add_argument(
        "--sections",
        default="step,compile,data,metrics,epoch,packing",
        help="comma-separated subset of the sections to run",
    )
    parser.add_argument(
        "--budget-scale",
        type=float,
        default=1.0,
        help="multiplies every section's seconds (a dry run on a busy machine: 2-3)",
    )
    args = parser.parse_args(argv)
    sizes = TINY if args.tiny else FULL
    sizes = replace(sizes, budget={k: v * args.budget_scale for k, v in sizes.budget.items()})
    budget = Budget(sizes.budget, at_least_one=args.tiny)
    sections = set(args.sections.split(","))

    missing = missing_packages()
    for line in missing:
        print(line)
    if missing:
        print(
            "install them, or on a machine without package access run `bash benchmarks/gpu_wheels.sh` where pip "
            "reaches PyPI and carry .gpu-wheels (benchmarks/README.md, GPU check)"
        )
        return 2
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            f"no CUDA: torch {torch.__version__} sees no GPU (torch.version.cuda {torch.version.cuda}); "
            "for a dry run use --device cpu --tiny"
        )
        return 2
    device = torch.device(args.device)
    compile_backend = args.compile_backend or ("eager" if device.type == "cpu" and args.tiny else "inductor")
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(BENCHMARKS))
    threads = torch.get_num_threads() if device.type == "cuda" else 1
    import train_step  # noqa: F401 - sets NO_ALBUMENTATIONS_UPDATE and OMP defaults before the workers start

    from trainables import usable_cpus
    from trainables.train import loader_workers

    torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    header(device, sizes, args.tiny, compile_backend)
    # one trial with the whole machine: every core but one loads (a dry run: one worker)
    workers = loader_workers(None, usable_cpus(), device) if device.type == "cuda" else 1
    found = Findings()
    cache = None
    with budget.section("setup", "data set"):
        cache = make_data(sizes)
    runs = [
        (
            "step",
            "1. train step: precision x memory layout",
            lambda sec: step_section(sec, device, sizes, found, compile_backend),
        ),
        ("compile", "2. torch.compile", lambda sec: compile_section(sec, device, sizes, found, compile_backend)),
        (
            "data",
            "3. data path: loader vs the step's consumption; on-device augmentation",
            lambda sec: data_section(sec, device, sizes, found, cache, workers),
        ),
        ("metrics", "4. metrics: batched vs per-image loops", lambda sec: metrics_section(sec, device, sizes, found)),
        (
            "epoch",
            "5. epoch: training pass vs validation pass, without and with boundary metrics",
            lambda sec: epoch_section(sec, device, sizes, found, cache, workers),
        ),
        (
            "packing",
            "6. packing: two training processes on one GPU vs one",
            lambda sec: packing_section(sec, device, sizes, found, compile_backend),
        ),
    ]
    for key, title, run in runs:
        if key not in sections:
            continue
        with budget.section(key, title) as sec:
            if key in ("data", "epoch") and cache is None:
                print("  skipped: no data set (the data section failed)")
            elif sec.left() <= 0 and sec.grace is None:
                print("  skipped: the run is over its time budget")
            else:
                run(sec)
    print(f"\n== summary ({budget.elapsed():.0f} s in all)")
    for line in found.lines:
        print(f"- {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
