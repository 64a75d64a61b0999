"""SwarmCallback for the Hugging Face `transformers` Trainer:

    from swarm.hf import SwarmCallback
    trainer = Trainer(model=model, args=args, train_dataset=train,
                      callbacks=[SwarmCallback(syncFrequency=16, minPeers=2)])
    trainer.train()

A `transformers.TrainerCallback` over the same PyTorch adapter as swarm.torch: the
Trainer calls the hooks, so the program calls nothing itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import transformers

from swarm.callback.params import parse_params
from swarm.torch import SwarmCallback as _TorchSwarmCallback


class SwarmCallback(_TorchSwarmCallback, transformers.TrainerCallback):
    """Makes `Trainer.train()` take part in swarm training through the site's SL node.

    `model` is optional: by default it is the model the Trainer trains. syncFrequency
    counts optimizer steps (Trainer's global steps: with gradient_accumulation_steps
    > 1, groups of that many batches). Validation after each merge: adsValData yields
    dict batches with "labels" (the model's own loss, as Trainer computes it) or (x, y)
    pairs with lossFunction/metricFunction on the logits. When the swarm is done the
    Trainer stops; the final swarm model is loaded after the Trainer's own end-of-training
    steps (load_best_model_at_end included), so every node ends with the same model, and
    is saved with save_pretrained under $MODEL_DIR/saved_models/<model class>/.
    """

    def __init__(self, **kwargs: Any):
        self._setup(parse_params(**kwargs), "torch", "swarm.hf.SwarmCallback")

    # ---- Trainer hooks ------------------------------------------------------------

    def on_train_begin(self, args=None, state=None, control=None, model=None, **kwargs):
        if self.model is None:
            if model is None:
                raise ValueError("model is required: give SwarmCallback(..., model=model) or "
                                 "use it in a transformers Trainer, which passes its model")
            if not isinstance(model, torch.nn.Module):
                raise ValueError(f"model {type(model).__name__} is not a torch.nn.Module")
            self.model = model
        self._core.on_train_begin()
        self._stop_if_done(control)

    def on_step_end(self, args=None, state=None, control=None, **kwargs):
        self._core.on_batch_end()
        self._stop_if_done(control)

    def on_epoch_end(self, args=None, state=None, control=None, **kwargs):
        epoch = None if state is None or state.epoch is None else round(state.epoch)
        self._core.on_epoch_end(epoch)
        self._stop_if_done(control)

    def on_train_end(self, args=None, state=None, control=None, **kwargs):
        self._remove_step_hook()
        self._core.on_train_end()

    def _stop_if_done(self, control) -> None:
        if control is not None and self._core.swarm_done:
            control.should_training_stop = True

    # ---- model specifics ------------------------------------------------------------

    def _save_final(self, weights, directory: Path) -> Path:
        if not hasattr(self.model, "save_pretrained"):
            return super()._save_final(weights, directory)
        path = directory / type(self.model).__name__
        self.model.save_pretrained(path)
        return path

    def _can_measure_loss(self) -> bool:
        # Dict batches with labels need no lossFunction: the model computes its loss.
        data = self.swarm_params.ads_val_data
        return self.loss_function is not None or (
            data is not None and not isinstance(data, (tuple, list)))

    def _split_batch(self, batch):
        if isinstance(batch, Mapping):
            if "labels" not in batch:
                raise ValueError("adsValData batches are dicts without 'labels': the model "
                                 "needs them to compute its validation loss")
            return dict(batch), batch["labels"]
        return super()._split_batch(batch)

    def _outputs(self, x):
        return self.model(**x) if isinstance(x, dict) else self.model(x)

    def _batch_loss(self, output, y):
        if getattr(output, "loss", None) is not None and self.loss_function is None:
            return output.loss  # the mean over the batch, as Trainer reports it
        if self.loss_function is None:
            raise ValueError("adsValData gives (x, y) pairs: name lossFunction to "
                             "validate on them, e.g. 'CrossEntropyLoss'")
        return self.loss_function(_logits(output), y)

    def _prediction(self, output):
        return _logits(output)


def _logits(output):
    return output.logits if hasattr(output, "logits") else output


__all__ = ["SwarmCallback"]
