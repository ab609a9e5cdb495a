"""Pages of a long list: which slice to show and the pager under it.

A list of thousands (speakers, entries, clips) is cut server-side, so a page
weighs the same at ten devices or ten thousand. The pager's text is Vietnamese
first (``page.*`` keys); its links keep the page's other query parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar
from urllib.parse import urlencode

from controller import i18n

PER_PAGE = 50
ACKS_LISTED = 20  # a command's answers named one by one; a province's has thousands

i18n.register(
    {
        "page.of": ("Trang {page}/{pages}", "Page {page} of {pages}"),
        "page.shown": (
            "Đang xem {first}–{last} trong tổng số {total}",
            "Showing {first}–{last} of {total}",
        ),
        "page.prev": ("‹ Trang trước", "‹ Previous page"),
        "page.next": ("Trang sau ›", "Next page ›"),
        "page.nav": ("Chuyển trang", "Pages"),
        "page.acks_more": (
            "{ok}/{total} cụm loa đã nhận; {more} cụm khác không liệt kê",
            "{ok} of {total} speakers answered; {more} more not listed",
        ),
    }
)


@dataclass(frozen=True)
class Pager:
    page: int
    per_page: int
    total: int
    query: tuple[tuple[str, str], ...] = ()  # the page's other parameters, kept in links
    param: str = "page"
    path: str = ""  # where the links go; none: the page itself

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    @property
    def first(self) -> int:
        return min(self.total, (self.page - 1) * self.per_page + 1)

    @property
    def last(self) -> int:
        return min(self.total, self.page * self.per_page)

    def link(self, page: int) -> str:
        kept = [(k, v) for k, v in self.query if k != self.param]
        return f"{self.path}?{urlencode([*kept, (self.param, str(page))])}"


def page_number(text: str | None) -> int:
    """The page asked for in a page's link; anything else is the first page."""
    try:
        return max(1, min(int(text or "1"), 1_000_000))
    except ValueError:
        return 1


def clamp(page: int, per_page: int, total: int) -> int:
    """A page past the end shows the last one."""
    return min(page, max(1, -(-total // per_page)))


class _Answer(Protocol):
    @property
    def ok(self) -> bool | None: ...


A = TypeVar("A", bound=_Answer)


def listed_acks(acks: Sequence[A]) -> tuple[list[A], int]:
    """The answers a row names, and how many it does not: all of a few; of many, the
    first ``ACKS_LISTED`` not yet answered yes (what someone acts on), the rest counted."""
    if len(acks) <= ACKS_LISTED:
        return list(acks), 0
    shown = [a for a in acks if not a.ok][:ACKS_LISTED]
    return shown, len(acks) - len(shown)
