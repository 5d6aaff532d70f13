"""The integration mapping file: where each vendor's category, customer tier and other fields come from.

Same style as the export mapping files (features/sources/mappings/*.yaml, docs/mapping-files.md):
a YAML file read into a pydantic model that refuses unknown keys, so a typo stops the service at
start-up with the file and the field named. Per vendor, each canonical field lists its sources,
tried in order (the first that gives a value wins), and `values` translates what they give:

    zendesk:
      fields:
        category: [{custom_field: "360001234567"}, {field: type}]
        customer_tier: [{organization_field: tier}, {tags: [vip, gold, standard]}]
      values:
        customer_tier: {platinum: vip}

Sources: `field` (a field of the vendor's ticket object, dotted for nested: "organization.name"),
`custom_field` (Zendesk: custom_fields[].id; Freshdesk: custom_fields.<name>, in automation
webhooks ticket_<name>; ServiceNow: the record's field, e.g. u_tier), `tags` (the first of these
tags the ticket has), `tag_prefix` (a tag starting with it gives the rest: tier_gold -> gold) and
`organization_field` (Zendesk: the requester's organization's organization_fields, from a
payload with sideloaded `organizations` or an `organization` object in a trigger's JSON).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

from features.yaml_files import load_yaml_model

# Canonical fields a mapping may fill (the categorical and identity ones; times, counters and
# texts come from the vendor's own fields).
MAPPABLE_FIELDS = ("category", "subcategory", "customer_tier", "customer_id", "agent_id", "group", "channel")
CanonicalField = Literal["category", "subcategory", "customer_tier", "customer_id", "agent_id", "group", "channel"]
SOURCE_KINDS = ("field", "custom_field", "tags", "tag_prefix", "organization_field")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Source(_Spec):
    """Exactly one way of reading a value."""

    field: str | None = None
    custom_field: str | int | None = None
    tags: list[str] | None = None
    tag_prefix: str | None = None
    organization_field: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Source:
        given = [kind for kind in SOURCE_KINDS if getattr(self, kind) not in (None, "", [])]
        if len(given) != 1:
            raise ValueError(f"a source needs exactly one of {', '.join(SOURCE_KINDS)}; got "
                             f"{', '.join(given) or 'none'}")
        return self

    @property
    def kind(self) -> str:
        return next(kind for kind in SOURCE_KINDS if getattr(self, kind) not in (None, "", []))

    def describe(self) -> str:
        """Where the value was read, as a vendor field path (for warnings and errors)."""
        if self.kind == "field":
            return self.field
        if self.kind == "custom_field":
            return f"custom_fields[{self.custom_field}]"
        if self.kind == "organization_field":
            return f"organization.organization_fields.{self.organization_field}"
        return "tags"


class VendorMapping(_Spec):
    fields: dict[CanonicalField, list[Source]] = {}
    values: dict[CanonicalField, dict[str, str]] = {}   # canonical field -> {vendor value: canonical value}


class IntegrationMapping(_Spec):
    zendesk: VendorMapping = VendorMapping()
    servicenow: VendorMapping = VendorMapping()
    freshdesk: VendorMapping = VendorMapping()


class IntegrationMappingError(ValueError):
    """The integration mapping file is missing or invalid; the message names the file and field."""


@lru_cache(maxsize=8)
def load_integration_mapping(path: Path) -> IntegrationMapping:
    """The mapping at `path` (read once per path; restart the service to read an edited file).

    Raises IntegrationMappingError naming the file and every bad field."""
    return load_yaml_model(Path(path), IntegrationMapping, "integration mapping file", IntegrationMappingError)
