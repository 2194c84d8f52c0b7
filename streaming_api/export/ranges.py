"""IdRanges: a filtered export's pages over a key of one integer column as id ranges found by arithmetic.

A plan walks the key's index to find where each page ends; with a filter that keeps a tenth of the rows it
walks ten rows for each it keeps, and the pages then read those same rows again: the walk costs about as
much as the pages. A filtered export of a text format (whose pages pass on as they arrive, however many
rows they hold) needs no such walk: its pages are ranges of ids wide enough to hold about page_size of the
rows the filter keeps, by the planner's estimate of that share at first, then by what the last pages held.
A range is only a bound: the filter is in every page's WHERE, so a range that holds more rows or fewer than
meant changes a page's size, never which rows the export sends.
"""

from __future__ import annotations

from collections import deque

from ..db.statements import PageSpec

# Pages whose rows per id size the next range.
RECENT_PAGES = 4
# A range after pages that kept no row is this many times wider than the last.
EMPTY_GROWTH = 4


class IdRanges:
    def __init__(self, after: int, end: int, page_size: int, ids_per_row: float) -> None:
        """after: the last id already planned; end: the largest id the catalog last saw (the last range has
        no upper bound, so ids written past it are read too); ids_per_row: the first ranges' width per row."""
        self._after = after
        self._end = end
        self._page_size = page_size
        self._width = max(1.0, page_size * ids_per_row)
        # The ranges handed out whose rows have not arrived yet (ids each), and the last pages' (ids, rows).
        self._spans: deque[int] = deque()
        self._recent: deque[tuple[int, int]] = deque(maxlen=RECENT_PAGES)
        self.done = False

    def next(self) -> PageSpec:
        """The next page: the next range of ids, or all the ids after it when the table ends in it."""
        after = (str(self._after),)
        last = self._after + max(1, round(self._width))
        if last >= self._end:
            self.done = True
            return PageSpec(after, None, None)
        self._spans.append(last - self._after)
        self._after = last
        return PageSpec(after, (str(last),), None)

    def arrived(self, rows: int) -> None:
        """The oldest range's page came with `rows` rows: the next ranges are sized by the last pages."""
        if not self._spans:
            return  # the last page (no upper bound)
        self._recent.append((self._spans.popleft(), rows))
        ids = sum(span for span, _ in self._recent)
        kept = sum(kept for _, kept in self._recent)
        self._width = self._page_size * ids / kept if kept else self._width * EMPTY_GROWTH
