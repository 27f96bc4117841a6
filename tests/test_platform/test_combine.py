"""``Combiner``: concurrent callers' items run in shared batches, each caller gets its own.

A recording ``run`` makes the batches observable; its first batch can be held open so that
the callers arriving meanwhile are known to be pending together.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import pytest

from cartwise.platform.combine import Combiner


class Recording:
    """Doubles numbers, records its batches; optionally holds the first batch and fails."""

    def __init__(self, *, hold_first: bool = False, fail_on: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()
        self.fail_on = fail_on

    def __call__(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        self.entered.set()
        assert self.release.wait(10)
        if self.fail_on is not None and self.fail_on in items:
            raise RuntimeError(f"cannot run {self.fail_on}")
        return [2 * i for i in items]


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


class Callers:
    """One thread per call; each call's result or exception is kept by its name."""

    def __init__(self, combiner: Combiner[int, int]) -> None:
        self.combiner = combiner
        self.threads: list[threading.Thread] = []
        self.out: dict[str, list[int] | BaseException] = {}

    def start(self, name: str, items: list[int]) -> None:
        def call() -> None:
            try:
                self.out[name] = self.combiner(items)
            except BaseException as exc:
                self.out[name] = exc

        thread = threading.Thread(target=call)
        thread.start()
        self.threads.append(thread)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(10)
            assert not thread.is_alive()


def test_a_lone_caller_runs_at_once_in_order_with_repeats() -> None:
    run = Recording()
    combiner: Combiner[int, int] = Combiner(run)
    assert combiner([3, 1, 3]) == [6, 2, 6]
    assert run.batches == [[3, 1]]  # one call, each item once
    assert combiner([]) == []
    assert (combiner.calls, combiner.items) == (1, 2)


def test_callers_arriving_during_a_batch_share_the_next_one() -> None:
    run = Recording(hold_first=True)
    combiner: Combiner[int, int] = Combiner(run)
    callers = Callers(combiner)
    callers.start("first", [1])
    assert run.entered.wait(10)
    callers.start("a", [2, 3])
    callers.start("b", [4])
    callers.start("c", [3])  # pending already for "a": run once, shared
    wait_until(lambda: len(combiner._pending) == 3 and sum(combiner._waiting.values()) == 5)
    run.release.set()
    callers.join()
    assert run.batches == [[1], [2, 3, 4]]
    assert callers.out == {"first": [2], "a": [4, 6], "b": [8], "c": [6]}
    # Nothing is kept once every caller has its result.
    assert combiner._results == {}
    assert combiner._waiting == {}
    assert not combiner._busy


def test_max_batch_splits_what_is_pending() -> None:
    run = Recording(hold_first=True)
    combiner: Combiner[int, int] = Combiner(run, max_batch=2)
    callers = Callers(combiner)
    callers.start("first", [0])
    assert run.entered.wait(10)
    for i in range(1, 6):
        callers.start(str(i), [i])
    wait_until(lambda: len(combiner._pending) == 5)
    run.release.set()
    callers.join()
    assert [len(b) for b in run.batches] == [1, 2, 2, 1]
    assert sorted(i for b in run.batches for i in b) == list(range(6))
    assert all(callers.out[str(i)] == [2 * i] for i in range(1, 6))


def test_a_failed_batch_fails_its_callers_only_and_the_combiner_recovers() -> None:
    run = Recording(hold_first=True, fail_on=7)
    combiner: Combiner[int, int] = Combiner(run)
    callers = Callers(combiner)
    callers.start("first", [1])
    assert run.entered.wait(10)
    callers.start("bad", [7])
    callers.start("shared", [8])
    wait_until(lambda: len(combiner._pending) == 2)
    run.release.set()
    callers.join()
    assert callers.out["first"] == [2]
    assert isinstance(callers.out["bad"], RuntimeError)
    assert isinstance(callers.out["shared"], RuntimeError)  # it shared the failed batch
    assert combiner([8]) == [16]  # not left busy


def test_a_run_that_loses_results_is_an_error_not_a_wrong_answer() -> None:
    combiner: Combiner[int, int] = Combiner(lambda items: items[:-1])
    with pytest.raises(RuntimeError, match="1 results for 2 items"):
        combiner([1, 2])


def test_keys_decide_what_counts_as_the_same_item() -> None:
    run_items: list[list[tuple[str, int]]] = []

    def run(items: Sequence[tuple[str, int]]) -> list[int]:
        run_items.append(list(items))
        return [n for _, n in items]

    combiner: Combiner[tuple[str, int], int] = Combiner(run, key=lambda item: item[0])
    assert combiner([("a", 1), ("b", 2), ("a", 3)]) == [1, 2, 1]
    assert run_items == [[("a", 1), ("b", 2)]]
