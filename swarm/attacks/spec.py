"""Which nodes are malicious, what they do, and the one place an attack is named.

An attack is given as flat task parameters, as the lab's grids and the examples'
environment give it: ``attack`` (a kind below, or "none"), ``poison_ratio`` (the share of
nodes that are malicious) and the kind's options prefixed ``attack_`` (e.g.
``attack_scale=5`` for signflip). ``attack_spec`` turns those into one ``AttackSpec``
and names the parameter that is wrong when something is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .backdoor import backdoor
from .gaussian import DEFAULT_SIGMA, gaussian_noise
from .labelflip import MODES, flip_labels
from .signflip import DEFAULT_SCALE, sign_flip

# Poisoning the training data (the node trains on it) vs poisoning the update it sends.
DATA_ATTACKS = ("labelflip", "backdoor")
UPDATE_ATTACKS = ("signflip", "gaussian")
ATTACKS = DATA_ATTACKS + UPDATE_ATTACKS
NO_ATTACK = "none"
OPTION_PREFIX = "attack_"

# Each kind's options and their defaults (None: decided from the data).
OPTIONS: dict[str, dict[str, Any]] = {
    "labelflip": {"mode": "reverse", "fraction": 1.0},
    "backdoor": {"target": 0, "fraction": 0.2, "patch": None},
    "signflip": {"scale": DEFAULT_SCALE},
    "gaussian": {"sigma": DEFAULT_SIGMA},
    NO_ATTACK: {},
}


class AttackSpecError(ValueError):
    """An attack parameter that cannot be used; ``parameter`` names it."""

    def __init__(self, parameter: str, message: str):
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter


def malicious_count(n: int, ratio: float) -> int:
    """floor(ratio * n): the attackers never exceed the ratio (25 % of 8 is 2, of 6 is 1)."""
    return math.floor(ratio * n + 1e-9)


def malicious_nodes(n: int, ratio: float, seed: int) -> set[int]:
    """The indices (0..n-1) of the malicious nodes: ``malicious_count(n, ratio)`` of them,
    drawn with ``seed``, so every node (and a rerun) computes the same set."""
    if n < 0:
        raise AttackSpecError("num_nodes", f"must be at least 0, not {n}")
    if not 0.0 <= ratio <= 1.0:
        raise AttackSpecError("poison_ratio", f"must be between 0 and 1, not {ratio}")
    order = np.random.default_rng([int(seed), 0x6D616C]).permutation(n)
    return {int(i) for i in order[:malicious_count(n, ratio)]}


def poison_data(kind: str, x: np.ndarray, y: np.ndarray, *, seed: int,
                num_classes: int | None = None, **options: Any) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) as a malicious node of attack ``kind`` trains on them (copies; the inputs
    are untouched). labelflip needs ``num_classes``."""
    if kind == "labelflip":
        if num_classes is None:
            raise AttackSpecError("num_classes", "labelflip needs the number of classes")
        return np.array(x, copy=True), flip_labels(y, num_classes, seed=seed, **options)
    if kind == "backdoor":
        return backdoor(x, y, seed=seed, **options)
    if kind in UPDATE_ATTACKS or kind == NO_ATTACK:
        return np.array(x, copy=True), np.array(y, copy=True)
    raise AttackSpecError("attack", _unknown(kind))


def poison_update(kind: str, weights, reference, *, seed: int, round_no: int = 0,
                  **options: Any):
    """What a malicious node of attack ``kind`` sends instead of ``weights``, given the
    last merged model ``reference``. Weights are one array or a list/dict of arrays (the
    result has the same form); the noise of round ``round_no`` is drawn from
    (seed, round_no), so a rerun sends the same."""
    if kind == "signflip":
        scale = options.get("scale", DEFAULT_SCALE)
        return _each(weights, reference, lambda w, r: sign_flip(w, r, scale))
    if kind == "gaussian":
        rng = np.random.default_rng([int(seed), int(round_no)])
        sigma = options.get("sigma", DEFAULT_SIGMA)
        return _each(weights, reference, lambda w, _r: gaussian_noise(w, rng, sigma))
    if kind in DATA_ATTACKS or kind == NO_ATTACK:
        return weights
    raise AttackSpecError("attack", _unknown(kind))


def _each(weights, reference, fn):
    if isinstance(weights, dict):
        return {k: fn(v, reference[k]) for k, v in weights.items()}
    if isinstance(weights, (list, tuple)):
        return [fn(w, r) for w, r in zip(weights, reference, strict=True)]
    return fn(weights, reference)


class UpdateAttack:
    """A SwarmCallback update transform: ``fn(weights, last_merged) -> weights``, each call
    one round (its noise drawn from (seed, round))."""

    def __init__(self, kind: str, seed: int, **options: Any):
        if kind not in UPDATE_ATTACKS:
            raise AttackSpecError("attack", f"{kind!r} does not poison updates; those that "
                                  f"do: {', '.join(UPDATE_ATTACKS)}")
        self.kind, self.seed, self.options = kind, seed, options
        self.rounds = 0

    def __call__(self, weights, last_merged):
        out = poison_update(self.kind, weights, last_merged, seed=self.seed,
                            round_no=self.rounds, **self.options)
        self.rounds += 1
        return out


@dataclass(frozen=True)
class AttackSpec:
    """One attack: its kind, the share of malicious nodes, and the kind's options."""

    kind: str = NO_ATTACK
    ratio: float = 0.0
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.kind != NO_ATTACK and self.ratio > 0

    @property
    def poisons_data(self) -> bool:
        return self.kind in DATA_ATTACKS

    @property
    def poisons_updates(self) -> bool:
        return self.kind in UPDATE_ATTACKS

    def malicious(self, num_nodes: int, seed: int) -> set[int]:
        return malicious_nodes(num_nodes, self.ratio, seed) if self.active else set()

    def _given(self) -> dict[str, Any]:
        return {k: v for k, v in self.options.items() if v is not None}

    def poison_data(self, x, y, *, seed: int, num_classes: int | None = None):
        return poison_data(self.kind, x, y, seed=seed, num_classes=num_classes, **self._given())

    def update_transform(self, seed: int) -> Callable | None:
        """The callback transform for a malicious node, or None for a data attack."""
        return UpdateAttack(self.kind, seed, **self._given()) if self.poisons_updates else None

    def params(self) -> dict[str, Any]:
        """The flat form back (what ``attack_spec`` reads), e.g. for a results row."""
        return {"attack": self.kind, "poison_ratio": self.ratio,
                **{OPTION_PREFIX + k: v for k, v in self.options.items()}}


def _unknown(kind: object) -> str:
    return f"{kind!r} is not an attack; choose one of {', '.join((NO_ATTACK,) + ATTACKS)}"


def attack_spec(params: Mapping[str, Any] | None = None, /, **flat: Any) -> AttackSpec:
    """The AttackSpec in flat parameters: ``attack``, ``poison_ratio`` and ``attack_<option>``
    keys; every other key is ignored (a lab task's model, alpha, seed...).

    ``attack_spec(attack="labelflip", poison_ratio=0.25)`` or ``attack_spec(task_params)``.
    An attack other than "none" with no poison_ratio is an error (which nodes would attack?);
    so is an option the kind does not take, or a value of the wrong type or range.
    """
    given = {**(params or {}), **flat}
    kind = given.get("attack")
    kind = NO_ATTACK if kind in (None, "", False) else str(kind).strip().lower()
    if kind not in OPTIONS:
        raise AttackSpecError("attack", _unknown(given.get("attack")))
    ratio = given.get("poison_ratio")
    ratio = _number("poison_ratio", 0.0 if ratio is None and kind == NO_ATTACK else ratio, kind)
    if not 0.0 <= ratio <= 1.0:
        raise AttackSpecError("poison_ratio", f"must be between 0 and 1, not {ratio}")
    allowed = OPTIONS[kind]
    options = dict(allowed)
    for key, value in given.items():
        if not key.startswith(OPTION_PREFIX):
            continue
        name = key[len(OPTION_PREFIX):]
        if name not in allowed:
            takes = ", ".join(OPTION_PREFIX + k for k in allowed) or "no options"
            raise AttackSpecError(key, f"attack {kind!r} takes {takes}")
        options[name] = _option(key, name, value)
    return AttackSpec(kind, ratio, options)


def _number(key: str, value: Any, kind: str) -> float:
    if value is None:
        raise AttackSpecError(key, f"attack {kind!r} needs {key} (the share of malicious "
                              "nodes, e.g. 0.25)")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise AttackSpecError(key, f"{value!r} is not a number") from None


def _option(key: str, name: str, value: Any) -> Any:
    if name == "mode":
        if value not in MODES:
            raise AttackSpecError(key, f"{value!r} is not one of {', '.join(MODES)}")
        return value
    if name in ("target", "patch"):
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise AttackSpecError(key, f"{value!r} is not a whole number") from None
        if number != float(value) or number < (0 if name == "target" else 1):
            raise AttackSpecError(key, f"{value!r} is not a whole number of at least "
                                  f"{0 if name == 'target' else 1}")
        return number
    number = _number(key, value, name)
    if name == "fraction" and not 0.0 <= number <= 1.0:
        raise AttackSpecError(key, f"must be between 0 and 1, not {number}")
    if name == "sigma" and not (number >= 0 and math.isfinite(number)):
        raise AttackSpecError(key, f"must be a finite number of at least 0, not {number}")
    if name == "scale" and not math.isfinite(number):
        raise AttackSpecError(key, f"must be finite, not {number}")
    return number
