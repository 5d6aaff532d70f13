"""Replay backtest: drive a ticket history through the live path with a simulated clock.

Events go into a fresh ticket store in time order (TicketStore.record_events, the same merge as
POST /v1/events); between them the watcher ticks at the simulated time (Watcher.tick: the same
lease, scoring path, escalation matrix and alert logic as `escalation-risk watch`), with no HTTP
and no destinations. Every tick's view of each open ticket is kept, so the same ticks also tell
what two rules from the seeds would have alerted on:

- SLA timer: alert when a share of the ticket's SLA time has elapsed ((now - created) /
  (sla_due_at - created); a ticket without sla_due_at gets the SLA hours of its typed priority);
- supervisor request: alert when the customer's latest message asks for a supervisor or a
  manager (features.text's `supervisor` cue, the same words the model's text features look for).

An alert belongs to an episode: a run of ticks in which the ticket is open and has not
escalated; the store raises at most one alert per episode when nobody acknowledges (a score
wavering around the line continues the same unacknowledged alert), and so do the rules here.
An escalation is "caught" when an alert of its ticket was raised before it (every alert is:
an escalated ticket is no longer alerted on); lead time = escalation time - first alert time.
Rules are compared at the same number of alerts: each rule's threshold is set so that it raises
as many alerts as the model at that volume.

The escalation of a ticket is the bundle's label event: level_rise -> the first update whose
escalation_level is above 0; counter_rise -> the first update whose counter reaches min_rise.
Tickets already escalated at their first update cannot be caught by anyone and are left out.

With a bundle of several labels (features.labels), each tick also keeps every label's probability
and alert line (its escalate_now or band high), and the replay reports lead time per type: for
each label, its own escalations (features.snapshots.find_outcome_times: e.g. a typed label's
tickets whose first escalation is of its type) caught by the label's own alert line, and by the
alerts the watcher raises (the primary label's line). The watcher stops watching a ticket at the
primary label's event, so a label whose event comes later can only be caught before that.
"""

from __future__ import annotations

import math
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from features.labels import LabelRule
from features.schema import PRIORITY_ALIASES
from features.settings import Settings
from features.text import CUE_PATTERNS
from serving.destinations import Destinations
from serving.live_model import ModelHolder
from serving.policy import EscalationMatrix
from serving.store.db import create_store_engine, upgrade_database
from serving.store.merge import normal_status
from serving.store.tickets import TicketStore
from serving.watcher import Watcher, escalation_check, label_rule

DEFAULT_SLA_HOURS = {"urgent": 4.0, "high": 8.0, "normal": 24.0, "low": 72.0}  # common contact-centre targets
SUPERVISOR = re.compile(CUE_PATTERNS["supervisor"], re.IGNORECASE)
EVENT_TIME_COLUMNS = ("event_time", "created_at", "sla_due_at")


class ReplayError(ValueError):
    """The history cannot be replayed (no events in the period, no model...)."""


@dataclass
class Observations:
    """One row per (tick, open ticket not yet escalated): what the watcher saw."""

    tick: list[int] = field(default_factory=list)
    ticket: list[int] = field(default_factory=list)
    probability: list[float] = field(default_factory=list)
    above_line: list[bool] = field(default_factory=list)
    sla_share: list[float] = field(default_factory=list)
    supervisor: list[bool] = field(default_factory=list)
    # Per label of a bundle of several labels: its probability and whether it is above its own line.
    type_probability: dict[str, list[float]] = field(default_factory=dict)
    type_above_line: dict[str, list[bool]] = field(default_factory=dict)

    def frame(self) -> pd.DataFrame:
        """Columns tick, ticket, probability, above_line, sla_share, supervisor, and per label
        `probability__<label>` and `above_line__<label>`."""
        columns = {"tick": np.asarray(self.tick, dtype=np.int64),
                   "ticket": np.asarray(self.ticket, dtype=np.int64),
                   "probability": np.asarray(self.probability, dtype=np.float64),
                   "above_line": np.asarray(self.above_line, dtype=bool),
                   "sla_share": np.asarray(self.sla_share, dtype=np.float64),
                   "supervisor": np.asarray(self.supervisor, dtype=bool)}
        for name, values in self.type_probability.items():
            columns[f"probability__{name}"] = np.asarray(values, dtype=np.float64)
            columns[f"above_line__{name}"] = np.asarray(self.type_above_line[name], dtype=bool)
        return pd.DataFrame(columns)


@dataclass
class ReplayRun:
    tick_times: list[datetime]
    ticket_ids: list[str]
    observations: pd.DataFrame
    store_alerts: int
    n_events: int
    n_tickets: int
    seconds: float
    period: tuple[datetime, datetime]
    seconds_recording: float = 0.0  # of `seconds`: TicketStore.record_events


def to_event_dicts(events: pd.DataFrame) -> list[dict]:
    """Canonical event rows as JSON-ready dicts (times ISO 8601, missing values left out)."""
    frame = events.copy()
    for column in EVENT_TIME_COLUMNS:
        if column in frame:
            values = frame[column]
            text = values.dt.strftime("%Y-%m-%dT%H:%M:%S%z").astype(object)
            frame[column] = text.where(values.notna(), None)
    frame = frame.astype(object).where(frame.notna(), None)
    records = frame.to_dict(orient="records")
    return [{k: v for k, v in r.items() if v is not None} for r in records]


def select_period(events: pd.DataFrame, start: datetime | None, end: datetime | None) -> pd.DataFrame:
    """Every event of the tickets created in [start, end), sorted by event time."""
    created = events.groupby("ticket_id", sort=False)["created_at"].transform("min")
    keep = pd.Series(True, index=events.index)
    if start is not None:
        keep &= created >= pd.Timestamp(start)
    if end is not None:
        keep &= created < pd.Timestamp(end)
    chosen = events.loc[keep]
    if chosen.empty:
        raise ReplayError(f"no tickets created in the replay period ({start} .. {end})")
    return chosen.sort_values(["event_time", "ticket_id"], kind="stable").reset_index(drop=True)


def find_escalations(events: pd.DataFrame, label: dict | None) -> pd.DataFrame:
    """Per ticket: escalated_at (the label event, NaT if none) and whether it was escalated at its first update."""
    label = label or {}
    ordered = events.sort_values(["ticket_id", "event_time"], kind="stable")
    if label.get("rule") == "counter_rise":
        counter = label.get("counter") or "reassignment_count"
        hit = pd.to_numeric(ordered[counter], errors="coerce").fillna(0) >= int(label.get("min_rise") or 1)
    else:
        hit = pd.to_numeric(ordered["escalation_level"], errors="coerce").fillna(0) > 0
    first_time = ordered.groupby("ticket_id", sort=False)["event_time"].min()
    escalated_at = ordered.loc[hit].groupby("ticket_id", sort=False)["event_time"].min()
    out = pd.DataFrame({"escalated_at": escalated_at.reindex(first_time.index)})
    out["at_creation"] = out["escalated_at"] == first_time
    return out


def sla_share(state: dict, now: datetime, sla_hours: dict[str, float]) -> float:
    """Share of the ticket's SLA time elapsed at `now` (NaN when neither a due time nor a known priority)."""
    created = _time(state.get("created_at"))
    if created is None:
        return math.nan
    due = _time(state.get("sla_due_at"))
    if due is None:
        priority = str(state.get("priority") or "").strip().lower()
        hours = sla_hours.get(PRIORITY_ALIASES.get(priority, priority))
        if hours is None:
            return math.nan
        due = created + timedelta(hours=hours)
    span = (due - created).total_seconds()
    elapsed = (now - created).total_seconds()
    return math.inf if span <= 0 else elapsed / span


def _time(value: object) -> datetime | None:
    if value in (None, ""):
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def asks_for_supervisor(state: dict) -> bool:
    text = state.get("last_customer_message")
    return bool(text) and SUPERVISOR.search(str(text)) is not None


def replay_history(events: pd.DataFrame, holder: ModelHolder, policy: EscalationMatrix, settings: Settings,
                   tick: timedelta, source: str = "replay", store_url: str | None = None,
                   sla_hours: dict[str, float] | None = None,
                   progress: Callable[[int, int], None] | None = None) -> ReplayRun:
    """Replay `events` (canonical rows of the period, sorted by event_time) through a fresh store and the
    watcher on a simulated clock ticking every `tick`; returns what each tick saw.

    `holder` must not have loaded a model yet: its live history is attached to the replay's store.
    The store is a temporary SQLite file (in /dev/shm when there is one) unless `store_url` is given."""
    sla_hours = sla_hours or DEFAULT_SLA_HOURS
    scratch = None
    if store_url is None:
        shm = Path("/dev/shm")
        scratch = Path(tempfile.mkdtemp(prefix="escalation-risk-replay-", dir=shm if shm.is_dir() else None))
        store_url = f"sqlite:///{scratch / 'replay.db'}"
    try:
        upgrade_database(store_url)
        engine = create_store_engine(store_url)
        store = TicketStore(engine)
        holder.history_source = store.read_history_since
        outcome = holder.reload()
        if not outcome.ok:
            raise ReplayError(f"cannot load the model: {outcome.error}")
        live = holder.live
        params = live.bundle.metadata.get("params") or {}
        store.closed_statuses = frozenset(normal_status(s) for s in params.get("snapshots.closed_statuses") or ["closed"])
        watcher = Watcher(settings, engine, lambda: holder.live, policy, Destinations(), holder_id="replay")
        watcher.tickets = store
        escalated = escalation_check(label_rule(live.bundle.metadata))
        records = to_event_dicts(events)
        event_times = events["event_time"].to_numpy(dtype="datetime64[ns]")
        first = pd.Timestamp(event_times[0]).tz_localize(UTC)
        last = pd.Timestamp(event_times[-1]).tz_localize(UTC)
        step = pd.Timedelta(tick)
        start = first.floor(step) + step
        tick_times = list(pd.date_range(start, last + step, freq=step).to_pydatetime())
        ticket_index: dict[str, int] = {}
        seen = Observations()
        current = {"tick": 0, "now": start}

        def observe(states: list[dict], scores: list[dict]) -> None:
            now = current["now"]
            for state, score in zip(states, scores, strict=True):
                if escalated(state):
                    continue
                seen.tick.append(current["tick"])
                seen.ticket.append(ticket_index.setdefault(str(state["ticket_id"]), len(ticket_index)))
                escalation = score["escalation"]
                seen.probability.append(escalation["probability"])
                seen.above_line.append(bool(escalation["escalate_now"]) or escalation["band"] == "high")
                types = escalation.get("types") or {}
                for name, entry in types.items() if len(types) > 1 else ():
                    seen.type_probability.setdefault(name, []).append(entry["probability"])
                    seen.type_above_line.setdefault(name, []).append(bool(entry["escalate_now"])
                                                                     or entry["band"] == "high")
                seen.sla_share.append(sla_share(state, now, sla_hours))
                seen.supervisor.append(asks_for_supervisor(state))

        started = time.perf_counter()
        recording = 0.0
        done = 0
        tick_ns = np.array([np.datetime64(t.replace(tzinfo=None), "ns") for t in tick_times])
        bounds = np.searchsorted(event_times, tick_ns, side="right")
        for k, (now, upto) in enumerate(zip(tick_times, bounds, strict=True)):
            if upto > done:
                began = time.perf_counter()
                store.record_events(records[done:upto], source, received_at=now, event_ids=False)
                recording += time.perf_counter() - began
                done = int(upto)
            current["tick"], current["now"] = k, now
            watcher.tick(now, observe=observe)
            if progress is not None and k % 200 == 0:
                progress(k, len(tick_times))
        seconds = time.perf_counter() - started
        store_alerts = watcher.alerts.list_alerts(tick_times[-1], limit=1)["total"]
        engine.dispose()
        ids = [None] * len(ticket_index)
        for ticket_id, i in ticket_index.items():
            ids[i] = ticket_id
        return ReplayRun(tick_times, ids, seen.frame(), store_alerts, len(records),
                         int(events["ticket_id"].nunique()), seconds, (first.to_pydatetime(), last.to_pydatetime()),
                         recording)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def episode_peaks(observations: pd.DataFrame) -> pd.DataFrame:
    """Observations with an `episode` id: a new one when a ticket re-appears after missing a tick (it
    was closed in between) — the watcher's one-alert-per-unacknowledged-rise, per open period."""
    obs = observations.sort_values(["ticket", "tick"], kind="stable").reset_index(drop=True)
    ticket = obs["ticket"].to_numpy()
    tick = obs["tick"].to_numpy()
    new = np.ones(len(obs), dtype=bool)
    new[1:] = (ticket[1:] != ticket[:-1]) | (tick[1:] != tick[:-1] + 1)
    obs["episode"] = np.cumsum(new) - 1
    return obs


def first_alerts(obs: pd.DataFrame, fires: np.ndarray) -> pd.DataFrame:
    """The first firing observation of each episode: one alert (ticket, tick) per episode."""
    firing = obs.loc[fires, ["episode", "ticket", "tick"]]
    return firing.drop_duplicates("episode", keep="first")


def threshold_for_volume(obs: pd.DataFrame, column: str, volume: int) -> float:
    """The value of `column` at which a `>=` rule raises the number of alerts nearest `volume` (one
    per episode, so the count at a value is the number of episode maxima at or above it).

    Calibrated probabilities repeat (an isotonic map is a step function), so the volume-th largest
    maximum can be shared by many episodes: the value whose count is nearest `volume` is taken,
    the smaller count on a tie, and callers report the count the rule really raises."""
    peaks = obs.groupby("episode")[column].max().replace([np.inf], np.finfo(float).max).dropna().to_numpy()
    if len(peaks) == 0 or volume <= 0:
        return math.inf
    ascending = np.sort(peaks)
    values = np.unique(ascending)
    counts = len(ascending) - np.searchsorted(ascending, values, side="left")
    best = np.lexsort((counts, np.abs(counts - volume)))[0]
    return float(values[best])


@dataclass(frozen=True)
class RuleResult:
    rule: str
    threshold: str
    alerts: int
    alerts_never_escalated: int
    caught: int
    escalations: int
    lead_hours: tuple[float, float, float] | None  # p25, median, p75

    @property
    def caught_share(self) -> float:
        return self.caught / self.escalations if self.escalations else math.nan

    @property
    def alerts_per_caught(self) -> float:
        return self.alerts / self.caught if self.caught else math.inf


def score_rule(name: str, threshold: str, alerts: pd.DataFrame, run: ReplayRun, escalations: pd.DataFrame
               ) -> RuleResult:
    """Catch, volume and lead time of one rule's alerts against the period's escalations."""
    counted = escalations.loc[~escalations["at_creation"]]
    escalated_at = counted["escalated_at"].dropna()
    ids = np.asarray(run.ticket_ids, dtype=object)
    alert_ticket = ids[alerts["ticket"].to_numpy()] if len(alerts) else np.array([], dtype=object)
    tick_times = pd.DatetimeIndex(run.tick_times)
    alert_time = tick_times[alerts["tick"].to_numpy()] if len(alerts) else pd.DatetimeIndex([], tz=UTC)
    frame = pd.DataFrame({"ticket_id": alert_ticket, "at": alert_time})
    # reindex, not map: pandas cannot map through an empty datetime Series (a kind that never escalated)
    frame["escalated_at"] = pd.to_datetime(escalated_at, utc=True).reindex(
        frame["ticket_id"].to_numpy(dtype=object)).array
    hits = frame.loc[frame["escalated_at"].notna() & (frame["at"] < frame["escalated_at"])]
    first_hit = hits.sort_values("at").drop_duplicates("ticket_id")
    leads = ((first_hit["escalated_at"] - first_hit["at"]).dt.total_seconds() / 3600).to_numpy()
    never = frame["ticket_id"].map(lambda t: t not in escalated_at.index)
    quartiles = tuple(float(q) for q in np.percentile(leads, [25, 50, 75])) if len(leads) else None
    return RuleResult(name, threshold, len(frame), int(never.sum()), len(first_hit), len(escalated_at), quartiles)


def evaluate_replay(run: ReplayRun, escalations: pd.DataFrame, volumes: tuple[float, ...] = (0.5, 1.0, 2.0)
                    ) -> list[RuleResult]:
    """Model (at its alert line, and at other volumes), SLA timer and supervisor rule at matched volumes."""
    obs = episode_peaks(run.observations)
    line_alerts = first_alerts(obs, obs["above_line"].to_numpy())
    base = len(line_alerts)
    results = []
    for factor in volumes:
        if factor == 1.0:
            model = score_rule("model", "alert line (escalate_now or band high)", line_alerts, run, escalations)
            target = base
        else:
            target = max(1, round(base * factor))
            cut = threshold_for_volume(obs, "probability", target)
            model = score_rule("model", f"probability >= {cut:.3f} ({factor:g}x volume)",
                               first_alerts(obs, obs["probability"].to_numpy() >= cut), run, escalations)
            target = model.alerts
        share = threshold_for_volume(obs, "sla_share", target)
        sla = score_rule("SLA timer", f"{share:.0%} of SLA elapsed" if math.isfinite(share) else "no SLA known",
                         first_alerts(obs, obs["sla_share"].to_numpy() >= share), run, escalations)
        results += [model, sla]
    supervisor = first_alerts(obs, obs["supervisor"].to_numpy())
    if len(supervisor):
        results.append(score_rule("supervisor request", "customer's latest message asks", supervisor, run,
                                  escalations))
        cut = threshold_for_volume(obs, "probability", len(supervisor))
        results.append(score_rule("model", f"probability >= {cut:.3f} (supervisor volume)",
                                  first_alerts(obs, obs["probability"].to_numpy() >= cut), run, escalations))
    else:
        results.append(RuleResult("supervisor request", "no customer message asks (or no message text)",
                                  0, 0, 0, int((~escalations["at_creation"] & escalations["escalated_at"].notna()).sum()),
                                  None))
    return results


def describe_replay_labels(metadata: dict) -> list[LabelRule]:
    """The bundle's labels as rules (features.labels), the primary first; [] for a bundle of one label."""
    entries = metadata.get("labels") or []
    if len(entries) < 2:
        return []
    entries = sorted(entries, key=lambda entry: not entry.get("primary"))
    return [LabelRule(name=e["name"], rule=e.get("rule", "level_rise"), horizon_hours=e.get("horizon_hours"),
                      counter=e.get("counter") or "reassignment_count", min_rise=int(e.get("min_rise") or 2),
                      rise_type=e.get("rise_type"), escalation_type=e.get("escalation_type"))
            for e in entries]


def find_label_escalations(events: pd.DataFrame, labels: list[LabelRule], closed_statuses: list[str],
                           primary: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per label: escalated_at (its event, features.snapshots.find_outcome_times; NaT if none) and
    at_creation (the primary's: a ticket escalated at its first update is left out for every label)."""
    from features.snapshots import find_outcome_times

    ordered = events.sort_values(["ticket_id", "event_time"], kind="stable").reset_index(drop=True)
    out = {}
    for label in labels:
        times = find_outcome_times(ordered, label, closed_statuses)
        frame = pd.DataFrame({"escalated_at": pd.to_datetime(times.reindex(primary.index), utc=True)})
        frame["at_creation"] = primary["at_creation"].to_numpy()
        out[label.name] = frame
    return out


def evaluate_types(run: ReplayRun, escalations: dict[str, pd.DataFrame], labels: list[LabelRule]
                   ) -> list[RuleResult]:
    """Per label: its own model's alert line, and the watcher's alerts (the primary label's line),
    against that label's escalations: catch, volume and lead time per type."""
    obs = episode_peaks(run.observations)
    watcher_alerts = first_alerts(obs, obs["above_line"].to_numpy())
    results = []
    for label in labels:
        column = f"above_line__{label.name}"
        if column in obs:
            results.append(score_rule(label.name, "its own model's alert line",
                                      first_alerts(obs, obs[column].to_numpy()), run, escalations[label.name]))
        results.append(score_rule(label.name, "the watcher's alerts (primary's line)", watcher_alerts,
                                  run, escalations[label.name]))
    return results


def format_results(results: list[RuleResult]) -> str:
    """The replay table: one row per rule and volume."""
    header = (f"{'rule':<20} {'threshold':<44} {'alerts':>6} {'on never-esc.':>13} {'caught':>13} "
              f"{'alerts/caught':>13} {'lead p25':>8} {'median':>7} {'p75':>6}")
    lines = [header, "-" * len(header)]
    for r in results:
        caught = f"{r.caught}/{r.escalations} {r.caught_share:.0%}" if r.escalations else "0/0"
        per = f"{r.alerts_per_caught:.1f}" if r.caught else "-"
        leads = [f"{v:.1f}" for v in r.lead_hours] if r.lead_hours else ["-", "-", "-"]
        lines.append(f"{r.rule:<20} {r.threshold[:44]:<44} {r.alerts:>6} {r.alerts_never_escalated:>13} "
                     f"{caught:>13} {per:>13} {leads[0]:>8} {leads[1]:>7} {leads[2]:>6}")
    return "\n".join(lines)


def load_replay_events(data_path: Path, source: str = "events", mapping_path: Path | None = None) -> pd.DataFrame:
    """The history to replay as validated canonical rows: a canonical event log (Parquet or CSV), a
    ServiceNow incident audit log (`servicenow`) or any export with a mapping file (`mapping`).
    Raises ReplayError for a missing file or an unusable export."""
    from features.schema import SchemaError, validate_events
    from features.sources.mapping import MappingError, import_export, load_mapping

    data_path = Path(data_path)
    if not data_path.exists():
        raise ReplayError(f"no history at {data_path}")
    try:
        if source == "events":
            raw = pd.read_parquet(data_path) if data_path.suffix == ".parquet" or data_path.is_dir() \
                else pd.read_csv(data_path, low_memory=False)
        else:
            raw = import_export(data_path, load_mapping(mapping_path or source)).events
        return validate_events(raw, sort=False, copy=False).events
    except (SchemaError, MappingError, KeyError) as exc:
        raise ReplayError(f"cannot read {data_path} as {source}: {exc}") from exc


def parse_duration(text: str) -> timedelta:
    """'5m', '30s', '1h', '2d' -> timedelta (ValueError otherwise)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text or "")
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 5m, 1h, 30s)")
    value, unit = float(match.group(1)), match.group(2)
    return timedelta(seconds=value * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit])
