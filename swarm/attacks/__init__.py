"""Attacks for testing defences: data poisoning (label flipping, a backdoor trigger) and
update poisoning (sign flipping with scaling, Gaussian noise), one module each.

A ``poison_ratio`` of the nodes is malicious (``malicious_nodes``, deterministic from the
seed). Data attacks change what a malicious node trains on (``poison_data``); update
attacks change what it sends, through the SwarmCallback's update transform
(``callback.add_update_transform(spec.update_transform(seed))``): model poisoning is the
training program's doing. ``attack_spec`` reads the flat form the lab and the examples
use (attack="labelflip", poison_ratio=0.25, attack_<option>=...).
"""

from .backdoor import add_trigger, backdoor, backdoor_success_rate
from .gaussian import gaussian_noise
from .labelflip import flip_labels
from .signflip import sign_flip
from .spec import (ATTACKS, DATA_ATTACKS, NO_ATTACK, OPTIONS, UPDATE_ATTACKS, AttackSpec,
                   AttackSpecError, UpdateAttack, attack_spec, malicious_count,
                   malicious_nodes, poison_data, poison_update)

__all__ = ["ATTACKS", "DATA_ATTACKS", "NO_ATTACK", "OPTIONS", "UPDATE_ATTACKS", "AttackSpec",
           "AttackSpecError", "UpdateAttack", "add_trigger", "attack_spec", "backdoor",
           "backdoor_success_rate", "flip_labels", "gaussian_noise", "malicious_count",
           "malicious_nodes", "poison_data", "poison_update", "sign_flip"]
