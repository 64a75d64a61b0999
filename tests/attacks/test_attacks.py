"""Each attack changes what it should and nothing else, the same way for the same seed;
the malicious nodes are a fixed share chosen by the seed; the flat parameters are read
with errors naming the parameter."""

from __future__ import annotations

import numpy as np
import pytest

from swarm.attacks import (AttackSpecError, UpdateAttack, add_trigger, attack_spec,
                           backdoor_success_rate, malicious_nodes, poison_data, poison_update)
from swarm.data import load_digits


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    return data.train_x, data.train_y


# ---- which nodes -------------------------------------------------------------------

@pytest.mark.parametrize("n,ratio,count", [(8, 0.25, 2), (8, 0.0, 0), (8, 1.0, 8), (4, 0.25, 1),
                                           (6, 0.25, 1), (10, 0.3, 3), (3, 0.5, 1)])
def test_malicious_nodes_are_floor_of_ratio_times_n(n, ratio, count):
    chosen = malicious_nodes(n, ratio, seed=7)
    assert len(chosen) == count and chosen <= set(range(n))


def test_malicious_nodes_follow_the_seed():
    assert malicious_nodes(8, 0.25, 3) == malicious_nodes(8, 0.25, 3)
    draws = {frozenset(malicious_nodes(8, 0.25, seed)) for seed in range(20)}
    assert len(draws) > 5  # not always the same nodes
    # A larger ratio keeps the smaller one's attackers (the same order, cut longer).
    assert malicious_nodes(8, 0.25, 5) <= malicious_nodes(8, 0.5, 5)


# ---- label flipping ------------------------------------------------------------------

def test_labelflip_reverses_every_label_and_leaves_x(digits):
    x, y = digits
    px, py = poison_data("labelflip", x, y, seed=1, num_classes=10)
    assert np.array_equal(py, 9 - y) and py.dtype == y.dtype
    assert np.array_equal(px, x) and px is not x
    assert np.array_equal(y, digits[1])  # the input untouched


def test_labelflip_with_a_fraction_changes_only_the_chosen_labels(digits):
    x, y = digits
    _, py = poison_data("labelflip", x, y, seed=4, num_classes=10, fraction=0.3)
    changed = py != y
    # reverse never maps a digit to itself (10 classes), so changed == chosen
    assert changed.sum() == round(0.3 * len(y))
    assert np.array_equal(py[changed], 9 - y[changed])
    _, again = poison_data("labelflip", x, y, seed=4, num_classes=10, fraction=0.3)
    _, other = poison_data("labelflip", x, y, seed=5, num_classes=10, fraction=0.3)
    assert np.array_equal(py, again) and not np.array_equal(py, other)


def test_labelflip_permutation_moves_every_class_consistently(digits):
    x, y = digits
    _, py = poison_data("labelflip", x, y, seed=2, num_classes=10, mode="permutation")
    assert np.all(py != y)
    mapping = {int(a): int(b) for a, b in zip(y, py)}
    assert len(mapping) == 10 and sorted(mapping.values()) == list(range(10))
    for a, b in zip(y, py):
        assert mapping[int(a)] == b


def test_labelflip_needs_num_classes_and_labels_in_range(digits):
    x, y = digits
    with pytest.raises(AttackSpecError) as error:
        poison_data("labelflip", x, y, seed=0)
    assert error.value.parameter == "num_classes"
    with pytest.raises(ValueError, match="0..4"):
        poison_data("labelflip", x, y, seed=0, num_classes=5)


# ---- backdoor ------------------------------------------------------------------------

def test_backdoor_stamps_the_chosen_samples_and_relabels_them(digits):
    x, y = digits
    px, py = poison_data("backdoor", x, y, seed=3, target=7, fraction=0.1)
    changed = np.any(px != x, axis=1) | (py != y)
    assert changed.sum() == round(0.1 * len(y))  # the chosen ones (their corner was dark)
    rows = np.flatnonzero(changed)
    assert np.all(py[rows] == 7)
    images = px.reshape(-1, 8, 8)
    assert np.all(images[rows, -2:, -2:] == x.max())  # 2x2 trigger, bottom right
    # Outside the patch the chosen images are unchanged; unchosen samples entirely.
    mask = np.ones((8, 8), bool)
    mask[-2:, -2:] = False
    assert np.array_equal(images[:, mask], x.reshape(-1, 8, 8)[:, mask])
    untouched = np.setdiff1d(np.arange(len(y)), rows)
    assert np.array_equal(px[untouched], x[untouched]) and np.array_equal(py[untouched], y[untouched])


def test_backdoor_counts_exactly_the_fraction():
    x = np.zeros((50, 28, 28), np.uint8)
    y = np.ones(50, np.int64)
    px, py = poison_data("backdoor", x, y, seed=0, target=0, fraction=0.2)
    assert (py == 0).sum() == 10 and px.dtype == np.uint8
    assert np.all(px[py == 0][:, -3:, -3:] == 0)  # value defaults to the data's max (0 here)
    hwc = add_trigger(np.zeros((2, 32, 32, 3), np.uint8), value=255)
    assert hwc[:, -4:, -4:, :].min() == 255 and hwc.sum() == 2 * 4 * 4 * 3 * 255


def test_backdoor_success_rate_counts_triggered_samples_sent_to_the_target(digits):
    x, y = digits
    # A "model" that answers the target exactly when the corner pixel is lit.
    def predict(batch):
        return np.where(batch[:, -1] == x.max(), 3, 0)

    assert backdoor_success_rate(predict, x, y, target=3) == 1.0
    assert backdoor_success_rate(lambda b: np.zeros(len(b), int), x, y, target=3) == 0.0
    scores = lambda b: np.eye(10)[predict(b)]  # noqa: E731 - scores work as well as labels
    assert backdoor_success_rate(scores, x, y, target=3) == 1.0


# ---- update attacks --------------------------------------------------------------------

def test_signflip_sends_minus_scale_times_the_update_from_the_reference():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=100).astype(np.float32)
    w = ref + rng.normal(scale=0.01, size=100).astype(np.float32)
    sent = poison_update("signflip", w, ref, seed=0)
    assert sent.dtype == np.float32
    np.testing.assert_allclose(sent, ref - 10 * (w - ref), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(poison_update("signflip", w, ref, seed=0, scale=3.0),
                               ref - 3 * (w - ref), rtol=1e-6, atol=1e-6)
    # Lists and dicts of arrays keep their form.
    as_dict = poison_update("signflip", {"a": w}, {"a": ref}, seed=0)
    assert np.array_equal(as_dict["a"], sent)


def test_gaussian_adds_seeded_noise_of_sigma():
    ref = np.zeros(20000)
    w = np.full(20000, 0.5)
    sent = poison_update("gaussian", w, ref, seed=1, sigma=0.1)
    assert abs((sent - w).std() - 0.1) < 0.005 and abs((sent - w).mean()) < 0.005
    assert np.array_equal(sent, poison_update("gaussian", w, ref, seed=1, sigma=0.1))
    assert not np.array_equal(sent, poison_update("gaussian", w, ref, seed=1, round_no=1, sigma=0.1))
    attack = UpdateAttack("gaussian", seed=1, sigma=0.1)
    first, second = attack(w, ref), attack(w, ref)
    assert np.array_equal(first, sent) and not np.array_equal(first, second)


def test_data_attacks_send_the_update_unchanged_and_update_attacks_keep_the_data(digits):
    x, y = digits
    w = np.arange(5.0)
    assert poison_update("labelflip", w, np.zeros(5), seed=0) is w
    px, py = poison_data("signflip", x, y, seed=0)
    assert np.array_equal(px, x) and np.array_equal(py, y)


# ---- the flat parameters ---------------------------------------------------------------

def test_attack_spec_reads_the_flat_lab_form():
    spec = attack_spec({"attack": "labelflip", "poison_ratio": 0.25, "alpha": 0.3, "seed": 1})
    assert (spec.kind, spec.ratio, spec.options["mode"]) == ("labelflip", 0.25, "reverse")
    assert spec.poisons_data and not spec.poisons_updates and spec.active
    assert spec.malicious(8, 0) == malicious_nodes(8, 0.25, 0)
    flip = attack_spec(attack="SignFlip", poison_ratio="0.5", attack_scale="4")
    assert flip.kind == "signflip" and flip.options == {"scale": 4.0}
    assert isinstance(flip.update_transform(seed=0), UpdateAttack)
    assert attack_spec(flip.params()) == flip
    none = attack_spec({"alpha": 0.3})
    assert none.kind == "none" and not none.active and none.malicious(8, 0) == set()


@pytest.mark.parametrize("params,parameter", [
    ({"attack": "labelfilp", "poison_ratio": 0.25}, "attack"),
    ({"attack": "labelflip"}, "poison_ratio"),
    ({"attack": "labelflip", "poison_ratio": 1.5}, "poison_ratio"),
    ({"attack": "labelflip", "poison_ratio": "many"}, "poison_ratio"),
    ({"attack": "labelflip", "poison_ratio": 0.2, "attack_scale": 3}, "attack_scale"),
    ({"attack": "labelflip", "poison_ratio": 0.2, "attack_mode": "shuffle"}, "attack_mode"),
    ({"attack": "backdoor", "poison_ratio": 0.2, "attack_target": 1.5}, "attack_target"),
    ({"attack": "backdoor", "poison_ratio": 0.2, "attack_fraction": 2}, "attack_fraction"),
    ({"attack": "gaussian", "poison_ratio": 0.2, "attack_sigma": -1}, "attack_sigma"),
])
def test_attack_spec_errors_name_the_parameter(params, parameter):
    with pytest.raises(AttackSpecError) as error:
        attack_spec(params)
    assert error.value.parameter == parameter
    assert str(error.value).startswith(f"{parameter}: ")
