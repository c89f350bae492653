"""Coverage sampling: which persona and which variable values each episode of a run gets."""

from __future__ import annotations

import random
import threading
from array import array
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

__all__ = ["CoverageSampler"]

# How many of a block's remaining values are tried for one unseen by the episode's persona.
# Bounded so that a variable of thousands of values stays linear in the episodes drawn; past
# the bound, the value keeps its place in the block's seeded order.
_SPREAD_TRIES = 32


@dataclass(slots=True)
class _Variable:
    size: int
    drawn: array[int] = field(default_factory=lambda: array("q"))  # value index per episode so far
    # Per persona, the values it had since it last had them all (only personas drawn so far).
    seen: dict[int, set[int]] = field(default_factory=dict)


class CoverageSampler:
    """The persona and the variable values of episode ``index``, chosen to cover the pool.

    Episode ``index`` of a scenario in a run gets persona :meth:`persona` and values
    :meth:`values` (indices into the pool and into each variable's values). Both are pure
    functions of ``(key, index)``: the same in any order of calls, after a resume, on any
    machine. Guarantees, for a pool of ``n`` personas and a variable of ``k`` values:

    * **Personas without replacement.** Episodes ``c*n`` to ``c*n + n - 1`` (cycle ``c``) use
      every persona exactly once, in a new seeded order each cycle; ``n`` episodes meet all
      ``n`` personas. With three or more, no persona comes twice in a row.
    * **Balanced marginals.** Episodes ``m*k`` to ``m*k + k - 1`` use every value of the
      variable exactly once, so after any number of episodes the counts of its values differ
      by at most one. Each variable has its own seeded order: no two march in step.
    * **Persona × variable spread.** Within a block, a value goes where it is new: to a
      persona that has not had it since it last had them all, trading with an earlier episode
      of the block when that helps (looking at up to 32 of the block's remaining values). This
      is best effort, as a block still holds each value once: over 4 cycles of 40 personas, a
      variable of 4 values gives a persona 3.6 distinct values on average (2.7 if drawn
      independently).

    Example:
        >>> sampler = CoverageSampler("greeting:0", personas=3, variables={"topic": 2})
        >>> sorted(sampler.persona(i) for i in range(3))
        [0, 1, 2]
        >>> sorted(sampler.values(i)["topic"] for i in range(2))
        [0, 1]

    Args:
        key: what makes the draws this sampler's own, e.g. ``"SCENARIO:RUN_SEED"``.
        personas: the pool's size.
        variables: each variable's name and number of values.
    """

    def __init__(self, key: str, *, personas: int, variables: Mapping[str, int]) -> None:
        if personas < 1 or any(size < 1 for size in variables.values()):
            raise ValueError("a pool and every variable need at least one value to sample")
        self._key = key
        self._pool = personas
        self._sizes = dict(sorted(variables.items()))
        self._cycles: dict[int, array[int]] = {}
        self._variables = {name: _Variable(size) for name, size in self._sizes.items()}
        # Values are computed block by block and cached; the lock keeps two threads that
        # instantiate the same scenario from extending one variable's cache at once.
        self._lock = threading.Lock()

    def __reduce__(self) -> tuple[Callable[..., CoverageSampler], tuple[str, int, dict[str, int]]]:
        # The state is a cache of pure functions of the key: a copy (or pickle) starts empty,
        # and needs no lock of its own from the original.
        return _new_sampler, (self._key, self._pool, self._sizes)

    def persona(self, index: int) -> int:
        """The index into the pool of episode ``index``'s persona."""
        _check_index(index)
        cycle, position = divmod(index, self._pool)
        with self._lock:
            return self._cycle(cycle)[position]

    def values(self, index: int) -> dict[str, int]:
        """Episode ``index``'s value of each variable, as an index into its values."""
        _check_index(index)
        with self._lock:
            for name, variable in self._variables.items():
                while len(variable.drawn) <= index:
                    self._fill_block(name, variable)
            return {name: variable.drawn[index] for name, variable in self._variables.items()}

    def _cycle(self, cycle: int) -> array[int]:
        order = self._cycles.get(cycle)
        if order is None:
            shuffled = self._shuffle(cycle)
            # No persona twice in a row where two cycles meet. Swapping the first two leaves
            # a cycle's last in place, so the previous cycle's last is its shuffle's last.
            if cycle and self._pool >= 3 and shuffled[0] == self._shuffle(cycle - 1)[-1]:
                shuffled[0], shuffled[1] = shuffled[1], shuffled[0]
            order = self._cycles[cycle] = array("q", shuffled)
        return order

    def _shuffle(self, cycle: int) -> list[int]:
        shuffled = list(range(self._pool))
        random.Random(f"{self._key}:personas:{cycle}").shuffle(shuffled)
        return shuffled

    def _fill_block(self, name: str, variable: _Variable) -> None:
        """Draw the next ``k`` episodes' values of one variable: each value once."""
        block = len(variable.drawn) // variable.size
        free = list(range(variable.size))
        random.Random(f"{self._key}:{name}:{block}").shuffle(free)
        start = block * variable.size
        personas: list[int] = []  # the block's personas so far
        for index in range(start, start + variable.size):
            cycle, position = divmod(index, self._pool)
            persona = self._cycle(cycle)[position]
            seen = variable.seen.setdefault(persona, set())
            if len(seen) == variable.size:
                seen.clear()
            tries = free[:_SPREAD_TRIES]
            fresh = next((value for value in tries if value not in seen), None)
            if fresh is not None:
                value = fresh
            elif (swap := _swap(variable, start, personas, tries, seen)) is not None:
                # An earlier episode of the block gives up its value, new to this persona,
                # for a free one new to its own.
                j, value, replacement = swap
                other = variable.seen[personas[j]]
                other.discard(value)
                other.add(replacement)
                variable.drawn[start + j] = replacement
                fresh = replacement
            else:
                value = fresh = tries[0]
            free.remove(fresh)
            seen.add(value)
            variable.drawn.append(value)
            personas.append(persona)


def _swap(
    variable: _Variable, start: int, personas: list[int], tries: list[int], seen: set[int]
) -> tuple[int, int, int] | None:
    """An earlier episode ``j`` of the block whose value is new to ``seen`` and that can take a
    free value new to its own persona instead: ``(j, its value, the free value)``."""
    for j in range(len(personas) - 1, -1, -1):
        given = variable.drawn[start + j]
        if given in seen:
            continue
        other = variable.seen[personas[j]]
        replacement = next((value for value in tries if value not in other), None)
        if replacement is not None:
            return j, given, replacement
    return None


def _new_sampler(key: str, personas: int, variables: dict[str, int]) -> CoverageSampler:
    return CoverageSampler(key, personas=personas, variables=variables)


def _check_index(index: int) -> None:
    if index < 0:
        raise ValueError(f"episode index must be 0 or more, got {index}")
