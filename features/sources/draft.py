"""`escalation-risk init-mapping`: profile an export and write a draft mapping file to edit.

The draft names what the profile can tell from the data alone: the ticket id and update
time columns (and how the times are written), an opening-time column or `first_event`,
candidate level / flag / team columns for the escalation rule (the likeliest one filled in,
the others listed), the status columns and the statuses that look closing, the columns the
leakage audit would leave out (back-filled or outcome columns), and the other columns as
extras. Every guess is marked so the user reviews it; docs/mapping-files.md walks a new export
from this draft to a trained model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from features.audit import AuditThresholds, audit_columns
from features.history import mark_closing
from features.sources.mapping import Mapping, ReadSpec, read_export
from features.times import (
    ISO_DATE,
    NUMERIC_DATE,
    TimeFormatError,
    detect_day_order,
    has_offsets,
    parse_wall_times,
)

PROFILE_ROWS = 300_000
# Canonical field -> column-name pattern (lower case, separators as spaces), most specific first.
NAME_PATTERNS = {
    "subcategory": r"sub ?categ|subtype|sub type",
    "category": r"categ|^type$|issue type|request type|service$",
    "channel": r"channel|contact type|^source$|medium|origin",
    "priority": r"priority|severity",
    "customer_tier": r"tier$|plan|segment|customer type",
    "customer_id": r"customer|caller|requester|client|account|reporter",
    "agent_id": r"assignee|agent|owner|assigned to|resolver|handler",
    "group": r"team|group|queue|^st$|support team",
    "subject": r"subject|summary|title|short desc",
    "description": r"description|details|body",
    "last_customer_message": r"last .*message|last comment|last reply",
    "reassignment_count": r"reassign|transfers",
    "reopen_count": r"reopen",
    "customer_messages": r"customer (messages|replies)|requester (messages|replies)",
    "agent_messages": r"agent (messages|replies)|updates count|mod count",
    "sla_due_at": r"due|sla|deadline|target time",
    "event_type": r"update type|event type|action|activity",
}
ID_NAME = r"ticket|incident|case|^sr\b|request|issue|number|\bid$|^id\b|key"
EVENT_TIME_NAME = r"chang|updat|modif|event|timestamp|logged|^time$|date ?time"
CREATED_NAME = r"open|creat|report|submit|start"
LEVEL_NAME = r"level|tier|line|escalat|support"
STATUS_NAME = r"status|state"
CLOSING_WORDS = r"clos|resolv|complet|done|solved|cancel|finish"
OUTCOME_NAME = r"clos|resol|final|solution|satisf|rating|cause|outcome|made ?sla|breach"


def _name(column: str) -> str:
    return re.sub(r"[_\-.]+", " ", str(column)).strip().lower()


def _snake(column: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", str(column).lower()).strip("_") or "column"


@dataclass
class Draft:
    """What the profile found; `text` is the YAML draft."""

    ticket_id: str
    event_time: str
    created_at: str | None
    level_candidates: list[str] = field(default_factory=list)
    flag_candidates: list[str] = field(default_factory=list)
    team_candidates: list[str] = field(default_factory=list)
    backfilled: list[str] = field(default_factory=list)
    extras: list[str] = field(default_factory=list)
    text: str = ""


class DraftError(ValueError):
    """The export does not look like one row per ticket update; the message says what is missing."""


def find_ticket_column(raw: pd.DataFrame) -> str:
    """The column that names the ticket: repeated over several rows, many distinct values, an id-like name."""
    best, best_score = None, 0.0
    n = len(raw)
    for column in raw.columns:
        values = raw[column].dropna()
        if len(values) < 0.99 * n:
            continue
        unique = values.nunique()
        rows_per = n / max(unique, 1)
        if unique < max(10, 0.02 * n) or not 1.2 <= rows_per <= 500:
            continue
        score = (2.0 if re.search(ID_NAME, _name(column)) else 0.0) + min(rows_per, 20) / 20 + unique / n
        if score > best_score:
            best, best_score = column, score
    if best is None:
        raise DraftError("no column names the ticket (a value repeated over a ticket's updates); is this one row "
                         "per ticket update?")
    return best


def read_times(values: pd.Series, column: str) -> pd.Series | None:
    """The column as times when ≥ 90 % of its values read as times (one format), else None."""
    sample = values.dropna()
    if sample.empty or pd.api.types.is_numeric_dtype(sample):
        return None
    text = sample.astype("string").head(2000)
    if not (text.str.match(NUMERIC_DATE).mean() > 0.9 or text.str.match(ISO_DATE).mean() > 0.9):
        return None
    try:
        parsed = parse_wall_times(values, column)
    except TimeFormatError:
        parsed = parse_wall_times(values, column, dayfirst=True)  # undecidable: still a time column
    return parsed if parsed.notna().sum() >= 0.9 * len(sample) else None


def describe_time_format(values: pd.Series, column: str) -> tuple[dict, list[str]]:
    """read: settings for a time column, and TODO notes for what the data cannot tell."""
    read: dict = {}
    notes = []
    if has_offsets(values):
        return read, notes
    try:
        order = detect_day_order(values, column)
        if order is not None:
            read["dayfirst"] = order
    except TimeFormatError as exc:
        notes.append(f"TODO {exc}")
        read["dayfirst"] = None
    notes.append("TODO the times carry no UTC offset: if they are local time, set read.timezone to their zone "
                 "(e.g. Europe/Amsterdam); null = UTC")
    read["timezone"] = None
    return read, notes


def changes_within_tickets(values: pd.Series, tickets: pd.Series) -> float:
    """Share of multi-update tickets in which the column's value changes."""
    frame = pd.DataFrame({"t": tickets.to_numpy(), "v": pd.factorize(values, use_na_sentinel=True)[0]})
    stats = frame.groupby("t", sort=False)["v"].agg(["nunique", "size"])
    multi = stats["size"] >= 2
    return float((stats.loc[multi, "nunique"] > 1).mean()) if multi.any() else 0.0


def order_levels(values: list[str]) -> list[str]:
    """Level names from the frontline up, by the number each holds (L1 < L2 < L3, 1st < 2nd line)."""
    def key(value: str) -> tuple[float, str]:
        digits = re.findall(r"\d+", value)
        return (float(digits[0]) if digits else np.inf, value)

    return sorted(values, key=key)


def draft_mapping(raw: pd.DataFrame, name: str = "my-export", read: ReadSpec | None = None) -> Draft:
    """Profile `raw` (one row per ticket update, as read) and write a draft mapping.

    Raises DraftError when no ticket id or update time column can be found.
    """
    read = read or ReadSpec()
    ticket = find_ticket_column(raw)
    tickets = raw[ticket].astype("string")
    changes = {c: changes_within_tickets(raw[c], tickets) for c in raw.columns if c != ticket}
    times = {c: t for c in raw.columns if c != ticket and (t := read_times(raw[c], c)) is not None}
    if not times:
        raise DraftError("no column reads as times; the update time is required (set read.time_format if the "
                         "export writes times in an unusual way)")
    event_time = max(times, key=lambda c: (changes[c], bool(re.search(EVENT_TIME_NAME, _name(c)))))
    if changes[event_time] < 0.5:
        raise DraftError(f"no time column changes within tickets (best: {event_time!r}); is this one row per update?")
    event = times[event_time]
    created = None
    for column, values in times.items():
        if column == event_time or changes[column] > 0.005:
            continue
        before = (values <= event) | values.isna()
        if before.mean() >= 0.99 and re.search(CREATED_NAME, _name(column)):
            created = column
            break

    used = {ticket, event_time} | ({created} if created else set())
    columns: dict[str, str | list[str]] = {"ticket_id": ticket, "event_time": event_time}
    if created:
        columns["created_at"] = created
    status_columns = [c for c in raw.columns if c not in used and c not in times and re.search(STATUS_NAME, _name(c))
                      and raw[c].nunique() <= 60]
    status_columns.sort(key=lambda c: ("sub" in _name(c), str(c)))
    if status_columns:
        columns["status"] = status_columns[:2] if len(status_columns) > 1 else status_columns[0]
        used |= set(status_columns[:2])
    for field_name, pattern in NAME_PATTERNS.items():
        for column in raw.columns:
            if column in used or not re.search(pattern, _name(column)):
                continue
            is_time = column in times
            if (field_name == "sla_due_at") != is_time:
                continue
            if field_name.endswith(("_count", "_messages")) and field_name != "last_customer_message" and \
                    pd.to_numeric(raw[column], errors="coerce").notna().mean() < 0.9:
                continue
            columns[field_name] = column
            used.add(column)
            break

    # Escalation rule candidates.
    levels, flags = [], []
    for column in raw.columns:
        if column in used or column in times:
            continue
        distinct = raw[column].dropna().astype("string").str.strip().unique().tolist()
        if 2 <= len(distinct) <= 8 and 0.005 <= changes[column] <= 0.8:
            lowered = {d.lower() for d in distinct}
            if len(distinct) == 2 and lowered <= {"true", "false", "yes", "no", "y", "n", "0", "1", "t", "f"}:
                flags.append(column)
            elif all(re.search(r"\d", d) for d in distinct) or re.search(LEVEL_NAME, _name(column)):
                levels.append(column)
    levels.sort(key=lambda c: (not re.search(LEVEL_NAME, _name(c)), str(c)))
    teams = [c for c in raw.columns if re.search(NAME_PATTERNS["group"], _name(c)) and c != ticket]

    # What the audit would leave out (back-filled, outcome columns), with the statuses guessed above.
    status_values = raw[status_columns[0]].astype("string") if status_columns else None
    if status_columns and len(status_columns) > 1:
        from features.sources.mapping import combine_columns

        status_values = combine_columns(raw, status_columns[:2])
    closing = sorted({v for v in (status_values.dropna().unique() if status_values is not None else [])
                      if re.search(CLOSING_WORDS, str(v).lower())})
    order = pd.DataFrame({"t": tickets, "e": event}).sort_values(["t", "e"], kind="stable").index
    sorted_raw = raw.loc[order].reset_index(drop=True)
    closing_rows = (mark_closing(status_values.loc[order].reset_index(drop=True), closing) if closing
                    else pd.Series(False, index=sorted_raw.index))
    audit = audit_columns(sorted_raw, tickets.loc[order].reset_index(drop=True),
                          event.loc[order].dt.tz_localize("UTC") if event.dt.tz is None else event.loc[order],
                          closing_rows, {}, AuditThresholds(future_by_design=[columns.get("sla_due_at")]),
                          skip=(ticket, event_time), team_column=teams[0] if teams else None)
    audit = audit.set_index("column")
    static = [c for c in raw.columns if c in audit.index and audit.loc[c, "tickets_changed"] <= 0.005]
    backfilled = [c for c in audit.index[audit["flagged"]] if c not in static or re.search(OUTCOME_NAME, _name(c))]
    backfilled += [c for c in static if re.search(OUTCOME_NAME, _name(c)) and c not in backfilled]
    # The escalation rule's column is read for the label whatever the audit says: not listed.
    backfilled = [c for c in backfilled if c not in levels[:1]]
    known_at_creation = [c for c in static if c not in backfilled]
    extras = [c for c in raw.columns if c not in used and c not in times and c not in backfilled
              and c not in levels[:1] and raw[c].nunique() < 0.5 * len(raw)]

    lines = [f"# Draft mapping written by `escalation-risk init-mapping` from {len(raw):,} rows of "
             f"{tickets.nunique():,} tickets.",
             "# Review every line marked TODO, then: escalation-risk audit-data --mapping THIS --data EXPORT",
             "#                                    escalation-risk train --mapping THIS --data EXPORT",
             "# (docs/mapping-files.md explains each key.)",
             yaml.safe_dump({"name": name, "description": "Draft from init-mapping"}, sort_keys=False).strip()]
    read_out: dict = {}
    if read.encoding != "utf-8":
        read_out["encoding"] = read.encoding
    if read.delimiter != ",":
        read_out["delimiter"] = read.delimiter
    time_read, time_notes = describe_time_format(raw[event_time], event_time)
    read_out |= time_read
    read_out["same_time_updates"] = "reject"
    lines += ["read:"] + [f"  # {n}" for n in time_notes]
    lines += ["  " + line for line in yaml.safe_dump(read_out, sort_keys=False).strip().splitlines()]
    lines += ["columns:                            # canonical field: export column (TODO check each guess)"]
    lines += ["  " + line for line in yaml.safe_dump(columns, sort_keys=False, default_flow_style=None,
                                                      width=200).strip().splitlines()]
    if not created:
        lines += ["created_at: first_event             # no opening-time column found: a ticket opens at its "
                  "first update"]
    if closing:
        lines += [f"closing_statuses: {yaml.safe_dump(closing, default_flow_style=True, width=200).strip()}"
                  "   # TODO the status values that end a ticket (as mapped above)"]
    else:
        lines += ["closing_statuses: [closed]          # TODO no closing status found: name the ones that end a ticket"]
    lines += ["escalation:"]
    if levels:
        column = levels[0]
        distinct = raw[column].dropna().astype("string").str.strip().unique().tolist()
        numeric = pd.to_numeric(pd.Series(distinct), errors="coerce").notna().all()
        lines += ["  rule: level_column                 # a rise of the level is an escalation; a drop is not",
                  f"  column: {yaml.safe_dump(column).strip().removesuffix('...').strip()}"]
        if not numeric:
            lines += [f"  levels: {yaml.safe_dump(order_levels(distinct), default_flow_style=True, width=200).strip()}"
                      "   # TODO from the frontline up"]
        lines += ["  type: hierarchical"]
    elif flags:
        lines += ["  rule: flag_turns                   # TODO the value that marks an escalation",
                  f"  column: {flags[0]}", "  value: true", "  type: hierarchical"]
    elif teams:
        lines += ["  rule: value_changes                # the team changing beyond the first hand-off",
                  f"  column: {teams[0]}", "  routine_changes: 1", "  type: functional"]
    else:
        lines += ["  rule: none                         # TODO no level, flag or team column found"]
    others = [f"level: {c}" for c in levels[1:]] + [f"flag: {c}" for c in flags] + [f"team: {c}" for c in teams]
    if others:
        lines += [f"  # other candidates ({'; '.join(others)})"]
    if extras:
        lines += ["extra:                              # other columns: model features by default "
                  "(not_features: [...] opts one out)"]
        lines += [f"  {_snake(c)}: {yaml.safe_dump(str(c)).strip().removesuffix('...').strip()}" for c in extras
                  if _snake(c) not in columns]
    lines += ["audit:"]
    lines += [f"  known_at_creation: {yaml.safe_dump(known_at_creation, default_flow_style=True, width=200).strip()}"
              "   # TODO constant within a ticket: only if set when it is opened"]
    lines += [f"  exclude: {yaml.safe_dump(backfilled, default_flow_style=True, width=200).strip()}"
              "   # look back-filled or like outcomes: never features"]
    text = "\n".join(lines) + "\n"
    Mapping.model_validate(yaml.safe_load(text))  # the draft itself must be a valid mapping
    return Draft(ticket_id=ticket, event_time=event_time, created_at=created, level_candidates=levels,
                 flag_candidates=flags, team_candidates=teams, backfilled=backfilled, extras=extras, text=text)


def read_for_profile(path: Path, read: ReadSpec, max_rows: int = PROFILE_ROWS) -> pd.DataFrame:
    """The export's first rows, every column as text (ids keep their zeros)."""
    raw = read_export(Path(path), read, all_text=True)
    if len(raw) > max_rows:
        raw = raw.iloc[:max_rows]
    return raw.reset_index(drop=True)
