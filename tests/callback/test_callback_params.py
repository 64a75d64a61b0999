"""SwarmCallback parameters: both spellings, defaults, and an error naming the
parameter for every invalid value."""

from __future__ import annotations

import json
import logging

import pytest

from swarm.callback import SwarmParams, parse_params

REQUIRED = {"syncFrequency": 10, "minPeers": 2}
SNAKE_REQUIRED = {"sync_frequency": 10, "min_peers": 2}


def test_defaults_and_config_json():
    params = parse_params(**REQUIRED)
    assert params == SwarmParams(sync_frequency=10, min_peers=2)
    assert (params.merge_method, params.node_weightage, params.use_adaptive_sync,
            params.checkin_model_on_train_end, params.merge_params) == (
        "mean", 1, False, "snapshot", {})
    config = json.loads(params.to_config_json())
    assert config["sync_frequency"] == 10 and config["min_peers"] == 2
    assert not {"ads_val_data", "model", "logger"} & set(config)


def test_camel_case_and_snake_case_are_equal():
    data = ([1, 2], [0, 1])
    logger = logging.getLogger("test-user")
    camel = parse_params(
        syncFrequency=5, minPeers=3, mergeMethod="krum", nodeWeightage=40,
        useAdaptiveSync=True, adsValData=data, adsValBatchSize=16,
        checkinModelOnTrainEnd="snapshot", totalEpochs=4, trainingContract="c1",
        maxPeers=5, mlPlatform="PYTORCH", logger=logger, lossFunction="NLLLoss",
        lossFunctionArgs={"reduction": "sum"}, metricFunction="MeanSquaredError",
        metricFunctionArgs={}, valBatchSize=8)
    snake = parse_params(
        sync_frequency=5, min_peers=3, merge_method="krum", node_weightage=40,
        use_adaptive_sync=True, ads_val_data=data, ads_val_batch_size=16,
        checkin_model_on_train_end="snapshot", total_epochs=4, training_contract="c1",
        max_peers=5, ml_platform="PYTORCH", logger=logger, loss_function="NLLLoss",
        loss_function_args={"reduction": "sum"}, metric_function="MeanSquaredError",
        metric_function_args={}, val_batch_size=8)
    assert camel == snake
    assert camel.ads_val_data is data and camel.logger is logger
    assert camel.to_config_json() == snake.to_config_json()


@pytest.mark.parametrize("key, value, expected", [
    ("syncFrequency", 0, "syncFrequency 0 is not an integer >= 1"),
    ("sync_frequency", 2.5, "sync_frequency 2.5 is not an integer >= 1"),
    ("syncFrequency", True, "syncFrequency True is not an integer >= 1"),
    ("syncFrequency", "10", "syncFrequency '10' is not an integer >= 1"),
    ("minPeers", 0, "minPeers 0 is not an integer >= 1"),
    ("min_peers", -3, "min_peers -3 is not an integer >= 1"),
    ("mergeMethod", "avg",
     "mergeMethod 'avg' is not one of: mean, coordmedian, trimmedmean, geomedian, krum, "
     "centeredclipping"),
    ("mergeParams", ["trim"], "mergeParams ['trim'] is not a dict"),
    ("mergeParams", {"tirm": 0.1}, "mergeParams {'tirm': 0.1}: merge method 'mean' has no "
     "parameter 'tirm'"),
    ("merge_method", None, "merge_method None is not one of: mean"),
    ("nodeWeightage", 0, "nodeWeightage 0 is not an integer from 1 to 100"),
    ("nodeWeightage", 101, "nodeWeightage 101 is not an integer from 1 to 100"),
    ("useAdaptiveSync", "yes", "useAdaptiveSync 'yes' is not one of: True, False"),
    ("adsValBatchSize", 0, "adsValBatchSize 0 is not an integer >= 1"),
    ("checkinModelOnTrainEnd", "always",
     "checkinModelOnTrainEnd 'always' is not one of: snapshot, active, inactive"),
    ("totalEpochs", 0, "totalEpochs 0 is not an integer >= 1"),
    ("trainingContract", "", "trainingContract '' is not a name"),
    ("maxPeers", 1, "maxPeers 1 is not 0 (no limit) or an integer >= minPeers (2)"),
    ("mlPlatform", "JAX", "mlPlatform 'JAX' is not one of: TF, KERAS, PYTORCH"),
    ("logger", "swarm", "logger 'swarm' is not a logging.Logger"),
    ("lossFunction", 3, "lossFunction 3 is not a name"),
    ("lossFunctionArgs", ["sum"], "lossFunctionArgs ['sum'] is not a dict"),
    ("metricFunction", "", "metricFunction '' is not a name"),
    ("metricFunctionArgs", "num_classes=10", "metricFunctionArgs 'num_classes=10' is not a dict"),
    ("valBatchSize", -1, "valBatchSize -1 is not an integer >= 1"),
])
def test_invalid_values_name_the_parameter(key, value, expected):
    required = REQUIRED if key[0].islower() and "_" not in key else SNAKE_REQUIRED
    required = {k: v for k, v in required.items() if k != key}
    with pytest.raises(ValueError) as error:
        parse_params(**required, **{key: value})
    assert expected in str(error.value)


@pytest.mark.parametrize("missing", ["syncFrequency", "minPeers"])
def test_required_parameters(missing):
    kwargs = dict(REQUIRED)
    del kwargs[missing]
    with pytest.raises(ValueError, match=f"{missing} is required"):
        parse_params(**kwargs)


def test_adaptive_sync_needs_validation_data():
    with pytest.raises(ValueError, match="adsValData is required when useAdaptiveSync is True"):
        parse_params(**REQUIRED, useAdaptiveSync=True)
    with pytest.raises(ValueError, match="ads_val_data is required when use_adaptive_sync"):
        parse_params(sync_frequency=1, min_peers=1, use_adaptive_sync=True)


def test_unknown_keyword_is_refused_with_a_suggestion():
    with pytest.raises(ValueError) as error:
        parse_params(**REQUIRED, syncFreqency=3)
    message = str(error.value)
    assert "unknown SwarmCallback parameter 'syncFreqency'" in message
    assert "did you mean syncFrequency" in message
    with pytest.raises(ValueError, match="unknown SwarmCallback parameter 'epochs'"):
        parse_params(**REQUIRED, epochs=3)


def test_both_spellings_of_one_parameter_is_an_error():
    with pytest.raises(ValueError, match="minPeers and min_peers are the same parameter"):
        parse_params(syncFrequency=1, minPeers=2, min_peers=2)
    with pytest.raises(ValueError, match="mergeMethod and merge_method"):
        parse_params(**REQUIRED, mergeMethod="mean", merge_method="mean")


def test_every_merge_method_and_its_parameters_can_be_chosen():
    from swarm.merging import MERGE_METHODS
    for method in MERGE_METHODS:
        assert parse_params(**REQUIRED, mergeMethod=method).merge_method == method
    params = parse_params(**REQUIRED, mergeMethod="krum", mergeParams={"f": 1})
    assert json.loads(params.to_config_json())["merge_params"] == {"f": 1}
    clipped = parse_params(**REQUIRED, merge_method="centeredclipping",
                           merge_params={"tau": 2.0})
    assert clipped.merge_params == {"tau": 2.0}
    with pytest.raises(ValueError, match=r"mergeParams \{'f': -1\}: krum: f must be"):
        parse_params(**REQUIRED, mergeMethod="krum", mergeParams={"f": -1})


def test_params_are_frozen():
    params = parse_params(**REQUIRED)
    with pytest.raises(AttributeError):
        params.sync_frequency = 3  # type: ignore[misc]
