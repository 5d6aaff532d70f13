"""Batch scoring of open tickets: Parquet (or CSV) in, Parquet out, in one process or on Dask.

Both engines call ModelBundle.score (the service's scoring path) on the latest row of each
ticket (with several labels, each label's probability, band and escalate-now come out as
`<column>__<label>` beside the primary's, and `likely_type`); the Dask engine shuffles rows by ticket_id so a ticket's rows meet in one partition,
then scores partitions with map_partitions. A row that fails validation is not scored: it
comes out with its reason in `error`, so nothing in the input is dropped silently.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from distributed import Client, progress
from tqdm import tqdm

from bundle.model import ModelBundle
from features.schema import validate_events

ERROR = "error"


def select_latest_rows(events: pd.DataFrame) -> pd.DataFrame:
    """The latest row per ticket (a ticket is scored as it stands now)."""
    if "ticket_id" in events and "event_time" in events:
        events = events.sort_values("event_time", kind="stable").groupby("ticket_id", sort=False).tail(1)
    return events.reset_index(drop=True)


def make_empty_scores(bundle: ModelBundle) -> pd.DataFrame:
    """The output's columns and types, whatever a batch holds (Dask's meta, empty partitions)."""
    columns = {
        "ticket_id": "string",
        "escalation_probability": "float64",
        "band": "string",
        "escalate_now": "boolean",
        "priority_predicted": "string",
        "reasons": "string",
    }
    columns |= {f"priority_probability_{c}": "float64" for c in bundle.metadata["priority_classes"]}
    if len(bundle.labels) > 1:  # each label's own score (ModelBundle.score), then the most likely type
        for label in bundle.labels:
            columns |= {f"escalation_probability__{label.name}": "float64", f"band__{label.name}": "string",
                        f"escalate_now__{label.name}": "boolean"}
        columns["likely_type"] = "string"
    columns |= {"model_version": "string", ERROR: "string"}
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in columns.items()})


def score_rows(rows: pd.DataFrame, bundle: ModelBundle, empty: pd.DataFrame) -> pd.DataFrame:
    """Score valid rows; rows that fail validation come back unscored with their reasons."""
    rows = rows.reset_index(drop=True)
    checked = validate_events(rows, sort=False)
    parts = []
    if len(checked.rejects):
        rejects = checked.rejects
        reasons = (rejects["column"].astype(str) + ": " + rejects["reason"].astype(str)).groupby(
            rejects["row"].to_numpy()).agg("; ".join)
        bad = rows["ticket_id"].iloc[reasons.index.to_numpy()] if "ticket_id" in rows else pd.Series(pd.NA)
        parts.append(pd.DataFrame({"ticket_id": bad.astype("string").to_numpy(), ERROR: reasons.to_numpy()}))
        rows = rows.drop(index=reasons.index).reset_index(drop=True)
    if len(rows):
        scored = bundle.score(rows)
        scored["reasons"] = scored["reasons"].map(json.dumps)
        scored["model_version"] = bundle.version
        parts.append(scored)
    if not parts:
        return empty
    out = pd.concat(parts, ignore_index=True).reindex(columns=empty.columns)
    return out.astype(empty.dtypes.to_dict())


def score_latest(events: pd.DataFrame, bundle: ModelBundle, empty: pd.DataFrame) -> pd.DataFrame:
    """One Dask partition (all rows of its tickets): latest row per ticket, scored."""
    return score_rows(select_latest_rows(events), bundle, empty)


def score_frame(events: pd.DataFrame, bundle: ModelBundle, chunk_rows: int = 5_000,
                show_progress: bool = False) -> pd.DataFrame:
    """Single process: the latest row per ticket, scored in chunks under a tqdm bar."""
    latest = select_latest_rows(events)
    empty = make_empty_scores(bundle)
    starts = range(0, len(latest), chunk_rows)
    with tqdm(total=len(latest), unit="ticket", desc="scoring", disable=not show_progress) as bar:
        chunks = []
        for start in starts:
            chunks.append(score_rows(latest.iloc[start : start + chunk_rows], bundle, empty))
            bar.update(min(chunk_rows, len(latest) - start))
    return pd.concat(chunks, ignore_index=True) if chunks else empty


def score_file_dask(input_path: Path, output_path: Path, bundle: ModelBundle, client: Client,
                    show_progress: bool = False) -> dict[str, int]:
    """Dask: shuffle by ticket, score each partition on the workers, write a Parquet folder.

    Returns the summary counts (as summarize_scores), not the scores.
    """
    from training.dask_train import SHUFFLE_METHOD, read_event_log_dask

    events = read_event_log_dask(input_path)
    n_partitions = max(events.npartitions, 2 * len(client.scheduler_info()["workers"]))
    if "ticket_id" in events.columns:
        events = events.shuffle(on="ticket_id", npartitions=n_partitions, shuffle_method=SHUFFLE_METHOD)
    empty = make_empty_scores(bundle)
    # The bundle travels once to each worker, so workers need no access to the models folder.
    scored = events.map_partitions(score_latest, client.scatter(bundle, broadcast=True), empty, meta=empty)
    scored = client.persist(scored)
    if show_progress:
        progress(scored)
    Path(output_path).parent.mkdir(parents=True, exist_ok=True)
    scored.to_parquet(str(output_path), write_index=False, overwrite=True)
    return summarize_scores(pd.read_parquet(output_path, columns=["band", "escalate_now", ERROR]))


def summarize_scores(scored: pd.DataFrame) -> dict[str, int]:
    ok = scored[ERROR].isna().to_numpy()
    return {
        "scored": int(ok.sum()),
        "rejected": int((~ok).sum()),
        "high": int((scored["band"] == "high").fillna(False).sum()),
        "escalate_now": int(np.asarray(scored["escalate_now"].fillna(False), dtype=bool).sum()),
    }
