"""The trial contract: one strict, typed TrialConfig that the trial reads back from the dict Tune passes."""

import subprocess
import sys

import pytest
from pydantic import ValidationError

from trainables.contract import (
    BEST_PREFIX,
    BEST_WEIGHTS_FILE,
    CASES_FILE,
    STATE_FILE,
    Configuration,
    TrialConfig,
    TrialSettings,
)

CONFIGURATION = Configuration(
    arch="unet", encoder="resnet18", loss="tversky", loss_params={"alpha": 0.3, "beta": 0.7}, roi_ratio=0.4
)


def fold_config(**settings) -> TrialConfig:
    return TrialSettings(cache_dir="/c", **settings).for_fold(CONFIGURATION, config_id="abc", fold=1)


def test_an_unknown_key_is_refused_naming_it_and_the_key_it_resembles():
    config = fold_config().to_dict()
    with pytest.raises(ValidationError) as err:
        TrialConfig.from_dict({**config, "lerning_rate": 1e-3, "fodl": 2})
    text = str(err.value)
    assert "'lerning_rate'" in text and "'fodl'" in text and "did you mean 'fold'?" in text
    with pytest.raises(ValidationError, match="did you mean 'epochs'"):
        TrialConfig.from_dict({**config, "epoch": 3})
    with pytest.raises(ValidationError, match="unknown trial setting 'lrr'"):
        TrialSettings(cache_dir="/c", lrr=1e-3)


def test_a_missing_identity_key_is_refused():
    config = fold_config().to_dict()
    del config["fold"]
    with pytest.raises(ValidationError, match="fold"):
        TrialConfig.from_dict(config)


def test_a_config_round_trips_through_its_dict():
    config = fold_config(epochs=3, classes=("background", "liver"), activation="softmax")
    as_dict = config.to_dict()
    assert as_dict["classes"] == ["background", "liver"] and as_dict["loss_params"] == {"alpha": 0.3, "beta": 0.7}
    back = TrialConfig.from_dict(as_dict)
    assert back == config and back.to_dict() == as_dict
    assert back.configuration == CONFIGURATION and back.foreground_classes == ("liver",)


def test_the_config_is_immutable():
    config = fold_config()
    with pytest.raises(ValidationError):
        config.lr = 1.0


def test_names_of_what_a_trial_writes():
    assert (BEST_PREFIX, STATE_FILE, BEST_WEIGHTS_FILE, CASES_FILE) == (
        "best.",
        "state.pt",
        "best_model.pt",
        "cases.parquet",
    )


def test_the_contract_imports_neither_torch_nor_ray():
    code = (
        "import sys, trainables.contract; "
        "assert 'torch' not in sys.modules and 'ray' not in sys.modules, "
        "sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ray'))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
