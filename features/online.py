"""Features for one live ticket without pandas: the serving fast path of FeatureBuilder.transform.

The same fitted FeatureBuilder state (category vocabularies, the as-of history index, the
text embedding) applied to plain dicts, so a single ticket costs microseconds of Python
instead of a DataFrame round trip. It must give exactly what `FeatureBuilder.transform`
gives after `validate_events`; tests/serving/test_parity.py checks that on many generated
tickets, so any change to the builder that this file does not follow fails the tests.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import numpy as np

from features.build import COUNTER_FEATURES, FeatureBuilder
from features.history import _SPAN, ENTITIES
from features.schema import PRIORITY_ALIASES, PRIORITY_ORDER
from features.text import CUE_PATTERNS, load_sentiment_analyzer

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NS_PER_HOUR = 3_600_000_000_000
_CUES = [re.compile(p) for p in CUE_PATTERNS.values()]
_WORDS = re.compile(r"\S+")
_PRIORITY_RANK = {name: float(i) for i, name in enumerate(PRIORITY_ORDER)}


def _ns(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def _parse(value: object) -> datetime | None:
    if value is None or value == "":
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _nullable(value: object) -> str | None:
    return None if value is None else str(value)


class OnlineFeatures:
    """Compiled from a fitted FeatureBuilder; `transform_one(ticket)` -> float64 row in feature order."""

    def __init__(self, builder: FeatureBuilder):
        self.builder = builder
        self.names = list(builder.feature_names_)
        self.position = {name: i for i, name in enumerate(self.names)}
        self.categories = {c: {v: float(i) for i, v in enumerate(cats)} for c, cats in builder.categories_.items()}
        self.history = builder.history_
        created = builder.history_.ticket_created_
        self.ticket_created = dict(zip(created.index.tolist(), created.to_numpy().tolist(), strict=True))
        self.text = builder.text_
        self.analyzer = load_sentiment_analyzer() if self.text is not None else None
        self._sentiment_cache: dict[str, float] = {}

    def sentiment(self, text: str) -> float:
        if not text:
            return 0.0
        cached = self._sentiment_cache.get(text)
        if cached is None:
            cached = self.analyzer.polarity_scores(text)["compound"]
            if len(self._sentiment_cache) < 10_000:
                self._sentiment_cache[text] = cached
        return cached

    def transform_one(self, ticket: dict) -> tuple[np.ndarray, dict[str, object]]:
        """Model input row (float32 values as float64, categories as codes) and the readable values."""
        values: dict[str, float] = {}
        t, created = _parse(ticket["event_time"]), _parse(ticket["created_at"])
        t_ns, created_ns = _ns(t), _ns(created)
        age = (t_ns - created_ns) / _NS_PER_HOUR
        values["age_hours"] = age
        values["created_hour"] = float(created.hour)
        values["created_weekday"] = float(created.weekday())
        values["snapshot_hour"] = float(t.hour)
        values["snapshot_weekday"] = float(t.weekday())
        values["business_hours"] = float(t.weekday() < 5 and 8 <= t.hour <= 17)
        due = _parse(ticket.get("sla_due_at"))
        values["hours_to_sla"] = np.nan if due is None else (_ns(due) - t_ns) / _NS_PER_HOUR
        values["sla_breached"] = np.nan if due is None else float(due < t)
        for column in COUNTER_FEATURES:
            raw = ticket.get(column)
            values[column] = float(max(round(float(raw)), 0)) if raw is not None else 0.0
        cm, am = values["customer_messages"], values["agent_messages"]
        values["messages_total"] = cm + am
        values["customer_to_agent_messages"] = cm / (am + 1)
        values["customer_messages_per_day"] = cm / (age / 24 + 1)
        priority = ticket.get("priority")
        if priority is not None:
            priority = str(priority).strip().lower()
            priority = PRIORITY_ALIASES.get(priority, priority)
        values["priority_rank"] = _PRIORITY_RANK.get(priority, np.nan) if priority is not None else np.nan
        self.add_history(ticket, t_ns // 1_000_000_000, values)
        if self.text is not None:
            self.add_text(ticket, values)

        row = np.full(len(self.names), np.nan)
        shown: dict[str, object] = {}
        for name, value in values.items():
            if name in self.position:
                as32 = np.float32(value)
                row[self.position[name]] = float(as32)
                shown[name] = None if np.isnan(as32) else float(as32)
        for column, codes in self.categories.items():
            value = priority if column == "priority" else _nullable(ticket.get(column))
            code = codes.get(value) if value is not None else None
            row[self.position[column]] = np.nan if code is None else code
            shown[column] = value if code is not None else None
        return row, shown

    def add_history(self, ticket: dict, t: int, values: dict[str, float]) -> None:
        """HistoryFeatures.transform for one ticket (same index, same arithmetic, scalar form)."""
        history = self.history
        own = self.ticket_created.get(str(ticket["ticket_id"]))
        own_created = np.nan if own is None else float(own)
        for entity, columns in ENTITIES.items():
            index = history.indexes_[entity]
            parts = [_nullable(ticket.get(c)) for c in columns]
            code = -1 if any(p is None for p in parts) else index.codes.get("\x1f".join(parts), -1)
            known = code >= 0
            base = int(code if known else 0) * int(_SPAN)

            def opened_between(start: int, end: int, index=index, base=base, known=known) -> int:
                if not known:
                    return 0
                n = int(np.searchsorted(index.created_keys, base + end, side="left")
                        - np.searchsorted(index.created_keys, base + start, side="left"))
                return n - int(start <= own_created < end)

            lo = int(np.searchsorted(index.ended_keys, base, side="left"))
            hi = int(np.searchsorted(index.ended_keys, base + t, side="left"))
            n_ended = hi - lo if known else 0
            n_escalated = int(index.ended_escalations[hi] - index.ended_escalations[lo]) if known else 0
            values[f"{entity}_past_tickets"] = float(n_ended)
            denominator = n_ended + history.smoothing
            values[f"{entity}_escalation_rate"] = (
                (n_escalated + history.smoothing * history.prior_) / denominator if denominator > 0 else history.prior_
            )
            if entity == "customer":
                for w in history.windows_days:
                    values[f"customer_tickets_{w}d"] = float(opened_between(t - w * 86400, t))
                values["customer_past_escalations"] = float(n_escalated)
            elif entity == "customer_category":
                values["customer_category_tickets_30d"] = float(opened_between(t - 30 * 86400, t))
            elif entity == "agent":
                values["agent_tickets_30d"] = float(opened_between(t - 30 * 86400, t))
                total = opened_between(0, t)
                values["agent_tickets_total"] = float(total)
                values["agent_open_tickets"] = float(total - n_ended)
                keys = index.created_keys
                first = int(np.searchsorted(keys, base, side="left"))
                first_key = int(keys[min(first, len(keys) - 1)]) if len(keys) else 0
                seen = known and first < len(keys) and first_key < base + t
                values["agent_days_seen"] = (t - (first_key - base)) / 86400.0 if seen else 0.0
            elif entity == "group":
                values["group_tickets_7d"] = float(opened_between(t - 7 * 86400, t))
                values["group_open_tickets"] = float(opened_between(0, t) - n_ended)

    def add_text(self, ticket: dict, values: dict[str, float]) -> None:
        """TextFeatures.transform for one ticket."""
        ticket_text = _text(ticket.get("subject")) + ". " + _text(ticket.get("description"))
        last = _text(ticket.get("last_customer_message"))
        for prefix, text in (("cue_", ticket_text), ("last_message_cue_", last)):
            lowered = text.lower()
            for name, pattern in zip(CUE_PATTERNS, _CUES, strict=True):
                values[prefix + name] = float(len(pattern.findall(lowered)))
        values["sentiment_description"] = self.sentiment(ticket_text)
        values["sentiment_last_message"] = self.sentiment(last)
        values["description_words"] = float(len(_WORDS.findall(ticket_text)))
        if self.text.svd_ is not None:
            embedded = self.text.svd_.transform(self.text.vectorizer_.transform([ticket_text + ". " + last]))[0]
            for i, value in enumerate(embedded):
                values[f"text_svd_{i}"] = float(value)
