"""As-of aggregates per customer, agent and team: what was known about them at a snapshot's time.

Two kinds of fact, each with the time it became known:
- a ticket was opened (known at its created_at): recent volume, repeat contacts, backlog;
- a ticket's outcome, escalated or not (known only while the ticket is ended: from its close,
  until it reopens, if it does).
Lookups are binary searches over (entity code, time) keys, so a snapshot only ever sees
tickets opened before it and outcomes settled before it, and serving uses the same table.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.schema import CATEGORICAL_COLUMNS, normalize_categories, normalize_category

# Entities are taken from each ticket's FIRST update: whoever it was later handed to is
# not known when the ticket is opened.
ENTITIES = {
    "customer": ("customer_id",),
    "customer_category": ("customer_id", "category"),
    "agent": ("agent_id",),
    "group": ("group",),
}
_SPAN = np.int64(1) << np.int64(33)  # seconds since 1970 fit under 2**33 until the year 2242
_DAY = 86400


def mark_closing(status: pd.Series, closed_statuses: tuple[str, ...] | list[str]) -> pd.Series:
    """Per row, whether the status is one of the closing statuses, both compared in normal form
    (features.schema.normalize_category): "Done / Closed" as a mapping writes it matches the raw
    export's "Done / Closed" (the audit) and the validated log's "done_/_closed" (the snapshots)."""
    wanted = {normal for s in closed_statuses if (normal := normalize_category(s)) is not None}
    return normalize_categories(status).isin(wanted).fillna(False).astype(bool)


def find_level_rises(events: pd.DataFrame) -> np.ndarray:
    """Per row (sorted by ticket and time): does the escalation level rise above the previous update's?

    Only a rise is an escalation: a ticket handed back down (L2 -> L1) has not escalated, and
    a rise after such a drop (L1 -> L2 again) has.
    """
    level = pd.to_numeric(events["escalation_level"], errors="coerce").fillna(0).to_numpy()
    ticket = events["ticket_id"].to_numpy()
    same_ticket = np.r_[False, ticket[1:] == ticket[:-1]]
    return same_ticket & np.r_[False, level[1:] > level[:-1]]


def summarize_tickets(events: pd.DataFrame, closed_statuses: tuple[str, ...] | list[str] = ("closed",)) -> pd.DataFrame:
    """One row per stretch of a ticket's life that ended in a close, plus one for a stretch still open.

    Events are validated and sorted by ticket and time. A ticket is ended while its state is
    closed: from the first update of a closed run (resolved, then closed a week later: ended
    when resolved) until the update that reopens it (`reopened_at`, NaT if it stays closed).
    A ticket that reopened after T was still ended at T, as anyone saw it then. Its outcome is
    known from `escalated_at` (its first level rise, NaT if none) on; `escalated` is the final
    outcome (for reports). Entities are those of the ticket's first update.
    """
    ticket = events["ticket_id"].to_numpy()
    n = len(events)
    first_row = np.r_[True, ticket[1:] != ticket[:-1]] if n else np.zeros(0, dtype=bool)
    last_row = np.r_[ticket[1:] != ticket[:-1], True] if n else np.zeros(0, dtype=bool)
    closing = mark_closing(events["status"], closed_statuses).to_numpy(dtype=bool)
    run_start = closing & (first_row | ~np.r_[False, closing[:-1]])
    # The update that reopens a run: the first non-closing update after it, within the ticket.
    reopen_row = ~closing & ~first_row & np.r_[False, closing[:-1]]
    times = events["event_time"]
    rises = find_level_rises(events)
    rise_times = times.where(rises).groupby(ticket, sort=False).min()
    first = events.loc[first_row].set_index("ticket_id")
    position = np.arange(n)
    # Each run's reopening update: the next reopen row of the same ticket after the run's start.
    reopen_positions = position[reopen_row]
    nxt = np.searchsorted(reopen_positions, position[run_start], side="right")
    has_next = nxt < len(reopen_positions)
    run_ticket = ticket[run_start]
    reopened = np.full(run_start.sum(), -1)
    reopened[has_next] = reopen_positions[nxt[has_next]]
    reopened[has_next & (ticket[np.maximum(reopened, 0)] != run_ticket)] = -1
    ns = times.dt.tz_convert("UTC").astype("datetime64[ns, UTC]").astype("int64").to_numpy()
    nat = np.iinfo("int64").min
    reopened_ns = np.where(reopened >= 0, ns[np.maximum(reopened, 0)], nat)
    # A ticket whose latest update is not closing has an open stretch: ended_at NaT.
    open_now = last_row & ~closing
    n_open = int(open_now.sum())
    rows = pd.DataFrame({
        "ticket_id": np.r_[run_ticket, ticket[open_now]],
        "ended_at": np.r_[ns[run_start], np.full(n_open, nat)],
        "reopened_at": np.r_[reopened_ns, np.full(n_open, nat)],
        "_order": np.r_[position[run_start], position[open_now]],
    }).sort_values("_order", kind="stable")
    for column in ("ended_at", "reopened_at"):
        # numpy's NaT is the smallest int64, so the sentinel reads back as NaT.
        rows[column] = pd.DatetimeIndex(rows[column].to_numpy().view("datetime64[ns]")).tz_localize("UTC")
    ids = rows["ticket_id"]
    escalated_at = pd.to_datetime(rise_times.reindex(ids.to_numpy()).to_numpy(), utc=True)
    summary = pd.DataFrame({
        "ticket_id": ids.astype("string").to_numpy(),
        "created_at": first["created_at"].reindex(ids.to_numpy()).array,
        "ended_at": rows["ended_at"].array,
        "reopened_at": rows["reopened_at"].array,
        "escalated_at": escalated_at,
        "escalated": pd.notna(escalated_at).astype("int8"),
    })
    for column in ("customer_id", "agent_id", "group", "category"):
        summary[column] = (first[column].astype("string").reindex(ids.to_numpy()).to_numpy()
                           if column in first else pd.NA)
    return summary.reset_index(drop=True)


def count_tickets(tickets: pd.DataFrame) -> int:
    """Distinct tickets in a summarize_tickets table (a reopened ticket has a row per closed stretch)."""
    return int(tickets["ticket_id"].nunique())


def _entity_values(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.Series:
    values = frame[columns[0]].astype("string")
    for column in columns[1:]:
        values = values + "\x1f" + frame[column].astype("string")
    return values


def _seconds(times: pd.Series) -> np.ndarray:
    return (times.astype("datetime64[ns, UTC]").astype("int64") // 1_000_000_000).to_numpy()


@dataclass
class _EntityIndex:
    codes: dict[str, int]
    created_keys: np.ndarray  # sorted (code, created second) keys, one per ticket
    ended_keys: np.ndarray  # sorted (code, second) keys of the moments tickets ended, reopened or their outcome became known
    ended_counts: np.ndarray  # cumulative change in ended tickets along ended_keys, with a leading 0
    ended_escalations: np.ndarray  # cumulative change in ended escalated tickets along ended_keys, with a leading 0


def list_outcome_changes(tickets: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(row in `tickets`, second, change in ended tickets, change in ended escalated tickets).

    From summarize_tickets' stretches: a ticket counts as ended from `ended_at` until
    `reopened_at`, and as an ended escalation from when both it ended and its first level
    rise had happened (`escalated_at`) until it reopens.
    """
    ended = tickets["ended_at"].notna().to_numpy()
    rows = np.flatnonzero(ended)
    end_s = _seconds(tickets["ended_at"].iloc[rows])
    reopen = tickets["reopened_at"].iloc[rows] if "reopened_at" in tickets else pd.Series(pd.NaT, index=rows)
    reopened = reopen.notna().to_numpy()
    reopen_s = np.where(reopened, _seconds(reopen.fillna(pd.Timestamp(0, tz="UTC"))), 0)
    if "escalated_at" in tickets:
        escalated_at = tickets["escalated_at"].iloc[rows]
    else:  # a history table written before stretches: the outcome known at the close
        escalated_at = tickets["ended_at"].iloc[rows].where(tickets["escalated"].iloc[rows].astype(bool))
    has_escalation = escalated_at.notna().to_numpy()
    escal_s = np.maximum(end_s, np.where(has_escalation, _seconds(escalated_at.fillna(pd.Timestamp(0, tz="UTC"))), 0))
    counted = has_escalation & (~reopened | (escal_s < reopen_s))
    parts = [
        (rows, end_s, np.ones(len(rows), "int64"), np.zeros(len(rows), "int64")),
        (rows[reopened], reopen_s[reopened], -np.ones(reopened.sum(), "int64"), -counted[reopened].astype("int64")),
        (rows[counted], escal_s[counted], np.zeros(counted.sum(), "int64"), np.ones(counted.sum(), "int64")),
    ]
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(4))  # type: ignore[return-value]


class HistoryFeatures:
    """Fit on the ticket summaries known at the cut-off; transform snapshots into as-of aggregates.

    `prior_`, the rate the smoothed escalation rates shrink towards, is the escalation rate of
    the tickets ended at `as_of` (the end of the fitting period), as known then: never the
    whole log's, whose test period lies after it.
    """

    def __init__(self, windows_days: list[int] | tuple[int, ...] = (7, 30, 90), smoothing: float = 20.0):
        self.windows_days = list(windows_days)
        self.smoothing = smoothing

    def fit(self, tickets: pd.DataFrame, as_of: pd.Timestamp | None = None) -> HistoryFeatures:
        """`tickets`: summarize_tickets rows; `as_of`: the moment the prior is read at (None = all of them)."""
        rows, seconds, d_ended, d_escalated = list_outcome_changes(tickets)
        known = np.ones(len(seconds), dtype=bool) if as_of is None else seconds < _seconds(pd.Series([as_of]))[0]
        n_ended, n_escalated = int(d_ended[known].sum()), int(d_escalated[known].sum())
        self.as_of_ = as_of
        self.prior_ = n_escalated / n_ended if n_ended > 0 else 0.1
        unique = tickets.drop_duplicates("ticket_id")
        self.ticket_created_ = pd.Series(
            _seconds(unique["created_at"]), index=unique["ticket_id"].astype("string").to_numpy()
        )
        self.indexes_: dict[str, _EntityIndex] = {}
        for entity, columns in ENTITIES.items():
            codes, uniques = pd.factorize(_entity_values(unique, columns), use_na_sentinel=True)
            code_map = {str(u): i for i, u in enumerate(uniques)}
            created = codes.astype("int64") * _SPAN + _seconds(unique["created_at"])
            has = codes >= 0
            # Codes of the stretches' rows: the same entity values, looked up by ticket.
            row_codes = pd.Series(codes, index=unique["ticket_id"].to_numpy()).reindex(
                tickets["ticket_id"].to_numpy()).to_numpy()[rows]
            mine = row_codes >= 0
            keys = row_codes[mine].astype("int64") * _SPAN + seconds[mine]
            order = np.argsort(keys, kind="stable")
            self.indexes_[entity] = _EntityIndex(
                codes=code_map,
                created_keys=np.sort(created[has]),
                ended_keys=keys[order],
                ended_counts=np.concatenate([[0], np.cumsum(d_ended[mine][order])]),
                ended_escalations=np.concatenate([[0], np.cumsum(d_escalated[mine][order])]),
            )
        self.feature_names_ = self._feature_names()
        return self

    def _feature_names(self) -> list[str]:
        names = [f"customer_tickets_{w}d" for w in self.windows_days]
        names += ["customer_category_tickets_30d", "agent_tickets_30d", "agent_tickets_total", "group_tickets_7d"]
        names += ["agent_open_tickets", "group_open_tickets", "agent_days_seen"]
        for entity in ENTITIES:
            names += [f"{entity}_past_tickets", f"{entity}_escalation_rate"]
        names.append("customer_past_escalations")
        return names

    def transform(self, snapshots: pd.DataFrame) -> pd.DataFrame:
        t = _seconds(snapshots["snapshot_time"])
        # The snapshot's own ticket is in the table when it was known at fit time: never count it.
        own_created = (
            self.ticket_created_.reindex(snapshots["ticket_id"].astype("string").to_numpy()).to_numpy()
        )
        codes = {
            entity: _entity_values(snapshots, columns).map(self.indexes_[entity].codes)
            .fillna(-1).astype("int64").to_numpy()
            for entity, columns in ENTITIES.items()
        }
        return pd.DataFrame(self.transform_arrays(t, own_created, codes), index=snapshots.index)

    def entity_code(self, entity: str, key: str | None) -> int:
        """The code of one entity key ("\x1f"-joined values; None = missing), -1 when unknown; with a
        LiveHistory attached, entities first seen by the store have codes too."""
        live = getattr(self, "live_", None)
        if live is not None:
            return live.entity_code(entity, key)
        return -1 if key is None else self.indexes_[entity].codes.get(key, -1)

    def entity_codes(self, entity: str, values: list[str | None]) -> np.ndarray:
        """Codes of entity keys ("\x1f"-joined column values; None = missing), -1 when unknown."""
        codes = self.indexes_[entity].codes
        return np.array([-1 if v is None else codes.get(v, -1) for v in values], dtype="int64")

    def transform_arrays(self, t: np.ndarray, own_created: np.ndarray, codes: dict[str, np.ndarray],
                         live: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
                         ) -> dict[str, np.ndarray]:
        """The features in feature_names_ order from snapshot seconds, the snapshot's own ticket's
        created second (NaN when unknown) and each entity's codes; serving calls this directly.
        `live`: a LiveHistory's overlays as sorted arrays (LiveHistory.arrays), counted on top of the
        fitted index with the arithmetic of transform_one, so a batch gets transform_one's values."""
        out: dict[str, np.ndarray] = {}
        empty = np.zeros(0, dtype=np.int64)
        for entity in ENTITIES:
            index = self.indexes_[entity]
            known = codes[entity] >= 0
            base = np.where(known, codes[entity], 0) * _SPAN
            live_created, live_ended, live_escalated = live[entity] if live is not None else (empty, empty, empty)

            def opened_between(start: np.ndarray, end: np.ndarray, index=index, base=base, known=known,
                               live_created=live_created) -> np.ndarray:
                """Other tickets of the entity opened in [start, end)."""
                n = np.zeros(len(t), dtype=np.int64)
                for keys in (index.created_keys, live_created):
                    if len(keys):
                        n += keys.searchsorted(base + end, side="left") - keys.searchsorted(base + start, side="left")
                own = (own_created >= start) & (own_created < end)
                return np.where(known, n - own, 0)

            lo = index.ended_keys.searchsorted(base, side="left")
            hi = index.ended_keys.searchsorted(base + t, side="left")
            n_ended = np.where(known, index.ended_counts[hi] - index.ended_counts[lo], 0)
            n_escalated = np.where(known, index.ended_escalations[hi] - index.ended_escalations[lo], 0)
            if len(live_ended):
                n_ended = n_ended + np.where(known, live_ended.searchsorted(base + t, side="left")
                                             - live_ended.searchsorted(base, side="left"), 0)
            if len(live_escalated):
                n_escalated = n_escalated + np.where(known, live_escalated.searchsorted(base + t, side="left")
                                                     - live_escalated.searchsorted(base, side="left"), 0)
            out[f"{entity}_past_tickets"] = n_ended
            denominator = n_ended + self.smoothing
            out[f"{entity}_escalation_rate"] = np.divide(
                n_escalated + self.smoothing * self.prior_, denominator,
                out=np.full(len(t), self.prior_), where=denominator > 0,
            )
            zero = np.zeros_like(t)
            if entity == "customer":
                for w in self.windows_days:
                    out[f"customer_tickets_{w}d"] = opened_between(t - w * 86400, t)
                out["customer_past_escalations"] = n_escalated
            elif entity == "customer_category":
                out["customer_category_tickets_30d"] = opened_between(t - 30 * 86400, t)
            elif entity == "agent":
                out["agent_tickets_30d"] = opened_between(t - 30 * 86400, t)
                out["agent_tickets_total"] = opened_between(zero, t)
                out["agent_open_tickets"] = out["agent_tickets_total"] - n_ended
                # Days since the agent's first ticket: tenure, as far as the log can tell.
                first_key, has_first = _first_at_or_after(index.created_keys, base)
                if len(live_created):
                    live_key, has_live = _first_at_or_after(live_created, base)
                    use_live = has_live & (~has_first | (live_key < first_key))
                    first_key, has_first = np.where(use_live, live_key, first_key), has_first | has_live
                seen = known & has_first & (first_key < base + t)
                out["agent_days_seen"] = np.where(seen, (t - (first_key - base)) / 86400.0, 0.0)
            elif entity == "group":
                out["group_tickets_7d"] = opened_between(t - 7 * 86400, t)
                out["group_open_tickets"] = opened_between(zero, t) - n_ended
        return {name: out[name] for name in self.feature_names_}

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_views", "live_")}

    def _scalar_views(self) -> dict[str, tuple[memoryview, memoryview, memoryview, memoryview]]:
        """Zero-copy views of each index whose items are Python ints, for `bisect` (built on first use)."""
        views = getattr(self, "_views", None)
        if views is None:
            views = self._views = {
                entity: (memoryview(np.ascontiguousarray(index.created_keys, dtype=np.int64)),
                         memoryview(np.ascontiguousarray(index.ended_keys, dtype=np.int64)),
                         memoryview(np.ascontiguousarray(index.ended_counts, dtype=np.int64)),
                         memoryview(np.ascontiguousarray(index.ended_escalations, dtype=np.int64)))
                for entity, index in self.indexes_.items()
            }
        return views

    def transform_one(self, t: int, own_created: float, codes: dict[str, int]) -> list[float]:
        """transform_arrays for a single snapshot, in plain Python: a live ticket needs ~16 binary
        searches, and numpy's per-call overhead would cost more than the searches. Same arithmetic,
        same order, so the values are identical (tests/serving/test_parity.py)."""
        out: dict[str, float] = {}
        span = int(_SPAN)
        smoothing, prior = self.smoothing, self.prior_
        live = getattr(self, "live_", None)  # a LiveHistory: what a service's store learned since the fit
        for entity, (created_keys, *_) in self._scalar_views().items():
            code = codes[entity]
            known = code >= 0
            base = code * span if known else 0
            live_created = live.created[entity] if live is not None else None

            def opened_between(start: int, end: int, known=known, created_keys=created_keys, base=base,
                               live_created=live_created) -> int:
                if not known:
                    return 0
                n = bisect_left(created_keys, base + end) - bisect_left(created_keys, base + start)
                if live_created is not None:
                    n += live_created.bisect_left(base + end) - live_created.bisect_left(base + start)
                return n - int(start <= own_created < end)

            n_ended, n_escalated = self._ended_one(entity, t, code, live)
            out[f"{entity}_past_tickets"] = n_ended
            denominator = n_ended + smoothing
            out[f"{entity}_escalation_rate"] = (
                (n_escalated + smoothing * prior) / denominator if denominator > 0 else prior
            )
            if entity == "customer":
                for w in self.windows_days:
                    out[f"customer_tickets_{w}d"] = opened_between(t - w * _DAY, t)
                out["customer_past_escalations"] = n_escalated
            elif entity == "customer_category":
                out["customer_category_tickets_30d"] = opened_between(t - 30 * _DAY, t)
            elif entity == "agent":
                out["agent_tickets_30d"] = opened_between(t - 30 * _DAY, t)
                out["agent_tickets_total"] = opened_between(0, t)
                out["agent_open_tickets"] = out["agent_tickets_total"] - n_ended
                first = bisect_left(created_keys, base)
                first_key = created_keys[first] if first < len(created_keys) else None
                if live_created is not None and known:
                    at = live_created.bisect_left(base)
                    if at < len(live_created) and (first_key is None or live_created[at] < first_key):
                        first_key = live_created[at]
                seen = known and first_key is not None and first_key < base + t
                out["agent_days_seen"] = (t - (first_key - base)) / 86400.0 if seen else 0.0
            elif entity == "group":
                out["group_tickets_7d"] = opened_between(t - 7 * _DAY, t)
                out["group_open_tickets"] = opened_between(0, t) - n_ended
        return [out[name] for name in self.feature_names_]

    def _ended_one(self, entity: str, t: int, code: int, live) -> tuple[int, int]:
        """(tickets of this entity ended before t, of which escalated), fitted index plus live overlay."""
        if code < 0:
            return 0, 0
        _, ended_keys, ended_counts, ended_escalations = self._scalar_views()[entity]
        base = code * int(_SPAN)
        lo, hi = bisect_left(ended_keys, base), bisect_left(ended_keys, base + t)
        n_ended, n_escalated = ended_counts[hi] - ended_counts[lo], ended_escalations[hi] - ended_escalations[lo]
        if live is not None:
            ended, escalated = live.ended[entity], live.ended_escalated[entity]
            n_ended += ended.bisect_left(base + t) - ended.bisect_left(base)
            n_escalated += escalated.bisect_left(base + t) - escalated.bisect_left(base)
        return n_ended, n_escalated

    def transform_rates_one(self, t: int, codes: dict[str, int]) -> dict[str, float]:
        """Only the outcome-rate features of `transform_one` (features.labels.RATE_FEATURES: each
        entity's escalation rate and the customer's past escalations), by name, with the same
        arithmetic: what a label's own rates need, without the ticket counts it does not use."""
        out: dict[str, float] = {}
        smoothing, prior = self.smoothing, self.prior_
        live = getattr(self, "live_", None)
        for entity in self.indexes_:
            n_ended, n_escalated = self._ended_one(entity, t, codes[entity], live)
            denominator = n_ended + smoothing
            out[f"{entity}_escalation_rate"] = (
                (n_escalated + smoothing * prior) / denominator if denominator > 0 else prior
            )
            if entity == "customer":
                out["customer_past_escalations"] = n_escalated
        return out


class LiveHistory:
    """Ticket summaries learned after the fit (a service's ticket store), on top of a fitted HistoryFeatures.

    The store keeps each ticket's row of `summarize_tickets` (created_at, ended_at, escalated and
    the entities of its first update) as the ticket's events arrive; `apply` puts those rows into
    sorted overlays of the fitted index, and `HistoryFeatures.transform_one` counts base and overlay
    together with the same arithmetic, so a live ticket's as-of features are what a refit on the
    fitted table plus the store's rows would give (tests/serving/test_live_history.py). The prior
    of the escalation rates stays the fitted one. A ticket the fitted table already holds keeps its
    fitted facts, except that one still open at the fit gains its end when the store sees it.

    `read_since(seq, limit)` returns the store's history rows after `seq` in seq order (dicts with seq,
    ticket_id, created_at, ended_at, escalated, customer_id, agent_id, group, category); `sync`
    applies them. Sequence numbers that commit out of order (PostgreSQL) are waited for up to
    `gap_seconds` before being given up as rolled back.
    """

    def __init__(self, history: HistoryFeatures, read_since=None, base_tickets: pd.DataFrame | None = None,
                 gap_seconds: float = 10.0, normalize: bool = False):
        import threading

        from sortedcontainers import SortedList

        self.history = history
        self.read_since = read_since
        # The store keeps categories as sent; a builder fitted on normalised ones keys its history by
        # their normal form (features.schema.normalize_category), and so do the overlays then.
        self.normalize = normalize
        self.gap_seconds = gap_seconds
        self.batch = 50_000
        self.lock = threading.RLock()
        self.seq = 0
        self.gaps: dict[int, float] = {}
        self.codes: dict[str, dict[str, int]] = {entity: {} for entity in ENTITIES}
        self.created = {entity: SortedList() for entity in ENTITIES}
        self.ended = {entity: SortedList() for entity in ENTITIES}
        self.ended_escalated = {entity: SortedList() for entity in ENTITIES}
        self.facts: dict[str, tuple] = {}
        self.ticket_created: dict[str, int] = {}
        self.version = 0  # bumped by every change of the overlays; arrays() rebuilds on a new one
        self._arrays: tuple[int, dict] | None = None
        self.base_created = set(history.ticket_created_.index.tolist())
        self.base_unended: dict[str, tuple] = {}
        if base_tickets is not None:
            unended = base_tickets.loc[base_tickets["ended_at"].isna()]
            keys = {entity: _entity_values(unended, columns).tolist() for entity, columns in ENTITIES.items()}
            for i, ticket_id in enumerate(unended["ticket_id"].astype("string").tolist()):
                self.base_unended[ticket_id] = (
                    tuple(None if pd.isna(keys[e][i]) else keys[e][i] for e in ENTITIES),
                    bool(unended["escalated"].iat[i]))
        history.live_ = self

    def entity_code(self, entity: str, key: str | None, create: bool = False) -> int:
        """The code of an entity key: the fitted one, else one after them (-1 when unknown)."""
        if key is None:
            return -1
        code = self.history.indexes_[entity].codes.get(key)
        if code is not None:
            return code
        extra = self.codes[entity]
        code = extra.get(key)
        if code is None:
            if not create:
                return -1
            code = extra[key] = len(self.history.indexes_[entity].codes) + len(extra)
        return code

    def _entries(self, ticket_id: str, facts: tuple) -> list[tuple[str, int | None, int | None, bool]]:
        """(entity, created key or None, ended key or None, escalated) of one ticket's facts."""
        created, ended, escalated, keys = facts
        base_unended = self.base_unended.get(ticket_id)
        if ticket_id in self.base_created:
            if base_unended is None or ended is None:
                return []  # the fitted facts stand
            keys, escalated = base_unended[0], escalated or base_unended[1]
            created = None
        entries = []
        for entity, key in zip(ENTITIES, keys, strict=True):
            code = self.entity_code(entity, key, create=True)
            if code < 0:
                continue
            base = code * int(_SPAN)
            entries.append((entity, None if created is None else base + created,
                            None if ended is None else base + ended, escalated))
        return entries

    def apply(self, rows: list[dict]) -> None:
        """Put the store's history rows (see the class docstring) into the overlays; each replaces
        the ticket's earlier row. Times are datetimes (UTC) or anything pandas reads as one."""
        with self.lock:
            for row in rows:
                ticket_id = str(row["ticket_id"])
                keys = []
                for columns in ENTITIES.values():
                    values = [normalize_category(row.get(c)) if self.normalize and c in CATEGORICAL_COLUMNS
                              else row.get(c) for c in columns]
                    keys.append(None if any(v is None or v is pd.NA for v in values)
                                else "\x1f".join(str(v) for v in values))
                ended = row.get("ended_at")
                facts = (_second(row["created_at"]), None if ended is None or pd.isna(ended) else _second(ended),
                         bool(row["escalated"]), tuple(keys))
                old = self.facts.get(ticket_id)
                if old == facts:
                    continue
                if old is not None:
                    for entity, created, ended_key, escalated in self._entries(ticket_id, old):
                        if created is not None:
                            self.created[entity].remove(created)
                        if ended_key is not None:
                            self.ended[entity].remove(ended_key)
                            if escalated:
                                self.ended_escalated[entity].remove(ended_key)
                for entity, created, ended_key, escalated in self._entries(ticket_id, facts):
                    if created is not None:
                        self.created[entity].add(created)
                    if ended_key is not None:
                        self.ended[entity].add(ended_key)
                        if escalated:
                            self.ended_escalated[entity].add(ended_key)
                self.facts[ticket_id] = facts
                self.version += 1
                if ticket_id not in self.base_created:
                    self.ticket_created[ticket_id] = facts[0]

    def reset(self) -> None:
        """Forget everything applied (after a unit of work whose rows were applied was rolled back);
        the next sync reads the store's history from the start."""
        with self.lock:
            for overlay in (self.created, self.ended, self.ended_escalated):
                for values in overlay.values():
                    values.clear()
            self.facts.clear()
            self.ticket_created.clear()
            self.gaps.clear()
            self.seq = 0
            self.version += 1

    def arrays(self) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """The overlays as sorted int64 arrays per entity (created, ended, ended escalated), for
        HistoryFeatures.transform_arrays; built again only after the overlays changed."""
        with self.lock:
            if self._arrays is None or self._arrays[0] != self.version:
                self._arrays = (self.version, {
                    entity: tuple(np.fromiter(overlay[entity], dtype=np.int64, count=len(overlay[entity]))
                                  for overlay in (self.created, self.ended, self.ended_escalated))
                    for entity in ENTITIES})
            return self._arrays[1]

    def sync(self, now: float | None = None, read_since=None) -> None:
        """Apply the store's history rows this process has not seen yet (no-op without a store).
        `read_since` overrides the reader (e.g. one on the caller's open transaction)."""
        read_since = read_since or self.read_since
        if read_since is None:
            return
        import time

        now = time.monotonic() if now is None else now
        with self.lock:
            cursor = min(self.gaps) - 1 if self.gaps else self.seq
            while True:
                rows = read_since(cursor, self.batch)
                if not rows:
                    break
                self.apply(rows)
                seen = {row["seq"] for row in rows}
                for seq in range(max(cursor, self.seq) + 1, rows[-1]["seq"]):
                    if seq not in seen:
                        self.gaps.setdefault(seq, now)
                for seq in seen & self.gaps.keys():
                    del self.gaps[seq]
                self.seq = max(self.seq, rows[-1]["seq"])
                cursor = rows[-1]["seq"]
                if len(rows) < self.batch:
                    break
            for seq in [s for s, first in self.gaps.items() if now - first > self.gap_seconds]:
                del self.gaps[seq]  # rolled back: never coming


def _first_at_or_after(keys: np.ndarray, base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the first key >= each base, whether there is one) in sorted `keys`."""
    at = keys.searchsorted(base, side="left")
    # An export without agents (left out by the audit) has no keys at all.
    padded = keys if len(keys) else np.zeros(1, dtype="int64")
    return padded[np.minimum(at, len(padded) - 1)], at < len(keys)


def _second(value) -> int:
    """Seconds since 1970 of a time (naive = UTC), floored as `_seconds` floors."""
    return int(pd.Timestamp(value).value // 1_000_000_000)
