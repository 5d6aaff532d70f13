"""Repeat issues: customers and topics that come back within N days.

A contact is a repeat when the same customer opened another ticket within `within_days` before
it (a repeat on the same topic when that ticket had the same category). Tickets opened before
the window still count as the earlier contact, so a window's first days are not undercounted.
Pure DataFrame-in, DataFrame-out; training (the test period) and the service (a store window)
call the same functions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

TOPIC = "category"


def mark_repeat_contacts(tickets: pd.DataFrame, within_days: float) -> pd.DataFrame:
    """`tickets` (ticket_id, customer_id, created_at, optionally category) with two added columns:
    `repeat_contact` (the customer opened another ticket in the `within_days` before this one) and
    `repeat_topic` (one with the same category). Tickets without a customer are never repeats."""
    if within_days <= 0:
        raise ValueError(f"within_days must be positive, not {within_days}")
    missing = {"ticket_id", "customer_id", "created_at"} - set(tickets.columns)
    if missing:
        raise KeyError(f"repeat issues need column(s) {sorted(missing)}")
    out = tickets.copy()
    span = pd.Timedelta(days=within_days)
    created = pd.to_datetime(out["created_at"], utc=True)

    def previous_within(keys: list[str]) -> np.ndarray:
        frame = pd.DataFrame({"t": created, **{k: out[k].astype("string") for k in keys}})
        known = frame[keys].notna().all(axis=1)
        ordered = frame[known].sort_values([*keys, "t"], kind="stable")
        gap = ordered["t"] - ordered.groupby(keys, sort=False)["t"].shift()
        hit = pd.Series(False, index=out.index)
        hit.loc[ordered.index] = (gap <= span).fillna(False).to_numpy(dtype=bool)
        return hit.to_numpy(dtype=bool)

    out["repeat_contact"] = previous_within(["customer_id"])
    out["repeat_topic"] = previous_within(["customer_id", TOPIC]) if TOPIC in out else False
    return out


def summarize_repeat_issues(tickets: pd.DataFrame, within_days: float, window_from: pd.Timestamp | None = None,
                            max_rows: int = 15) -> dict:
    """Repeat contacts of the tickets opened from `window_from` on (all when None), looking back
    into earlier tickets. `tickets`: ticket_id, customer_id, created_at, category, optionally
    escalated (0/1). Returns {"within_days", "tickets", "repeat_contacts", "repeat_share",
    "customers": [...], "topics": [...]} (JSON-ready): customers with the most repeat contacts on
    one topic, and per topic the share of its tickets that repeat a contact on it."""
    marked = mark_repeat_contacts(tickets, within_days)
    if window_from is not None:
        marked = marked[pd.to_datetime(marked["created_at"], utc=True) >= pd.Timestamp(window_from)]
    has_outcome = "escalated" in marked
    n = len(marked)
    out = {"within_days": within_days, "tickets": int(n), "repeat_contacts": int(marked["repeat_contact"].sum()),
           "repeat_topic_contacts": int(marked["repeat_topic"].sum()),
           "repeat_share": float(marked["repeat_contact"].mean()) if n else None, "customers": [], "topics": []}
    if not n:
        return out
    repeats = marked[marked["repeat_topic"]]
    if len(repeats):
        keys = ["customer_id", TOPIC] if TOPIC in marked else ["customer_id"]
        customers = marked[marked["customer_id"].notna()].groupby(keys, sort=False, observed=True).agg(
            tickets=("ticket_id", "size"), repeats=("repeat_topic", "sum"), last_contact=("created_at", "max"),
            **({"escalated": ("escalated", "sum")} if has_outcome else {}))
        customers = customers[customers["repeats"] > 0].sort_values(["repeats", "tickets"], ascending=False)
        out["customers"] = [
            {**dict(zip(keys, (index if isinstance(index, tuple) else (index,)), strict=True)),
             "tickets": int(row.tickets), "repeats": int(row.repeats), "last_contact": str(row.last_contact),
             **({"escalated": int(row.escalated)} if has_outcome else {})}
            for index, row in customers.head(max_rows).iterrows()]
    if TOPIC in marked:
        grouped = marked.groupby(marked[TOPIC].astype("string").fillna("unknown"), sort=False)
        topics = pd.DataFrame({"tickets": grouped.size(), "repeats": grouped["repeat_topic"].sum()})
        topics["repeat_share"] = topics["repeats"] / topics["tickets"]
        if has_outcome:
            escalated = marked["escalated"].astype(float)
            topics["escalation_rate_repeat"] = escalated[marked["repeat_topic"]].groupby(
                marked.loc[marked["repeat_topic"], TOPIC].astype("string").fillna("unknown")).mean()
            topics["escalation_rate_first"] = escalated[~marked["repeat_topic"]].groupby(
                marked.loc[~marked["repeat_topic"], TOPIC].astype("string").fillna("unknown")).mean()
        topics = topics.sort_values(["repeat_share", "tickets"], ascending=False)
        out["topics"] = [{"topic": str(topic), **{k: (None if isinstance(v, float) and v != v else
                                                      int(v) if k in ("tickets", "repeats") else float(v))
                                                   for k, v in row.items()}}
                         for topic, row in topics.head(max_rows).iterrows()]
    return out
