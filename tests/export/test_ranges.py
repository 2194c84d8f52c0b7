"""IdRanges: a filtered export's pages as id ranges, sized by rows per id, estimated then observed."""

from __future__ import annotations

from streaming_api.db.statements import PageSpec
from streaming_api.export.ranges import EMPTY_GROWTH, IdRanges


def test_ranges_are_wide_enough_for_a_page_of_kept_rows_and_the_last_has_no_end():
    ranges = IdRanges(after=100, end=1000, page_size=10, ids_per_row=25.0)
    assert ranges.next() == PageSpec(("100",), ("350",), None)
    assert ranges.next() == PageSpec(("350",), ("600",), None)
    assert ranges.next() == PageSpec(("600",), ("850",), None)
    assert not ranges.done
    assert ranges.next() == PageSpec(("850",), None, None)
    assert ranges.done


def test_the_next_ranges_follow_the_rows_the_last_pages_held():
    ranges = IdRanges(after=0, end=10**9, page_size=10, ids_per_row=100.0)
    ranges.next()  # 1000 ids
    ranges.arrived(40)  # 40 rows in 1000 ids: 25 ids a row
    assert ranges.next() == PageSpec(("1000",), ("1250",), None)


def test_after_pages_that_kept_nothing_ranges_grow():
    ranges = IdRanges(after=0, end=10**9, page_size=10, ids_per_row=10.0)
    ranges.next()
    ranges.arrived(0)
    assert ranges.next() == PageSpec(("100",), (str(100 + 100 * EMPTY_GROWTH),), None)


def test_the_last_page_arriving_changes_nothing():
    ranges = IdRanges(after=0, end=50, page_size=10, ids_per_row=10.0)
    assert ranges.next() == PageSpec(("0",), None, None)
    ranges.arrived(7)
    assert ranges.done
