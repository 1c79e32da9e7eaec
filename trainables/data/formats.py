"""The data adapters by ``data.format`` name: one registry, one factory, one cheap listing.

Adding a format = one module with a :class:`~trainables.data._base.DataAdapter` subclass and its
``Options`` model + one line in :data:`ADAPTERS` + its rows in ``tests/trainables/test_formats.py``
+ a row in the README's "Data formats" table. The sweep spec reads this registry: ``data.format``
accepts its names, ``data.<format>`` is validated by the adapter's ``Options`` (defaults included)
and the spec's preflight calls the adapter's ``preflight``: a new format needs no edit in ``sweeper``.

Importing this module is cheap (no torch, OpenCV, nibabel, pydicom or pandas): the adapters import
their readers when they read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trainables.data._base import DataAdapter, FormatOptions, ScanSource
from trainables.data.dicom import DicomAdapter
from trainables.data.image_folder import ImageFolderAdapter
from trainables.data.nifti import NiftiAdapter
from trainables.data.synthetic import SyntheticAdapter
from trainables.data.uwmgi import GI_CLASSES, UwmgiAdapter

__all__ = ["ADAPTERS", "FORMATS", "DataAdapter", "FormatOptions", "build_adapter", "discover_dataset", "format_options"]

#: data.format -> adapter class
ADAPTERS: dict[str, type[DataAdapter]] = {
    "uwmgi": UwmgiAdapter,
    "synthetic": SyntheticAdapter,
    "nifti": NiftiAdapter,
    "dicom": DicomAdapter,
    "image_folder": ImageFolderAdapter,
}
FORMATS = tuple(ADAPTERS)


def build_adapter(
    format: str,
    data_root: str | Path,
    options: Mapping[str, Any] | None = None,
    *,
    classes: Sequence[str] = GI_CLASSES,
    label_values: Mapping[Any, Any] | None = None,
    label_mode: str = "multilabel",
) -> DataAdapter:
    """Returns the adapter of ``format`` for ``data_root``; options are checked here (nothing is read).

    Raises:
        KeyError: an unknown format (listing the known ones).
        ValueError: an unknown option, or ``label_values`` that do not fit ``classes``/``label_mode``.
    """
    if format not in ADAPTERS:
        raise KeyError(f"unknown data format {format!r}; choose from {sorted(ADAPTERS)}")
    return ADAPTERS[format](data_root, options, classes=classes, label_values=label_values, label_mode=label_mode)


def format_options(format: str) -> dict[str, Any]:
    """Returns the options of ``format`` with their defaults (what a spec may set under ``data.<format>``)."""
    if format not in ADAPTERS:
        raise KeyError(f"unknown data format {format!r}; choose from {sorted(ADAPTERS)}")
    return ADAPTERS[format].Options().model_dump()


def discover_dataset(
    format: str,
    data_root: str | Path,
    options: Mapping[str, Any] | None = None,
    *,
    classes: Sequence[str] = GI_CLASSES,
    label_values: Mapping[Any, Any] | None = None,
    label_mode: str = "multilabel",
) -> list[ScanSource]:
    """Returns the scans ``format`` finds under ``data_root``, from file names alone (a preflight:
    counts patients, reports unpaired or missing files) -- the synthetic format generates its data first."""
    adapter = build_adapter(
        format, data_root, options, classes=classes, label_values=label_values, label_mode=label_mode
    )
    adapter.before_digest()
    return adapter.discover()
