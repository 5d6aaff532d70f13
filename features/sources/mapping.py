"""Any ticket export -> the canonical event log, described by a YAML mapping file instead of code.

A mapping names the export's columns for the canonical fields, translates value codes,
says how times are written and which rule marks an escalation (a level column, a flag
taking a value, a column changing beyond routine hand-offs). The import runs the leakage
audit (features/audit.py) on the raw export first and leaves out every flagged column
unless the mapping keeps it on purpose. See docs/mapping-files.md.
"""

from __future__ import annotations

import codecs
import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from features.audit import AuditThresholds, audit_columns
from features.history import mark_closing
from features.schema import (
    CANONICAL_COLUMNS,
    CATEGORICAL_COLUMNS,
    ID_COLUMNS,
    REQUIRED_COLUMNS,
    TARGET_PRIORITY_COLUMN,
    TEXT_COLUMNS,
    TIME_COLUMNS,
    SchemaError,
    read_parquet_log,
)
from features.times import TimeFormatError, check_timezone, localize_times, parse_wall_times
from features.yaml_files import load_yaml_model

MAPPINGS_DIR = Path(__file__).resolve().parent / "mappings"
# Canonical fields a mapping may fill from a column (the derived ones come from rules).
MAPPABLE = tuple(c for c in CANONICAL_COLUMNS if c not in ("escalation_level", "escalation_type"))


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReadSpec(_Spec):
    na_values: list[str] = []
    time_format: str | None = None           # e.g. "%d/%m/%Y %H:%M"; null = ISO 8601, or the day order the values prove
    dayfirst: bool | None = None             # numeric dates (03/11/2025): true = day first, false = month first
    timezone: str | None = None              # IANA zone of times written without an offset (local wall-clock time)
    encoding: str = "utf-8"                  # CSV text encoding (latin-1, cp1252, utf-16, ...)
    delimiter: str = ","                     # CSV field separator (";" in many European exports, "\t")
    order_by: list[str] = []                 # tie-breakers after the event time (e.g. a modification count)
    # Several updates logged at the same time (minute-resolution exports): keep the last
    # state of that moment, or reject all but the first as duplicates (the canonical rule).
    same_time_updates: Literal["reject", "keep_last"] = "reject"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        return None if value is None else check_timezone(value)

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError as exc:
            raise ValueError(f"unknown encoding {value!r}; e.g. utf-8, latin-1, cp1252, utf-16") from exc
        return value


class EscalationSpec(_Spec):
    rule: Literal["none", "level_column", "flag_turns", "value_changes"] = "none"
    column: str | None = None
    value: Any = None                        # flag_turns: the value that marks the escalation
    routine_changes: int = Field(0, ge=0)    # value_changes: changes that are routine (first hand-off)
    # level_column with text levels: the levels in order ([L1, L2, L3]: L1 = 0, the frontline),
    # or a map of each value to its number ({"1st line": 0, "2nd line": 1, "3rd line": 2}).
    levels: list[str] | dict[str, int] | None = None
    type: str = "functional"                 # escalation_type written on escalated rows

    @model_validator(mode="after")
    def _needs_column(self) -> EscalationSpec:
        if self.rule != "none" and not self.column:
            raise ValueError(f"escalation.rule {self.rule} needs escalation.column")
        if self.rule == "flag_turns" and self.value is None:
            raise ValueError("escalation.rule flag_turns needs escalation.value")
        if self.levels is not None and self.rule != "level_column":
            raise ValueError("escalation.levels applies to rule level_column only")
        if self.levels is not None and not self.levels:
            raise ValueError("escalation.levels is empty")
        return self

    def level_numbers(self) -> dict[str, int] | None:
        """Each declared level (trimmed, lower case) -> its number; None when the column is numeric."""
        if self.levels is None:
            return None
        pairs = enumerate(self.levels) if isinstance(self.levels, list) else ((v, k) for k, v in self.levels.items())
        return {str(name).strip().lower(): int(number) for number, name in pairs}


class EarliestOf(_Spec):
    earliest_of: str                         # the source column whose earliest value so far opens the ticket


class PriorityTargetSpec(_Spec):
    rule: Literal["final_priority", "resolution_hours"] = "final_priority"
    column: str | None = None                # resolution_hours: the resolution time column
    buckets_hours: list[float] = [24, 168]
    classes: list[Literal["low", "normal", "high", "urgent"]] = ["normal", "high", "urgent"]

    @model_validator(mode="after")
    def _consistent(self) -> PriorityTargetSpec:
        if self.rule == "resolution_hours":
            if not self.column:
                raise ValueError("priority_target.rule resolution_hours needs priority_target.column")
            if len(self.classes) != len(self.buckets_hours) + 1:
                raise ValueError("priority_target.classes needs one more entry than buckets_hours")
        return self


class AuditSpec(_Spec):
    enabled: bool = True
    known_at_creation: list[str] = []        # source columns legitimately fixed when the ticket is opened
    keep: list[str] = []                     # override: use these even if the audit flags them
    exclude: list[str] = []                  # never use these, flagged or not
    max_first_update_auc: float = Field(0.80, gt=0.5, le=1)


class Mapping(_Spec):
    name: str
    description: str = ""
    read: ReadSpec = ReadSpec()
    # canonical field -> source column, or several source columns combined into one value
    # ("Completed" + "Resolved" -> "Completed / Resolved"), e.g. a status and its sub-status
    columns: dict[str, str | list[str]]
    # No opening-time column: a ticket opens at its first update, or at the earliest value so
    # far of another column. Exactly one of columns.created_at and created_at.
    created_at: Literal["first_event"] | EarliestOf | None = None
    text: dict[str, list[str]] = {}          # canonical text field -> source columns joined as tokens
    extra: dict[str, str] = {}               # extra log column -> source column, copied as text; a model
                                             # feature by default (params features.extra_categorical: auto)
    not_features: list[str] = []             # extra columns kept in the log but never used as features
    values: dict[str, dict[str, str]] = {}   # canonical field -> {source value: canonical value}
    # Canonical statuses that end a ticket, for the audit AND the snapshots (the one definition).
    closing_statuses: list[str] = ["closed"]
    escalation: EscalationSpec = EscalationSpec()
    priority_target: PriorityTargetSpec = PriorityTargetSpec()
    audit: AuditSpec = AuditSpec()

    @model_validator(mode="after")
    def _known_fields(self) -> Mapping:
        unknown = sorted(set(self.columns) - set(MAPPABLE))
        if unknown:
            raise ValueError(f"columns: unknown canonical field(s) {', '.join(unknown)}; "
                             f"expected some of {', '.join(MAPPABLE)}")
        clashes = sorted(set(self.extra) & set(CANONICAL_COLUMNS))
        if clashes:
            raise ValueError(f"extra: {', '.join(clashes)} already canonical field(s); map them under columns")
        required = [c for c in REQUIRED_COLUMNS if c != "created_at" or self.created_at is None]
        missing = [c for c in required if c not in self.columns]
        if missing:
            raise ValueError(f"columns: required canonical field(s) not mapped: {', '.join(missing)}"
                             + ("; without an opening-time column set `created_at: first_event`"
                                if "created_at" in missing else ""))
        if self.created_at is not None and "created_at" in self.columns:
            raise ValueError("created_at: give either columns.created_at or the created_at rule, not both")
        single = [f for f in (*TIME_COLUMNS, "ticket_id") if isinstance(self.columns.get(f), list)]
        if single:
            raise ValueError(f"columns: {', '.join(single)} must name one source column each")
        unknown_extra = sorted(set(self.not_features) - set(self.extra))
        if unknown_extra:
            raise ValueError(f"not_features: {', '.join(unknown_extra)} not declared under extra")
        return self

    def sources(self, field_name: str) -> list[str]:
        """The source column(s) of a canonical field ([] when not mapped)."""
        source = self.columns.get(field_name)
        return [] if source is None else [source] if isinstance(source, str) else list(source)

    def source_columns(self) -> list[str]:
        """Every source column the mapping reads."""
        used = [c for f in self.columns for c in self.sources(f)]
        used += list(self.extra.values()) + list(self.read.order_by)
        used += [c for sources in self.text.values() for c in sources]
        if self.escalation.column:
            used.append(self.escalation.column)
        if isinstance(self.created_at, EarliestOf):
            used.append(self.created_at.earliest_of)
        if self.priority_target.column:
            used.append(self.priority_target.column)
        return list(dict.fromkeys(used))

    def feature_extras(self, kept: list[str] | set[str]) -> list[str]:
        """The extra log columns that are model features by default: those kept after the audit, minus not_features."""
        return [name for name in self.extra if name in kept and name not in self.not_features]


class MappingError(ValueError):
    """The mapping file or the export does not fit together; the message names what is wrong."""


@dataclass
class ImportResult:
    events: pd.DataFrame       # canonical rows (not yet validated)
    audit: pd.DataFrame        # features.audit table on the raw export
    excluded: list[str]        # source columns left out because of the audit or the mapping
    mapping: Mapping

    @property
    def feature_extras(self) -> list[str]:
        """The mapping's extra columns that survived the audit and are not opted out: features by default."""
        return self.mapping.feature_extras(set(self.events.columns))


def load_mapping(path_or_name: str | Path) -> Mapping:
    """A mapping file by path, or a shipped one by name (e.g. "servicenow")."""
    path = Path(path_or_name)
    if not path.exists() and (MAPPINGS_DIR / f"{path_or_name}.yaml").exists():
        path = MAPPINGS_DIR / f"{path_or_name}.yaml"
    return load_yaml_model(path, Mapping, "mapping file", MappingError)


# Hidden columns sort_export adds: the original text of time values that could not be read,
# so validation rejects them showing what the export wrote. Never audited, never mapped.
BAD_TIME_PREFIX = "__unreadable_time__"
DELIMITERS = (";", "\t", "|")


def string_sources(mapping: Mapping) -> list[str]:
    """Source columns read as text: ids (zero-padded ids keep their zeros), codes, categories and extras."""
    fields = (*ID_COLUMNS, *CATEGORICAL_COLUMNS, *TEXT_COLUMNS, *mapping.values)
    columns = [c for f in fields for c in mapping.sources(f)]
    columns += list(mapping.extra.values()) + [c for sources in mapping.text.values() for c in sources]
    if mapping.escalation.column and mapping.escalation.rule != "level_column":
        columns.append(mapping.escalation.column)
    return list(dict.fromkeys(columns))


def read_export(path: Path, read: ReadSpec, text_columns: list[str] | tuple[str, ...] = (),
                all_text: bool = False) -> pd.DataFrame:
    """CSV (.csv, .csv.gz) or Parquet, with the export's own missing-value markers.

    `text_columns` (every column with `all_text`) are read as text, never as numbers. Raises MappingError naming
    `read.encoding` or `read.delimiter` when the file does not read with them, or the path when it is not Parquet.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"export not found: {path}")
    if path.suffix == ".parquet" or path.is_dir():
        try:
            frame = read_parquet_log(path)
        except SchemaError as exc:
            raise MappingError(str(exc)) from exc
        return frame.replace(read.na_values, np.nan) if read.na_values else frame
    options = {"sep": read.delimiter, "encoding": read.encoding}
    try:
        header = pd.read_csv(path, nrows=0, **options)
        dtype = {c: "string" for c in (header.columns if all_text else text_columns) if c in header.columns}
        frame = pd.read_csv(path, na_values=read.na_values or None, low_memory=False, dtype=dtype, **options)
    except UnicodeError as exc:
        raise MappingError(f"{path.name} is not {read.encoding} text ({exc}); set read.encoding in the mapping "
                           "(e.g. latin-1, cp1252 or utf-16)") from exc
    except (pd.errors.ParserError, csv.Error) as exc:
        raise MappingError(f"{path.name} does not read as CSV with delimiter {read.delimiter!r} (read.delimiter): "
                           f"{str(exc).strip().splitlines()[-1]}") from exc
    if frame.shape[1] == 1:
        only = str(frame.columns[0])
        hint = next((d for d in DELIMITERS if d in only), None)
        if hint is not None:
            raise MappingError(f"{path.name} reads as one column ({only[:60]!r}): its fields look separated by "
                               f"{hint!r}; set read.delimiter: {hint!r} in the mapping")
    return frame


def parse_source_times(values: pd.Series, time_format: str | None) -> pd.Series:
    """Times as written by the export (e.g. day-first) to UTC; garbage stays as text for the rejects."""
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return values
    parsed = pd.to_datetime(values, format=time_format, errors="coerce", utc=True)
    bad = parsed.isna() & values.notna()
    if not bad.any():
        return parsed
    # Unparseable values are kept as written so validation rejects them with the original text.
    return parsed.dt.strftime("%Y-%m-%dT%H:%M:%S%z").astype("string").where(~bad, values.astype("string"))


def convert_time_column(values: pd.Series, column: str, read: ReadSpec, tickets: pd.Series | None = None,
                        not_after: pd.Series | None = None) -> tuple[pd.Series, pd.Series]:
    """(UTC times, the original text of values that could not be read, with why) for one source column.

    `tickets`: the update times' tickets, rows in the export's update order, to resolve the hour a
    DST change repeats; `not_after`: a creation time's update time (features.times.localize_times).
    """
    try:
        parsed = parse_wall_times(values, column, read.time_format, read.dayfirst)
    except TimeFormatError as exc:
        raise MappingError(str(exc)) from exc
    utc, problems = localize_times(parsed, read.timezone, tickets, not_after)
    text = values.astype("string")
    bad = (utc.isna() & values.notna()).to_numpy(dtype=bool, copy=True)
    if not pd.api.types.is_datetime64_any_dtype(values.dtype):
        bad &= (text.str.strip() != "").fillna(False).to_numpy(dtype=bool)
    shown = text.where(problems.isna(), text + " (" + problems + ")")
    return utc.astype("datetime64[ns, UTC]"), shown.where(bad, pd.NA)


def sort_export(raw: pd.DataFrame, mapping: Mapping) -> pd.DataFrame:
    """Time columns read to UTC, then rows by ticket, update time and the mapping's tie-breakers (stable).

    The repeated hour of a DST change is resolved in the export's own order of each ticket's
    updates (its row order, or `read.order_by`). Values that do not read as times are kept as
    text in hidden columns for the rejects.
    """
    missing = [c for c in mapping.source_columns() if c not in raw.columns]
    if missing:
        raise MappingError(f"mapping {mapping.name}: column(s) not in the export: {', '.join(sorted(set(missing)))}; "
                           f"export columns: {', '.join(map(str, raw.columns[:40]))}")
    raw = raw.reset_index(drop=True).copy()
    read = mapping.read
    tickets = raw[mapping.columns["ticket_id"]].astype("string").str.strip()
    sequence = (raw.assign(_t=tickets).sort_values(["_t", *read.order_by], kind="stable").index
                if read.order_by else tickets.sort_values(kind="stable").index)
    event_source = mapping.columns["event_time"]
    event, bad = convert_time_column(raw[event_source].loc[sequence], event_source, read,
                                     tickets=tickets.loc[sequence])
    converted = {event_source: (event.sort_index(), bad.sort_index())}
    time_sources = [("created_at", c) for c in mapping.sources("created_at")]
    time_sources += [("sla_due_at", c) for c in mapping.sources("sla_due_at")]
    if isinstance(mapping.created_at, EarliestOf):
        time_sources.append(("created_at", mapping.created_at.earliest_of))
    if mapping.priority_target.rule == "resolution_hours" and mapping.priority_target.column:
        time_sources.append(("resolved", mapping.priority_target.column))
    for field_name, source in time_sources:
        if source not in converted:
            not_after = converted[event_source][0] if field_name == "created_at" else None
            converted[source] = convert_time_column(raw[source], source, read, not_after=not_after)
    for source, (times, bad) in converted.items():
        raw[source] = times
        if bad.notna().any():
            raw[BAD_TIME_PREFIX + source] = bad
    keys = pd.DataFrame({"ticket": tickets, "time": raw[event_source]})
    for i, column in enumerate(read.order_by):
        keys[f"k{i}"] = raw[column]
    order = keys.sort_values(list(keys.columns), kind="stable").index
    return raw.loc[order].reset_index(drop=True)


def _as_read(raw: pd.DataFrame, source: str) -> pd.Series:
    """A converted time column, its unreadable values back as their text (validation rejects them)."""
    values = raw[source]
    bad = raw.get(BAD_TIME_PREFIX + source)
    if bad is None or not bad.notna().any():
        return values
    return values.astype("string").where(bad.isna(), bad)


def combine_columns(raw: pd.DataFrame, sources: list[str]) -> pd.Series:
    """Several source columns as one value, the known parts joined by " / " ("Completed / Resolved")."""
    out = raw[sources[0]].astype("string").str.strip()
    for source in sources[1:]:
        part = raw[source].astype("string").str.strip()
        both = out.notna() & part.notna()
        joined = out + " / " + part
        out = out.fillna(part).where(~both, joined)
    return out


def derive_escalation_level(raw: pd.DataFrame, tickets: pd.Series, spec: EscalationSpec) -> pd.Series:
    """escalation_level from the mapping's rule; rows are sorted by ticket and time.

    level_column: numbers, or text levels through `levels`; a text value the mapping does not
    declare raises MappingError (never silently 0); a missing value keeps the ticket's previous
    level. Only a rise of the level is an escalation (features.snapshots), a drop is not.
    """
    if spec.rule == "none":
        return pd.Series(0, index=raw.index, dtype="int64")
    values = raw[spec.column]
    if spec.rule == "level_column":
        numbers = spec.level_numbers()
        if numbers is None:
            level = pd.to_numeric(values, errors="coerce")
            unread = values.notna() & level.isna()
            if unread.any():
                seen = values[unread].astype("string").str.strip().value_counts().index[:5].tolist()
                raise MappingError(
                    f"escalation.column {spec.column!r} holds text ({', '.join(seen)}), not level numbers; list its "
                    f"levels from the frontline up under escalation.levels, e.g. levels: [{', '.join(sorted(seen))}]")
        else:
            key = values.astype("string").str.strip().str.lower()
            level = key.map(numbers).astype("float64")
            unknown = key.notna() & (key != "") & level.isna()
            if unknown.any():
                counts = values[unknown].astype("string").str.strip().value_counts()
                listed = ", ".join(f"{v!r} ({n} rows)" for v, n in counts.head(8).items())
                raise MappingError(f"escalation.column {spec.column!r} has value(s) not in escalation.levels: "
                                   f"{listed}; add them to escalation.levels")
        level = pd.Series(level.to_numpy(dtype="float64"), index=raw.index)
        return level.groupby(tickets.to_numpy()).ffill().fillna(0).astype("int64")
    if spec.rule == "flag_turns":
        hit = values.astype("string").str.strip().str.lower() == str(spec.value).strip().lower()
        return hit.fillna(False).astype("int64").groupby(tickets.to_numpy()).cummax()
    keys = pd.factorize(values, use_na_sentinel=True)[0]
    same_ticket = tickets.eq(tickets.shift()).fillna(False).to_numpy(dtype=bool)
    changed = same_ticket & np.r_[False, keys[1:] != keys[:-1]]
    changes = pd.Series(changed.astype("int64"), index=raw.index).groupby(tickets.to_numpy()).cumsum()
    return (changes - spec.routine_changes).clip(lower=0).astype("int64")


def derive_target_priority(raw: pd.DataFrame, created_at: pd.Series, spec: PriorityTargetSpec,
                           time_format: str | None) -> pd.Series | None:
    """An outcome-based priority target (label only), or None to use the final typed priority."""
    if spec.rule == "final_priority":
        return None
    resolved = pd.to_datetime(raw[spec.column], format=time_format, errors="coerce", utc=True)
    created = pd.to_datetime(created_at, errors="coerce", utc=True)
    hours = ((resolved - created) / pd.Timedelta(hours=1)).to_numpy(dtype="float64", na_value=np.nan)
    bucket = np.digitize(hours, spec.buckets_hours, right=True)
    target = pd.Series(np.asarray(spec.classes, dtype=object)[np.minimum(bucket, len(spec.classes) - 1)],
                       index=raw.index, dtype="string")
    return target.where(~np.isnan(hours))


def derive_created_at(raw: pd.DataFrame, tickets: pd.Series, event_time: pd.Series, mapping: Mapping) -> pd.Series:
    """created_at when the export has no opening-time column: the ticket's first update, or the
    earliest value of `created_at.earliest_of` seen so far (the first update's time until one is)."""
    first_event = event_time.groupby(tickets.to_numpy()).transform("min")
    if mapping.created_at == "first_event":
        return first_event
    # cummin leaves a missing value missing: carry the earliest so far over it.
    earliest = raw[mapping.created_at.earliest_of].groupby(tickets.to_numpy()).cummin()
    earliest = earliest.groupby(tickets.to_numpy()).ffill()
    return earliest.fillna(first_event)


def apply_mapping(raw: pd.DataFrame, mapping: Mapping, excluded: set[str] | frozenset[str] = frozenset()
                  ) -> pd.DataFrame:
    """Canonical rows from a sort_export'ed export; a field whose source columns are all excluded is left empty."""
    out = pd.DataFrame(index=raw.index)
    for field_name in mapping.columns:
        sources = mapping.sources(field_name)
        kept = [c for c in sources if c not in excluded] if field_name not in REQUIRED_COLUMNS else sources
        if not kept:
            continue
        values = raw[kept[0]] if len(kept) == 1 else combine_columns(raw, kept)
        if field_name in TIME_COLUMNS:
            values = _as_read(raw, kept[0])
        elif field_name in mapping.values:
            codes = mapping.values[field_name]
            text = values.astype("string").str.strip()
            values = text.map(codes).astype("string").fillna(text)
        out[field_name] = values
    for field_name, sources in mapping.text.items():
        kept = [s for s in sources if s not in excluded]
        if kept:
            tokens = [raw[s].astype("string").str.strip().str.replace(" ", "_", regex=False).fillna("") for s in kept]
            out[field_name] = tokens[0].str.cat(tokens[1:], sep=" ").str.strip() if len(tokens) > 1 else tokens[0]
    for name, source in mapping.extra.items():
        if source not in excluded:
            out[name] = raw[source].astype("string").str.strip()
    tickets = raw[mapping.columns["ticket_id"]].astype("string")
    if mapping.created_at is not None:
        out["created_at"] = derive_created_at(raw, tickets.str.strip(), raw[mapping.columns["event_time"]], mapping)
    level = derive_escalation_level(raw, tickets, mapping.escalation)
    out["escalation_level"] = level.to_numpy()
    out["escalation_type"] = pd.Series(np.where(level.to_numpy() > 0, mapping.escalation.type, None),
                                       index=raw.index, dtype="string")
    target = derive_target_priority(raw, out["created_at"], mapping.priority_target, mapping.read.time_format)
    if target is not None:
        out[TARGET_PRIORITY_COLUMN] = target
    return out


def label_tickets(events: pd.DataFrame, rule: str = "level_rise", counter: str = "reassignment_count",
                  min_rise: int = 1) -> pd.Series:
    """Per ticket, the label as seen from its first update (for the audit's predicts_label check)."""
    grouped = events.groupby(events["ticket_id"].astype("string"), sort=False)
    if rule == "counter_rise":
        values = pd.to_numeric(events[counter], errors="coerce").fillna(0)
        by_ticket = values.groupby(events["ticket_id"].astype("string"), sort=False)
        return ((by_ticket.max() - by_ticket.first()) >= min_rise).astype("int64")
    level = grouped["escalation_level"]
    return (level.max() > level.first()).astype("int64")


def import_export(path: Path, mapping: Mapping, labels: dict[str, dict] | None = None) -> ImportResult:
    """Read, sort, audit and map an export. `labels`: name -> label_tickets keyword arguments."""
    raw = sort_export(read_export(path, mapping.read, string_sources(mapping)), mapping)
    everything = apply_mapping(raw, mapping)
    excluded = set(mapping.audit.exclude)
    audit = pd.DataFrame()
    if mapping.audit.enabled:
        closing = (mark_closing(everything["status"], mapping.closing_statuses) if "status" in everything
                   else pd.Series(False, index=raw.index))
        label_specs = labels or {"escalation": {}}
        ticket_labels = {name: label_tickets(everything, **spec) for name, spec in label_specs.items()}
        thresholds = AuditThresholds(known_at_creation=list(mapping.audit.known_at_creation),
                                     max_first_update_auc=mapping.audit.max_first_update_auc,
                                     future_by_design=mapping.sources("sla_due_at"))
        # The ticket id and update time themselves are the timeline, not features.
        skip = (mapping.columns["ticket_id"], mapping.columns["event_time"],
                *(c for c in raw.columns if str(c).startswith(BAD_TIME_PREFIX)))
        team = mapping.sources("group")
        audit = audit_columns(raw, everything["ticket_id"].astype("string"),
                              pd.to_datetime(everything["event_time"], errors="coerce", utc=True), closing,
                              ticket_labels, thresholds, mapping.read.time_format, skip=skip,
                              team_column=team[0] if team else None)
        excluded |= set(audit.loc[audit["flagged"], "column"]) - set(mapping.audit.keep)
    events = apply_mapping(raw, mapping, excluded)
    if mapping.read.same_time_updates == "keep_last":
        events = events.loc[~events.duplicated(["ticket_id", "event_time"], keep="last")].reset_index(drop=True)
    return ImportResult(events=events, audit=audit, excluded=sorted(excluded), mapping=mapping)


def describe_labels(rule: str, counter: str, min_rise: int) -> dict[str, dict]:
    """The labels the audit's predicts_label check scores: the mapping's escalation rule and the params' rule."""
    labels: dict[str, dict] = {"escalation (mapping rule)": {}}
    if rule == "counter_rise":
        labels[f"{counter} +{min_rise}"] = {"rule": rule, "counter": counter, "min_rise": min_rise}
    return labels


def write_canonical(events: pd.DataFrame, path: Path) -> Path:
    """The imported canonical log as Parquet (under reports/, never inside the package)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    events.to_parquet(path, index=False)
    return path
