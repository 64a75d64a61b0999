"""SwarmCallback for PyTorch: `from swarm.torch import SwarmCallback`. PyTorch has no
callback system, so the training loop calls the hooks itself:

    cb = SwarmCallback(syncFrequency=..., minPeers=..., model=model)
    cb.on_train_begin()
    for epoch in range(epochs):
        for x, y in loader:
            ...; optimizer.step(); cb.on_batch_end()
            if cb.swarm_done: break
        cb.on_epoch_end(epoch)
    cb.on_train_end()
"""

from __future__ import annotations

import difflib
import inspect
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch

from swarm.callback.core import CoreViews, SwarmCallbackCore
from swarm.callback.params import SwarmParams, parse_params
from swarm.callback.val_data import replayable

DEFAULT_VAL_BATCH_SIZE = 64


def _classes(module, base) -> dict[str, type]:
    return {name: obj for name, obj in vars(module).items()
            if inspect.isclass(obj) and issubclass(obj, base) and not name.startswith("_")}


def _lookup(kind: str, param: str, name: str, candidates: dict[str, type]) -> type:
    if name in candidates:
        return candidates[name]
    close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.5)
    if not close:  # e.g. "accuracy" vs "MulticlassAccuracy": try substrings too
        close = sorted(n for n in candidates if name.lower() in n.lower())[:5]
    hint = f"; similar names: {', '.join(close)}" if close else ""
    raise ValueError(f"{param} {name!r} is not a {kind}{hint}")


def torch_loss_class(name: str, param: str = "lossFunction") -> type:
    """The torch.nn loss class called `name` (e.g. "CrossEntropyLoss")."""
    return _lookup("torch.nn loss", param, name,
                   _classes(torch.nn, torch.nn.modules.loss._Loss))


def torchmetrics_class(name: str, param: str = "metricFunction") -> type:
    """The torchmetrics metric class called `name`: top-level names (e.g. "Accuracy")
    and those only in torchmetrics.classification / .regression (e.g. "MulticlassAccuracy")."""
    import torchmetrics  # only programs that name a metric need it
    import torchmetrics.classification
    import torchmetrics.regression

    candidates: dict[str, type] = {}
    for module in (torchmetrics.regression, torchmetrics.classification, torchmetrics):
        candidates.update(_classes(module, torchmetrics.Metric))
    return _lookup("torchmetrics metric", param, name, candidates)


def _instantiate(cls: type, args: dict | None, param: str):
    try:
        return cls(**(args or {}))
    except (TypeError, ValueError) as error:
        raise ValueError(f"{param} {args or {}!r} do not fit {cls.__name__}: {error}") from None


class SwarmCallback(CoreViews):
    """Makes a PyTorch training loop take part in swarm training through the site's SL node.

    Responsible for the PyTorch side only: it exchanges the model's WHOLE state_dict
    (parameters and buffers, e.g. BatchNorm running statistics and its int64
    num_batches_tracked) as NumPy on the CPU, and loads merged ones back with each
    tensor's own dtype and device; it validates on adsValData after each merge with
    the torch.nn loss named by lossFunction and the torchmetrics metric named by
    metricFunction (the loss drives adaptive sync); it saves the final model's
    state_dict as $MODEL_DIR/saved_models/<model class>.pt. When to sync and what to
    load is `SwarmCallbackCore`'s job. Optimizer state stays local to each node.
    """

    def __init__(self, **kwargs: Any):
        params = parse_params(**kwargs)
        if params.model is None:
            raise ValueError("model is required: the torch.nn.Module this program trains "
                             "(SwarmCallback(..., model=model))")
        self._setup(params, "torch", "swarm.torch.SwarmCallback")

    def _setup(self, params: SwarmParams, framework: str, who: str) -> None:
        """Everything but the model check: shared with swarm.hf, whose model may come
        from the Trainer at on_train_begin."""
        if params.model is not None and not isinstance(params.model, torch.nn.Module):
            raise ValueError(f"model {type(params.model).__name__} is not a torch.nn.Module")
        if params.ml_platform not in (None, "PYTORCH"):
            raise ValueError(f"mlPlatform {params.ml_platform!r} is not one of: PYTORCH "
                             f"(this is {who})")
        self.swarm_params = params
        self.model: torch.nn.Module | None = params.model
        self.loss_function = None
        self.metric_function = None
        if params.loss_function is not None:
            self.loss_function = _instantiate(torch_loss_class(params.loss_function),
                                              params.loss_function_args, "lossFunctionArgs")
        if params.metric_function is not None:
            self.metric_function = _instantiate(torchmetrics_class(params.metric_function),
                                                params.metric_function_args,
                                                "metricFunctionArgs")
        if params.use_adaptive_sync and not self._can_measure_loss():
            raise ValueError("useAdaptiveSync needs lossFunction: the name of the torch.nn "
                             "loss to validate with, e.g. 'CrossEntropyLoss'")
        validates = params.ads_val_data is not None and (
            self._can_measure_loss() or self.metric_function is not None)
        self._ads_val_data = replayable(params.ads_val_data)
        self._core = SwarmCallbackCore(
            get_weights=self._get_state, set_weights=self._set_state, params=params,
            framework=framework, val_loss=self._validate if validates else None,
            save_final=self._save_final, optimizer=self._optimizer)
        # PyTorch programs never hand us their optimizer: the first optimizer step
        # over this model's parameters names it (a global post-step hook, removed once
        # seen and at the end of training).
        self._seen_optimizer: tuple[str, list[bool]] | None = None
        self._step_hook = None
        if params.adam_step_scaling:
            method = weakref.WeakMethod(self._saw_step)
            try:
                from torch.optim.optimizer import register_optimizer_step_post_hook
            except ImportError:  # torch < 2.0: plain averaging, said at the first sync
                register_optimizer_step_post_hook = None
            if register_optimizer_step_post_hook is not None:
                self._step_hook = register_optimizer_step_post_hook(
                    lambda optimizer, args, kwargs: (method() or _noop)(optimizer))
        if params.ads_val_data is None:
            self._core.logger.info("No adsValData: merged models are not validated here")

    def _can_measure_loss(self) -> bool:
        return self.loss_function is not None

    # ---- hooks the training loop calls --------------------------------------------

    def on_train_begin(self) -> None:
        self._core.on_train_begin()

    def on_batch_end(self, batch: int | None = None) -> None:
        self._core.on_batch_end()

    def on_epoch_end(self, epoch: int | None = None) -> None:
        self._core.on_epoch_end(epoch)

    def on_train_end(self) -> None:
        self._remove_step_hook()
        self._core.on_train_end()

    # ---- the optimizer ------------------------------------------------------------

    def _saw_step(self, optimizer) -> None:
        try:
            if self.model is None or self._seen_optimizer is not None:
                return
            stepped = {id(p) for group in optimizer.param_groups for p in group["params"]}
            names = {name for name, p in self.model.named_parameters(remove_duplicate=False)
                     if id(p) in stepped}
            if not names:
                return  # another model's optimizer
            self._seen_optimizer = (type(optimizer).__name__,
                                    [name in names for name in self.model.state_dict()])
            self._remove_step_hook()
        except Exception as error:  # never break training over what is only a default
            self._core.logger.info("Could not inspect the optimizer (%s)", error)
            self._remove_step_hook()

    def _remove_step_hook(self) -> None:
        if self._step_hook is not None:
            self._step_hook.remove()
            self._step_hook = None

    def _optimizer(self) -> tuple[str | None, list[bool]]:
        return self._seen_optimizer or (None, [])

    # ---- weights ------------------------------------------------------------------

    def _get_state(self) -> dict[str, np.ndarray]:
        out = {}
        for name, tensor in self.model.state_dict().items():
            tensor = tensor.detach()
            if tensor.dtype == torch.bfloat16:  # NumPy has no bfloat16; float32 holds it exactly
                tensor = tensor.float()
            out[name] = tensor.cpu().numpy()
        return out

    def _set_state(self, weights: dict[str, np.ndarray]) -> None:
        current = self.model.state_dict()
        incoming = {}
        for name, array in weights.items():
            ref = current[name]
            incoming[name] = torch.from_numpy(np.ascontiguousarray(array)).to(
                device=ref.device, dtype=ref.dtype)
        self.model.load_state_dict(incoming, strict=True)

    def _save_final(self, weights, directory: Path) -> Path:
        # The core has already loaded `weights` into the model.
        path = directory / f"{type(self.model).__name__}.pt"
        torch.save(self.model.state_dict(), path)
        return path

    # ---- validation ---------------------------------------------------------------

    def _device(self) -> torch.device:
        for tensor in self.model.parameters():
            return tensor.device
        for tensor in self.model.buffers():
            return tensor.device
        return torch.device("cpu")

    def _batches(self):
        data = self._ads_val_data
        size = (self.swarm_params.ads_val_batch_size or self.swarm_params.val_batch_size
                or DEFAULT_VAL_BATCH_SIZE)
        if isinstance(data, (tuple, list)) and len(data) == 2:
            x, y = (torch.as_tensor(part) for part in data)
            for start in range(0, len(x), size):
                yield x[start:start + size], y[start:start + size]
            return
        if isinstance(data, torch.utils.data.Dataset):
            data = torch.utils.data.DataLoader(data, batch_size=size)
        for batch in data:  # a DataLoader, generator or iterable of (x, y, ...) batches
            yield self._split_batch(batch)

    def _split_batch(self, batch):
        return batch[0], batch[1]

    def _outputs(self, x):
        """The model's output for one validation batch, as the loss and metric take it."""
        return self.model(x)

    def _prediction(self, output):
        """What the metric compares with the labels."""
        return output

    def _batch_loss(self, output, y):
        return self.loss_function(output, y)

    def _validate(self) -> float | None:
        """Loss (and metric) of the merged model on adsValData; logged, and returned
        for adaptive sync (None when there is no lossFunction)."""
        device = self._device()
        loss_fn, metric = self.loss_function, self.metric_function
        if metric is not None:
            metric = metric.to(device)
            metric.reset()
        was_training = self.model.training
        self.model.eval()
        total, count = 0.0, 0
        try:
            with torch.no_grad():
                for x, y in self._batches():
                    x, y = _to(x, device), _to(y, device)
                    output = self._outputs(x)
                    size = len(y)
                    if self._can_measure_loss():
                        loss = self._batch_loss(output, y)
                        reduction = getattr(loss_fn, "reduction", "mean")
                        # Weight per-batch means by batch size: the last batch may be short.
                        total += float(loss.sum() if reduction != "mean" else loss * size)
                    if metric is not None:
                        metric.update(self._prediction(output), y)
                    count += size
        finally:
            self.model.train(was_training)
        if count == 0:
            self._core.logger.warning("adsValData is empty: nothing to validate on")
            return None
        if metric is not None:
            value = metric.compute()
            shown = f"{float(value):.6g}" if value.numel() == 1 else str(value.tolist())
            self._core.logger.info("Validation %s: %s", type(metric).__name__, shown)
            if value.numel() == 1:
                self._core.record_metric(type(metric).__name__, float(value))
            metric.reset()
        return total / count if self._can_measure_loss() else None


def _noop(optimizer) -> None:
    pass


def _to(value, device):
    """Moves a tensor, or the tensors of a dict batch (Hugging Face style), to device."""
    if isinstance(value, dict):
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in value.items()}
    return value.to(device) if isinstance(value, torch.Tensor) else torch.as_tensor(value).to(device)
