"""The canonical ticket event log (DESIGN.md) and its row-level validation.

Bad rows are not silently dropped: each one becomes a reject (row, column, reason, value)
that the caller writes out, so nothing from a user's export is lost without a trace.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from features.times import TimeFormatError, detect_day_order

REQUIRED_COLUMNS = ("ticket_id", "event_time", "created_at")
TIME_COLUMNS = ("event_time", "created_at", "sla_due_at")
COUNTER_COLUMNS = ("reassignment_count", "reopen_count", "customer_messages", "agent_messages")
LEVEL_COLUMN = "escalation_level"
# The largest counter (messages, reassignments, reopenings, escalation level) anything accepts: the API
# answers 422 above it (serving/schemas.py) and validate_events rejects the row. A larger value is a bug
# in the sender or the export, not a ticket.
COUNTER_MAX = 1_000_000
TEXT_COLUMNS = ("subject", "description", "last_customer_message")
CATEGORICAL_COLUMNS = (
    "channel",
    "category",
    "subcategory",
    "priority",
    "customer_tier",
    "status",
    "event_type",
)
ID_COLUMNS = ("ticket_id", "customer_id", "agent_id", "group")
# escalation_type only describes an escalation once it happened: never a feature.
# target_priority: an importer's outcome-based priority target (e.g. time to resolve), label only.
TARGET_PRIORITY_COLUMN = "target_priority"
OUTCOME_COLUMNS = ("escalation_type", TARGET_PRIORITY_COLUMN)

CANONICAL_COLUMNS = (
    "ticket_id",
    "event_time",
    "created_at",
    "event_type",
    "channel",
    "category",
    "subcategory",
    "priority",
    "customer_id",
    "customer_tier",
    "agent_id",
    "group",
    "status",
    "subject",
    "description",
    "last_customer_message",
    "reassignment_count",
    "reopen_count",
    "customer_messages",
    "agent_messages",
    "sla_due_at",
    "escalation_level",
    "escalation_type",
)

PRIORITY_ORDER = ("low", "normal", "high", "urgent")
# ServiceNow-style P1..P4 map onto the same four levels (P1 is the most urgent).
PRIORITY_ALIASES = {"p1": "urgent", "p2": "high", "p3": "normal", "p4": "low", "medium": "normal"}
CLOSED_STATUSES = ("closed",)

REJECT_COLUMNS = ("row", "ticket_id", "column", "reason", "value")


class SchemaError(ValueError):
    """The event log cannot be used at all (missing required columns, too many rejects)."""


@dataclass
class ValidationResult:
    events: pd.DataFrame
    rejects: pd.DataFrame
    n_input_rows: int

    @property
    def reject_share(self) -> float:
        n_bad_rows = self.rejects["row"].nunique() if len(self.rejects) else 0
        return n_bad_rows / max(self.n_input_rows, 1)


# Runs of spaces, hyphens and underscores are one separator: "Self service", "self-service" and
# " SELF_SERVICE " are one value, "self_service".
_SEPARATORS = re.compile(r"[\s_-]+")
NORMALIZATION_VERSION = 1
"""FeatureBuilder.category_normalization_ of builders fitted with normalize_category (absent: none)."""


@lru_cache(maxsize=65_536)  # few distinct values in practice; bounded because clients send them
def normalize_category(value: object) -> str | None:
    """The one normal form of a categorical value, used by training, batch scoring and serving.

    Lower case, surrounding spaces dropped, runs of spaces/hyphens/underscores joined into one
    "_" ("Self service" -> "self_service", "1 - High" -> "1_high"); None or a value that is only
    separators -> None (not set). Numbers are read as their text ("2" for 2 or 2.0 is not merged).
    """
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return None
    text = _SEPARATORS.sub("_", str(value).strip().lower()).strip("_")
    return text or None


def normalize_priority_value(value: object) -> str | None:
    """normalize_category, then the P1..P4 / medium aliases onto low/normal/high/urgent."""
    normal = normalize_category(value)
    return PRIORITY_ALIASES.get(normal, normal) if normal is not None else None


def normalize_categories(values: pd.Series, priority: bool = False) -> pd.Series:
    """normalize_category (or normalize_priority_value) on a column, once per distinct value."""
    codes, uniques = pd.factorize(values.astype("string"), use_na_sentinel=True)
    normal = normalize_priority_value if priority else normalize_category
    mapped = np.array([normal(v) for v in uniques] + [None], dtype=object)
    return pd.Series(mapped[codes], index=values.index, dtype="string")


def normalize_priority(values: pd.Series) -> pd.Series:
    """Priorities in normal form with P1..P4 aliases mapped onto low/normal/high/urgent."""
    return normalize_categories(values, priority=True)


def _reject_rows(
    frame: pd.DataFrame, mask: pd.Series, column: str, reason: str, values: pd.Series | None = None
) -> pd.DataFrame:
    bad = frame.loc[mask]
    shown = (values if values is not None else frame[column]).loc[mask] if column in frame else None
    return pd.DataFrame(
        {
            "row": bad["_row"].to_numpy(),
            "ticket_id": bad["ticket_id"].astype("string").to_numpy(),
            "column": column,
            "reason": reason,
            "value": shown.astype("string").to_numpy() if shown is not None else pd.NA,
        }
    )


def validate_events(raw: pd.DataFrame, sort: bool = True, copy: bool = True,
                    normalize: bool = True) -> ValidationResult:
    """Coerce an event log to the canonical types; return clean rows and row-level rejects.

    `row` in the rejects is the 0-based position of the row in the input frame (for a CSV read
    whole, row 0 is the line after the header). Counters must be whole numbers 0..COUNTER_MAX, as
    the API takes them (3.0 and 1e2 are whole; missing is 0); ticket id and times are required.
    Raises SchemaError when a required column is missing. Clean rows
    come sorted by ticket and time unless `sort` is False (scoring keeps the caller's order).
    `copy=False` converts `raw` in place, for callers that own a large frame. Categorical
    columns come in normal form (normalize_category); `normalize=False` only lower-cases the
    priority, as before normalisation existed (for bundles fitted then).
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
    if missing:
        raise SchemaError(
            f"event log is missing required column(s): {', '.join(missing)}; "
            f"columns found: {', '.join(map(str, raw.columns[:30]))}"
        )
    frame = raw.copy() if copy else raw
    frame["_row"] = np.arange(len(frame))
    rejects: list[pd.DataFrame] = []

    ticket_ids = frame["ticket_id"].astype("string").str.strip()
    missing_id = ticket_ids.isna() | (ticket_ids == "")
    frame["ticket_id"] = ticket_ids
    rejects.append(_reject_rows(frame, missing_id, "ticket_id", "missing ticket id"))

    for column in TIME_COLUMNS:
        if column not in frame:
            continue
        original = frame[column]
        parsed = parse_times(original, column)
        unparseable = parsed.isna() & original.notna()
        if not pd.api.types.is_datetime64_any_dtype(original.dtype):
            unparseable &= original.astype("string").str.strip() != ""
        if column in REQUIRED_COLUMNS:
            unparseable = unparseable | original.isna()
        rejects.append(_reject_rows(frame, unparseable, column, "unparseable or missing time", original))
        frame[column] = parsed

    before_creation = frame["event_time"] < frame["created_at"]
    rejects.append(
        _reject_rows(frame, before_creation.fillna(False), "event_time", "event before ticket creation")
    )

    for column in (*COUNTER_COLUMNS, LEVEL_COLUMN):
        if column not in frame:
            continue
        original = frame[column]
        # As the API takes counters: whole numbers 0..COUNTER_MAX, written 3, 3.0 or 1e2 (= 100); true/false
        # are not counts. A missing counter is 0.
        if pd.api.types.is_bool_dtype(original.dtype):
            numbers = pd.Series(np.nan, index=original.index)
        else:
            numbers = pd.to_numeric(original, errors="coerce").astype("float64")
        not_number = numbers.isna() & original.notna()
        negative = (numbers < 0).to_numpy()
        too_large = (numbers > COUNTER_MAX).to_numpy()
        fraction = (np.isfinite(numbers) & (numbers != np.floor(numbers))).to_numpy() & ~negative & ~too_large
        rejects.append(_reject_rows(frame, not_number, column, "not a number", original))
        rejects.append(_reject_rows(frame, negative, column, "negative counter", original))
        rejects.append(_reject_rows(frame, fraction, column, "counter not a whole number", original))
        rejects.append(_reject_rows(frame, too_large, column, f"counter above the maximum {COUNTER_MAX:,}",
                                    original))
        frame[column] = numbers.where(~(negative | too_large | fraction), 0).fillna(0).astype("int64")

    duplicated = frame.duplicated(subset=["ticket_id", "event_time"], keep="first") & ~missing_id
    rejects.append(_reject_rows(frame, duplicated, "event_time", "duplicate update (same ticket and time)"))

    for column in CATEGORICAL_COLUMNS:
        if column in frame and normalize:
            frame[column] = normalize_categories(frame[column], priority=column == "priority")
        elif column == "priority" and column in frame:
            lowered = frame[column].astype("string").str.strip().str.lower()
            frame[column] = lowered.replace(PRIORITY_ALIASES)
    for column in (*CATEGORICAL_COLUMNS, "customer_id", "agent_id", "group", *TEXT_COLUMNS):
        if column in frame and not (column in CATEGORICAL_COLUMNS and (normalize or column == "priority")):
            frame[column] = frame[column].astype("string")

    all_rejects = pd.concat([r for r in rejects if len(r)], ignore_index=True) if any(
        len(r) for r in rejects
    ) else pd.DataFrame({c: pd.Series(dtype="object") for c in REJECT_COLUMNS})
    bad_rows = set(all_rejects["row"].tolist())
    clean = frame.loc[~frame["_row"].isin(bad_rows)].drop(columns="_row")
    if sort:
        clean = clean.sort_values(["ticket_id", "event_time"], kind="stable")
    clean = clean.reset_index(drop=True)
    for column in CANONICAL_COLUMNS:
        if column in TIME_COLUMNS and column not in clean:
            # An export without the column (e.g. no SLA due time) still gives time arithmetic a NaT.
            clean[column] = pd.Series(pd.NaT, index=clean.index, dtype="datetime64[ns, UTC]")
        elif column not in clean:
            clean[column] = 0 if column in (*COUNTER_COLUMNS, LEVEL_COLUMN) else pd.NA
    return ValidationResult(
        events=clean,
        rejects=all_rejects.sort_values(["row", "column"], kind="stable").reset_index(drop=True),
        n_input_rows=len(raw),
    )


def read_parquet_log(path: Path) -> pd.DataFrame:
    """A Parquet file, or a directory read as one Parquet dataset (every file in it Parquet).

    Raises SchemaError naming the path when it does not read as Parquet (e.g. a directory of CSV files).
    """
    path = Path(path)
    try:
        return pd.read_parquet(path)
    except (ValueError, OSError, NotImplementedError) as exc:  # pyarrow's ArrowInvalid, ArrowIOError, ...
        first = textwrap.shorten((str(exc).strip().splitlines() or [type(exc).__name__])[0], 200, placeholder=" ...")
        if path.is_dir():
            raise SchemaError(f"{path} is a directory, read as one Parquet dataset, and not every file in it is "
                              f"Parquet (give a CSV file itself, not its folder): {first}") from exc
        raise SchemaError(f"{path} does not read as Parquet: {first}") from exc


def read_event_log(events_path: Path) -> pd.DataFrame:
    """A canonical event log: Parquet (a .parquet file or a directory of them) or CSV (.csv, .csv.gz, or
    any other name; UTF-8, comma-separated).

    Ids and categories are read as text (a zero-padded id keeps its zeros). Raises FileNotFoundError,
    or SchemaError naming the file and the problem when it is not Parquet, not UTF-8, empty, or not
    comma-separated.
    """
    events_path = Path(events_path)
    if not events_path.exists():
        raise FileNotFoundError(f"event log not found: {events_path}")
    if events_path.suffix == ".parquet" or events_path.is_dir():
        return read_parquet_log(events_path)
    try:
        header = pd.read_csv(events_path, nrows=0)
        text = {c: "string" for c in (*ID_COLUMNS, *CATEGORICAL_COLUMNS, *TEXT_COLUMNS) if c in header.columns}
        frame = pd.read_csv(events_path, low_memory=False, dtype=text)
    except UnicodeError as exc:
        raise SchemaError(f"{events_path.name} is not UTF-8 text ({exc}); save it as UTF-8, or import it with a "
                          "mapping file whose read.encoding names its encoding (docs/mapping-files.md)") from exc
    except pd.errors.EmptyDataError as exc:
        raise SchemaError(f"{events_path.name} is empty: no header row of columns") from exc
    except pd.errors.ParserError as exc:
        raise SchemaError(f"{events_path.name} does not read as comma-separated CSV: "
                          f"{str(exc).strip().splitlines()[-1]}") from exc
    if frame.shape[1] == 1 and any(d in str(frame.columns[0]) for d in (";", "\t", "|")):
        raise SchemaError(f"{events_path.name} reads as one column ({str(frame.columns[0])[:60]!r}): the canonical "
                          "log is comma-separated; import another separator with a mapping file (read.delimiter)")
    return frame


def parse_times(values: pd.Series, column: str = "time") -> pd.Series:
    """Parse timestamps to UTC; naive times are taken as UTC, garbage becomes NaT.

    Numeric dates (03/11/2025) are read in the one day order the column's values prove
    (features.times.detect_day_order); a column that proves both orders, or neither, raises
    SchemaError naming it rather than being read row by row.
    """
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    if pd.api.types.is_datetime64_dtype(values.dtype):
        return values.dt.tz_localize("UTC").astype("datetime64[ns, UTC]")
    try:
        dayfirst = detect_day_order(values, column)
    except TimeFormatError as exc:
        raise SchemaError(str(exc)) from exc
    return pd.to_datetime(values, errors="coerce", utc=True, format="mixed",
                          dayfirst=bool(dayfirst)).astype("datetime64[ns, UTC]")


def check_reject_share(result: ValidationResult, max_share: float) -> None:
    """Stop early when an export is mostly unusable: a model on the leftovers would mislead."""
    if result.reject_share > max_share:
        reasons = result.rejects.groupby(["column", "reason"]).size().sort_values(ascending=False)
        top = "; ".join(f"{col}: {reason} ({n} rows)" for (col, reason), n in reasons.head(5).items())
        raise SchemaError(
            f"{result.reject_share:.1%} of {result.n_input_rows} rows were rejected, more than the "
            f"allowed {max_share:.1%} (params: data.max_reject_share). Most common: {top}"
        )
