"""The model section's networks (arch/encoder pairs) and heads (multiclass vs one binary network per
class) as configuration dimensions: spec checks, configuration identity, Optuna and grid proposals."""

from __future__ import annotations

import pytest
from ray.tune.search import Searcher

from sweeper.search import FoldSearcher, config_id
from sweeper.spec import SpecError, parse_spec
from trainables.contract import Configuration, TrialSettings

SETTINGS = TrialSettings(cache_dir="/c")


def spec(model: dict, **search):
    return parse_spec(
        {
            "name": "n",
            "data": {"format": "synthetic", "folds": 2},
            "model": model,
            "losses": [{"name": "dice"}],
            "search": search or {"mode": "grid"},
        }
    )


def drain(searcher):
    out = []
    while True:
        config = searcher.suggest(f"t{len(out)}")
        if config is None or config == Searcher.FINISHED:
            return out
        out.append(config)


def test_networks_list_the_pairs_a_paper_trained_instead_of_every_combination():
    parsed = spec({"networks": ["unet/vgg16", "FCN/vgg16", "deeplabv3/resnet18"]})
    assert parsed.model.pairs() == [("unet", "vgg16"), ("fcn", "vgg16"), ("deeplabv3", "resnet18")]
    assert parsed.planned_configurations() == 3
    product = spec({"architectures": ["unet", "fpn"], "encoders": ["resnet18", "vgg16"]})
    assert product.model.pairs() == [("unet", "resnet18"), ("unet", "vgg16"), ("fpn", "resnet18"), ("fpn", "vgg16")]


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (
            {"architectures": ["unet", "levit_unet"], "encoders": ["levit_192"]},
            "unet does not take encoder 'levit_192'",
        ),
        ({"networks": ["levit_unet/resnet34"]}, "levit_unet does not take encoder 'resnet34' (it takes ['levit_128s'"),
        ({"networks": ["unet"]}, "write each network as architecture/encoder"),
        ({"networks": ["unet/vgg16", "unet/vgg16"]}, "a network is listed twice"),
        ({"networks": ["unet/vgg16"], "encoders": ["resnet18"]}, "not both"),
        ({"networks": ["transunet/vit"]}, "unknown architecture 'transunet'"),
        ({"heads": ["uniclass", "uniclass"]}, "heads value is listed twice"),
        ({"heads": ["binary"]}, "model.heads.0"),
    ],
)
def test_a_network_or_heads_mistake_is_refused_naming_the_fix(model, message):
    with pytest.raises(SpecError) as err:
        spec(model)
    assert message in str(err.value)


def test_heads_enter_the_configuration_identity_only_when_uniclass():
    one = Configuration(arch="unet", encoder="resnet18", loss="dice")
    assert config_id(one) == config_id(one.model_copy(update={"heads": "multiclass"}))
    assert config_id(one) != config_id(one.model_copy(update={"heads": "uniclass"}))
    # the ids of sweeps before heads existed stay as they were
    assert config_id(one) == config_id(
        Configuration.model_validate({"arch": "unet", "encoder": "resnet18", "loss": "dice"})
    )


def test_grid_trains_each_network_with_each_heads_value(tmp_path):
    parsed = spec({"networks": ["unet/resnet18", "plain_unet/width16"], "heads": ["multiclass", "uniclass"]})
    assert parsed.planned_configurations() == 4
    configs = drain(FoldSearcher(parsed, f"sqlite:///{tmp_path}/o.db", SETTINGS))
    seen = {(c["arch"], c["encoder"], c["heads"]) for c in configs}
    assert len(configs) == 8  # 4 configurations x 2 folds
    assert seen == {
        (a, e, h) for a, e in [("unet", "resnet18"), ("plain_unet", "width16")] for h in ("multiclass", "uniclass")
    }
    assert len({c["config_id"] for c in configs}) == 4


def test_optuna_draws_networks_and_heads_from_the_spec(tmp_path):
    parsed = spec(
        {"networks": ["unet/resnet18", "fcn/resnet18"], "heads": ["multiclass", "uniclass"]},
        budget=3,
        sampler="random",
    )
    searcher = FoldSearcher(parsed, f"sqlite:///{tmp_path}/o.db", SETTINGS)
    configs = drain(searcher)
    assert configs and {(c["arch"], c["encoder"]) for c in configs} <= {("unet", "resnet18"), ("fcn", "resnet18")}
    assert {c["heads"] for c in configs} <= {"multiclass", "uniclass"}
    assert all("network" in t.params and "heads" in t.params for t in searcher.study.trials)
    # a spec without heads choices asks Optuna for none: its studies keep the params they had
    plain = FoldSearcher(
        spec({"architectures": ["unet"], "encoders": ["resnet18"]}, budget=1), f"sqlite:///{tmp_path}/p.db", SETTINGS
    )
    assert {c["heads"] for c in drain(plain)} == {"multiclass"}
    assert set(plain.study.trials[0].params) == {"arch", "encoder", "loss"}


def test_leaderboard_rows_from_before_heads_existed_read_as_one_network(tmp_path):
    import pandas as pd

    from sweeper.leaderboard import read_configs, trial_row, write_leaderboard
    from trainables.contract import TrialConfig

    def config(heads, cid):
        return TrialConfig(
            cache_dir="/c", arch="unet", encoder="resnet18", loss="dice", heads=heads, config_id=cid, fold=0
        )

    old = trial_row(config("multiclass", "a"), {"best.dice": 0.5}, "finished")
    del old["heads"]
    new = trial_row(config("uniclass", "b"), {"best.dice": 0.4}, "finished")
    write_leaderboard(pd.DataFrame([old, new]), tmp_path)
    configs = read_configs(tmp_path).set_index("config_id")
    assert configs.loc["a", "heads"] == "multiclass" and configs.loc["b", "heads"] == "uniclass"


def test_a_frozen_spec_with_networks_parses_back_unchanged():
    import yaml

    from sweeper.spec import dump_spec

    parsed = spec({"networks": ["unet/vgg16", "fcn/vgg16"], "heads": ["multiclass", "uniclass"]})
    again = parse_spec(yaml.safe_load(dump_spec(parsed)), registry=False)
    assert again.model.pairs() == parsed.model.pairs() and again.model.heads == ["multiclass", "uniclass"]
