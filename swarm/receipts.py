"""The receipts rule: from the frozen set of every participant's receipt bitmap, who
is valid and who is at fault. Pure and deterministic, so the SL nodes (to merge)
and their SN (to leave the blamed out of the next seals) reach the same verdict
from the same frozen set.

SCATTER bitmaps: bit i of owner j = contributor i's update for j's range arrived
intact. GATHER bitmaps: bit j of participant k = owner j's merged range (and its
all-reduce partials) arrived intact; k's own bit = k merged its own range.

- A participant with no bitmap in the frozen set stalled: the round fails, it is blamed.
- Participant k reporting x missing while a strict majority of the others (neither k
  nor x) got x intact is a dispute between k and x: one of them lies, nobody can
  tell which. Disputes are resolved by blaming whoever is in the most disputes,
  repeatedly (a node vetoing everyone is alone at the top; a single dispute blames
  both). Any dispute fails the round.
- SCATTER: an update not every owner received is simply not merged.
- GATHER: an owner whose range the majority of the others lacks is blamed, unless it
  reported that it could not merge and named a participant blamed for that.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Phase(enum.IntEnum):
    SCATTER = 1
    GATHER = 2


@dataclass(frozen=True)
class Verdict:
    valid: tuple[int, ...]   # SCATTER: contributors to merge; GATHER: all when ok
    failed: bool
    blamed: tuple[int, ...]
    reason: str              # "" when not failed; names indices as #i (the caller maps)


def _strict_majority(good: int, total: int) -> bool:
    return total > 0 and 2 * good > total


def _resolve(disputes: set[tuple[int, int]]) -> set[int]:
    """Blames the most-disputed participants until no dispute is left."""
    blamed: set[int] = set()
    edges = {tuple(sorted(e)) for e in disputes}
    while edges:
        degree: dict[int, int] = {}
        for a, b in edges:
            degree[a] = degree.get(a, 0) + 1
            degree[b] = degree.get(b, 0) + 1
        top = max(degree.values())
        worst = {n for n, d in degree.items() if d == top}
        blamed |= worst
        edges = {e for e in edges if not (set(e) & worst)}
    return blamed


def judge(phase: Phase, size: int, contributors: list[int],
          bitmaps: dict[int, tuple[bool, ...]]) -> Verdict:
    missing = [j for j in range(size) if j not in bitmaps]
    if missing:
        return Verdict((), True, tuple(missing),
                       "no receipts from " + ", ".join(f"#{j}" for j in missing))
    subjects = contributors if phase is Phase.SCATTER else list(range(size))
    at_fault: set[int] = set()
    disputes: set[tuple[int, int]] = set()
    for x in subjects:
        receivers = [k for k in range(size) if k != x]
        lacking = [k for k in receivers if not bitmaps[k][x]]
        if not lacking:
            continue
        contested = False
        for k in lacking:
            others = [m for m in receivers if m != k]
            if _strict_majority(sum(bitmaps[m][x] for m in others), len(others)):
                disputes.add((k, x))
                contested = True
        if not contested and phase is Phase.GATHER:
            at_fault.add(x)  # the others mostly lack x's range too: x failed to send it
    blamed = _resolve(disputes)
    if phase is Phase.GATHER:
        # An owner that could not merge is excused if it names someone blamed.
        for x in sorted(at_fault):
            named = {y for y in range(size) if y != x and not bitmaps[x][y]}
            if not bitmaps[x][x] and named & (blamed | (at_fault - {x})):
                continue
            blamed.add(x)
    if blamed:
        return Verdict((), True, tuple(sorted(blamed)),
                       "receipts disagree; at fault: " + ", ".join(f"#{j}" for j in sorted(blamed)))
    if phase is Phase.SCATTER:
        valid = tuple(i for i in contributors if all(bitmaps[j][i] for j in range(size)))
        if not valid:
            return Verdict((), True, (), "no update reached every owner")
        return Verdict(valid, False, (), "")
    return Verdict(tuple(range(size)), False, (), "")
