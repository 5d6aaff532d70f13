"""The escalation matrix: band x predicted priority x category -> route, tier, type, response time.

Ops leads own the YAML file; a mistake in it must stop start-up (or a reload) with a message
that names the rule and field, not surface later as a wrong routing decision.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from features.yaml_files import load_yaml_model

Band = Literal["low", "medium", "high"]
Priority = Literal["low", "normal", "high", "urgent"]
Tier = Literal["frontline", "supervisor", "specialist_team", "manager"]
EscalationType = Literal["hierarchical", "functional", "time_based", "priority", "customer_initiated"]


class PolicyError(ValueError):
    """The escalation matrix file is missing or invalid."""


class Action(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    route_to: str = Field(min_length=1)
    tier: Tier
    escalation_type: EscalationType
    respond_within: float = Field(gt=0, description="hours")


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    band: list[Band] | None = None
    priority: list[Priority] | None = None
    category: list[str] | None = None


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    when: Condition = Field(default_factory=Condition)
    then: Action

    def matches(self, band: str, priority: str, category: str | None) -> bool:
        when = self.when
        return (
            (when.band is None or band in when.band)
            and (when.priority is None or priority in when.priority)
            and (when.category is None or (category or "").lower() in {c.lower() for c in when.category})
        )


class EscalationMatrix(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = 1
    rules: list[Rule] = Field(min_length=1)
    _decided: dict[tuple, dict] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def check_default_last(self) -> EscalationMatrix:
        """A ticket must always get an action: the last rule is the catch-all."""
        last = self.rules[-1].when
        if last.band is not None or last.priority is not None or last.category is not None:
            raise ValueError("the last rule must have no `when` (it is the default for every ticket)")
        names = [r.name for r in self.rules]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate rule name(s): {', '.join(duplicates)}")
        return self

    def decide(self, band: str, priority: str, category: str | None) -> dict:
        """The first matching rule's action, with the rule's name so a decision can be traced.

        Decisions are remembered (the matrix is frozen); callers must not modify the dict. The
        memory is bounded because categories come from clients."""
        key = (band, priority, category)
        remembered = self.__pydantic_private__["_decided"]  # plain dict access; `self._decided` is slower
        decided = remembered.get(key)
        if decided is not None:
            return decided
        for rule in self.rules:
            if rule.matches(band, priority, category):
                decided = {**rule.then.model_dump(), "rule": rule.name}
                if len(remembered) < 4096:
                    remembered[key] = decided
                return decided
        raise AssertionError("unreachable: the last rule matches everything")


def load_policy(path: Path) -> EscalationMatrix:
    """Read and validate the matrix; every problem is reported with its location in the file."""
    return load_yaml_model(Path(path), EscalationMatrix, "escalation matrix", PolicyError)
