"""The loss registry: registry name -> loss class, each class declaring its tunable knobs.

A loss class is an ``nn.Module`` whose ``forward(logits, target)`` returns a scalar, with class
attributes

- ``knobs: ClassVar[dict[str, Knob]]``: the search space; keys are keyword arguments of its
  ``__init__`` with the same defaults. A knob with ``per_class=True`` takes one value per output
  channel (a list, or a scalar broadcast to every channel).
- ``constraints: ClassVar[tuple[SumConstraint, ...]]`` (optional): equalities between knobs,
  e.g. IoU_xy's ``alpha + beta = 2``.
- ``source: ClassVar[str]`` (optional): the paper the formula comes from (authors, year, venue).

Register it with ``@register_loss("name")``; the Optuna search space, the CLI listing and the
trainable all read the registry, never the classes (how a spec's ``params`` become knob values:
:mod:`trainables.losses.knobs`). Besides knobs, :func:`build_loss` passes
the run's context options (``activation``, ``include_background``, ``class_frequencies``,
``foreground_areas``, ``n_classes``) to the constructor of every loss that accepts them by
name; a loss that does not take one simply does not get it.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, TypeVar

from torch import nn

__all__ = [
    "Knob",
    "SumConstraint",
    "LOSSES",
    "CONTEXT_OPTIONS",
    "register_loss",
    "build_loss",
    "loss_knobs",
    "loss_constraints",
    "describe_losses",
]


@dataclass(frozen=True)
class Knob:
    """One tunable float parameter of a loss: its default and the closed range a search may use.

    Args:
        default: value used when a spec does not set the knob.
        low, high: inclusive bounds; ``build_loss`` rejects values outside them.
        log: sample on a log scale in searches (requires ``low > 0``).
        help: one line for the CLI listing.
        per_class: one value per output channel (``build_loss`` takes a list or a scalar that
            is broadcast; :func:`~trainables.losses.knobs.flat_knob_space` expands it to
            ``<knob>.<class>`` entries).
    """

    default: float
    low: float
    high: float
    log: bool = False
    help: str = ""
    per_class: bool = False

    def __post_init__(self) -> None:
        if not all(math.isfinite(v) for v in (self.default, self.low, self.high)):
            raise ValueError(f"Knob bounds and default must be finite: {self}")
        if not self.low <= self.default <= self.high:
            raise ValueError(f"Knob needs low <= default <= high: {self}")
        if self.log and self.low <= 0:
            raise ValueError(f"Knob with log=True needs low > 0: {self}")

    def contains(self, value: float) -> bool:
        """Return whether ``value`` lies in ``[low, high]``."""
        return self.low <= value <= self.high


@dataclass(frozen=True)
class SumConstraint:
    """The knobs named in ``knobs`` must add up to ``total``; searches sample all but the last.

    With two knobs (the only case used so far) the first is searched and the second derived:
    ``second = total - first``. Only scalar knobs may be constrained.
    """

    knobs: tuple[str, ...]
    total: float

    def __post_init__(self) -> None:
        if len(self.knobs) < 2 or len(set(self.knobs)) != len(self.knobs):
            raise ValueError(f"SumConstraint needs at least two distinct knobs: {self}")
        if not math.isfinite(self.total):
            raise ValueError(f"SumConstraint total must be finite: {self}")

    @property
    def derived(self) -> str:
        """Name of the knob computed from the others (the last one)."""
        return self.knobs[-1]

    def holds(self, values: dict[str, float], tol: float = 1e-9) -> bool:
        """Return whether ``values`` (holding every constrained knob) sum to ``total``."""
        return abs(sum(values[k] for k in self.knobs) - self.total) <= tol


LOSSES: dict[str, type[nn.Module]] = {}

# Run context a loss may take besides its knobs; build_loss forwards each to the losses whose
# __init__ has a parameter of that name.
CONTEXT_OPTIONS = ("activation", "include_background", "class_frequencies", "foreground_areas", "n_classes")

_L = TypeVar("_L", bound=type[nn.Module])


def register_loss(name: str) -> Callable[[_L], _L]:
    """Return a class decorator that adds the loss class to :data:`LOSSES` under ``name``.

    Checks at import time that the class declares ``knobs``, has a docstring, that every knob
    is a keyword argument of ``__init__`` whose default equals the knob's default, and that
    every constraint names scalar knobs whose defaults satisfy it.
    """

    def decorator(cls: _L) -> _L:
        if name in LOSSES:
            raise ValueError(f"loss {name!r} is already registered by {LOSSES[name].__qualname__}")
        knobs = getattr(cls, "knobs", None)
        if not isinstance(knobs, dict) or not all(isinstance(k, Knob) for k in knobs.values()):
            raise TypeError(f"loss {name!r}: {cls.__qualname__}.knobs must be a dict[str, Knob]")
        if not (cls.__doc__ or "").strip():
            raise TypeError(f"loss {name!r}: {cls.__qualname__} needs a docstring (formula, source)")
        params = inspect.signature(cls.__init__).parameters
        for knob_name, knob in knobs.items():
            param = params.get(knob_name)
            if param is None or param.default != knob.default:
                raise TypeError(
                    f"loss {name!r}: knob {knob_name!r} must be an __init__ keyword argument "
                    f"with default {knob.default}"
                )
        for constraint in getattr(cls, "constraints", ()):
            if not isinstance(constraint, SumConstraint):
                raise TypeError(f"loss {name!r}: constraints must be SumConstraint, got {constraint!r}")
            for k in constraint.knobs:
                if k not in knobs or knobs[k].per_class:
                    raise TypeError(f"loss {name!r}: constraint {constraint} names {k!r}, not a scalar knob")
            if not constraint.holds({k: knobs[k].default for k in constraint.knobs}):
                raise TypeError(f"loss {name!r}: knob defaults violate {constraint}")
        LOSSES[name] = cls
        return cls

    return decorator


def _loss_class(name: str) -> type[nn.Module]:
    try:
        return LOSSES[name]
    except KeyError:
        raise KeyError(f"unknown loss {name!r}; known losses: {sorted(LOSSES)}") from None


def loss_knobs(name: str) -> dict[str, Knob]:
    """Return the knobs of loss ``name`` (a copy; ``KeyError`` listing known names if unknown)."""
    return dict(_loss_class(name).knobs)


def loss_constraints(name: str) -> tuple[SumConstraint, ...]:
    """Return the knob constraints of loss ``name`` (empty when it has none)."""
    return tuple(getattr(_loss_class(name), "constraints", ()))


def _check_number(name: str, knob_name: str, knob: Knob, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(
            f"loss {name!r}: knob {knob_name!r} must be a finite number in [{knob.low}, {knob.high}], got {value!r}"
        )
    if not knob.contains(value):
        raise ValueError(f"loss {name!r}: knob {knob_name!r}={value} is outside [{knob.low}, {knob.high}]")
    return float(value)


def _check_knob(name: str, knob_name: str, knob: Knob, value: Any, n_classes: int | None) -> Any:
    if knob.per_class and isinstance(value, (list, tuple)):
        if not value:
            raise ValueError(f"loss {name!r}: per-class knob {knob_name!r} got an empty list")
        if n_classes is not None and len(value) != n_classes:
            raise ValueError(
                f"loss {name!r}: per-class knob {knob_name!r} needs {n_classes} values "
                f"(one per output channel), got {len(value)}"
            )
        return [_check_number(name, f"{knob_name}[{i}]", knob, v) for i, v in enumerate(value)]
    return _check_number(name, knob_name, knob, value)


def build_loss(
    name: str,
    *,
    activation: Literal["sigmoid", "softmax"] = "sigmoid",
    include_background: bool = True,
    class_frequencies: Sequence[float] | None = None,
    foreground_areas: Sequence[float] | None = None,
    n_classes: int | None = None,
    **knobs: Any,
) -> nn.Module:
    """Return loss ``name`` built with ``knobs`` (unset knobs take their defaults) and the run context.

    Args:
        name: a registered loss name.
        activation: ``"sigmoid"`` (multi-label, one channel per organ; default) or
            ``"softmax"`` (multi-class, channel 0 = background, one-hot target).
        include_background: ``False`` leaves channel 0 out where a loss supports it (diceBK).
        class_frequencies: training-fold class frequencies (``weighted_ce``).
        foreground_areas: training-fold foreground area per image (``calf``).
        n_classes: number of output channels; checks the length of per-class knob lists.
        knobs: the loss's knobs; a per-class knob takes a list (one value per channel) or a
            scalar. For a :class:`SumConstraint` one knob may be left out (it is then
            ``total - others``); all given, the sum is checked.

    Context options the loss's ``__init__`` does not take are ignored.

    Raises:
        KeyError: unknown loss name (the message lists the known ones).
        ValueError: a knob the loss does not have, a non-numeric or non-finite value, a value
            outside the knob's ``[low, high]``, a per-class list of the wrong length, or a
            violated constraint; the message names the loss, the knob and the range.
    """
    cls = _loss_class(name)
    declared: dict[str, Knob] = cls.knobs
    values: dict[str, Any] = {}
    for knob_name, value in knobs.items():
        knob = declared.get(knob_name)
        if knob is None:
            raise ValueError(f"loss {name!r} has no knob {knob_name!r}; its knobs: {sorted(declared) or 'none'}")
        values[knob_name] = _check_knob(name, knob_name, knob, value, n_classes)
    for constraint in getattr(cls, "constraints", ()):
        missing = [k for k in constraint.knobs if k not in values]
        if len(missing) == 1:  # derive the one left out, whichever it is
            derived = constraint.total - sum(values[k] for k in constraint.knobs if k in values)
            values[missing[0]] = _check_number(name, missing[0], declared[missing[0]], derived)
        elif len(missing) < len(constraint.knobs):
            full = {k: values.get(k, declared[k].default) for k in constraint.knobs}
            if not constraint.holds(full, tol=1e-6):
                raise ValueError(
                    f"loss {name!r}: knobs {' + '.join(constraint.knobs)} must sum to {constraint.total}, "
                    f"got {' + '.join(str(full[k]) for k in constraint.knobs)}"
                )
    context = dict(
        activation=activation,
        include_background=include_background,
        class_frequencies=class_frequencies,
        foreground_areas=foreground_areas,
        n_classes=n_classes,
    )
    params = inspect.signature(cls.__init__).parameters
    kwargs = {k: values.get(k, knob.default) for k, knob in declared.items()}
    kwargs.update({k: v for k, v in context.items() if k in params})
    return cls(**kwargs)


def describe_losses() -> list[dict[str, Any]]:
    """Return one dict per registered loss, sorted by name, for a CLI listing.

    Each dict: ``name``, ``summary`` (first docstring line), ``module`` and ``class`` (where the
    loss is defined, e.g. ``trainables.losses.tversky`` and ``TverskyLoss``), ``source`` (the
    paper, ``""`` if undeclared), ``knobs`` (knob name -> ``{"default", "low", "high",
    "log", "help", "per_class"}``) and ``constraints`` (e.g. ``"alpha + beta = 2.0"``).
    """
    rows = []
    for name in sorted(LOSSES):
        cls = LOSSES[name]
        doc = inspect.getdoc(cls) or ""
        rows.append(
            {
                "name": name,
                "summary": doc.splitlines()[0] if doc else "",
                "module": cls.__module__,
                "class": cls.__qualname__,
                "source": getattr(cls, "source", ""),
                "knobs": {k: asdict(knob) for k, knob in cls.knobs.items()},
                "constraints": [f"{' + '.join(c.knobs)} = {c.total}" for c in getattr(cls, "constraints", ())],
            }
        )
    return rows
