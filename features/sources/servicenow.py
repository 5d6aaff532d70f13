"""ServiceNow incident audit log -> canonical event log: the shipped mapping plus its label choices.

Everything source-specific lives in mappings/servicenow.yaml (day-first times, '?' for
missing, value codes, the SLA rule, the time-to-resolve priority target, the columns known
at creation), so this module only names it; see that file for why each choice was made.
"""

from __future__ import annotations

from pathlib import Path

from features.sources.mapping import ImportResult, describe_labels, import_export, load_mapping

SERVICENOW_MAPPING = "servicenow"


def import_servicenow(path: Path, rule: str = "counter_rise", counter: str = "reassignment_count",
                      min_rise: int = 2) -> ImportResult:
    """Read, audit and map an incident audit-log export; flagged columns are left out."""
    mapping = load_mapping(SERVICENOW_MAPPING)
    return import_export(path, mapping, describe_labels(rule, counter, min_rise))
