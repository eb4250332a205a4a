"""Maintenance windows, across midnight and daylight-saving changes."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from reconciler.desired.documents import Window
from reconciler.plan.windows import next_opening

BERLIN = ZoneInfo("Europe/Berlin")


def at(*fields: int) -> float:
    return datetime(*fields, tzinfo=BERLIN).timestamp()  # type: ignore[misc]


def test_open_inside_and_next_opening_outside() -> None:
    weekdays = Window("Europe/Berlin", ("mon", "tue", "wed", "thu", "fri"), "02:00", "05:00")
    assert next_opening(weekdays, at(2026, 11, 24, 2, 0)) is None
    assert next_opening(weekdays, at(2026, 11, 24, 4, 59)) is None
    assert next_opening(weekdays, at(2026, 11, 24, 5, 0)) == at(2026, 11, 25, 2, 0)
    assert next_opening(weekdays, at(2026, 11, 27, 6, 0)) == at(2026, 11, 30, 2, 0)  # Fri->Mon


def test_window_across_midnight_belongs_to_the_day_it_starts() -> None:
    friday_night = Window("Europe/Berlin", ("fri",), "22:00", "04:00")
    assert next_opening(friday_night, at(2026, 11, 27, 23, 0)) is None
    assert next_opening(friday_night, at(2026, 11, 28, 3, 0)) is None  # Saturday 03:00
    assert next_opening(friday_night, at(2026, 11, 28, 5, 0)) == at(2026, 12, 4, 22, 0)
    assert next_opening(friday_night, at(2026, 11, 27, 3, 0)) == at(2026, 11, 27, 22, 0)


def test_daylight_saving_day_keeps_local_time() -> None:
    daily = Window("Europe/Berlin", (), "02:30", "04:00")
    # 2026-03-29: clocks jump from 02:00 to 03:00; the next opening is the day after.
    before = at(2026, 3, 28, 12, 0)
    assert next_opening(daily, before) is not None
    autumn = Window("America/New_York", (), "09:00", "17:00")
    sunday_night = datetime(2026, 11, 1, 20, 0, tzinfo=ZoneInfo("America/New_York"))
    opening = next_opening(autumn, sunday_night.timestamp())
    assert opening == datetime(2026, 11, 2, 9, 0, tzinfo=ZoneInfo("America/New_York")).timestamp()
