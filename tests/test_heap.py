"""The server's start-up objects frozen out of the collector, and handed back at the end
(plumbing/heap.py)."""

from __future__ import annotations

import gc

from plumbing.heap import YOUNG_THRESHOLD, long_lived


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


def test_long_lived_freezes_then_hands_everything_back():
    before = gc.get_threshold()
    kept = Node()
    with long_lived():
        assert gc.get_freeze_count() > 0
        assert not any(o is kept for o in gc.get_objects())  # out of the collector's scans
        assert gc.get_threshold()[0] == YOUNG_THRESHOLD
        frozen = gc.get_freeze_count()
        garbage = Node()  # made while running: collected as ever
        del garbage
        gc.collect()
        assert gc.get_freeze_count() == frozen
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before
    assert any(o is kept for o in gc.get_objects())  # the collector's again


def test_two_apps_in_one_process_hand_back_only_when_both_have_stopped():
    before = gc.get_threshold()
    first, second = long_lived(), long_lived()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD  # the second still runs
    assert gc.get_freeze_count() > 0
    second.__exit__(None, None, None)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
