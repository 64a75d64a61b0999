"""The SwarmCallback's parameters: one validated, immutable record for every framework."""

from __future__ import annotations

import difflib
import json
import logging
import numbers
from dataclasses import dataclass, field, fields
from typing import Any

from swarm.merging import MERGE_METHODS, get_merge
from swarm.session import CHECKIN_MODES, MAX_SHARD_REPLICAS

ML_PLATFORMS = ("TF", "KERAS", "PYTORCH")
MAX_NODE_WEIGHTAGE = 100
DEFAULT_TRAINING_CONTRACT = "defaultbb.cqdb.sml.hpe"  # the established default name

# The established product's camelCase spellings; user scripts pass these unchanged.
CAMEL_CASE = {
    "syncFrequency": "sync_frequency",
    "minPeers": "min_peers",
    "mergeMethod": "merge_method",
    "mergeParams": "merge_params",
    "nodeWeightage": "node_weightage",
    "useAdaptiveSync": "use_adaptive_sync",
    "adsValData": "ads_val_data",
    "adsValBatchSize": "ads_val_batch_size",
    "checkinModelOnTrainEnd": "checkin_model_on_train_end",
    "totalEpochs": "total_epochs",
    "trainingContract": "training_contract",
    "maxPeers": "max_peers",
    "mlPlatform": "ml_platform",
    "lossFunction": "loss_function",
    "lossFunctionArgs": "loss_function_args",
    "metricFunction": "metric_function",
    "metricFunctionArgs": "metric_function_args",
    "valBatchSize": "val_batch_size",
    # Ours, not the established product's (README, "Defaults").
    "adamStepScaling": "adam_step_scaling",
    "shardReplicas": "shard_replicas",
}
SNAKE_TO_CAMEL = {snake: camel for camel, snake in CAMEL_CASE.items()}

# Parameters that are objects of the user's program, never sent to the SL node.
_NOT_CONFIG = ("ads_val_data", "logger", "model")


@dataclass(frozen=True)
class SwarmParams:
    """Holds the SwarmCallback parameters after validation, in snake_case.

    Built by `parse_params`, which accepts both spellings and names the parameter in
    every error. Holds no behaviour beyond `to_config_json`, the JSON-safe subset that
    the Hello call records (no data, no model, no logger).
    """

    sync_frequency: int
    min_peers: int
    merge_method: str = "mean"
    # The merge method's parameters, e.g. {"trim": 0.2} or {"f": 1}: see swarm.merging.
    merge_params: dict = field(default_factory=dict)
    node_weightage: int = 1
    use_adaptive_sync: bool = False
    ads_val_data: Any = field(default=None, repr=False)
    ads_val_batch_size: int | None = None
    # Not the established product's "inactive": a node whose training ended keeps
    # contributing its final model, so sites with fewer batches are not forgotten by
    # the ones still training (README, "Defaults").
    checkin_model_on_train_end: str = "snapshot"
    total_epochs: int | None = None
    # Accepted because established scripts pass them; recorded in the Hello config.
    training_contract: str = DEFAULT_TRAINING_CONTRACT
    max_peers: int = 0  # 0: no upper bound
    ml_platform: str | None = None
    logger: logging.Logger | logging.LoggerAdapter | None = field(default=None, repr=False)
    # PyTorch only.
    model: Any = field(default=None, repr=False)
    loss_function: str | None = None
    loss_function_args: dict | None = None
    metric_function: str | None = None
    metric_function_args: dict | None = None
    val_batch_size: int | None = None
    # With an Adam-family optimizer, send the update scaled so that the merge adds the
    # peers' steps, with momentum (swarm.callback.adaptive_step; README, "Defaults").
    adam_step_scaling: bool = True
    # Owners per shard: each merged range comes from a strict majority of this many
    # owners, so a lying owner is outvoted from 3 on; costs this many times the bytes of
    # the exchange (README, "What the design defends against").
    shard_replicas: int = 1

    def to_config_json(self) -> str:
        """The parameters the SL node and the ledger may record, as sorted snake_case JSON."""
        config = {f.name: getattr(self, f.name) for f in fields(self)
                  if f.name not in _NOT_CONFIG}
        # Loss/metric arguments are the user's: anything JSON cannot hold is recorded
        # by its repr rather than refused, since the SL node only displays them.
        return json.dumps(config, sort_keys=True, default=repr)


_FIELDS = tuple(f.name for f in fields(SwarmParams))
_REQUIRED = ("sync_frequency", "min_peers")


def parse_params(**kwargs: Any) -> SwarmParams:
    """Validates SwarmCallback keyword arguments (camelCase or snake_case).

    Raises ValueError naming the parameter as the user spelled it, and the allowed
    values, for an unknown keyword, a parameter given in both spellings, a missing
    required parameter or an invalid value.
    """
    return _parse(kwargs, val_data_optional=False)


def _parse(kwargs: dict[str, Any], *, val_data_optional: bool) -> SwarmParams:
    values: dict[str, Any] = {}
    spelled: dict[str, str] = {}  # snake name -> the spelling the user gave
    for key, value in kwargs.items():
        snake = CAMEL_CASE.get(key, key)
        if snake not in _FIELDS:
            raise ValueError(_unknown(key))
        if snake in spelled:
            raise ValueError(f"{spelled[snake]} and {key} are the same parameter: give only one")
        spelled[snake] = key
        values[snake] = value

    # Name a parameter the user did not give in the style of those they did give.
    snake_style = any(key in SNAKE_TO_CAMEL for key in kwargs)

    def name(snake: str) -> str:
        if snake in spelled or snake_style:
            return spelled.get(snake, snake)
        return SNAKE_TO_CAMEL.get(snake, snake)

    for snake in _REQUIRED:
        if values.get(snake) is None:
            raise ValueError(f"{name(snake)} is required (an integer >= 1)")

    out: dict[str, Any] = {}
    out["sync_frequency"] = _int(name("sync_frequency"), values["sync_frequency"], 1)
    out["min_peers"] = _int(name("min_peers"), values["min_peers"], 1)
    if "merge_method" in values:
        out["merge_method"] = _choice(name("merge_method"), values["merge_method"], MERGE_METHODS)
    if values.get("merge_params") is not None:
        value = values["merge_params"]
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ValueError(f"{name('merge_params')} {value!r} is not a dict of the merge "
                             "method's parameters")
        try:
            get_merge(out.get("merge_method", "mean"), **value)
            json.dumps(value)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{name('merge_params')} {value!r}: {error}") from None
        out["merge_params"] = dict(value)
    if "node_weightage" in values:
        out["node_weightage"] = _int(name("node_weightage"), values["node_weightage"], 1,
                                     MAX_NODE_WEIGHTAGE)
    for snake in ("use_adaptive_sync", "adam_step_scaling"):
        if snake in values:
            value = values[snake]
            if not isinstance(value, bool):
                raise ValueError(f"{name(snake)} {value!r} is not one of: True, False")
            out[snake] = value
    out["ads_val_data"] = values.get("ads_val_data")
    if out.get("use_adaptive_sync") and out["ads_val_data"] is None and not val_data_optional:
        raise ValueError(f"{name('ads_val_data')} is required when "
                         f"{name('use_adaptive_sync')} is True: the validation data "
                         "whose loss decides how often to sync")
    if values.get("max_peers") is not None:
        out["max_peers"] = _int(name("max_peers"), values["max_peers"], 0)
        if 0 < out["max_peers"] < out["min_peers"]:
            raise ValueError(f"{name('max_peers')} {out['max_peers']} is not 0 (no limit) or "
                             f"an integer >= {name('min_peers')} ({out['min_peers']})")
    if values.get("shard_replicas") is not None:
        # At most the participants a round can have; a round with fewer participants
        # than this has every participant own every shard.
        most = out.get("max_peers") or MAX_SHARD_REPLICAS
        out["shard_replicas"] = _int(name("shard_replicas"), values["shard_replicas"], 1,
                                     min(most, MAX_SHARD_REPLICAS))
    if values.get("ml_platform") is not None:
        value = values["ml_platform"]
        out["ml_platform"] = _choice(name("ml_platform"),
                                     value.upper() if isinstance(value, str) else value,
                                     ML_PLATFORMS)
    for snake in ("ads_val_batch_size", "total_epochs", "val_batch_size"):
        if values.get(snake) is not None:
            out[snake] = _int(name(snake), values[snake], 1)
    if "checkin_model_on_train_end" in values:
        out["checkin_model_on_train_end"] = _choice(
            name("checkin_model_on_train_end"), values["checkin_model_on_train_end"],
            CHECKIN_MODES)
    for snake in ("training_contract", "loss_function", "metric_function"):
        value = values.get(snake)
        if value is not None:
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name(snake)} {value!r} is not a name (a non-empty string)")
            out[snake] = value
    for snake in ("loss_function_args", "metric_function_args"):
        value = values.get(snake)
        if value is not None:
            if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
                raise ValueError(f"{name(snake)} {value!r} is not a dict of keyword arguments")
            out[snake] = dict(value)
    logger = values.get("logger")
    if logger is not None:
        if not isinstance(logger, (logging.Logger, logging.LoggerAdapter)):
            raise ValueError(f"{name('logger')} {logger!r} is not a logging.Logger")
        out["logger"] = logger
    out["model"] = values.get("model")
    return SwarmParams(**out)


def _unknown(key: str) -> str:
    known = sorted(set(_FIELDS) | set(CAMEL_CASE))
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return (f"unknown SwarmCallback parameter {key!r}{hint} "
            f"(known: {', '.join(sorted(CAMEL_CASE) + ['logger', 'model'])}, "
            "or their snake_case forms)")


def _int(name: str, value: Any, low: int, high: int | None = None) -> int:
    allowed = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"
    # bool is an int in Python, but True as a frequency is surely a mistake.
    if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
            or value < low or (high is not None and value > high)):
        raise ValueError(f"{name} {value!r} is not {allowed}")
    return int(value)


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} {value!r} is not one of: {', '.join(allowed)}")
    return value
