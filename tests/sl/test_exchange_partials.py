"""What a PushPartial may carry: finite, bounded values of a plausible length; votes
one 0 or 1 per participant. Anything else is refused like a NaN update."""

from __future__ import annotations

import numpy as np
import pytest

from swarm.tensors import Layout

from sl_node.exchange import Peer, RoundPlan
from sl_node.exchange.partial import check_partial

PLAN = RoundPlan(1, tuple(Peer(f"n{i}", "", "", 1, b"") for i in range(4)), 0,
                 Layout.from_weights({"w": np.zeros(10, np.float32)}))


@pytest.mark.parametrize("values,vote,problem", [
    ([1.0, np.nan, 0.0, 1.0], False, "finite"),
    ([1.0, np.inf], False, "finite"),
    ([1e301], False, "within"),
    ([0.0] * 17, False, "over the limit of 16"),
    ([1.0, 1.0, 1.0], True, "3 votes for 4"),
    ([1.0, 2.0, 0.0, 1.0], True, "0 or 1"),
    ([1.0, 0.5, 0.0, 1.0], True, "0 or 1"),
])
def test_bad_partials_are_refused_naming_the_problem(values, vote, problem):
    why = check_partial(PLAN, np.asarray(values, dtype=np.float64), vote)
    assert why is not None and problem in why


@pytest.mark.parametrize("values,vote", [([1.0, 0.0, 1.0, 1.0], True),
                                         ([3.5] * 16, False), ([0.0] * 6, False)])
def test_good_partials_pass(values, vote):
    assert check_partial(PLAN, np.asarray(values, dtype=np.float64), vote) is None
