"""The sweep spec: the one typed object through which configuration enters Sweeper.

A YAML file is parsed into :class:`SweepSpec` (pydantic). Structural and range errors are all
collected at once by pydantic; :func:`sweeper.preflight.spec_problems` adds the checks that need the
file system (data root, number of patients vs folds). :func:`load_spec` runs both and raises :class:`SpecError`
listing every problem, each naming the field and the fix, before Ray starts.

The checks against the loss and model registries import torch (the registries are torch modules), so
they happen inside the validators: importing this module costs no torch, and ``parse_spec(...,
registry=False)`` re-reads a spec a launch already validated (the sweep's frozen ``spec.yaml``) without
them, as the read-only commands do.

References (defaults marked "seed 000" are paper 000's setup):

- paper 000: Hassan M., Iqbal M. J., Ilyas M., Rafique M. A., Husnain E. "Loss function analysis for
  class-imbalanced multi-organ segmentation of the gastrointestinal tract in MRI." 2026.
  doi:10.5281/zenodo.20729853
- paper 002: "CALF: a conditionally adaptive loss function to mitigate class-imbalanced
  segmentation." Anonymised MICCAI submission (authors and year not given).
- paper 003: Furtado P. "Investigation of loss functions for improving deep segmentation of
  abdominal organs from MRI." University of Coimbra, undated manuscript; related published study:
  Furtado P. "Testing segmentation popular loss and variations in three multiclass medical imaging
  problems." J. Imaging 7(2):16, 2021. doi:10.3390/jimaging7020016
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from trainables.contract import GI_CLASSES, AdamWSettings, Heads, OptimizerSettings, TrainingSettings
from trainables.data.formats import ADAPTERS, FormatOptions

if TYPE_CHECKING:
    from trainables.losses import Knob, KnobPlan


class SpecError(ValueError):
    """Raised with every problem of a spec at once; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str], source: str = "spec"):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s):\n{lines}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IntensitySpec(_Strict):
    """How raw intensities become [0, 1] (trainables.data.intensity)."""

    mode: Literal["slice_minmax", "volume_minmax", "slice_zscore", "volume_zscore", "window"] = Field(
        "slice_minmax",
        description="slice_minmax (paper 000), volume_minmax, slice/volume_zscore "
        "(clipped to +-3 sd, mapped to [0, 1]), window (CT: window_center/width in HU)",
    )
    window_center: float | None = Field(None, description="window mode: centre in HU, e.g. 40 (abdomen)")
    window_width: float | None = Field(None, gt=0, description="window mode: width in HU, e.g. 400")
    clip_percentiles: tuple[float, float] | None = Field(
        None, description="clip to these percentiles first, e.g. [0.5, 99.5]"
    )

    @model_validator(mode="after")
    def _check(self) -> IntensitySpec:
        if self.mode == "window" and (self.window_center is None or self.window_width is None):
            raise ValueError("data.intensity: mode window needs window_center and window_width, e.g. 40 and 400")
        if self.clip_percentiles is not None and not 0 <= self.clip_percentiles[0] < self.clip_percentiles[1] <= 100:
            raise ValueError("data.intensity.clip_percentiles: give [lo, hi] with 0 <= lo < hi <= 100")
        return self

    @property
    def window(self) -> tuple[float, float] | None:
        return (self.window_center, self.window_width) if self.mode == "window" else None


class DataSpec(_Strict):
    """Where the images come from and how they are prepared (seed 000 defaults).

    Each format's own options sit under ``data.<format>`` (``data.nifti: {images: ...}``). They are
    declared once, by the format's adapter (its ``Options`` model, found through the registry
    ``trainables.data.formats.ADAPTERS``): :meth:`_format_sections` validates each section given with
    it and fills the section of ``data.format`` with the adapter's defaults when it is left out.
    """

    model_config = ConfigDict(extra="allow")  # the data.<format> sections, checked by _format_sections

    format: str = Field(
        "uwmgi", description="a registered data format (README 'Data formats'), e.g. uwmgi, synthetic, nifti"
    )
    root: Path | None = Field(
        None,
        description="the data set folder as it comes from its source "
        "(a generated format such as synthetic: where to write, default SWEEP_DIR/data)",
    )
    label_mode: Literal["multilabel", "multiclass"] = Field(
        "multilabel",
        description="multilabel: one sigmoid channel per class, may overlap; multiclass: softmax "
        "with background channel 0 added before classes (classes lists the foreground only)",
    )
    label_values: dict[int, str | list[str]] | None = Field(
        None,
        description="label value / grey level -> class (or list of classes, multilabel regions); "
        "default nifti {1: classes[0], 2: ...}, dicom {63: classes[0], 126: ...}, image_folder: mask >= threshold",
    )
    intensity: IntensitySpec = Field(default_factory=IntensitySpec)
    target_spacing: list[float] | None = Field(
        None,
        min_length=2,
        max_length=3,
        description="resample to [row, column] or [slice, row, column] mm, then centre-crop/pad to image_size",
    )
    split_file: Path | None = Field(
        None,
        description="YAML/JSON {fold: [validation patient ids]} (paper splits); unlisted patients train in every fold",
    )
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

    @classmethod
    def section_models(cls) -> dict[str, type[FormatOptions]]:
        """Returns ``{format: its options model}``: the ``data.<format>`` sections a spec may hold."""
        return {name: adapter.Options for name, adapter in ADAPTERS.items()}

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in ADAPTERS:
            raise ValueError(f"unknown data format {value!r}; choose from {', '.join(map(repr, ADAPTERS))}")
        return value

    @model_validator(mode="after")
    def _check(self) -> DataSpec:
        if self.roi_ratios is not None and (not self.roi_ratios or any(r <= 0 for r in self.roi_ratios)):
            raise ValueError("data.roi_ratios: give positive ratios, e.g. [0.409, 0.1], or leave it out")
        if self.root is None and not ADAPTERS[self.format].generates_data:
            raise ValueError(
                f"data.root is required for format {self.format}: give the data set folder "
                "(for uwmgi the one holding train.csv)"
            )
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

    @model_validator(mode="wrap")
    @classmethod
    def _format_sections(cls, raw: Any, handler: ModelWrapValidatorHandler[DataSpec]) -> DataSpec:
        """Validates each ``data.<format>`` section with its adapter's options model, together with the other
        fields (every problem at once, each at its own location); an unknown key is an unknown field.
        Declared after ``_check`` so that ``handler`` runs it too."""
        if not isinstance(raw, dict):
            return handler(raw)
        sections, errors = {}, []
        models = cls.section_models()
        for key, value in raw.items():
            if key in cls.model_fields:
                continue
            if key not in models:
                errors.append({"type": "extra_forbidden", "loc": (key,), "input": value})
                continue
            try:
                sections[key] = models[key].model_validate({} if value is None else value)
            except ValidationError as err:
                errors.extend({**e, "loc": (key, *e["loc"])} for e in err.errors())
        try:
            spec = handler({k: v for k, v in raw.items() if k in cls.model_fields})
        except ValidationError as err:
            errors = [*err.errors(), *errors]
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        sections.setdefault(spec.format, models[spec.format]())
        spec.__pydantic_extra__ = sections
        return spec

    @property
    def options(self) -> FormatOptions:
        """The options of ``data.format`` (its ``data.<format>`` section, defaults filled in)."""
        return self.__pydantic_extra__[self.format]

    def format_options(self) -> dict[str, Any]:
        """The options of data.format for trainables.data.prepare_dataset_cache."""
        return self.options.model_dump()

    @property
    def channel_classes(self) -> list[str]:
        """Model output channels: background first under multiclass."""
        return ["background", *self.classes] if self.label_mode == "multiclass" else list(self.classes)

    @property
    def folds_to_run(self) -> list[int]:
        return list(self.run_folds) if self.run_folds is not None else list(range(self.folds))


class ModelSpec(_Strict):
    """The networks to sweep: architectures x encoders, or a list of ``arch/encoder`` pairs; one network or one
    binary network per class (``heads``). Names: ``sweeper`` README, "Architectures"."""

    architectures: list[str] = Field(default_factory=lambda: ["unet"], min_length=1)
    encoders: list[str] = Field(default_factory=lambda: ["mit_b2"], min_length=1)
    networks: list[str] | None = Field(
        None,
        min_length=1,
        description="arch/encoder pairs, e.g. [unet/vgg16, fcn/vgg16, deeplabv3/resnet18]: "
        "instead of every architecture with every encoder",
    )
    heads: list[Heads] = Field(
        default_factory=lambda: ["multiclass"],
        min_length=1,
        description="multiclass: one network with a channel per class; uniclass: one binary network per "
        "class, trained in the same trial and read together (paper 003)",
    )
    encoder_weights: str | None = Field(
        None, description="e.g. imagenet; off by default because weights are downloaded at run time"
    )

    @field_validator("networks")
    @classmethod
    def _pairs_written_as_arch_slash_encoder(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        bad = [v for v in value if len(v.split("/")) != 2 or not all(part.strip() for part in v.split("/"))]
        if bad:
            raise ValueError(f"write each network as architecture/encoder, e.g. unet/resnet34, not {bad}")
        pairs = [f"{a.strip().lower()}/{e.strip()}" for a, e in (v.split("/") for v in value)]
        if len(set(pairs)) != len(pairs):
            raise ValueError("a network is listed twice; list it once")
        return pairs

    @field_validator("heads")
    @classmethod
    def _heads_once(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a heads value is listed twice; list it once")
        return value

    def pairs(self) -> list[tuple[str, str]]:
        """Returns the (architecture, encoder) pairs to sweep: ``networks``, else every architecture with
        every encoder."""
        if self.networks is not None:
            return [tuple(n.split("/")) for n in self.networks]
        return list(itertools.product(self.architectures, self.encoders))

    @model_validator(mode="after")
    def _encoders_fit_their_architectures(self, info: ValidationInfo) -> ModelSpec:
        if self.networks is not None and {"architectures", "encoders"} & self.model_fields_set:
            raise ValueError("give model.networks or model.architectures and model.encoders, not both")
        if not _registry_checks(info):
            return self
        from trainables.models import ARCHITECTURES, encoders_of

        problems = []
        for arch, encoder in self.pairs():
            if arch not in ARCHITECTURES:
                problems.append(f"unknown architecture {arch!r} in model.networks; choose from {sorted(ARCHITECTURES)}")
            elif encoder not in encoders_of(arch):
                own = encoders_of(arch)
                takes = own if len(own) < 20 else "smp's encoders"
                problems.append(
                    f"{arch} does not take encoder {encoder!r} (it takes {takes}); "
                    "list the pairs you mean under model.networks, e.g. [unet/resnet34, levit_unet/levit_192]"
                )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @field_validator("architectures")
    @classmethod
    def _known_architectures(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if not _registry_checks(info):
            return [a.lower() for a in value]
        from trainables.models import ARCHITECTURES

        unknown = [a for a in value if a.lower() not in ARCHITECTURES]
        if unknown:
            raise ValueError(f"unknown architecture(s) {unknown}; choose from {sorted(ARCHITECTURES)}")
        return [a.lower() for a in value]

    @field_validator("encoders")
    @classmethod
    def _known_encoders(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if not _registry_checks(info):
            return value
        from trainables.models import known_encoders

        known = known_encoders()
        unknown = [e for e in value if e not in known]
        if unknown:
            close = sorted({k for e in unknown for k in known if k.startswith(e.rstrip("0123456789_-")[:4])})[:12]
            raise ValueError(
                f"unknown encoder(s) {unknown}; use an smp encoder name such as mit_b2 or resnet34"
                + (f" (similar: {close})" if close else "")
                + " -- all names: python -c 'import segmentation_models_pytorch as smp; "
                "print(smp.encoders.get_encoder_names())'"
            )
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


KnobValue = float | list[float] | KnobRange | Literal["search"]


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
        if not _registry_checks(info):
            return self
        try:
            self.space(("class",))
        except (KeyError, ValueError) as err:
            raise ValueError(f"{str(err).strip(chr(34))} (see `sweeper losses`)") from None
        classes = (info.context or {}).get("classes", GI_CLASSES)
        problems = self.check(classes)
        if problems:
            raise ValueError("\n".join(problems))  # _format_pydantic gives each its own line
        return self

    def space(self, classes: Sequence[str]) -> dict[str, Knob]:
        """Returns the loss's flat knob space for these output classes."""
        from trainables.losses import configured_knob_space

        return configured_knob_space(self.name, classes)

    def expanded_params(self, classes: Sequence[str]) -> dict[str, Any]:
        """Returns ``params`` with per-class shorthands (``gamma: 2`` or ``gamma: [1, 2, 3]``) expanded
        to one entry per class (``gamma.<class>``); raises ValueError naming a bad key."""
        from trainables.losses import expand_params

        out, problems = expand_params(self.name, self.params, classes)
        if problems:
            raise ValueError("; ".join(problems))
        return out

    def check(self, classes: Sequence[str]) -> list[str]:
        """Returns the problems of ``params`` against the knob space (each naming ``params.<knob>``)."""
        from trainables.losses import check_params

        return check_params(self.name, self.params, classes)

    def knob_plan(self, classes: Sequence[str]) -> KnobPlan:
        """Returns the fixed knob values and the searched ranges (with their Optuna dimensions)."""
        from trainables.losses import plan_knobs

        return plan_knobs(self.name, self.params, classes)

    def fixed_params(self, classes: Sequence[str]) -> dict[str, float]:
        """Knob values that are not searched: the spec's numbers, else the loss's defaults."""
        return self.knob_plan(classes).fixed

    def searched_params(self, classes: Sequence[str]) -> dict[str, Knob]:
        """Knobs to search, each as a :class:`Knob` carrying the range to search."""
        return self.knob_plan(classes).searched


#: the optimisers ``training.optimizer`` takes, and their settings' validator
OPTIMIZER_NAMES = ("adamw", "adam", "sgd")
_OPTIMIZER = TypeAdapter(OptimizerSettings)

#: the range ``training.lr: search`` searches (log scale)
LR_SEARCH_RANGE = (1e-5, 1e-2)

#: how each searchable training setting is named among the Optuna parameters (``training.lr``)
TRAINING_PARAM_PREFIX = "training."


class TrainingSpec(TrainingSettings):
    """Optimisation settings shared by every trial (seed 000 defaults).

    Declared once, in :class:`trainables.contract.TrainingSettings`: the trial reads the same fields
    with the same defaults from its :class:`~trainables.contract.TrialConfig`. Two of them may also be
    configuration dimensions, as loss knobs are: ``lr`` as a list (choices), ``search``
    (:data:`LR_SEARCH_RANGE`, log scale) or ``{low, high, log}`` (log by default), and ``optimizer`` as a
    list of optimisers (``[adam, {name: sgd, nesterov: true}]``). A searched value is part of the
    configuration (``training_params``, its ``config_id``); in grid mode lists are enumerated.
    """

    lr: float | list[float] | KnobRange | Literal["search"] = Field(
        2e-4, description="peak learning rate; a list, search or {low, high, log} makes it a configuration dimension"
    )
    optimizer: OptimizerSettings | list[OptimizerSettings] = Field(
        default_factory=AdamWSettings,
        description="adamw (default), adam or sgd, by name or {name: sgd, momentum: 0.9, nesterov: true}; "
        "a list makes it a configuration dimension",
    )

    @field_validator("lr", mode="before")
    @classmethod
    def _learning_rates(cls, value: Any) -> Any:
        """One clear message for a learning rate that is none of the forms (not one per union member)."""
        if isinstance(value, dict):
            try:
                return KnobRange.model_validate(value)
            except ValidationError as err:
                raise ValueError("; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors())) from None
        if value == "search":
            return value
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise ValueError("give a learning rate (e.g. 2e-4), a list of them, search, or {low, high, log}")
        if any(v <= 0 for v in values):
            raise ValueError("a learning rate must be greater than 0, e.g. 2e-4")
        return [float(v) for v in value] if isinstance(value, list) else float(value)

    @field_validator("optimizer", mode="before")
    @classmethod
    def _optimizers(cls, value: Any) -> Any:
        """Validates an optimiser or a list of them, each problem named once (not once per union member)."""
        items = value if isinstance(value, list) else [value]
        if not items:
            raise ValueError("give one optimizer or a non-empty list of them")
        known = ", ".join(OPTIMIZER_NAMES)
        out = []
        for item in items:
            name = item if isinstance(item, str) else item.get("name") if isinstance(item, dict) else None
            if isinstance(item, BaseModel):
                out.append(item)
                continue
            if name not in OPTIMIZER_NAMES:
                raise ValueError(f"unknown optimizer {name!r}; choose from {known}")
            try:
                out.append(_OPTIMIZER.validate_python(item))
            except ValidationError as err:
                problems = []
                for e in err.errors():
                    where, msg = ".".join(str(x) for x in e["loc"][1:]), e["msg"].removeprefix("Value error, ")
                    problems.append(f"{name}.{where}: {msg}" if where else msg)
                raise ValueError("; ".join(problems)) from None
        if len(set(out)) != len(out):
            raise ValueError("an optimizer is listed twice; list each once")
        return out if isinstance(value, list) else out[0]

    def optimizer_labels(self) -> dict[str, Any]:
        """Returns label -> optimiser settings: the name, or ``name[i]`` when a name is listed several times."""
        choices = self.optimizer if isinstance(self.optimizer, list) else [self.optimizer]
        names = [o.name for o in choices]
        return {(n if names.count(n) == 1 else f"{n}[{i}]"): o for i, (n, o) in enumerate(zip(names, choices))}

    def lr_range(self) -> KnobRange | None:
        """Returns the range ``lr`` searches (``search``: :data:`LR_SEARCH_RANGE`), or None when it is not a range."""
        if self.lr == "search":
            return KnobRange(low=LR_SEARCH_RANGE[0], high=LR_SEARCH_RANGE[1], log=True)
        return self.lr if isinstance(self.lr, KnobRange) else None

    def lr_bounds(self) -> tuple[float, float]:
        """Returns the lowest and highest learning rate any configuration may train with (for cross-field
        checks such as ``min_lr`` against ``lr``, whatever form ``lr`` takes)."""
        lr_range = self.lr_range()
        if lr_range is not None:
            return lr_range.low, lr_range.high
        values = self.lr if isinstance(self.lr, list) else [self.lr]
        return min(values), max(values)

    def choices(self) -> dict[str, list[Any]]:
        """Returns the training settings listed as choices, ``{setting: [values]}`` (grid: each enumerated)."""
        out: dict[str, list[Any]] = {}
        if isinstance(self.lr, list):
            out["lr"] = [float(v) for v in self.lr]
        if isinstance(self.optimizer, list):
            out["optimizer"] = list(self.optimizer_labels())
        return out

    def training_params(self, chosen: dict[str, Any]) -> dict[str, Any]:
        """Returns a configuration's ``training_params`` from the values chosen for the searched settings
        (an optimiser by its label), as the trial reads them (``{lr: 0.001, optimizer: {name: sgd, ...}}``)."""
        out = dict(chosen)
        if "optimizer" in out:
            out["optimizer"] = self.optimizer_labels()[out["optimizer"]].model_dump(mode="json")
        if "lr" in out:
            out["lr"] = float(out["lr"])
        return dict(sorted(out.items()))

    def shared_settings(self) -> dict[str, Any]:
        """Returns the settings every trial shares, as :class:`~trainables.contract.TrainingSettings` takes them;
        a searched setting holds a stand-in (the first choice, the range's low end) that each configuration's
        ``training_params`` replaces."""
        values = dict(self)
        lr_range = self.lr_range()
        if lr_range is not None:
            values["lr"] = lr_range.low
        elif isinstance(self.lr, list):
            values["lr"] = self.lr[0]
        if isinstance(self.optimizer, list):
            values["optimizer"] = self.optimizer[0]
        return values

    def searched(self) -> bool:
        """True when a training setting is a configuration dimension."""
        return bool(self.choices()) or self.lr_range() is not None

    def grid(self) -> list[dict[str, Any]]:
        """Every combination of the listed training choices (one empty entry when none is listed)."""
        choices = self.choices()
        return [dict(zip(choices, values)) for values in itertools.product(*choices.values())]


class Objective(_Strict):
    """One objective of the search. ``direction`` left out is taken from the metric: ``minimize`` for the
    lower-is-better metrics (``hd95``, ``mae``, ``pooled_mae``, per class too), ``maximize`` for the rest;
    a direction given against the metric's sense is refused."""

    metric: str = Field(description="a reported metric, e.g. sensitivity or precision.small_bowel")
    direction: Literal["maximize", "minimize"] | None = Field(
        None, description="default: minimize for hd95, mae, pooled_mae (lower is better), maximize otherwise"
    )

    @model_validator(mode="after")
    def _direction_of_metric(self) -> Objective:
        lower = lower_is_better(self.metric)
        if self.direction is None:
            self.direction = "minimize" if lower else "maximize"
        elif (self.direction == "minimize") != lower:
            sense = "lower" if lower else "higher"
            raise ValueError(
                f"direction {self.direction} for {self.metric!r}, whose {sense} values are better: the search "
                f"would look for the worst models; use direction {'minimize' if lower else 'maximize'} or leave "
                "direction out (it follows the metric)"
            )
        return self


class FoldPruningSpec(_Strict):
    """Fold-level successive halving (README "Pruning"): a configuration first runs ``min_folds`` folds and
    runs more only while it ranks in the top ``1/eta`` of the configurations that reached as many folds."""

    min_folds: int = Field(1, ge=1, description="folds every configuration runs before it can be pruned")
    eta: float = Field(3.0, gt=1, description="keep the top 1/eta at each rung (min_folds x eta^k folds)")


class PruningSpec(_Strict):
    folds: FoldPruningSpec | None = Field(None, description="fold-level successive halving; default off")


class ConstraintSpec(_Strict):
    """A floor and/or ceiling on a configuration's fold mean, e.g. ``{metric: sensitivity, min: 0.9}``."""

    metric: str = Field(description="a reported metric, e.g. sensitivity or precision.small_bowel")
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bound(self) -> ConstraintSpec:
        if self.min is None and self.max is None:
            raise ValueError(
                f"constraint on {self.metric}: give min, max or both, e.g. {{metric: sensitivity, min: 0.9}}"
            )
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"constraint on {self.metric}: min ({self.min}) is above max ({self.max})")
        return self


class SearchSpec(_Strict):
    """How configurations are chosen: an Optuna search, or a grid of fixed configurations."""

    mode: Literal["optuna", "grid"] = "optuna"
    sampler: Literal["tpe", "nsga2", "random", "gp"] = Field(
        "tpe", description="tpe, nsga2, random or gp (Gaussian process; README 'Choosing a sampler')"
    )
    batch_aware: bool = Field(
        True,
        description="when several trials run at once, TPE treats configurations still running as provisional "
        "results (constant liar) so parallel workers spread out; gp/nsga2/random: no effect",
    )
    budget: int | None = Field(None, ge=1, description="Optuna trials (configurations) to ask; grid: all")
    seed: int = 42
    objectives: list[Objective] = Field(
        default_factory=lambda: [Objective(metric="sensitivity"), Objective(metric="precision")], min_length=1
    )
    pruning: PruningSpec = Field(default_factory=PruningSpec)
    constraints: list[ConstraintSpec] = Field(
        default_factory=list, description="fold-mean floors/ceilings; infeasible configurations leave the front"
    )


class SchedulerSpec(_Strict):
    """How fold trials are scheduled: ``fifo`` (every trial to its last epoch) or ``moasha``, epoch-level
    multi-objective successive halving (README "Pruning")."""

    type: Literal["fifo", "moasha"] = "fifo"
    grace_period: int = Field(1, ge=1, description="moasha: epochs every fold trial runs before it can be stopped")
    reduction_factor: float = Field(3.0, gt=1, description="moasha: keep the top 1/reduction_factor at each rung")


class ResourcesSpec(_Strict):
    """What one trial gets from Ray, and how many run at once."""

    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float = Field(0.0, ge=0, description="fractions pack trials on one GPU, e.g. 0.5")
    max_concurrent: int | None = Field(None, ge=1, description="cap on trials running at once")
    max_failures: int = Field(1, ge=0, description="retries of a failing trial from its last checkpoint")
    reuse_actors: bool = Field(
        True,
        description="an ended trial's worker process runs the next trial with the same resources instead of "
        "a new process starting (Ray Tune's reuse_actors); false: a fresh process per trial",
    )

    @field_validator("gpus_per_trial")
    @classmethod
    def _whole_above_one(cls, value: float) -> float:
        if value > 1 and value != int(value):
            raise ValueError(
                f"{value} GPUs: Ray shares a GPU only in fractions below 1; give a fraction "
                f"(e.g. 0.5) or a whole number (e.g. {int(value)})"
            )
        return value


class TrackingSpec(_Strict):
    uri: str | None = Field(None, description="MLflow tracking URI; default sqlite under the results folder")


class EvidenceSpec(_Strict):
    """How the patient-level statistics are computed: the spec's ``evidence:`` section (used by
    :mod:`sweeper.evidence` as ``EvidenceSettings``: the leaderboard's intervals, ``compare``, ``pareto``).

    One histogram grid only: the thresholds the statistics can use are those of the case records,
    whose bins ``training.threshold_bins`` sets (the trial records them); the statistics read the
    bins from the records, so there is no second bins setting here.

    Defaults:
        resamples 2000: Monte Carlo error of a bootstrap 2.5% quantile falls as 1/sqrt(B); 1000 to
            2000 resamples are the usual recommendation for 95% intervals (Efron & Tibshirani, An
            Introduction to the Bootstrap, Chapman & Hall, 1993; Carpenter & Bithell, Bootstrap
            confidence intervals: when, which, what?, Statistics in Medicine 19(9):1141-1164, 2000,
            DOI 10.1002/(SICI)1097-0258(20000515)19:9<1141::AID-SIM479>3.0.CO;2-F), and BCa needs
            the upper end of that range.
        method "bca": bias-corrected and accelerated percentile interval (Efron, Better bootstrap
            confidence intervals, JASA 82(397), 1987, DOI 10.1080/01621459.1987.10478410):
            second-order accurate, unlike the percentile interval, and like it stays inside the
            metric's range; it corrects the skew of ratio estimators near 1 (Dice of a good model).
        min_patients 50: below about 50 cases the coverage of intervals for a mean can fail (Andre
            et al., Some hidden traps of confidence intervals in medical image segmentation:
            coverage issues, MICCAI 2025 workshops (BRIDGE), LNCS, pp. 15-24); fewer patients are
            flagged (``few_patients``), not refused.
        paired_test "wilcoxon": continuous p-values (normal approximation above 50 patients, exact
            below), so that Holm's correction over all pairs of a large sweep can still reject;
            a permutation p-value cannot fall below 1 / (resamples + 1).
    """

    resamples: int = Field(2000, ge=100, le=200_000, description="patient resamples (bootstrap and permutation)")
    method: Literal["bca", "percentile"] = Field("bca", description="bootstrap interval method")
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="interval level; 1 - confidence is the tests' alpha")
    min_patients: int = Field(50, ge=2, description="fewer validated patients than this are flagged (few_patients)")
    seed: int = Field(0, description="seed of the patient resamples")
    paired_test: Literal["wilcoxon", "permutation"] = Field(
        "wilcoxon", description="test of a paired comparison on patient-level scores"
    )
    matched_sensitivity: tuple[float, ...] = Field(
        (0.8, 0.9, 0.95), description="sensitivities at which precision is compared across configurations"
    )

    @model_validator(mode="before")
    @classmethod
    def _bins_live_in_training(cls, data: Any) -> Any:
        if isinstance(data, dict) and "threshold_bins" in data:
            raise ValueError(
                "threshold_bins is set under training (training.threshold_bins): the trials record their "
                "histograms with it and the statistics read the bins from the records"
            )
        return data

    @field_validator("matched_sensitivity")
    @classmethod
    def _in_unit_interval(cls, values: tuple[float, ...]) -> tuple[float, ...]:
        bad = [v for v in values if not 0 < v <= 1]
        if bad:
            raise ValueError(f"matched sensitivities must be in (0, 1] but got {bad}")
        return values

    @property
    def alpha(self) -> float:
        """Significance level of the tests, 1 - confidence."""
        return 1.0 - self.confidence


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
        return (
            f"unknown URI scheme {scheme + '://'!r} in {text!r}; give a local or NFS path (e.g. /mnt/shared/sweeps) "
            f"or an object-store URI Ray Tune can write to: {', '.join(s + '://' for s in STORAGE_SCHEMES)}"
        )
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
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    evidence: EvidenceSpec = Field(default_factory=EvidenceSpec)
    storage: str | None = Field(
        None,
        description="where trials' shared files go: a local or NFS path (Tune storage, data cache and "
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
    def _cross_checks(self, info: ValidationInfo) -> SweepSpec:
        problems = []
        classes = self.data.classes
        registry = _registry_checks(info)
        entries = [(loss.name, repr(sorted(loss.params.items()))) for loss in self.losses]
        if len(set(entries)) != len(entries):
            problems.append("losses: the same loss with the same params is listed twice; list it once")
        names = [loss.name for loss in self.losses]
        if self.search.mode == "optuna" and len(set(names)) != len(names):
            problems.append(
                "losses: search.mode optuna lists each loss once; search its knobs instead "
                "(several fixed settings of one loss are for search.mode grid)"
            )
        if self.search.mode == "grid":
            searched = (
                [f"losses.{i}.params.{k}" for i, loss in enumerate(self.losses) for k in loss.searched_params(classes)]
                if registry
                else []
            )
            if searched:
                problems.append(
                    f"search.mode grid needs fixed knob values, but {searched} are ranges; "
                    "give numbers or use search.mode optuna"
                )
            if self.training.lr_range() is not None:
                problems.append(
                    "training.lr: search.mode grid needs fixed learning rates; give a number or a list "
                    "of them, or use search.mode optuna"
                )
        elif self.search.budget is None:
            problems.append("search.budget is required for search.mode optuna: the number of configurations to try")
        if registry:
            problems.extend(self._metric_problems())
        problems.extend(self._pruning_problems())
        problems.extend(semantic_problems(self, registry=registry))
        if problems:
            raise ValueError("\n".join(problems))  # _format_pydantic gives each its own line
        return self

    def _pruning_problems(self) -> list[str]:
        """Returns what makes fold halving or the epoch scheduler impossible with this many folds and epochs."""
        problems = []
        folds = self.search.pruning.folds
        if folds is not None and folds.min_folds >= len(self.data.folds_to_run):
            problems.append(
                f"search.pruning.folds.min_folds ({folds.min_folds}) must be below the folds to run "
                f"({len(self.data.folds_to_run)}); lower it or leave search.pruning.folds out"
            )
        if self.scheduler.type == "moasha" and self.scheduler.grace_period >= self.training.epochs:
            problems.append(
                f"scheduler.grace_period ({self.scheduler.grace_period}) must be below training.epochs "
                f"({self.training.epochs}); lower it or use scheduler.type fifo"
            )
        if self.scheduler.type == "moasha" and self.training.checkpoint_every > 1:
            problems.append(
                f"training.checkpoint_every ({self.training.checkpoint_every}) must be 1 with scheduler.type "
                "moasha: a trial it stops keeps the checkpoint of its last epoch (best weights and case "
                "records); set it to 1 or use scheduler.type fifo"
            )
        return problems

    def _metric_problems(self) -> list[str]:
        """Returns the objectives and select_metric that name no reported metric (needs trainables.metrics)."""
        problems = []
        reported = (
            ("background", *self.data.classes)
            if (self.data.label_mode == "multiclass" and self.training.include_background)
            else self.data.classes
        )
        valid = metric_names(reported, boundary=self.training.boundary_metrics)
        for i, obj in enumerate(self.search.objectives):
            if obj.metric not in valid:
                problems.append(
                    f"search.objectives.{i}.metric: unknown metric {obj.metric!r}; choose from {sorted(valid)}"
                )
        for i, constraint in enumerate(self.search.constraints):
            if constraint.metric not in valid:
                problems.append(
                    f"search.constraints.{i}.metric: unknown metric {constraint.metric!r}; choose from {sorted(valid)}"
                )
        if self.training.select_metric not in valid:
            problems.append(
                f"training.select_metric: unknown metric {self.training.select_metric!r}; choose from {sorted(valid)}"
            )
        return problems

    def loss_labels(self) -> dict[str, LossSpec]:
        """Returns label -> loss entry: the loss name, or ``name[i]`` when a loss is listed several times."""
        names = [loss.name for loss in self.losses]
        return {
            (name if names.count(name) == 1 else f"{name}[{i}]"): loss
            for i, (name, loss) in enumerate(zip(names, self.losses))
        }

    def planned_configurations(self) -> int:
        """Returns how many configurations the sweep plans: the grid's size (networks x heads x loss
        entries x ROI ratios), or the Optuna budget (an upper bound: a configuration proposed twice is
        trained once). Needs no loss registry, so read-only commands can ask it."""
        if self.search.mode == "grid":
            return (
                len(self.model.pairs())
                * len(self.model.heads)
                * len(self.losses)
                * len(self.data.roi_ratios or [None])
                * len(self.training.grid())
            )
        return int(self.search.budget)

    def planned_fold_trials(self) -> int:
        """Returns how many fold trials the sweep plans at most: configurations x folds to run x repeats."""
        return self.planned_configurations() * len(self.data.folds_to_run) * self.training.repeats

    def grid(self) -> list[dict[str, Any]]:
        """Every fixed configuration (grid mode): network (architecture, encoder) x heads x loss x ROI ratio x
        listed training choices (``training``: ``{lr: 0.001, optimizer: sgd}``, the optimiser by its label)."""
        return [
            {
                "arch": arch,
                "encoder": enc,
                "heads": heads,
                "loss": loss.name,
                "loss_params": loss.fixed_params(self.data.classes),
                "roi_ratio": ratio,
                "loss_label": label,
                "training": chosen,
            }
            for (arch, enc), heads, (label, loss), ratio, chosen in itertools.product(
                self.model.pairs(),
                self.model.heads,
                self.loss_labels().items(),
                self.data.roi_ratios or [None],
                self.training.grid(),
            )
        ]


def _registry_checks(info: ValidationInfo) -> bool:
    """False when the spec is parsed with ``registry=False`` (no loss/model registry checks, no torch)."""
    return (info.context or {}).get("registry", True)


# -- semantic checks: what pydantic's per-field types cannot see (README "Bad input") ----------------------
#: metrics whose lower values are better (the same set as trainables.metrics.LOWER_IS_BETTER, which a test
#: holds equal; kept here so that reading a spec imports no torch)
LOWER_IS_BETTER = frozenset({"mae", "hd95", "pooled_mae"})
#: MLflow tracking URI schemes: a local store (sqlite, file) or a server / database
TRACKING_SCHEMES = ("sqlite", "file", "http", "https", "postgresql", "mysql", "mssql", "databricks")
#: seeds NumPy, Optuna and the fold assignment accept: 0 .. 2**32 - 1
SEED_RANGE = (0, 2**32 - 1)
#: loss (or compound term) -> knobs that must not all be 0: the loss is then a constant with zero gradient
#: (Tversky index (TP + s) / (TP + alpha FP + beta FN + s) is 1 for every prediction when alpha = beta = 0)
NOT_ALL_ZERO: dict[str, tuple[str, ...]] = {"tversky": ("alpha", "beta"), "focal_tversky": ("alpha", "beta")}


def lower_is_better(metric: str) -> bool:
    """True for a metric (``hd95``, ``hd95.stomach``, ...) whose lower values are better."""
    return metric.split(".")[0] in LOWER_IS_BETTER


def _objective_problems(spec: SweepSpec, registry: bool) -> list[str]:  # noqa: ARG001 - one signature for all
    metrics = [obj.metric for obj in spec.search.objectives]
    twice = sorted({m for m in metrics if metrics.count(m) > 1})
    return [f"search.objectives: {m!r} is listed twice; list each metric once" for m in twice]


def _training_problems(spec: SweepSpec, registry: bool) -> list[str]:  # noqa: ARG001
    t = spec.training
    if isinstance(t.min_lr, (int, float)) and t.min_lr > (low := t.lr_bounds()[0]):
        return [
            f"training.min_lr ({t.min_lr:g}) is above training.lr ({low:g}): the cosine schedule would raise the "
            "learning rate; give min_lr at most lr (e.g. lr / 100)"
        ]
    return []


def _seed_problems(spec: SweepSpec, registry: bool) -> list[str]:  # noqa: ARG001
    low, high = SEED_RANGE
    seeds = {
        "search.seed": spec.search.seed,
        "training.seed": spec.training.seed,
        "data.fold_seed": spec.data.fold_seed,
    }
    return [
        f"{field}: {value} is not a usable seed; give a whole number from {low} to {high}"
        for field, value in seeds.items()
        if not low <= value <= high
    ]


def _data_problems(spec: SweepSpec, registry: bool) -> list[str]:  # noqa: ARG001
    data, problems = spec.data, []
    if not data.classes:
        problems.append("data.classes is empty; list the classes to segment, e.g. [large_bowel, small_bowel, stomach]")
    twice = sorted({c for c in data.classes if data.classes.count(c) > 1})
    if twice:
        problems.append(f"data.classes lists {twice} twice; list each class once")
    if data.run_folds is not None and not data.run_folds:
        problems.append("data.run_folds is empty: nothing would train; list folds (e.g. [0]) or leave it out (all)")
    if data.roi_ratios and len(set(data.roi_ratios)) != len(data.roi_ratios):
        problems.append("data.roi_ratios lists a ratio twice; list each once")
    others = sorted(k for k in data.__pydantic_extra__ if k != data.format)
    problems.extend(
        f"data.{k}: options of format {k}, but data.format is {data.format}; remove the section or set data.format: {k}"
        for k in others
    )
    intensity = data.intensity
    if intensity.mode != "window":
        given = [f for f in ("window_center", "window_width") if getattr(intensity, f) is not None]
        problems.extend(
            f"data.intensity.{f} applies only to mode window (mode is {intensity.mode}); remove it or set "
            "data.intensity.mode: window"
            for f in given
        )
    return problems


def _name_problems(spec: SweepSpec, registry: bool) -> list[str]:  # noqa: ARG001
    """A sweep name that is the name of the results root's MLflow store: the two would share one path."""
    from sweeper.paths import MLFLOW_ARTIFACTS, MLFLOW_DB

    if spec.name in (MLFLOW_DB, MLFLOW_ARTIFACTS):
        return [
            f"name: {spec.name!r} is the results folder's MLflow store ({MLFLOW_DB}, {MLFLOW_ARTIFACTS}/); "
            "choose another name"
        ]
    return []


def _mode_problems(spec: SweepSpec, registry: bool) -> list[str]:  # noqa: ARG001
    """Settings given where they do nothing: they would be ignored without a word."""
    problems = []
    if spec.data.label_mode == "multilabel":
        defaults = TrainingSettings.model_fields  # a frozen spec.yaml gives every field: compare with the default
        given = [
            f
            for f in ("include_background", "loss_include_background")
            if getattr(spec.training, f) != defaults[f].default
        ]
        problems.extend(
            f"training.{f} applies only to data.label_mode multiclass (a multilabel model has no background "
            "channel); remove it, or set data.label_mode: multiclass"
            for f in given
        )
    if spec.search.mode == "grid" and spec.search.budget is not None:
        problems.append(
            f"search.budget applies to search.mode optuna; a grid runs every configuration "
            f"({spec.planned_configurations()} here): remove budget, or use search.mode optuna"
        )
    return problems


def _degenerate_loss_problems(spec: SweepSpec, registry: bool) -> list[str]:
    if not registry:
        return []
    problems = []
    for i, loss in enumerate(spec.losses):
        fixed = loss.fixed_params(spec.data.classes)
        searched = loss.searched_params(spec.data.classes)
        for key in fixed:
            prefix, _, _ = key.rpartition(".")
            term = prefix or loss.name
            knobs = NOT_ALL_ZERO.get(term)
            if not knobs or key != (f"{prefix}.{knobs[0]}" if prefix else knobs[0]):
                continue
            names = [f"{prefix}.{k}" if prefix else k for k in knobs]
            if all(n in fixed and n not in searched and fixed[n] == 0 for n in names):
                problems.append(
                    f"losses.{i}.params: {' and '.join(names)} are all 0, so {term} is constant (zero loss, "
                    "zero gradient); give at least one a positive value (e.g. alpha 0.3, beta 0.7)"
                )
    return problems


def _encoder_weight_problems(spec: SweepSpec, registry: bool) -> list[str]:
    weights = spec.model.encoder_weights
    if not registry or weights is None:
        return []
    from trainables.models import encoder_weight_names

    problems = []
    for encoder in spec.model.encoders:
        known = encoder_weight_names(encoder)
        if known is not None and weights not in known:
            problems.append(
                f"model.encoder_weights: {weights!r} is not a weight set smp has for encoder {encoder}; "
                f"choose from {known} or leave it out (random initialisation)"
            )
    return problems


def tracking_uri_problem(uri: str | None, field: str = "tracking.uri") -> str | None:
    """Returns what is wrong with an MLflow tracking URI (it needs a known scheme), or None."""
    if not uri:
        return None
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else None
    if scheme in TRACKING_SCHEMES:
        return None
    why = f"unknown scheme {scheme + '://'!r}" if scheme else "no scheme"
    return (
        f"{field}: {uri!r} has {why}; give http://HOST:PORT for an MLflow server (e.g. http://localhost:5000), "
        "sqlite:///PATH/mlflow.db for a local store, or leave it out (RESULTS/mlflow.db)"
    )


def _tracking_problems(spec: SweepSpec, registry: bool) -> list[str]:  # noqa: ARG001
    problem = tracking_uri_problem(spec.tracking.uri)
    return [problem] if problem else []


def semantic_problems(spec: SweepSpec, *, registry: bool = True) -> list[str]:
    """Returns the problems of a parsed spec that no single field shows (README "Bad input"): each of
    :data:`SEMANTIC_CHECKS`, one line per problem naming its field and the fix; empty when none."""
    return [problem for check in SEMANTIC_CHECKS for problem in check(spec, registry)]


#: every semantic check of a parsed spec; each returns one line per problem, naming the field and the fix
SEMANTIC_CHECKS = (
    _objective_problems,
    _training_problems,
    _seed_problems,
    _name_problems,
    _data_problems,
    _mode_problems,
    _degenerate_loss_problems,
    _encoder_weight_problems,
    _tracking_problems,
)


def metric_names(classes: tuple[str, ...], boundary: bool = True) -> set[str]:
    """Names a spec may use for objectives and best-epoch selection: every reported validation metric."""
    from trainables.metrics import metric_keys

    return set(metric_keys(classes, boundary=boundary, gi_score=boundary))


def _known_fields(loc: tuple) -> list[str]:
    """Returns the field names of the spec section at ``loc`` (the parent of an unknown field), or []
    (a section with ``section_models``, such as ``data``, also holds the sections it names)."""
    model: Any = SweepSpec
    for part in loc:
        if isinstance(part, int) or not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            model = _sections(model).get(str(part))
            if model is None:
                return []
            continue
        model = field.annotation
        while getattr(model, "__args__", None) and not (isinstance(model, type) and issubclass(model, BaseModel)):
            model = next((a for a in model.__args__ if isinstance(a, type) and issubclass(a, BaseModel)), None)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return []
    return sorted({*model.model_fields, *_sections(model)})


def _sections(model: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """Returns the named sub-sections a model takes besides its fields (``DataSpec``: one per data format)."""
    return model.section_models() if hasattr(model, "section_models") else {}


#: a union member's tag in a pydantic error location (``float``, ``list[float]``, ``KnobRange``,
#: ``literal['search']``): never a field name, which is lower-case snake case
_MEMBER_TAG = re.compile(
    r"^(float|int|str|bool|none|(list|dict|tuple|set|literal)\[.*\]|[A-Z]\w*|function-(after|before|wrap)\[.*\])$"
)
#: what a union member accepts, in the user's words
_MEMBER_WORDS = {"float": "a number", "int": "a whole number", "str": "a text", "bool": "true or false"}


def _member_words(tag: str) -> str:
    if tag in _MEMBER_WORDS:
        return _MEMBER_WORDS[tag]
    if tag.startswith("list["):
        return "a list"
    if tag.startswith("dict["):
        return "a mapping"
    if tag.startswith("literal["):
        return tag.removeprefix("literal[").removesuffix("]").replace(",", " or")
    if "KnobRange" in tag:
        return "{low, high}"
    return "a mapping"


def _format_pydantic(error: ValidationError) -> list[str]:
    """Returns one line per problem, ``field.path: what is wrong; the fix``, without pydantic's internals: a
    value that fails every member of a union (``alpha: abc``) is one line listing what the field accepts,
    unless one member explains the value better (a value error, or the errors inside the mapping given)."""
    lines = []
    items = error.errors()

    def where(item: dict) -> tuple:
        return tuple(str(p) for p in item["loc"] if not str(p).startswith("union") and not _MEMBER_TAG.match(str(p)))

    def member(item: dict) -> str | None:
        return next((str(p) for p in item["loc"] if _MEMBER_TAG.match(str(p))), None)

    def at_member(item: dict) -> bool:  # the value failed a union member as a whole (not inside it)
        return bool(_MEMBER_TAG.match(str(item["loc"][-1]))) if item["loc"] else False

    # a union explained by one member: its value error, or the errors inside the mapping/list given
    explained = {where(item) for item in items if item["type"] == "value_error"}
    explained |= {
        where(item)[:n] for item in items if member(item) and not at_member(item) for n in range(len(where(item)))
    }
    kept, unions = [], {}
    for item in items:
        if item["type"] not in ("value_error", "extra_forbidden") and at_member(item):
            if where(item) not in explained:
                unions.setdefault(where(item), []).append(item)
        else:
            kept.append(item)
    for loc, members in unions.items():
        if len(members) == 1:
            kept.append(members[0])
            continue
        accepted = list(dict.fromkeys(_member_words(member(m)) for m in members))
        value = members[0]["input"]
        lines.append(
            f"{'.'.join(loc)}: {value!r} is not accepted here; give {', '.join(accepted[:-1])} or {accepted[-1]}"
        )
    for item in kept:
        loc = ".".join(where(item))
        msg = re.sub(r" or instance of \w+", "", item["msg"].removeprefix("Value error, "))
        if item["type"] == "extra_forbidden":
            known = _known_fields(item["loc"][:-1])
            msg = "unknown field; remove it or fix its spelling" + (
                f" (fields here: {', '.join(known)})" if known else ""
            )
        parts = msg.split("\n")
        if loc and all(part.startswith("params.") for part in parts):  # knob problems of one loss
            lines.extend(f"{loc}.{part}" for part in parts)
        elif not loc:  # the spec's cross-field checks: each line names its own field
            lines.extend(parts)
        else:
            lines.extend(f"{loc}: {part}" for part in parts)
    return lines


def parse_spec(raw: dict[str, Any], source: str = "spec", *, registry: bool = True) -> SweepSpec:
    """Returns the typed spec for a parsed YAML mapping; raises SpecError listing every structural problem.

    ``registry=False`` skips the checks against the loss, model and metric registries (they import
    torch): for re-reading a spec that a launch already validated, such as a sweep's ``spec.yaml``."""
    if not isinstance(raw, dict):
        raise SpecError(["the file must hold a YAML mapping with name, data, losses, ..."], source)
    try:
        data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
        classes = data.get("classes") or GI_CLASSES
        return SweepSpec.model_validate(raw, context={"classes": tuple(classes), "registry": registry})
    except ValidationError as err:
        raise SpecError(_format_pydantic(err), source) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last silently:
    a ``training:`` section given twice would lose the first block)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} is given twice (lines {seen[key]} and {line}); the second would silently replace "
                    "the first: merge them into one",
                    key_node.start_mark,
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_yaml(text: str) -> Any:
    """Returns the YAML document in ``text`` (safe types only); raises ``yaml.YAMLError`` for a key given twice."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def load_spec(path: str | Path, *, check_files: bool = True) -> SweepSpec:
    """Returns the validated spec in a YAML file; raises SpecError naming every problem and its fix."""
    path = Path(path)
    if path.is_dir():
        raise SpecError([f"{path} is a folder; give the spec's YAML file (e.g. {path}/spec.yaml)"], str(path))
    if not path.is_file():
        raise SpecError([f"no such file: {path}; give the path of a spec YAML file"], str(path))
    try:
        raw = read_yaml(path.read_text())
    except yaml.YAMLError as err:
        raise SpecError([f"not valid YAML: {err}"], str(path)) from None
    except UnicodeDecodeError:
        raise SpecError([f"{path} is not a text file; give the spec's YAML file"], str(path)) from None
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
    """Returns the spec as YAML (the frozen copy stored with the sweep); it parses back to the same spec."""
    raw = spec.model_dump(mode="json")
    if spec.model.networks is not None:  # the pairs replace architectures x encoders: never both in one spec
        raw["model"] = {k: v for k, v in raw["model"].items() if k not in ("architectures", "encoders")}
    return yaml.safe_dump(raw, sort_keys=False)
