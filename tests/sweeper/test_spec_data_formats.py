"""The spec's data.<format> sections come from the adapter registry: a format's options, their defaults
and its preflight are declared once, by its adapter, so a new format needs no edit in the spec."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from pydantic import Field

from sweeper.spec import SpecError, dump_spec, load_spec, parse_spec
from trainables.data import ADAPTERS, load_cache_info, load_index, prepare_dataset_cache
from trainables.data._base import ScanSource, ScanVolume
from trainables.data.formats import DataAdapter, FormatOptions, build_adapter, format_options


def _spec(data: dict) -> dict:
    return {"name": "t", "data": {"folds": 2, **data}, "losses": [{"name": "dice"}], "search": {"budget": 1}}


class TileOptions(FormatOptions):
    """Options of a throwaway format: one patient per tile, each tile one slice."""

    tiles: int = Field(3, ge=1, description="tiles (patients) in the folder")
    side: int = Field(8, ge=4, description="side of a tile in pixels")


class TileAdapter(DataAdapter):
    """A format written for this test only: a disc in class ``classes[0]`` on every tile, no files."""

    name = "tiles"
    Options = TileOptions

    def discover(self) -> list[ScanSource]:
        self.check_root()
        return [ScanSource(scan=f"tile{i}", patient=f"tile{i}", files=()) for i in range(self.options.tiles)]

    def load(self, source: ScanSource) -> ScanVolume:
        side = self.options.side
        yy, xx = np.mgrid[:side, :side]
        labels = ((yy - side / 2) ** 2 + (xx - side / 2) ** 2 < (side / 4) ** 2).astype(np.int64)[None]
        return ScanVolume(
            image=labels * 100.0 + 10.0,
            labels=labels,
            spacing=(float("nan"), 1.0, 1.0),
            slice_numbers=[1],
            label_files=(Path(source.scan),),
            image_files=(Path(source.scan),),
        )


@pytest.fixture
def tiles_registered(monkeypatch: pytest.MonkeyPatch):
    """Registers the throwaway format as one more line of ADAPTERS would; monkeypatch removes it after."""
    monkeypatch.setitem(ADAPTERS, "tiles", TileAdapter)
    return "tiles"


def test_a_new_format_is_validated_by_its_own_options_and_refused_once_unregistered(tiles_registered, tmp_path):
    spec = parse_spec(_spec({"format": "tiles", "root": str(tmp_path), "tiles": {"tiles": 5}}))
    assert spec.data.options == TileOptions(tiles=5, side=8)
    assert spec.data.format_options() == {"tiles": 5, "side": 8}
    with pytest.raises(SpecError) as info:
        parse_spec(_spec({"format": "tiles", "root": str(tmp_path), "tiles": {"tile": 5, "side": 2}}))
    text = "\n".join(info.value.problems)
    assert "data.tiles.tile: unknown field" in text and "fields here: side, tiles" in text
    assert "data.tiles.side: Input should be greater than or equal to 4" in text
    del ADAPTERS["tiles"]
    with pytest.raises(SpecError, match="data.format: unknown data format 'tiles'; choose from 'uwmgi'"):
        parse_spec(_spec({"format": "tiles", "root": str(tmp_path)}))


def test_a_new_formats_defaults_reach_its_preflight_and_its_cache(tiles_registered, tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(_spec({"format": "tiles", "root": "data", "folds": 4, "classes": ["disc"]})))
    (tmp_path / "data").mkdir()
    with pytest.raises(SpecError, match=r"data.folds: 4 folds but only 3 patients under .*data; use at most 3"):
        load_spec(path)  # the default of 3 tiles came from TileOptions, through the adapter's preflight
    path.write_text(yaml.safe_dump(_spec({"format": "tiles", "root": "data", "folds": 3, "classes": ["disc"]})))
    spec = load_spec(path)
    assert yaml.safe_load(dump_spec(spec))["data"]["tiles"] == {"tiles": 3, "side": 8}
    data = spec.data
    cache = prepare_dataset_cache(
        data.format,
        data.root,
        tmp_path / "cache",
        image_size=8,
        n_folds=data.folds,
        classes=data.classes,
        options=data.format_options(),
    )
    assert load_cache_info(cache)["params"]["options"] == {"tiles": 3, "side": 8}
    assert load_index(cache)["patient"].nunique() == 3


@pytest.mark.parametrize("fmt", sorted(ADAPTERS))
def test_each_formats_spec_section_defaults_are_its_adapters(fmt, tmp_path):
    spec = parse_spec(_spec({"format": fmt, "root": str(tmp_path)}))
    assert spec.data.format_options() == format_options(fmt)
    adapter = build_adapter(
        fmt,
        tmp_path,
        spec.data.format_options(),
        classes=("a",),
        label_values=None if fmt in ("uwmgi", "synthetic") else {1: "a"},
    )
    assert adapter.options == ADAPTERS[fmt].Options()


def test_unknown_data_key_lists_the_format_sections():
    with pytest.raises(SpecError) as info:
        parse_spec(_spec({"format": "synthetic", "nifty": {"images": "*.nii"}}))
    (problem,) = info.value.problems
    assert problem.startswith("data.nifty: unknown field; remove it or fix its spelling (fields here: ")
    assert all(name in problem for name in ADAPTERS)


def test_format_section_problems_come_with_the_other_data_problems():
    with pytest.raises(SpecError) as info:
        parse_spec(_spec({"format": "synthetic", "roi_ratios": [-1], "synthetic": {"cases": 0}, "nifty": {}}))
    text = "\n".join(info.value.problems)
    assert "data.roi_ratios: give positive ratios" in text
    assert "data.synthetic.cases: Input should be greater than or equal to 1" in text
    assert "data.nifty: unknown field" in text
