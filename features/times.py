"""Reading the times an export writes: day order, offsets and local wall-clock time with DST.

Exports write times in many ways. Three traps are handled here, each with a clear error
or a reject instead of a silent guess:

- a numeric date such as 03/11/2025 reads day-first or month-first. A column is read in
  one order only: the order its values prove (a first field above 12 is a day, a second
  field above 12 is a day), or the one a mapping declares (`read.dayfirst`,
  `read.time_format`). A column whose values prove both orders, or neither, is refused
  (`TimeFormatError` naming the column and example values), never parsed row by row;
- ISO 8601 times with offsets (2025-03-11T09:00:00+01:00) are converted to UTC;
- times in local wall-clock time (`read.timezone`, an IANA name such as Europe/Amsterdam)
  are localised: the hour repeated when clocks go back is resolved by the order of a
  ticket's updates (each update at or after the one before it), and a time that does not
  exist (skipped when clocks go forward) is reported, never shifted.

Sources: the tz database's DST rules through pandas `tz_localize` (`ambiguous`,
`nonexistent`), dateutil's day-first parsing through `pd.to_datetime(dayfirst=...)`.
"""

from __future__ import annotations

import re
import zoneinfo

import numpy as np
import pandas as pd

NUMERIC_DATE = re.compile(r"^\s*(\d{1,2})[/.-](\d{1,2})[/.-](\d{2,4})(?:\D|$)")
ISO_DATE = re.compile(r"^\s*\d{4}-\d{2}-\d{2}")
UTC_OFFSET = re.compile(r"(?:Z|[+-]\d{2}:?\d{2})\s*$")
_SAMPLE = 2000


class TimeFormatError(ValueError):
    """A time column cannot be read in one consistent way; the message names it and shows examples."""


def check_timezone(name: str) -> str:
    """An IANA time zone name (e.g. Europe/Amsterdam), or ValueError naming it."""
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}; expected an IANA name such as Europe/Amsterdam") from exc
    return name


def detect_day_order(values: pd.Series, column: str) -> bool | None:
    """True = day-first, False = month-first, None = not numeric dates (ISO or words).

    Raises TimeFormatError when the values prove both orders, or neither (every field ≤ 12).
    """
    text = values.dropna().astype("string")
    if text.empty or not text.head(_SAMPLE).str.match(NUMERIC_DATE).any():
        return None
    parts = text.str.extract(NUMERIC_DATE).dropna()
    first, second = parts[0].astype(int), parts[1].astype(int)
    # A value that reads neither way (32/13/2025) proves nothing: its row is rejected when parsed.
    reads_day_first = first.between(1, 31) & second.between(1, 12)
    reads_month_first = first.between(1, 12) & second.between(1, 31)
    day_first, month_first = reads_day_first & ~reads_month_first, reads_month_first & ~reads_day_first
    if day_first.any() and month_first.any():
        raise TimeFormatError(
            f"time column {column!r} mixes dates that read only day-first ({text[day_first.index[day_first]].iloc[0]}) "
            f"and only month-first ({text[month_first.index[month_first]].iloc[0]}); it cannot be read one way. "
            "Fix the export, or give read.time_format")
    if not (reads_day_first | reads_month_first).any():
        return None  # no valid numeric date at all: every row is rejected when parsed
    if not (day_first.any() or month_first.any()):
        raise TimeFormatError(
            f"time column {column!r}: dates such as {text.iloc[0]} read two ways (day-first or month-first) and no "
            "value tells which; set read.dayfirst (true/false) or read.time_format in the mapping, or write ISO "
            "8601 times (2025-03-11 09:00)")
    return bool(day_first.any())


def has_offsets(values: pd.Series) -> bool:
    """Whether the texts carry their UTC offset (2025-03-11T09:00:00+01:00, ...Z)."""
    sample = values.dropna().astype("string").head(_SAMPLE)
    return bool(len(sample)) and bool(sample.str.contains(UTC_OFFSET).mean() > 0.5)


def parse_wall_times(values: pd.Series, column: str, time_format: str | None = None,
                     dayfirst: bool | None = None) -> pd.Series:
    """Texts to times, one format for the whole column: UTC when the texts carry offsets, naive otherwise.

    Unparseable values become NaT (the caller rejects them with their text).
    """
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return values
    text = values.astype("string")
    offsets = has_offsets(text)
    if time_format is None and dayfirst is None:
        dayfirst = detect_day_order(text, column)
    if time_format is None and dayfirst is None:
        first = text.dropna().head(1)
        time_format = "ISO8601" if len(first) and ISO_DATE.match(str(first.iloc[0])) else "mixed"
    kwargs = {"format": time_format} if time_format else {"dayfirst": bool(dayfirst), "format": "mixed"}
    return pd.to_datetime(text, errors="coerce", utc=offsets, **kwargs)


def localize_times(naive: pd.Series, timezone: str | None, tickets: pd.Series | None = None,
                   not_after: pd.Series | None = None) -> tuple[pd.Series, pd.Series]:
    """Naive wall-clock times in `timezone` (None = UTC) to UTC, and per row a problem text (or NA).

    The repeated hour when clocks go back: with `tickets` (rows in the export's update order)
    each ticket's update takes the earlier reading unless that would put it before the
    ticket's previous update; with `not_after` (e.g. a creation time against its update
    time) the later reading that is not after it; otherwise the earlier reading. A time in
    the hour skipped when clocks go forward is NaT with the problem named.
    """
    problems = pd.Series(pd.NA, index=naive.index, dtype="string")
    if isinstance(naive.dtype, pd.DatetimeTZDtype):
        return naive.dt.tz_convert("UTC"), problems
    if timezone is None:
        return naive.dt.tz_localize("UTC"), problems
    everywhere = np.ones(len(naive), dtype=bool)
    naive = naive.dt.as_unit("ns")
    dst = naive.dt.tz_localize(timezone, ambiguous=everywhere, nonexistent="NaT").dt.tz_convert("UTC")
    std = naive.dt.tz_localize(timezone, ambiguous=~everywhere, nonexistent="NaT").dt.tz_convert("UTC")
    ambiguous = (dst.notna() & std.notna() & (dst != std)).to_numpy(dtype=bool)
    skipped = (naive.notna() & dst.isna()).to_numpy(dtype=bool)
    problems[skipped] = f"not a time in {timezone}: the clocks skip it (DST change)"
    out = std.copy()
    if not ambiguous.any():
        return out, problems
    if not_after is not None:
        later_ok = (std <= not_after).fillna(False).to_numpy(dtype=bool)
        out[ambiguous & ~later_ok] = dst[ambiguous & ~later_ok]
        return out, problems
    if tickets is None:
        out[ambiguous] = dst[ambiguous]
        return out, problems
    keys = tickets.astype("string").to_numpy()
    ns = out.astype("int64").to_numpy().copy()
    dst_ns, std_ns = dst.astype("int64").to_numpy(), std.astype("int64").to_numpy()
    nat = np.iinfo("int64").min
    for ticket in pd.unique(keys[ambiguous]):
        rows = np.flatnonzero(keys == ticket)
        previous = nat
        for i in rows:
            if ambiguous[i]:
                ns[i] = dst_ns[i] if dst_ns[i] >= previous else std_ns[i]
            if ns[i] != nat:
                previous = max(previous, ns[i])
    resolved = pd.Series(pd.DatetimeIndex(ns.view("datetime64[ns]")).tz_localize("UTC"), index=naive.index)
    return resolved, problems
