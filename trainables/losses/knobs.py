"""Loss knobs from a spec's ``params`` to the built loss: the one place the expansion lives.

A sweep names a loss by its registered name (``tversky``) or as a weighted sum of registered
losses (``0.5*focal + 0.5*dice``, see :func:`~trainables.losses.compound.parse_compound`) and sets
its knobs in ``params``. Each step below is one function on plain data and the registry's
:class:`~trainables.losses.registry.Knob` and
:class:`~trainables.losses.registry.SumConstraint` declarations:

1. **Flat knob space** (:func:`configured_knob_space`): every scalar a search can vary, keyed
   ``alpha``; a per-class knob once per output class, ``gamma.small_bowel``; inside a weighted sum
   prefixed by the term's loss, ``focal.gamma``, ``pm_dice.gamma.stomach``. A knob that a
   constraint derives (IoU_xy's ``beta = 2 - alpha``) is not in it, and the knob that is searched
   instead has its range narrowed so the derived one stays in its own range.
2. **Spec params -> flat settings** (:func:`expand_params`, :func:`check_params`): a per-class
   shorthand, ``gamma: 2`` or ``gamma: [1, 2, 3]``, becomes one entry per class. Each setting is
   a number (fixed), ``"search"`` (the knob's declared range) or a range with ``low``, ``high``
   and optionally ``log``.
3. **Flat settings -> search plan** (:func:`plan_knobs`): the fixed values (the spec's numbers,
   else the defaults) and the searched knobs; :attr:`KnobPlan.dimensions` are the Optuna
   dimensions, each named ``<loss>.<knob>`` so two losses never share one.
4. **Flat values -> built loss** (:func:`term_knobs`, :func:`build_configured_loss`): per term,
   per-class entries gathered into one list in class order (:func:`assemble_knobs`), derived
   knobs computed, then :func:`~trainables.losses.registry.build_loss` or
   :func:`~trainables.losses.compound.build_compound`.

A configuration stores a loss as ``(name, flat knob values)``: the driver writes it (steps 1-3),
the trial reads it (step 4).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from torch import nn

from .compound import build_compound, parse_compound
from .registry import LOSSES, Knob, build_loss, loss_constraints, loss_knobs

__all__ = [
    "SEARCH",
    "SearchRange",
    "Dimension",
    "KnobPlan",
    "flat_knob_space",
    "assemble_knobs",
    "is_compound",
    "compound_terms",
    "configured_knob_space",
    "derived_knobs",
    "expand_params",
    "check_params",
    "plan_knobs",
    "term_knobs",
    "build_configured_loss",
]

#: the spec value that searches a knob over its declared range
SEARCH = "search"


@runtime_checkable
class SearchRange(Protocol):
    """A search range a spec gives for one knob (``{low, high, log}``); ``log=None``: the knob's own scale."""

    low: float
    high: float
    log: bool | None


@dataclass(frozen=True)
class Dimension:
    """One Optuna dimension: the float ``name`` sampled in ``[low, high]``, stored as flat knob ``knob``."""

    name: str
    knob: str
    low: float
    high: float
    log: bool


@dataclass(frozen=True)
class KnobPlan:
    """How a loss's knobs enter a configuration: fixed values and searched ranges, by flat knob key."""

    loss: str
    fixed: dict[str, float]
    searched: dict[str, Knob]

    @property
    def dimensions(self) -> list[Dimension]:
        """Returns the searched knobs as Optuna dimensions, named ``<loss>.<knob>``."""
        return [
            Dimension(f"{self.loss}.{key}", key, knob.low, knob.high, knob.log) for key, knob in self.searched.items()
        ]


# -- one registered loss --------------------------------------------------------------------------


def flat_knob_space(name: str, class_names: Sequence[str]) -> dict[str, Knob]:
    """Return the knobs a search samples for loss ``name``, every entry a scalar :class:`Knob`.

    A per-class knob ``gamma`` becomes ``gamma.<class>`` for each of ``class_names`` (the
    output channels in order, ``"background"`` first under softmax). For a
    :class:`SumConstraint` only the searched knobs appear (the derived one is computed by
    :func:`assemble_knobs`), their range narrowed so the derived knob stays in its own range.
    """
    declared = loss_knobs(name)
    derived = {c.derived: c for c in loss_constraints(name)}
    flat: dict[str, Knob] = {}
    for knob_name, knob in declared.items():
        if knob_name in derived:
            continue
        if knob.per_class:
            if not class_names:
                raise ValueError(f"loss {name!r}: per-class knob {knob_name!r} needs class_names")
            for class_name in class_names:
                flat[f"{knob_name}.{class_name}"] = Knob(
                    knob.default, knob.low, knob.high, knob.log, f"{knob.help} ({class_name})"
                )
            continue
        low, high = knob.low, knob.high
        for constraint in loss_constraints(name):
            if knob_name in constraint.knobs and len(constraint.knobs) == 2:
                other = declared[constraint.derived]
                low, high = max(low, constraint.total - other.high), min(high, constraint.total - other.low)
        default = min(max(knob.default, low), high)
        flat[knob_name] = Knob(default, low, high, knob.log and low > 0, knob.help)
    return flat


def assemble_knobs(name: str, flat: Mapping[str, float], class_names: Sequence[str]) -> dict[str, Any]:
    """Return ``build_loss`` knob kwargs from a flat sample of :func:`flat_knob_space`.

    Gathers ``gamma.<class>`` entries into a list in ``class_names`` order (a missing class
    takes the knob's default), derives constrained knobs (``beta = total - alpha``), and keeps
    scalar knobs as they are. Knobs absent from ``flat`` are left out (``build_loss`` fills
    their defaults). Raises ``ValueError`` for an entry that is not a knob of the loss.
    """
    declared = loss_knobs(name)
    out: dict[str, Any] = {}
    per_class: dict[str, dict[str, float]] = {}
    for key, value in flat.items():
        base, _, class_name = key.partition(".")
        knob = declared.get(base)
        if knob is None or bool(class_name) != knob.per_class:
            raise ValueError(f"loss {name!r}: {key!r} is not an entry of its flat knob space")
        if class_name:
            if class_name not in class_names:
                raise ValueError(f"loss {name!r}: {key!r} names a class not in {list(class_names)}")
            per_class.setdefault(base, {})[class_name] = float(value)
        else:
            out[base] = float(value)
    for base, by_class in per_class.items():
        out[base] = [by_class.get(c, declared[base].default) for c in class_names]
    for constraint in loss_constraints(name):
        others = [k for k in constraint.knobs if k != constraint.derived]
        if all(k in out for k in others):
            out[constraint.derived] = constraint.total - sum(out[k] for k in others)
    return out


# -- a registered loss or a weighted sum ------------------------------------------------------------


def is_compound(name: str) -> bool:
    """Returns whether ``name`` is a weighted-sum expression rather than one registered loss."""
    return name not in LOSSES and any(ch in name for ch in "+*")


def compound_terms(name: str) -> list[tuple[float, str]]:
    """Returns the (weight, loss) terms of a compound expression; each loss at most once."""
    return parse_compound(name)


def _terms(name: str) -> list[tuple[str, str]]:
    """Returns (key prefix, registered loss) per term: ``("", name)`` for one loss, ``("<loss>.", loss)`` in a sum."""
    if is_compound(name):
        return [(f"{term}.", term) for _, term in compound_terms(name)]
    if name not in LOSSES:
        raise KeyError(f"unknown loss {name!r}; registered losses: {sorted(LOSSES)}")
    return [("", name)]


def configured_knob_space(name: str, class_names: Sequence[str]) -> dict[str, Knob]:
    """Returns the flat knob space of a registered loss or a compound (keys prefixed ``<loss>.``).

    Raises:
        KeyError: an unknown loss name.
        ValueError: a malformed compound expression, or an unknown loss inside one.
    """
    return {
        prefix + key: knob for prefix, term in _terms(name) for key, knob in flat_knob_space(term, class_names).items()
    }


def derived_knobs(name: str) -> dict[str, tuple[str, float]]:
    """Returns the flat key of each knob a constraint derives -> (the knob to set instead, the total).

    ``{}`` for a name that is not a loss (the spec reports that problem on its own).
    """
    try:
        terms = _terms(name)
    except (KeyError, ValueError):
        return {}
    return {
        f"{prefix}{c.knobs[-1]}": (f"{prefix}{c.knobs[0]}", c.total)
        for prefix, term in terms
        for c in loss_constraints(term)
        if len(c.knobs) == 2
    }


# -- spec params -> flat settings -> search plan ------------------------------------------------------


def expand_params(name: str, params: Mapping[str, Any], classes: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """Returns (flat settings, problems) for a spec's ``params`` of loss ``name``.

    A key of the flat space keeps its setting; a per-class knob given once (``gamma: 2``, ``gamma:
    search``) is repeated for every class, a list is taken one value per class in ``classes``
    order. Each problem names ``params.<key>`` and the fix: a list for a scalar knob, a list of
    the wrong length, a derived knob given, a knob the loss does not have.
    """
    space = configured_knob_space(name, classes)
    out: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in params.items():
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
                problems.append(
                    f"params.{key}: {len(values)} values for {len(classes)} classes "
                    f"{list(classes)}; give one per class, in that order"
                )
            else:
                out.update(zip(per_class, values))
            continue
        derived = derived_knobs(name).get(key)
        if derived is not None:
            first, total = derived
            problems.append(
                f"params.{key}: {name} derives {key} from {first} (constraint: they sum to "
                f"{total:g}); set only {first}, e.g. {first}: {total / 2:g}, and leave {key} out"
            )
            continue
        problems.append(f"params.{key}: {name} has no knob {key!r}; its knobs are {sorted(space)}")
    return out, problems


def check_params(name: str, params: Mapping[str, Any], classes: Sequence[str]) -> list[str]:
    """Returns every problem of a spec's ``params`` (each naming ``params.<knob>``), empty when none.

    Besides :func:`expand_params`'s problems: a number or range bound outside the knob's declared
    range, and a log-scale range that does not start above 0.
    """
    settings, problems = expand_params(name, params, classes)
    space = configured_knob_space(name, classes)
    for key, value in settings.items():
        knob = space[key]
        bounds = (
            (value,)
            if isinstance(value, (int, float))
            else ((value.low, value.high) if isinstance(value, SearchRange) else ())
        )
        for bound in bounds:
            if not knob.low <= bound <= knob.high:
                problems.append(
                    f"params.{key}: {bound} is outside [{knob.low}, {knob.high}]; give a value in that range"
                )
        if isinstance(value, SearchRange) and (value.log or (value.log is None and knob.log)) and value.low <= 0:
            problems.append(f"params.{key}: a log-scale range needs low > 0")
    return problems


def plan_knobs(name: str, params: Mapping[str, Any], classes: Sequence[str]) -> KnobPlan:
    """Returns the fixed knob values and the searched knob ranges of loss ``name`` under ``params``.

    Fixed: every knob of the flat space not searched, at the spec's number or else its default.
    Searched: ``search`` gives the knob's declared range; a range gives its own bounds (the
    default clamped into them) and scale (``log: null`` keeps the knob's). Raises ``ValueError``
    listing :func:`expand_params`'s problems.
    """
    settings, problems = expand_params(name, params, classes)
    if problems:
        raise ValueError("; ".join(problems))
    space = configured_knob_space(name, classes)
    searched: dict[str, Knob] = {}
    for key, value in settings.items():
        knob = space[key]
        if isinstance(value, str) and value == SEARCH:
            searched[key] = knob
        elif isinstance(value, SearchRange):
            searched[key] = Knob(
                default=min(max(knob.default, value.low), value.high),
                low=value.low,
                high=value.high,
                log=knob.log if value.log is None else value.log,
                help=knob.help,
            )
    fixed = {key: knob.default for key, knob in space.items() if key not in searched}
    fixed.update(
        {
            key: float(value)
            for key, value in settings.items()
            if isinstance(value, (int, float)) and key not in searched
        }
    )
    return KnobPlan(name, fixed, searched)


# -- flat values -> built loss ----------------------------------------------------------------------


def term_knobs(
    name: str, flat_knobs: Mapping[str, float], class_names: Sequence[str]
) -> list[tuple[float, str, dict[str, Any]]]:
    """Returns ``(weight, registered loss, build_loss kwargs)`` per term of a configured loss.

    One registered loss is one term of weight 1. Raises ``KeyError`` for an unknown loss and
    ``ValueError`` for a flat key that belongs to no term or is no knob of its term.
    """
    if not is_compound(name):
        return [(1.0, name, assemble_knobs(name, flat_knobs, class_names))]
    terms = []
    for weight, term in compound_terms(name):
        prefix = term + "."
        own = {k[len(prefix) :]: v for k, v in flat_knobs.items() if k.startswith(prefix)}
        terms.append((weight, term, assemble_knobs(term, own, class_names)))
    unknown = [k for k in flat_knobs if not any(k.startswith(t + ".") for _, t, _ in terms)]
    if unknown:
        raise ValueError(f"{name!r}: knobs {unknown} belong to no term; prefix each with its loss, e.g. focal.gamma")
    return terms


def build_configured_loss(
    name: str, flat_knobs: Mapping[str, float], class_names: Sequence[str], **context: Any
) -> nn.Module:
    """Returns the loss module for a sweep configuration.

    Args:
        name: a registered loss or a compound expression.
        flat_knobs: knob values keyed as in :func:`configured_knob_space` (missing ones take defaults).
        class_names: output channels in order (per-class knobs are gathered in this order).
        context: run options passed to every loss (``activation``, ``include_background``,
            ``class_frequencies``, ``foreground_areas``, ``n_classes``); a loss ignores those it does not use.
    """
    terms = term_knobs(name, flat_knobs, class_names)
    if not is_compound(name):
        _, loss, knobs = terms[0]
        return build_loss(loss, **context, **knobs)
    return build_compound(terms, **context)
