"""The fan-out bench's own arithmetic: pages cut by their headers, and a listener's stalls.

bench/stream_fanout.py reports every listener's gaps from these two; a
mistake here would read as Icecast's or the controller's.
"""

from __future__ import annotations

import pytest

from bench._listeners import Gaps, PageSplitter
from protocol.ogg import BOS, Page, lacing

PAGE = 4800  # samples: 100 ms at 48 kHz, as every mount's pages


def _page(granule: int, seq: int, size: int = 300, kind: int = 0) -> bytes:
    body = bytes((seq + i) % 251 for i in range(size))
    return Page(kind, granule, 7, seq, lacing(size), body).to_bytes()


def test_pages_fed_in_any_pieces_come_out_whole_with_their_granules() -> None:
    pages = [_page(0, 0, 19, BOS), _page(0, 1, 60)]
    pages += [_page(PAGE * k, k + 1, 200 + 90 * k) for k in range(1, 8)]  # one spans 255s
    stream = b"".join(pages)
    for step in (1, 7, 300, len(stream)):
        splitter = PageSplitter()
        out = []
        for at in range(0, len(stream), step):
            out += splitter.feed(stream[at : at + step])
        assert [raw for _, raw in out] == pages
        assert [g for g, _ in out] == [0, 0, *(PAGE * k for k in range(1, 8))]
        assert splitter.skipped == 0


def test_a_stream_joined_mid_page_starts_at_the_next_page() -> None:
    first, second = _page(PAGE, 5), _page(2 * PAGE, 6)
    splitter = PageSplitter()
    out = splitter.feed(first[40:] + second)
    assert out == [(2 * PAGE, second)]
    assert splitter.skipped == len(first) - 40


def _gaps(arrivals: list[tuple[float, int]]) -> Gaps:
    gaps = Gaps()
    for at_ms, granule in arrivals:
        gaps.page(at_ms, granule)
    return gaps


def test_pages_on_time_have_no_stall_and_carry_their_audio() -> None:
    gaps = _gaps([(0, 0), (0, 0), *((100.0 * k, PAGE * k) for k in range(1, 51))])
    assert gaps.largest_ms == 0
    assert gaps.counts == [0, 0]
    assert gaps.audio_ms == pytest.approx(5000)  # the first page's as the second's


def test_a_late_page_is_a_stall_of_the_wait_past_the_audio_held() -> None:
    on_time = [(100.0 * k, PAGE * k) for k in range(1, 11)]  # up to 1,000 ms
    late = [(1600.0, PAGE * 11), (1700.0, PAGE * 12), (3000.0, PAGE * 13)]
    gaps = _gaps([*on_time, *late])
    # audio held until 1,100 ms: 500 ms with none; then play goes on from 1,600 ms, so the
    # next page (due at 1,700) is on time and the last, due at 1,800, is 1,200 ms late
    assert gaps.largest_ms == pytest.approx(1200)
    assert gaps.total_ms == pytest.approx(1700)
    assert gaps.counts == [2, 1]


def test_a_burst_on_connecting_is_a_lead_that_absorbs_a_late_page() -> None:
    burst = [(0.0, PAGE * k) for k in range(1, 8)]  # 700 ms of audio at once, then real time
    steady = [(100.0 * k, PAGE * (k + 7)) for k in range(1, 10)]
    late = [(1000.0 + 550, PAGE * 17)]  # 550 ms late: audio is held until 1,600 ms
    gaps = _gaps([*burst, *steady, *late])
    assert gaps.largest_ms == 0
    gaps.page(1550.0 + 850, PAGE * 18)  # held until 1,700: the lead is spent, 700 ms past it
    assert gaps.largest_ms == pytest.approx(700)


def test_pages_that_end_no_packet_or_go_back_carry_no_audio() -> None:
    gaps = _gaps([(0, PAGE), (100, -1), (100, PAGE), (100, 2 * PAGE)])
    assert gaps.audio_ms == pytest.approx(200)
    assert gaps.largest_ms == 0
