"""run_task's inproc backend: deterministic from the seed, learning for real, and
reporting a diverged run as a result."""

from __future__ import annotations

import math

import numpy as np
import pytest

from swarm.lab.inproc import RoundHub
from swarm.lab.launch import ledger_order, sl_node_id
from swarm.lab.tasks import TaskError, parse_task, run_task, task_data, task_params

SMALL = {"nodes": 3, "epochs": 2, "sync_every": 8}


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    first = run_task(SMALL, workdir=tmp_path / "a")
    again = run_task(SMALL, workdir=tmp_path / "b")
    other = run_task({**SMALL, "seed": 1}, workdir=tmp_path / "c")
    assert first["nodes_agree"] and not first["diverged"]
    assert first["weights_sha256"] == again["weights_sha256"]
    assert (first["accuracy"], first["loss"]) == (again["accuracy"], again["loss"])
    assert other["weights_sha256"] != first["weights_sha256"]


def test_a_swarm_of_iid_nodes_learns_the_digits(tmp_path):
    result = run_task({"nodes": 4, "epochs": 10}, workdir=tmp_path)
    assert result["accuracy"] > 0.9
    assert result["node_samples"] == [350, 349, 349, 349]
    assert result["train_samples"] == 1397
    # 350 samples / 16 per batch = 22 batches a epoch, a sync every 8: 27 + the start round
    # + the final models' round (snapshot).
    assert result["rounds"] == 29
    assert result["model"] == "mlp-64-32-10"


def test_label_split_nodes_beat_themselves_alone(tmp_path):
    result = run_task({"nodes": 3, "partition": "label", "epochs": 10, "local_baseline": True},
                      workdir=tmp_path)
    # Alone, a node knows only its 3-4 digits: well under half of the test set.
    assert max(result["local_accuracy"]) < 0.45
    assert result["accuracy"] > result["local_accuracy_max"] + 0.3
    assert len(result["local_loss"]) == 3


def test_a_diverged_run_is_a_result_not_an_exception(tmp_path):
    result = run_task({"nodes": 2, "epochs": 1, "lr": 1e8}, workdir=tmp_path)
    assert result["diverged"] is True
    assert math.isnan(result["accuracy"]) and math.isnan(result["loss"])
    assert "non-finite" in result["divergence"]
    assert result["weights_sha256"] == ""


def test_unequal_shards_and_every_checkin_mode_stay_deterministic(tmp_path):
    for mode in ("snapshot", "active", "inactive"):
        params = {"nodes": 3, "partition": "dirichlet", "alpha": 0.3, "epochs": 2,
                  "checkin": mode}
        a = run_task(params, workdir=tmp_path / f"{mode}-a")
        b = run_task(params, workdir=tmp_path / f"{mode}-b")
        assert a["weights_sha256"] == b["weights_sha256"], mode
        assert a["nodes_agree"]


def test_robust_merges_run_with_their_parameters(tmp_path):
    result = run_task({**SMALL, "nodes": 4, "merge": "trimmedmean",
                       "merge_params": {"trim_ratio": 0.25}}, workdir=tmp_path)
    assert not result["diverged"] and result["accuracy"] > 0.5


@pytest.mark.parametrize("params, named", [
    ({"nodes": 0}, "nodes"),
    ({"merge": "median"}, "merge"),
    ({"merge": "trimmedmean", "merge_params": {"trim": 0.2}}, "merge_params"),
    ({"partition": "shards"}, "partition"),
    ({"optimizer": "rmsprop"}, "optimizer"),
    ({"min_peers": 5, "nodes": 4}, "min_peers"),
    ({"learning_rate": 0.1}, "learning_rate"),
    ({"lr": -1}, "lr"),
    ({"dataset": "imagenet"}, "dataset"),
])
def test_bad_parameters_are_named(params, named):
    with pytest.raises(TaskError, match=named):
        parse_task(params)


def test_parameters_round_trip_and_defaults():
    task = parse_task({"width": 16, "depth": 2, "optimizer": "adam"})
    assert task.hidden == (16, 16) and task.lr == 0.001 and task.min_peers == task.nodes == 4
    assert parse_task(task_params(task)) == task
    assert parse_task({"hidden": [64, 32]}).hidden == (64, 32)


def test_adam_learns_too(tmp_path):
    result = run_task({**SMALL, "optimizer": "adam", "lr": 0.01, "epochs": 4}, workdir=tmp_path)
    assert result["accuracy"] > 0.85


def test_the_hub_merges_in_the_ledgers_participant_order():
    # A sealed round lists participants by member key, keccak256 of the node id.
    from swarm.ledger.client import node_key
    for n in (2, 3, 4, 8):
        assert ledger_order(n) == sorted(range(n), key=lambda i: node_key(sl_node_id(i)))
        assert RoundHub(n).order == ledger_order(n)


def test_synthetic_mnist_when_no_file_is_given():
    data = task_data(parse_task({"dataset": "mnist", "synth_train": 200, "synth_test": 50,
                                 "nodes": 2}))
    assert data.inputs == 784 and data.classes == 10
    assert data.test_x.dtype == np.float32 and data.test_x.max() <= 1.0
    assert sum(len(n.y) for n in data.nodes) == 200


def test_attackers_are_chosen_by_seed_and_a_median_resists_scaled_sign_flips(tmp_path):
    base = {"nodes": 8, "epochs": 4, "poison_ratio": 0.25, "attack": "signflip"}
    mean = run_task(base, workdir=tmp_path / "mean")
    median = run_task({**base, "merge": "coordmedian"}, workdir=tmp_path / "median")
    clean = run_task({**base, "attack": "none", "poison_ratio": 0.0}, workdir=tmp_path / "clean")
    assert len(mean["malicious"]) == 2 and mean["malicious"] == median["malicious"]
    assert clean["malicious"] == []
    assert mean["accuracy"] < 0.3 < clean["accuracy"] - 0.3
    assert median["accuracy"] > clean["accuracy"] - 0.15


def test_label_flippers_poison_only_their_own_data():
    task = parse_task({"nodes": 4, "attack": "labelflip", "poison_ratio": 0.5})
    clean = task_data(parse_task({"nodes": 4}))
    data = task_data(task)
    for node, honest in zip(data.nodes, clean.nodes):
        assert np.array_equal(node.x, honest.x)
        assert np.array_equal(node.y, 9 - honest.y) == node.malicious
        assert np.array_equal(node.y, honest.y) == (not node.malicious)
    assert sum(n.malicious for n in data.nodes) == 2


def test_an_unknown_attack_option_is_named():
    with pytest.raises(TaskError, match="attack_scale"):
        parse_task({"attack": "labelflip", "poison_ratio": 0.25, "attack_scale": 3})


def test_the_hub_merges_shard_by_shard_like_the_participants_of_a_round():
    from swarm.merging import get_merge
    from swarm.tensors import Layout
    hub = RoundHub(3)
    hub._layout = Layout.from_weights({"w": np.zeros(40_000, np.float32)})  # 3 blocks
    rng = np.random.default_rng(0)
    updates = rng.standard_normal((3, 40_000)).astype(np.float32)
    weights = np.ones(3)
    for name in ("geomedian", "krum", "centeredclipping", "mean"):
        hub._merge = get_merge(name)
        sharded = hub._sharded_merge(updates, weights)
        whole = hub._merge(updates, weights)
        assert sharded.shape == whole.shape == (40_000,) and sharded.dtype == np.float32
        np.testing.assert_allclose(sharded, whole, rtol=1e-5, atol=1e-6)
