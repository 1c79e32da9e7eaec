"""The sweep spec: the one typed object through which configuration enters Sweeper.

A YAML file is parsed into :class:`SweepSpec` (pydantic). Structural and range errors are all
collected at once by pydantic; :func:`sweeper.preflight.spec_problems` adds the checks that need the
file system (data root, number of patients vs folds). :func:`load_spec` runs both and raises :class:`SpecError`
listing every problem, each naming the field and the fix, before Ray starts.
"""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path
from collections.abc import Sequence
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from trainables.data import GI_CLASSES
from trainables.losses import Knob, compound_terms, configured_knob_space, is_compound, loss_constraints
from trainables.models import ARCHITECTURES, known_encoders

SEARCH = "search"


class SpecError(ValueError):
    """Raised with every problem of a spec at once; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str], source: str = "spec"):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s):\n{lines}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SyntheticDataSpec(_Strict):
    """Size of the generated UW-Madison-GI-format data set (``data.format: synthetic``)."""

    cases: int = Field(6, ge=1, description="patients; folds are grouped by patient")
    days_per_case: int = Field(1, ge=1, description="scans (days) per patient")
    slices_per_scan: int = Field(24, ge=3)
    image_size: int = Field(96, ge=16, description="side of the generated PNGs in pixels")
    seed: int = 0


class NiftiDataSpec(_Strict):
    """Where the NIfTI volumes are (``data.format: nifti``); see trainables.data.nifti for layouts."""

    images: str = Field("imagesTr/*.nii.gz", description="glob of the image volumes, relative to data.root")
    labels: str = Field("labelsTr/{name}", description="each image's label volume, relative to data.root; "
                        "fields {dir} {name} {stem} {case} ({case}: what the first * of the glob matched)")
    patient_pattern: str | None = Field(None, description="regex on the relative image path, group 1 = patient "
                                        "id (default: {case}, or the image's folder when the glob has no *)")
    channel: int | None = Field(None, description="index on the 4th axis of 4D images (the modality to use)")
    canonical: bool = Field(True, description="reorient image and label to RAS+ before slicing along the last axis")


class DicomDataSpec(_Strict):
    """Where the DICOM series and PNG masks are (``data.format: dicom``; defaults: CHAOS MR T1-DUAL in-phase)."""

    patients: str = Field("*", description="glob of the patient folders under data.root")
    series: str = Field("T1DUAL/DICOM_anon/InPhase", description="glob of the series folders in a patient folder")
    ground: str = Field("T1DUAL/Ground", description="folder of the per-slice PNG masks in a patient folder; "
                        "{series} = the series folder's name")
    files: str = Field("*.dcm", description="glob of the DICOM files in a series folder")
    ground_match: Literal["auto", "name", "order"] = Field(
        "auto", description="pair masks with slices by file name, by order, or by name when every slice has one")
    grey_tolerance: int = Field(0, ge=0, le=127, description="a mask grey level this close to a listed one counts as it")


class ImageFolderDataSpec(_Strict):
    """Where the 2D images and masks are (``data.format: image_folder``; defaults: Kvasir-SEG)."""

    images: str = Field("images/*", description="glob of the images, relative to data.root")
    masks: str = Field("masks/{stem}.*", description="each image's mask, relative to data.root; fields {dir} "
                       "{name} {stem}; may end in a glob matching one file")
    mask_threshold: int = Field(128, ge=1, description="binary masks: grey >= this is foreground (unused with label_values)")
    grey_tolerance: int = Field(0, ge=0, description="with label_values: grey levels this close count as the listed one")
    patient_pattern: str | None = Field(None, description="regex on the relative image path grouping images by "
                                        "patient (default: every image its own group)")
    pixel_spacing: tuple[float, float] = Field((1.0, 1.0), description="(row, column) mm per original pixel")


class IntensitySpec(_Strict):
    """How raw intensities become [0, 1] (trainables.data.intensity)."""

    mode: Literal["slice_minmax", "volume_minmax", "slice_zscore", "volume_zscore", "window"] = Field(
        "slice_minmax", description="slice_minmax (paper 000), volume_minmax, slice/volume_zscore "
        "(clipped to +-3 sd, mapped to [0, 1]), window (CT: window_center/width in HU)")
    window_center: float | None = Field(None, description="window mode: centre in HU, e.g. 40 (abdomen)")
    window_width: float | None = Field(None, gt=0, description="window mode: width in HU, e.g. 400")
    clip_percentiles: tuple[float, float] | None = Field(None, description="clip to these percentiles first, e.g. [0.5, 99.5]")

    @model_validator(mode="after")
    def _check(self) -> "IntensitySpec":
        if self.mode == "window" and (self.window_center is None or self.window_width is None):
            raise ValueError("data.intensity: mode window needs window_center and window_width, e.g. 40 and 400")
        if self.clip_percentiles is not None and not 0 <= self.clip_percentiles[0] < self.clip_percentiles[1] <= 100:
            raise ValueError("data.intensity.clip_percentiles: give [lo, hi] with 0 <= lo < hi <= 100")
        return self

    @property
    def window(self) -> tuple[float, float] | None:
        return (self.window_center, self.window_width) if self.mode == "window" else None


class DataSpec(_Strict):
    """Where the images come from and how they are prepared (seed 000 defaults)."""

    format: Literal["uwmgi", "synthetic", "nifti", "dicom", "image_folder"] = Field(
        "uwmgi", description="uwmgi: UW-Madison GI folder; synthetic: generate one; nifti: image + label volumes; "
        "dicom: DICOM series + PNG masks (CHAOS); image_folder: 2D images + mask images (Kvasir)")
    root: Path | None = Field(None, description="the data set folder as it comes from its source "
                              "(synthetic: where to write, default SWEEP_DIR/data)")
    synthetic: SyntheticDataSpec = Field(default_factory=SyntheticDataSpec)
    nifti: NiftiDataSpec = Field(default_factory=NiftiDataSpec)
    dicom: DicomDataSpec = Field(default_factory=DicomDataSpec)
    image_folder: ImageFolderDataSpec = Field(default_factory=ImageFolderDataSpec)
    label_mode: Literal["multilabel", "multiclass"] = Field(
        "multilabel", description="multilabel: one sigmoid channel per class, may overlap; multiclass: softmax "
        "with background channel 0 added before classes (classes lists the foreground only)")
    label_values: dict[int, str | list[str]] | None = Field(
        None, description="label value / grey level -> class (or list of classes, multilabel regions); "
        "default nifti {1: classes[0], 2: ...}, dicom {63: classes[0], 126: ...}, image_folder: mask >= threshold")
    intensity: IntensitySpec = Field(default_factory=IntensitySpec)
    target_spacing: list[float] | None = Field(None, min_length=2, max_length=3, description=
        "resample to [row, column] or [slice, row, column] mm, then centre-crop/pad to image_size")
    split_file: Path | None = Field(None, description="YAML/JSON {fold: [validation patient ids]} (paper splits); "
                                    "unlisted patients train in every fold")
    classes: tuple[str, ...] = GI_CLASSES
    image_size: int = Field(224, ge=16, le=2048, description="slices are resized to image_size x image_size")
    context: int = Field(1, ge=0, le=5, description="2.5D: neighbouring slices on each side (1 -> 3 channels)")
    folds: int = Field(5, ge=2, description="patient-grouped folds")
    fold_seed: int = 42
    run_folds: list[int] | None = Field(None, description="folds to train (default: all); seed 000 trained one")
    augmentation: Literal["seed000", "none"] = "seed000"
    roi_ratios: list[float] | None = Field(
        None, description="sweep dimension (paper 002): ROI-present / ROI-absent training slices, e.g. [0.409, 0.1]"
    )

    @model_validator(mode="after")
    def _check(self) -> DataSpec:
        if self.roi_ratios is not None and (not self.roi_ratios or any(r <= 0 for r in self.roi_ratios)):
            raise ValueError("data.roi_ratios: give positive ratios, e.g. [0.409, 0.1], or leave it out")
        if self.format != "synthetic" and self.root is None:
            raise ValueError(f"data.root is required for format {self.format}: give the data set folder "
                             "(for uwmgi the one holding train.csv)")
        if "background" in self.classes:
            raise ValueError("data.classes lists foreground classes; multiclass adds 'background' itself")
        if self.target_spacing is not None and min(self.target_spacing) <= 0:
            raise ValueError("data.target_spacing: give positive mm values")
        if self.run_folds is not None:
            bad = [f for f in self.run_folds if not 0 <= f < self.folds]
            if bad:
                raise ValueError(f"data.run_folds {bad} outside 0..{self.folds - 1}; list folds below data.folds")
            if len(set(self.run_folds)) != len(self.run_folds):
                raise ValueError("data.run_folds lists a fold twice; list each fold once")
        return self

    def format_options(self) -> dict[str, Any]:
        """The options of data.format for trainables.data.prepare_dataset_cache."""
        if self.format == "synthetic":
            return self.synthetic.model_dump()
        if self.format in ("nifti", "dicom", "image_folder"):
            return getattr(self, self.format).model_dump()
        return {}

    @property
    def channel_classes(self) -> list[str]:
        """Model output channels: background first under multiclass."""
        return ["background", *self.classes] if self.label_mode == "multiclass" else list(self.classes)

    @property
    def folds_to_run(self) -> list[int]:
        return list(self.run_folds) if self.run_folds is not None else list(range(self.folds))


class ModelSpec(_Strict):
    """Architectures x encoders to sweep (segmentation-models-pytorch names)."""

    architectures: list[str] = Field(default_factory=lambda: ["unet"], min_length=1)
    encoders: list[str] = Field(default_factory=lambda: ["mit_b2"], min_length=1)
    encoder_weights: str | None = Field(
        None, description="e.g. imagenet; off by default because weights are downloaded at run time"
    )

    @field_validator("architectures")
    @classmethod
    def _known_architectures(cls, value: list[str]) -> list[str]:
        unknown = [a for a in value if a.lower() not in ARCHITECTURES]
        if unknown:
            raise ValueError(f"unknown architecture(s) {unknown}; choose from {sorted(ARCHITECTURES)}")
        return [a.lower() for a in value]

    @field_validator("encoders")
    @classmethod
    def _known_encoders(cls, value: list[str]) -> list[str]:
        known = known_encoders()
        unknown = [e for e in value if e not in known]
        if unknown:
            close = sorted({k for e in unknown for k in known if k.startswith(e.rstrip("0123456789_-")[:4])})[:12]
            raise ValueError(f"unknown encoder(s) {unknown}; use an smp encoder name such as mit_b2 or resnet34"
                             + (f" (similar: {close})" if close else "")
                             + " -- all names: python -c 'import segmentation_models_pytorch as smp; "
                             "print(smp.encoders.get_encoder_names())'")
        return value


class KnobRange(_Strict):
    """A search range for one loss knob; must lie inside the knob's declared range."""

    low: float
    high: float
    log: bool | None = None

    @model_validator(mode="after")
    def _ordered(self) -> KnobRange:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high}); give {{low, high}} with low < high")
        return self


KnobValue = Union[float, list[float], KnobRange, Literal["search"]]


class LossSpec(_Strict):
    """One loss -- a registered name or a weighted sum such as ``0.5*focal + 0.5*dice`` -- and its knobs.

    ``params`` keys are the loss's flat knobs (``sweeper losses``): ``alpha``; a per-class knob by
    class, ``gamma.small_bowel``, or for all classes at once, ``gamma``; inside a compound, prefixed
    by the term, ``focal.gamma``. Each value is a number (fixed), a list (per-class knob, one value
    per class in ``data.classes`` order), ``search`` (the declared range) or ``{low, high, log}``.
    Knobs left out keep the loss's default value.
    """

    name: str
    params: dict[str, KnobValue] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_loss_and_knobs(self, info: ValidationInfo) -> LossSpec:
        try:
            configured_knob_space(self.name, ("class",))
        except (KeyError, ValueError) as err:
            raise ValueError(f"{str(err).strip(chr(34))} (see `sweeper losses`)") from None
        classes = (info.context or {}).get("classes", GI_CLASSES)
        problems = self.check(classes)
        if problems:
            raise ValueError("\n".join(problems))  # _format_pydantic gives each its own line
        return self

    def space(self, classes: Sequence[str]) -> dict[str, Knob]:
        """Returns the loss's flat knob space for these output classes."""
        return configured_knob_space(self.name, classes)

    def _expand(self, classes: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
        space = self.space(classes)
        out: dict[str, Any] = {}
        problems: list[str] = []
        for key, value in self.params.items():
            if key in space:
                if isinstance(value, list):
                    problems.append(f"params.{key}: a list is only for per-class knobs; give one number")
                else:
                    out[key] = value
                continue
            per_class = [f"{key}.{c}" for c in classes]
            if all(k in space for k in per_class):
                values = value if isinstance(value, list) else [value] * len(classes)
                if len(values) != len(classes):
                    problems.append(f"params.{key}: {len(values)} values for {len(classes)} classes "
                                    f"{list(classes)}; give one per class, in that order")
                else:
                    out.update(zip(per_class, values))
                continue
            derived = _derived_knobs(self.name).get(key)
            if derived is not None:
                first, total = derived
                problems.append(f"params.{key}: {self.name} derives {key} from {first} (constraint: they sum to "
                                f"{total:g}); set only {first}, e.g. {first}: {total / 2:g}, and leave {key} out")
                continue
            problems.append(f"params.{key}: {self.name} has no knob {key!r}; its knobs are {sorted(space)}")
        return out, problems

    def expanded_params(self, classes: Sequence[str]) -> dict[str, Any]:
        """Returns ``params`` with per-class shorthands (``gamma: 2`` or ``gamma: [1, 2, 3]``) expanded
        to one entry per class (``gamma.<class>``); raises ValueError naming a bad key."""
        out, problems = self._expand(classes)
        if problems:
            raise ValueError("; ".join(problems))
        return out

    def check(self, classes: Sequence[str]) -> list[str]:
        """Returns the problems of ``params`` against the knob space (each naming ``params.<knob>``)."""
        params, problems = self._expand(classes)
        space = self.space(classes)
        for key, value in params.items():
            knob = space[key]
            bounds = (value,) if isinstance(value, (int, float)) else (
                (value.low, value.high) if isinstance(value, KnobRange) else ())
            for bound in bounds:
                if not knob.low <= bound <= knob.high:
                    problems.append(f"params.{key}: {bound} is outside [{knob.low}, {knob.high}]; "
                                    "give a value in that range")
            if isinstance(value, KnobRange) and (value.log or (value.log is None and knob.log)) and value.low <= 0:
                problems.append(f"params.{key}: a log-scale range needs low > 0")
        return problems

    def fixed_params(self, classes: Sequence[str]) -> dict[str, float]:
        """Knob values that are not searched: the spec's numbers, else the loss's defaults."""
        params = self.expanded_params(classes)
        searched = self.searched_params(classes)
        out = {k: knob.default for k, knob in self.space(classes).items() if k not in searched}
        out.update({k: float(v) for k, v in params.items() if isinstance(v, (int, float)) and k not in searched})
        return out

    def searched_params(self, classes: Sequence[str]) -> dict[str, Knob]:
        """Knobs to search, each as a :class:`Knob` carrying the range to search."""
        space = self.space(classes)
        out = {}
        for key, value in self.expanded_params(classes).items():
            knob = space[key]
            if value == SEARCH:
                out[key] = knob
            elif isinstance(value, KnobRange):
                out[key] = Knob(
                    default=min(max(knob.default, value.low), value.high),
                    low=value.low,
                    high=value.high,
                    log=knob.log if value.log is None else value.log,
                    help=knob.help,
                )
        return out


def _derived_knobs(name: str) -> dict[str, tuple[str, float]]:
    """Returns flat key of each knob a constraint derives -> (the knob to set instead, the constraint's total)."""
    try:
        terms = [(f"{term}.", term) for _, term in compound_terms(name)] if is_compound(name) else [("", name)]
        return {f"{prefix}{c.knobs[-1]}": (f"{prefix}{c.knobs[0]}", c.total)
                for prefix, term in terms for c in loss_constraints(term) if len(c.knobs) == 2}
    except (KeyError, ValueError):
        return {}


class TrainingSpec(_Strict):
    """Optimisation settings shared by every trial (seed 000 defaults)."""

    epochs: int = Field(18, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(1e-2, ge=0)
    min_lr: float = Field(1e-6, ge=0, description="floor of the cosine schedule")
    seed: int = 42
    threshold: float = Field(0.5, gt=0, lt=1, description="probability threshold of the metrics")
    amp: bool = Field(True, description="mixed precision; only ever used on CUDA")
    num_workers: int | None = Field(
        None, ge=0, description="DataLoader worker processes per trial; null: from resources.cpus_per_trial "
        "(on a GPU one per CPU but one, at least one; on CPU none: the training step uses the cores)")
    channels_last: bool = Field(True, description="channels-last tensors and weights; only ever used on CUDA")
    compile: bool = Field(False, description="torch.compile the model (minutes of compiling per trial first)")
    gpu_augmentation: bool = Field(
        False, description="flips, affine and warps batched on the training device; the DataLoader workers "
        "then do only intensity jitter (for trials short of CPU cores)")
    select_metric: str = Field("dice", description="validation metric that picks the best epoch (maximised)")
    max_train_batches: int | None = Field(None, ge=1, description="cap batches per epoch (smoke tests)")
    boundary_metrics: bool = Field(True, description="nsd, hd95, boundary_f1, gi_score (CPU cost per image)")
    include_background: bool = Field(False, description="multiclass only: report the background class in metrics")
    loss_include_background: bool = Field(
        True, description="multiclass only: region losses score the background channel (False: paper 003's diceBK)")
    nsd_tolerance_mm: float = Field(2.0, gt=0, description="tolerance of the normalised surface distance")


class Objective(_Strict):
    metric: str = Field(description="a reported metric, e.g. sensitivity or precision.small_bowel")
    direction: Literal["maximize", "minimize"] = "maximize"


class SearchSpec(_Strict):
    """How configurations are chosen: an Optuna search, or a grid of fixed configurations."""

    mode: Literal["optuna", "grid"] = "optuna"
    sampler: Literal["tpe", "nsga2", "random"] = "tpe"
    budget: int | None = Field(None, ge=1, description="Optuna trials (configurations) to ask; grid: all")
    seed: int = 42
    objectives: list[Objective] = Field(
        default_factory=lambda: [Objective(metric="sensitivity"), Objective(metric="precision")], min_length=1
    )


class ResourcesSpec(_Strict):
    """What one trial gets from Ray, and how many run at once."""

    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float = Field(0.0, ge=0, description="fractions pack trials on one GPU, e.g. 0.5")
    max_concurrent: int | None = Field(None, ge=1, description="cap on trials running at once")
    max_failures: int = Field(1, ge=0, description="retries of a failing trial from its last checkpoint")
    reuse_actors: bool = Field(
        True, description="an ended trial's worker process runs the next trial with the same resources instead of "
        "a new process starting (Ray Tune's reuse_actors); false: a fresh process per trial")

    @field_validator("gpus_per_trial")
    @classmethod
    def _whole_above_one(cls, value: float) -> float:
        if value > 1 and value != int(value):
            raise ValueError(f"{value} GPUs: Ray shares a GPU only in fractions below 1; give a fraction "
                             f"(e.g. 0.5) or a whole number (e.g. {int(value)})")
        return value


class TrackingSpec(_Strict):
    uri: str | None = Field(None, description="MLflow tracking URI; default sqlite under the results folder")


#: URI schemes of the filesystems pyarrow (so Ray Tune's storage_path) can write to
STORAGE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")


def is_uri(location: str | os.PathLike | None) -> bool:
    """True for an object-store URI (``s3://``, ``gs://``, ...); False for a local or NFS path (``file://`` too)."""
    text = str(location or "")
    return "://" in text and not text.startswith("file://")


def storage_problem(storage: str | None) -> str | None:
    """Returns what is wrong with a storage location (a local path or an object-store URI), or None."""
    if not is_uri(storage):
        return None
    text = str(storage)
    scheme = text.split("://", 1)[0].lower()
    if scheme not in STORAGE_SCHEMES:
        return (f"unknown URI scheme {scheme + '://'!r} in {text!r}; give a local or NFS path (e.g. /mnt/shared/sweeps) "
                f"or an object-store URI Ray Tune can write to: {', '.join(s + '://' for s in STORAGE_SCHEMES)}")
    return None


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class SweepSpec(_Strict):
    """A whole sweep: data x models x losses x folds, how to search, where to run and record."""

    name: str = Field(description="sweep name: folder under the results root and MLflow experiment")
    data: DataSpec
    model: ModelSpec = Field(default_factory=ModelSpec)
    losses: list[LossSpec] = Field(min_length=1)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    search: SearchSpec = Field(default_factory=SearchSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    storage: str | None = Field(
        None, description="where trials' shared files go: a local or NFS path (Tune storage, data cache and "
        "leaderboard under STORAGE/<name>) or an object-store URI such as s3://bucket/prefix (Tune storage only; "
        "the data cache then travels through Ray's object store); default: the results folder",
    )

    @field_validator("name")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("use letters, digits, '_', '-', '.' only (it names a folder), at most 64 characters")
        return value

    @field_validator("storage")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        problem = storage_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> SweepSpec:
        problems = []
        classes = self.data.classes
        entries = [(loss.name, repr(sorted(loss.params.items()))) for loss in self.losses]
        if len(set(entries)) != len(entries):
            problems.append("losses: the same loss with the same params is listed twice; list it once")
        names = [loss.name for loss in self.losses]
        if self.search.mode == "optuna" and len(set(names)) != len(names):
            problems.append("losses: search.mode optuna lists each loss once; search its knobs instead "
                            "(several fixed settings of one loss are for search.mode grid)")
        if self.search.mode == "grid":
            searched = [f"losses.{i}.params.{k}" for i, l in enumerate(self.losses)
                        for k in l.searched_params(classes)]
            if searched:
                problems.append(f"search.mode grid needs fixed knob values, but {searched} are ranges; "
                                "give numbers or use search.mode optuna")
        elif self.search.budget is None:
            problems.append("search.budget is required for search.mode optuna: the number of configurations to try")
        reported = ("background", *self.data.classes) if (
            self.data.label_mode == "multiclass" and self.training.include_background) else self.data.classes
        valid = metric_names(reported, boundary=self.training.boundary_metrics)
        for i, obj in enumerate(self.search.objectives):
            if obj.metric not in valid:
                problems.append(f"search.objectives.{i}.metric: unknown metric {obj.metric!r}; "
                                f"choose from {sorted(valid)}")
        if self.training.select_metric not in valid:
            problems.append(f"training.select_metric: unknown metric {self.training.select_metric!r}; "
                            f"choose from {sorted(valid)}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def loss_labels(self) -> dict[str, LossSpec]:
        """Returns label -> loss entry: the loss name, or ``name[i]`` when a loss is listed several times."""
        names = [loss.name for loss in self.losses]
        return {(name if names.count(name) == 1 else f"{name}[{i}]"): loss
                for i, (name, loss) in enumerate(zip(names, self.losses))}

    def grid(self) -> list[dict[str, Any]]:
        """Every fixed configuration (grid mode): architecture x encoder x loss."""
        return [
            {"arch": arch, "encoder": enc, "loss": loss.name, "loss_params": loss.fixed_params(self.data.classes),
             "roi_ratio": ratio, "loss_label": label}
            for arch, enc, (label, loss), ratio in itertools.product(
                self.model.architectures, self.model.encoders, self.loss_labels().items(), self.data.roi_ratios or [None])
        ]


def metric_names(classes: tuple[str, ...], boundary: bool = True) -> set[str]:
    """Names a spec may use for objectives and best-epoch selection: every reported validation metric."""
    from trainables.metrics import metric_keys

    return set(metric_keys(classes, boundary=boundary, gi_score=boundary))


def _known_fields(loc: tuple) -> list[str]:
    """Returns the field names of the spec section at ``loc`` (the parent of an unknown field), or []."""
    model: Any = SweepSpec
    for part in loc:
        if isinstance(part, int) or not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return []
        model = field.annotation
        while getattr(model, "__args__", None) and not (isinstance(model, type) and issubclass(model, BaseModel)):
            model = next((a for a in model.__args__ if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return sorted(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []


def _format_pydantic(error: ValidationError) -> list[str]:
    lines = []
    items = error.errors()
    # a value that failed every member of a union: keep the member's own explanation (a value error,
    # e.g. a knob range with low above high) and drop "should be a number / a list / 'search'"
    def where(item: dict) -> tuple:
        return tuple(str(p) for p in item["loc"] if not str(p).startswith(("function-after", "union")))

    explained = {where(item) for item in items if item["type"] == "value_error"}
    items = [item for item in items if item["type"] == "value_error" or where(item)[:-1] not in explained]
    for item in items:
        loc = ".".join(where(item))
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            known = _known_fields(item["loc"][:-1])
            msg = ("unknown field; remove it or fix its spelling"
                   + (f" (fields here: {', '.join(known)})" if known else ""))
        parts = msg.split("\n")
        if loc and all(part.startswith("params.") for part in parts):  # knob problems of one loss
            lines.extend(f"{loc}.{part}" for part in parts)
        else:
            lines.append(f"{loc}: {msg}" if loc else msg)
    return lines


def parse_spec(raw: dict[str, Any], source: str = "spec") -> SweepSpec:
    """Returns the typed spec for a parsed YAML mapping; raises SpecError listing every structural problem."""
    if not isinstance(raw, dict):
        raise SpecError(["the file must hold a YAML mapping with name, data, losses, ..."], source)
    try:
        data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
        classes = data.get("classes") or GI_CLASSES
        return SweepSpec.model_validate(raw, context={"classes": tuple(classes)})
    except ValidationError as err:
        raise SpecError(_format_pydantic(err), source) from None


def load_spec(path: str | Path, *, check_files: bool = True) -> SweepSpec:
    """Returns the validated spec in a YAML file; raises SpecError naming every problem and its fix."""
    path = Path(path)
    if not path.is_file():
        raise SpecError([f"no such file: {path}"], str(path))
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SpecError([f"not valid YAML: {err}"], str(path)) from None
    spec = parse_spec(raw, str(path))
    if check_files:
        for field in ("root", "split_file"):  # relative paths are taken from the spec's folder
            value = getattr(spec.data, field)
            if value is not None and not Path(value).expanduser().is_absolute():
                setattr(spec.data, field, (path.parent / value).resolve())
        from sweeper.preflight import spec_problems

        problems = spec_problems(spec)
        if problems:
            raise SpecError(problems, str(path))
    return spec


def dump_spec(spec: SweepSpec) -> str:
    """Returns the spec as YAML (the frozen copy stored with the sweep)."""
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
