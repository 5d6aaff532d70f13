"""Any ticket export -> the canonical event log, described by a YAML mapping file instead of code.

A mapping names the export's columns for the canonical fields, translates value codes,
says how times are written and which rule marks an escalation (a level column, a flag
taking a value, a column changing beyond routine hand-offs). The import runs the leakage
audit (features/audit.py) on the raw export first and leaves out every flagged column
unless the mapping keeps it on purpose. See docs/mapping-files.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from features.audit import AuditThresholds, audit_columns
from features.schema import CANONICAL_COLUMNS, REQUIRED_COLUMNS, TARGET_PRIORITY_COLUMN, TIME_COLUMNS
from features.yaml_files import load_yaml_model

MAPPINGS_DIR = Path(__file__).resolve().parent / "mappings"
# Canonical fields a mapping may fill from a column (the derived ones come from rules).
MAPPABLE = tuple(c for c in CANONICAL_COLUMNS if c not in ("escalation_level", "escalation_type"))


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReadSpec(_Spec):
    na_values: list[str] = []
    time_format: str | None = None           # e.g. "%d/%m/%Y %H:%M"; null = let pandas infer
    order_by: list[str] = []                 # tie-breakers after the event time (e.g. a modification count)
    # Several updates logged at the same time (minute-resolution exports): keep the last
    # state of that moment, or reject all but the first as duplicates (the canonical rule).
    same_time_updates: Literal["reject", "keep_last"] = "reject"


class EscalationSpec(_Spec):
    rule: Literal["none", "level_column", "flag_turns", "value_changes"] = "none"
    column: str | None = None
    value: Any = None                        # flag_turns: the value that marks the escalation
    routine_changes: int = Field(0, ge=0)    # value_changes: changes that are routine (first hand-off)
    type: str = "functional"                 # escalation_type written on escalated rows

    @model_validator(mode="after")
    def _needs_column(self) -> EscalationSpec:
        if self.rule != "none" and not self.column:
            raise ValueError(f"escalation.rule {self.rule} needs escalation.column")
        if self.rule == "flag_turns" and self.value is None:
            raise ValueError("escalation.rule flag_turns needs escalation.value")
        return self


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
    columns: dict[str, str]                  # canonical field -> source column
    text: dict[str, list[str]] = {}          # canonical text field -> source columns joined as tokens
    extra: dict[str, str] = {}               # extra log column -> source column, copied as text (features
                                             # only when a params file lists it in features.extra_categorical)
    values: dict[str, dict[str, str]] = {}   # canonical field -> {source value: canonical value}
    closing_statuses: list[str] = ["closed"]  # canonical statuses that end a ticket (for the audit)
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
        missing = [c for c in REQUIRED_COLUMNS if c not in self.columns]
        if missing:
            raise ValueError(f"columns: required canonical field(s) not mapped: {', '.join(missing)}")
        return self


class MappingError(ValueError):
    """The mapping file or the export does not fit together; the message names what is wrong."""


@dataclass
class ImportResult:
    events: pd.DataFrame       # canonical rows (not yet validated)
    audit: pd.DataFrame        # features.audit table on the raw export
    excluded: list[str]        # source columns left out because of the audit or the mapping
    mapping: Mapping


def load_mapping(path_or_name: str | Path) -> Mapping:
    """A mapping file by path, or a shipped one by name (e.g. "servicenow")."""
    path = Path(path_or_name)
    if not path.exists() and (MAPPINGS_DIR / f"{path_or_name}.yaml").exists():
        path = MAPPINGS_DIR / f"{path_or_name}.yaml"
    return load_yaml_model(path, Mapping, "mapping file", MappingError)


def read_export(path: Path, read: ReadSpec) -> pd.DataFrame:
    """CSV (.csv, .csv.gz) or Parquet, with the export's own missing-value markers."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"export not found: {path}")
    if path.suffix == ".parquet" or path.is_dir():
        frame = pd.read_parquet(path)
        return frame.replace(read.na_values, np.nan) if read.na_values else frame
    return pd.read_csv(path, na_values=read.na_values or None, low_memory=False)


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


def sort_export(raw: pd.DataFrame, mapping: Mapping) -> pd.DataFrame:
    """Rows by ticket, then update time, then the mapping's tie-breakers (stable)."""
    missing = [c for c in (*mapping.columns.values(), *mapping.extra.values(), *mapping.read.order_by)
               if c not in raw.columns]
    if missing:
        raise MappingError(f"mapping {mapping.name}: column(s) not in the export: {', '.join(sorted(set(missing)))}; "
                           f"export columns: {', '.join(map(str, raw.columns[:40]))}")
    keys = pd.DataFrame({
        "ticket": raw[mapping.columns["ticket_id"]].astype("string"),
        "time": pd.to_datetime(raw[mapping.columns["event_time"]], format=mapping.read.time_format,
                               errors="coerce", utc=True),
    })
    for i, column in enumerate(mapping.read.order_by):
        keys[f"k{i}"] = raw[column]
    order = keys.sort_values(list(keys.columns), kind="stable").index
    return raw.loc[order].reset_index(drop=True)


def derive_escalation_level(raw: pd.DataFrame, tickets: pd.Series, spec: EscalationSpec) -> pd.Series:
    """escalation_level from the mapping's rule; rows are sorted by ticket and time."""
    if spec.rule == "none":
        return pd.Series(0, index=raw.index, dtype="int64")
    values = raw[spec.column]
    if spec.rule == "level_column":
        return pd.to_numeric(values, errors="coerce").fillna(0).astype("int64")
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


def apply_mapping(raw: pd.DataFrame, mapping: Mapping, excluded: set[str] | frozenset[str] = frozenset()
                  ) -> pd.DataFrame:
    """Canonical rows from a sorted export; a field whose source column is excluded is left empty."""
    out = pd.DataFrame(index=raw.index)
    for field_name, source in mapping.columns.items():
        if source in excluded and field_name not in REQUIRED_COLUMNS:
            continue
        values = raw[source]
        if field_name in TIME_COLUMNS:
            values = parse_source_times(values, mapping.read.time_format)
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
    raw = sort_export(read_export(path, mapping.read), mapping)
    everything = apply_mapping(raw, mapping)
    excluded = set(mapping.audit.exclude)
    audit = pd.DataFrame()
    if mapping.audit.enabled:
        closing = everything["status"].astype("string").str.lower().isin(
            [s.lower() for s in mapping.closing_statuses]) if "status" in everything else \
            pd.Series(False, index=raw.index)
        label_specs = labels or {"escalation": {}}
        ticket_labels = {name: label_tickets(everything, **spec) for name, spec in label_specs.items()}
        thresholds = AuditThresholds(known_at_creation=list(mapping.audit.known_at_creation),
                                     max_first_update_auc=mapping.audit.max_first_update_auc)
        # The ticket id and update time themselves are the timeline, not features.
        skip = (mapping.columns["ticket_id"], mapping.columns["event_time"])
        audit = audit_columns(raw, everything["ticket_id"].astype("string"),
                              pd.to_datetime(everything["event_time"], errors="coerce", utc=True), closing,
                              ticket_labels, thresholds, mapping.read.time_format, skip=skip,
                              team_column=mapping.columns.get("group"))
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
