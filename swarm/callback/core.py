"""The framework-free heart of every SwarmCallback: when to sync, and what to do with
the merged weights. The Keras and PyTorch adapters only translate hooks and weights."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from swarm.callback.adaptive_step import AdaptiveStep, is_adaptive
from swarm.callback.channel import LocalChannel
from swarm.callback.params import SwarmParams, _parse
from swarm.files import atomic_target
from swarm.session import Session, SessionFormatError
from swarm.tensors import Layout, WeightsError, check_finite

FINAL_LOG_LINE = "All peers and Swarm training rounds finished. Final Swarm model was loaded."
DEFAULT_MODEL_DIR = "./model"
# As in the established product: SWARM_LOOPBACK=true checks the parameters and
# otherwise bypasses the swarm, to test a training script without any SL node.
LOOPBACK_ENV = "SWARM_LOOPBACK"

# Adaptive sync: a merge that improved the validation loss means the swarm agrees, so
# sync less often (x1.5, at most 8x syncFrequency); one that did not means local models
# drift apart, so sync more often (/2, at least syncFrequency/4 and at least 1 batch).
ADS_GROWTH = 1.5
ADS_MAX_FACTOR = 8
ADS_SHRINK = 2
ADS_MIN_DIVISOR = 4

Weights = Any  # list of arrays (Keras, NumPy) or dict name -> array (PyTorch)


def default_logger() -> logging.Logger:
    """logging.getLogger("swarm.callback"), made to show INFO progress when the program
    has not configured logging itself (the established callback always prints it)."""
    log = logging.getLogger("swarm.callback")
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)
    if not log.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s SwarmCallback %(levelname)s: %(message)s"))
        log.addHandler(handler)
        log.propagate = False
    return log


def save_npz(weights: Weights, directory: Path, name: str = "swarm_model") -> Path:
    """The NumPy default for saving the final model: one .npz, names kept for dicts."""
    path = directory / f"{name}.npz"
    with atomic_target(path, mode=0o644) as tmp:  # never half a model where the final one should be
        if isinstance(weights, dict):
            np.savez(tmp, **weights)
        else:
            np.savez(tmp, *weights)
    return path


class SwarmCallbackCore:
    """Runs one node's side of swarm training, whatever the framework.

    Responsible for: the Hello and the BEGIN round that gives every node the same start;
    counting batches and syncing every `sync_interval` of them (refusing to send a
    model with NaN/Inf); loading each merged model; adapting the interval to the
    validation loss when `use_adaptive_sync` is on; stopping when the swarm is done;
    and, at the end, loading the final swarm model, saving it under
    $MODEL_DIR/saved_models and logging the final line. Weights come and go through
    the `get_weights`/`set_weights` callables, as a list or dict of NumPy arrays.
    """

    def __init__(self, get_weights: Callable[[], Weights], set_weights: Callable[[Weights], None],
                 params: SwarmParams, framework: str,
                 val_loss: Callable[[], float] | None = None,
                 channel: LocalChannel | None = None,
                 save_final: Callable[[Weights, Path], Path] | None = None,
                 weight_names: Callable[[], list[str]] | None = None,
                 optimizer: Callable[[], tuple[str | None, list[bool]]] | None = None):
        if params.use_adaptive_sync and val_loss is None:
            raise ValueError("useAdaptiveSync needs a validation loss to adapt to: "
                             "give adsValData (and, for PyTorch, lossFunction)")
        self.params = params
        self.framework = framework
        self.logger = params.logger or default_logger()
        self._get = get_weights
        self._set = set_weights
        self._val_loss = val_loss
        self._channel = channel
        self._owns_channel = channel is None
        self._save = save_final or save_npz
        self._weight_names = weight_names
        # The adapter's view of the training: (optimizer class name or None when it
        # cannot tell, which tensors it trains); an Adam-family one gets AdaptiveStep.
        self._optimizer = optimizer
        self._step: AdaptiveStep | None = None
        self._step_decided = not params.adam_step_scaling
        self._peers = params.min_peers
        self._layout: Layout | None = None
        self._interval = params.sync_frequency
        self._since_sync = 0
        self._batches = 0
        self._rounds = 0
        self._prev_val_loss: float | None = None
        self._metrics: dict[str, float] = {}  # of the merged model last validated
        self._last_merged: np.ndarray | None = None
        self._last_round = 0
        self._swarm_done = False
        self._finished = False
        self._merge_listeners: list[Callable[[int], None]] = []
        self._update_transforms: list[Callable[[np.ndarray, np.ndarray], np.ndarray]] = []
        self.node_id = ""
        self.session: Session | None = None  # the recorded session, after Hello
        self.final_model_path: Path | None = None
        self.loopback = os.environ.get(LOOPBACK_ENV, "false").strip().lower() == "true"
        if self.loopback:
            self.logger.warning("%s is true: training without the swarm (no syncs)",
                                LOOPBACK_ENV)

    # ---- state --------------------------------------------------------------------

    @property
    def swarm_done(self) -> bool:
        """True once the swarm has finished: the final model is loaded, stop training."""
        return self._swarm_done

    @property
    def rounds_done(self) -> int:
        """Sync rounds completed, the BEGIN round included."""
        return self._rounds

    @property
    def sync_interval(self) -> int:
        """Batches between syncs now (syncFrequency, or its adaptive value)."""
        return self._interval

    def add_merge_listener(self, listener: Callable[[int], None]) -> None:
        """Call `listener(round_no)` after each merged model is loaded into the model
        (the start round included, the final model not): where an example measures
        the merged model, e.g. for metrics.json."""
        self._merge_listeners.append(listener)

    def add_update_transform(self, transform: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> None:
        """Send `transform(weights, last_merged)` instead of this node's weights in each
        regular round (both flat vectors of the wire dtype; not in the start round, which
        has no merged model yet). The seam for a training program that poisons its own
        updates (swarm.attacks): model poisoning is the program's doing, not the SL node's."""
        self._update_transforms.append(transform)

    # ---- hooks --------------------------------------------------------------------

    def on_train_begin(self) -> None:
        """Hello, then one BEGIN round so every node starts from the same weights."""
        if self.loopback:
            return
        if self._layout is not None:
            self.logger.warning("on_train_begin called again: this node already joined the swarm")
            return
        weights = self._get()
        self._layout = Layout.from_weights(weights)
        if self._channel is None:
            self._channel = LocalChannel(logger=self.logger)
        reply = self._channel.hello(self.params, self._layout, self.framework)
        self.node_id = reply.node_id
        self.logger.info("Joined the swarm as node %s: %d tensors, %.1f MiB per sync, "
                         "syncFrequency %d, minPeers %d", reply.node_id or "?",
                         len(self._layout.tensors), self._layout.nbytes / 2**20,
                         self.params.sync_frequency, self.params.min_peers)
        self.session = self._recorded_session(reply)
        if reply.merged_model_available:
            self.logger.info("The swarm is already training: starting from its latest "
                             "merged model")
        self._sync("begin", weights)

    def _decide_step(self) -> None:
        """Once, at the first regular sync: plain averaging, or AdaptiveStep."""
        self._step_decided = True
        if self._optimizer is None:  # the NumPy callback: no optimizer to see
            return
        name, trained = self._optimizer()
        if name is None:
            self.logger.info("Could not see this model's optimizer: sending the model as "
                             "it is (plain averaging)")
            return
        if not is_adaptive(name):
            return
        mask = np.zeros(self._layout.size, dtype=bool)
        for offset, spec, on in zip(self._layout.offsets, self._layout.tensors, trained):
            mask[offset:offset + spec.size] = on
        self._step = AdaptiveStep(mask)
        if self._last_merged is not None:
            self._step.loaded(self._last_merged, self._last_round)
        self.logger.info("The optimizer is %s, whose steps are normalised per coordinate: "
                         "this node sends its update times 1.5 x the number of peers, "
                         "plus momentum (never longer than the scaled update), so that "
                         "the merge adds the peers' steps "
                         "(adamStepScaling=False: plain averaging)", name)

    def _outgoing(self, flat: np.ndarray) -> np.ndarray:
        if not self._step_decided:
            self._decide_step()
        return flat if self._step is None else self._step.outgoing(flat, self._peers)

    def on_batch_end(self) -> None:
        """Counts one batch; every `sync_interval` batches, one sync round."""
        if self.loopback:
            return
        self._require_started("on_batch_end")
        if self._swarm_done:
            return
        self._batches += 1
        self._since_sync += 1
        if self._since_sync >= self._interval:
            self._since_sync = 0
            self._sync("regular")

    def on_epoch_end(self, epoch: int | None = None) -> None:
        if self.loopback:
            return
        self._require_started("on_epoch_end")
        if epoch is not None:
            total = f"/{self.params.total_epochs}" if self.params.total_epochs else ""
            # Keras counts epochs from 0, the established PyTorch examples from 1:
            # report the number as given.
            self.logger.info("Epoch %s%s ended: %d batches, %d sync rounds so far",
                             epoch, total, self._batches, self._rounds)

    def on_train_end(self) -> None:
        """Finish: wait for the swarm, load the final model, save it, say so.

        What this node contributes meanwhile follows checkinModelOnTrainEnd: its final
        local model (snapshot, inactive: the SL node gives it weight 0) or, as the
        established product does, the last merged model (active).
        """
        if self.loopback:
            return
        self._require_started("on_train_end")
        if self._finished:
            return
        loaded = self._swarm_done  # a sync already brought the final model
        if not self._swarm_done:
            mode = self.params.checkin_model_on_train_end
            if mode == "active" and self._last_merged is not None:
                flat = self._last_merged
            else:
                flat = self._flatten(self._get())
                if mode == "snapshot":
                    flat = self._outgoing(flat)
            self.logger.info("Training ended here; waiting for the swarm to finish "
                             "(checkinModelOnTrainEnd=%s)", mode)
            started = time.monotonic()
            result, final = self._channel.finish(flat, self.params.node_weightage, mode)
            self._log_round(result, "finish", time.monotonic() - started)
            if final is not None:
                self._load(final, "final model")
                loaded = True
            else:
                self.logger.warning("The SL node sent no final model: keeping this node's weights")
            self._swarm_done = True
        directory = Path(os.environ.get("MODEL_DIR") or DEFAULT_MODEL_DIR) / "saved_models"
        directory.mkdir(parents=True, exist_ok=True)
        self.final_model_path = Path(self._save(self._get(), directory))
        self.logger.info("Saved the final model to %s", self.final_model_path)
        self._finished = True
        if self._owns_channel:
            self._channel.close()
        if loaded:
            self.logger.info(FINAL_LOG_LINE)

    def _recorded_session(self, reply) -> Session | None:
        """The swarm's session as the ledger recorded it; says where it differs from
        this callback's parameters (the SL node already refused what it cannot run)."""
        try:
            recorded = Session.from_json(reply.config_json, reply.min_peers)
            asked = Session.from_hello(json.loads(self.params.to_config_json()),
                                       recorded.layout_fingerprint)
        except SessionFormatError as error:
            self.logger.warning("The swarm's session could not be read: %s", error)
            return None
        for mismatch in recorded.mismatches(asked):
            self.logger.warning("%s", mismatch.line())
        return recorded

    # ---- rounds -------------------------------------------------------------------

    def _require_started(self, hook: str) -> None:
        if self._layout is None:
            raise RuntimeError(f"SwarmCallback.{hook}() before on_train_begin(): call "
                               "on_train_begin() once before training starts")

    def _sync(self, kind: str, weights: Weights | None = None) -> None:
        flat = self._flatten(self._get() if weights is None else weights)
        if kind == "regular":
            flat = self._outgoing(flat)
        if self._last_merged is not None:
            for transform in self._update_transforms:
                sent = np.asarray(transform(flat, self._last_merged), dtype=flat.dtype)
                if sent.shape != flat.shape:
                    raise WeightsError(f"the update transform {transform!r} returned shape "
                                       f"{sent.shape}, not the model's {flat.shape}")
                flat = sent
        started = time.monotonic()
        result, merged = self._channel.sync(flat, self.params.node_weightage, kind)
        elapsed = time.monotonic() - started
        self._rounds += 1
        self._log_round(result, kind, elapsed)
        if merged is not None:
            self._load(merged, "final model" if result.swarm_done else "merged model")
            self._last_merged, self._last_round = merged, result.round
            self._peers = max(1, result.participants or self._peers)
            if self._step is not None:
                self._step.loaded(merged, result.round)
        if result.swarm_done:
            if merged is None:
                self.logger.warning("The swarm is done but the SL node sent no final model: "
                                    "keeping this node's weights")
            self._swarm_done = True
            self.logger.info("The swarm finished training: stopping here")
            return
        if merged is not None:
            for listener in self._merge_listeners:
                listener(result.round)
        if self._val_loss is not None and merged is not None:
            self._after_merge(result.round)

    def _log_round(self, result, kind: str, elapsed: float) -> None:
        label = {"begin": " (start)", "finish": " (final)"}.get(kind, "")
        note = f": {result.message}" if result.message else ""
        self.logger.info("Swarm round %d%s: %d participants, %.2f s%s", result.round, label,
                         result.participants, elapsed, note)

    def _flatten(self, weights: Weights) -> np.ndarray:
        try:
            # Straight into the shared region when there is one: no copy to send it. Not
            # with update transforms: they read the last merged model, a view of that
            # same region, after the flatten.
            send_array = getattr(self._channel, "send_array", None)
            out = (send_array(self._layout)
                   if send_array is not None and not self._update_transforms else None)
            flat = self._layout.flatten(weights, out=out)
        except WeightsError as error:
            raise WeightsError(f"the model no longer matches the layout it joined the swarm "
                               f"with: {error}") from None
        try:
            check_finite(flat, self._layout, who="this node's model")
        except WeightsError as error:
            raise WeightsError(f"{error}{self._tensor_hint(flat)}; not sent to the swarm: "
                               "training diverged here (check the learning rate and the data)"
                               ) from None
        return flat

    def _tensor_hint(self, flat: np.ndarray) -> str:
        # List layouts name tensors by position; the adapter may know better names.
        if self._weight_names is None or self._layout.container != "list":
            return ""
        first = int(np.argmin(np.isfinite(flat)))
        try:
            return f" ({self._weight_names()[int(self._layout.tensor_at(first))]})"
        except (IndexError, ValueError):
            return ""

    def _load(self, flat: np.ndarray, what: str) -> None:
        # Never load NaN/Inf, whoever produced it: the user's model would be lost.
        check_finite(flat, self._layout, who=f"the {what} from the SL node")
        self._set(self._layout.unflatten(flat))

    def record_metric(self, name: str, value: float) -> None:
        """For adapters, while validating a merged model: one more metric (e.g. the
        metricFunction's value) to report with the validation loss."""
        self._metrics[name] = float(value)

    def _after_merge(self, round_no: int) -> None:
        self._metrics = {}
        loss = self._val_loss()
        if loss is not None:
            self._metrics["val_loss"] = float(loss)
        self._report_metrics(round_no)
        if loss is None:  # the adapter had nothing to measure a loss with
            return
        loss = float(loss)
        self.logger.info("Validation loss after round %d: %.6g", round_no, loss)
        if self.params.use_adaptive_sync:
            self._adapt(loss)

    def _report_metrics(self, round_no: int) -> None:
        # For the SL node's round records and the SN's dashboard; training goes on
        # without them when the SL node cannot take them (e.g. an older one).
        metrics = {k: v for k, v in self._metrics.items() if math.isfinite(v)}
        if not metrics or not hasattr(self._channel, "report_metrics"):
            return
        try:
            self._channel.report_metrics(round_no, metrics)
        except Exception as error:  # noqa: BLE001 - metrics are never worth a failed run
            self.logger.warning("Could not report the validation metrics of round %d to "
                                "the SL node: %s", round_no, error)

    def _adapt(self, loss: float) -> None:
        previous, self._prev_val_loss = self._prev_val_loss, loss
        if previous is None:
            return  # the first merge only sets the baseline
        sf = self.params.sync_frequency
        old = self._interval
        if math.isfinite(loss) and loss < previous:
            new, verdict = min(math.ceil(old * ADS_GROWTH), ADS_MAX_FACTOR * sf), "improved"
        else:
            new, verdict = max(old // ADS_SHRINK, sf // ADS_MIN_DIVISOR, 1), "did not improve"
        if new != old:
            self.logger.info("Adaptive sync: validation loss %s (%.6g -> %.6g): syncing every "
                             "%d batches instead of %d", verdict, previous, loss, new, old)
        self._interval = new


class CoreViews:
    """What users may read from a framework's SwarmCallback, forwarded from its core."""

    _core: SwarmCallbackCore

    @property
    def logger(self):
        """The callback's logger; `swarmCallback.logger.setLevel(...)` works as before."""
        return self._core.logger

    @property
    def swarm_done(self) -> bool:
        """True once the swarm is done and the final model is loaded: stop training."""
        return self._core.swarm_done

    @property
    def rounds_done(self) -> int:
        return self._core.rounds_done

    @property
    def sync_interval(self) -> int:
        return self._core.sync_interval

    @property
    def final_model_path(self) -> Path | None:
        return self._core.final_model_path

    def add_merge_listener(self, listener) -> None:
        """`listener(round_no)` runs after each merged model is loaded."""
        self._core.add_merge_listener(listener)

    def add_update_transform(self, transform) -> None:
        """`transform(weights, last_merged) -> weights` rewrites what this node sends."""
        self._core.add_update_transform(transform)


class SwarmCallback(SwarmCallbackCore):
    """The SwarmCallback for plain NumPy training loops.

    `get_weights()` returns the model as a list or dict of arrays and `set_weights(w)`
    loads one back; call the hooks as a Keras fit loop would. With useAdaptiveSync,
    `val_loss` (or adsValData, when callable) returns the current validation loss.
    The final model is saved as saved_models/swarm_model.npz unless `save_final` is given.
    """

    def __init__(self, get_weights: Callable[[], Weights], set_weights: Callable[[Weights], None],
                 *, val_loss: Callable[[], float] | None = None,
                 save_final: Callable[[Weights, Path], Path] | None = None,
                 channel: LocalChannel | None = None, **params: Any):
        parsed = _parse(params, val_data_optional=val_loss is not None)
        if val_loss is None and parsed.use_adaptive_sync:
            if not callable(parsed.ads_val_data):
                raise ValueError("adsValData for a NumPy SwarmCallback must be a callable "
                                 "returning the validation loss (or pass val_loss=)")
            val_loss = parsed.ads_val_data
        super().__init__(get_weights, set_weights, parsed, "numpy", val_loss=val_loss,
                         channel=channel, save_final=save_final)
