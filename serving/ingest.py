"""Backfill the ticket store from an export, so live history is complete from the first day.

The export is read like training reads it (a canonical event log, features.schema.read_event_log,
or any export through a mapping file, features/sources), validated row by row like training
validates it (features.schema.validate_events; rejected rows are written out with their reasons),
then recorded in batches through TicketStore.record_events as full events of
source "ingest": the same merge, idempotency and history rules as the live endpoints, so an
ingest run twice records nothing new the second time.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from features.schema import CANONICAL_COLUMNS, REJECT_COLUMNS, read_event_log, validate_events
from serving.store.tickets import EventError, RecordedEvent, TicketStore

INGEST_SOURCE = "ingest"
CONVERT_ROWS = 100_000
INPUT_ROW = "_ingest_row"  # the row's position in the export, carried through validation for the rejects
COUNTER_COLUMNS = ("reassignment_count", "reopen_count", "customer_messages", "agent_messages", "escalation_level")


@dataclass
class IngestResult:
    rows: int
    recorded: int
    duplicates: int
    rejected: int  # rows with at least one reject (a row can have several reasons)
    seconds: float
    rejects_path: Path | None
    reasons: dict[str, int] = field(default_factory=dict)  # "column: reason" -> rejected rows, most first

    @property
    def reject_share(self) -> float:
        """Rejected rows / rows read (0 for an empty export)."""
        return self.rejected / max(self.rows, 1)


def read_export(data_path: Path, source: str = "events", mapping_path: Path | None = None) -> pd.DataFrame:
    """Canonical rows of an export: `events` (Parquet or CSV in the canonical columns), `servicenow`
    (the incident audit log) or `mapping` (any export described by `mapping_path`).
    Raises FileNotFoundError, features.schema.SchemaError (a file that is not Parquet, UTF-8 or
    comma-separated CSV, named), ValueError or features.sources.mapping.MappingError."""
    data_path = Path(data_path)
    if not data_path.exists():
        raise FileNotFoundError(f"no export at {data_path}")
    if source == "events":
        return read_event_log(data_path)
    from features.sources.mapping import import_export, load_mapping

    if source == "mapping" and mapping_path is None:
        raise ValueError("--source mapping needs --mapping FILE (see docs/mapping-files.md)")
    return import_export(data_path, load_mapping(mapping_path or source)).events


def iso_times(values: pd.Series) -> pd.Series:
    """UTC times as datetime.isoformat() writes them ("2025-01-01T09:40:47+00:00", microseconds only
    when set), so an event ingested and the same event sent to the API have the same content key."""
    return pd.Series(_iso_strings(values), index=values.index, dtype=object)


def _iso_strings(values: pd.Series) -> np.ndarray:
    """iso_times as an object array (None where missing): each distinct time formatted once."""
    codes, uniques = pd.factorize(values.dt.tz_convert("UTC").dt.tz_localize(None))
    with warnings.catch_warnings():  # nanoseconds are dropped, as the API's datetime.isoformat() drops them
        warnings.simplefilter("ignore", UserWarning)
        moments = uniques.to_pydatetime()
    text = np.array([moment.isoformat() + "+00:00" for moment in moments] + [None], dtype=object)
    return text[codes]  # a missing time (code -1) takes the last entry, None


def to_event_dicts(events: pd.DataFrame) -> list[dict]:
    """Validated canonical rows as normalized event dicts (serving.store.tickets.normalize_event's form:
    times as UTC ISO strings, ids as strings, missing values left out, keys in CANONICAL_COLUMNS order)."""
    names, arrays, present = [], [], []
    for column in CANONICAL_COLUMNS:
        if column not in events:
            continue
        values = events[column]
        if isinstance(values.dtype, pd.DatetimeTZDtype):
            array = _iso_strings(values)
        elif column in COUNTER_COLUMNS:
            array = values.to_numpy("int64").astype(object)
        else:
            array = values.astype("string").to_numpy(object, na_value=None)
        names.append(column)
        arrays.append(array)
        present.append(np.not_equal(array, None))
    if not names:
        return [{} for _ in range(len(events))]
    # Rows with the same missing columns are built by one dict(zip(...)) per row over those columns.
    pattern = np.zeros(len(events), dtype=np.int64)
    for bit, mask in enumerate(present):
        pattern |= mask.astype(np.int64) << bit
    dicts: list = [None] * len(events)
    for code in np.unique(pattern):
        rows = np.flatnonzero(pattern == code)
        keep = [i for i in range(len(names)) if code >> i & 1]
        keys = [names[i] for i in keep]
        built = [dict(zip(keys, row, strict=True)) for row in zip(*(arrays[i][rows] for i in keep), strict=True)]
        for position, item in zip(rows.tolist(), built, strict=True):
            dicts[position] = item
    return dicts


def ingest_events(store: TicketStore, raw: pd.DataFrame, batch_size: int = 5000, rejects_path: Path | None = None,
                  progress: Callable[[int, int], None] | None = None) -> IngestResult:
    """Validate `raw` (canonical columns) and record it; rejected rows go to `rejects_path` (CSV).

    Each batch is one unit of work (TicketStore.record_events), committed before it is counted. A row
    the store refuses to merge (an update before its ticket's creation as stored, from an earlier
    ingest or the API) is a rejected row with the store's reason; the rest of its batch is recorded.
    Raises features.schema.SchemaError before recording anything when `raw` lacks a required column
    (or a time column reads in neither or both day orders); then what record_events raises
    (StoreUnavailable), the batches before it committed."""
    started = time.perf_counter()
    result = validate_events(raw.assign(**{INPUT_ROW: np.arange(len(raw))}), copy=False)
    events = result.events  # sorted by ticket and time: a ticket's events mostly share one batch
    input_rows = events[INPUT_ROW].to_numpy()
    merge_rejects: list[dict] = []
    recorded = duplicates = 0
    # Converted a block of batches at a time: per-column conversion costs the same for 5,000 rows as for 100,000.
    block = max(batch_size, (CONVERT_ROWS // batch_size) * batch_size)
    try:
        for block_start in range(0, len(events), block):
            dicts = to_event_dicts(events.iloc[block_start:block_start + block])
            for offset in range(0, len(dicts), batch_size):
                first = block_start + offset
                batch, rows = dicts[offset:offset + batch_size], input_rows[first:first + batch_size]
                for item in _record_batch(store, batch, rows, merge_rejects):
                    duplicates += item.duplicate
                    recorded += not item.duplicate
                if progress is not None:
                    progress(min(first + batch_size, len(events)), len(events))
    finally:  # the rejects so far are written even when the store stops the run
        rejects = result.rejects
        if merge_rejects:
            rejects = pd.concat([rejects, pd.DataFrame(merge_rejects, columns=list(REJECT_COLUMNS))],
                                ignore_index=True).sort_values(["row", "column"], kind="stable").reset_index(drop=True)
        rejected = int(rejects["row"].nunique()) if len(rejects) else 0
        if rejected and rejects_path is not None:
            Path(rejects_path).parent.mkdir(parents=True, exist_ok=True)
            rejects.to_csv(rejects_path, index=False)
    reasons = (rejects.drop_duplicates(["row", "column", "reason"])
               .groupby(["column", "reason"]).size().sort_values(ascending=False, kind="stable")) \
        if rejected else pd.Series(dtype="int64")
    return IngestResult(rows=len(raw), recorded=recorded, duplicates=duplicates, rejected=rejected,
                        seconds=time.perf_counter() - started,
                        rejects_path=Path(rejects_path) if rejected and rejects_path is not None else None,
                        reasons={f"{column}: {reason}": int(n) for (column, reason), n in reasons.items()})


def _record_batch(store: TicketStore, batch: list[dict], rows: np.ndarray, rejects: list[dict]
                  ) -> list[RecordedEvent]:
    """record_events of one batch; the events the store refuses become rejects (`rows`: their export
    rows) and the batch is recorded without them (nothing of a refused unit of work was written)."""
    while batch:
        try:
            return store.record_events(batch, INGEST_SOURCE, normalized=True, event_ids=False)
        except EventError as exc:
            refused = {index for index, _, _ in exc.problems}
            for index, column, reason in exc.problems:
                rejects.append({"row": int(rows[index]), "ticket_id": batch[index]["ticket_id"], "column": column,
                                "reason": reason, "value": batch[index].get(column)})
            kept = [i for i in range(len(batch)) if i not in refused]
            batch, rows = [batch[i] for i in kept], rows[kept]
    return []
