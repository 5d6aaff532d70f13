"""Features for one live ticket without pandas: the serving fast path of FeatureBuilder.transform.

The same fitted FeatureBuilder state (category vocabularies, the as-of history index, the
text embedding) applied to plain dicts, so a single ticket costs microseconds of Python
instead of a DataFrame round trip. It must give exactly what `FeatureBuilder.transform`
gives after `validate_events`; tests/serving/test_parity.py checks that on many generated
tickets, so any change to the builder that this file does not follow fails the tests.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from features.build import COUNTER_FEATURES, MISSING, TICKET_FEATURES, UNSEEN, FeatureBuilder
from features.history import ENTITIES
from features.schema import PRIORITY_ALIASES, PRIORITY_ORDER

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NS_PER_HOUR = 3_600_000_000_000
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
    """Compiled from a fitted FeatureBuilder; `transform_many(tickets)` -> float64 matrix in feature order."""

    def __init__(self, builder: FeatureBuilder):
        self.builder = builder
        self.names = list(builder.feature_names_)
        self.position = {name: i for i, name in enumerate(self.names)}
        self.categories = {c: {v: float(i) for i, v in enumerate(cats)} for c, cats in builder.categories_.items()}
        self.category_names = {self.position[c]: list(cats) for c, cats in builder.categories_.items()}
        self.history = builder.history_
        created = builder.history_.ticket_created_
        self.ticket_created = dict(zip(created.index.tolist(), created.to_numpy().tolist(), strict=True))
        self.text = builder.text_
        # A params file may leave built-in features out (features.exclude): compute, then keep only the used.
        self.ticket_kept = [i for i, n in enumerate(TICKET_FEATURES) if n in self.position]
        self.ticket_columns = [self.position[TICKET_FEATURES[i]] for i in self.ticket_kept]
        self.history_names = [n for n in self.history.feature_names_ if n in self.position]
        self.history_columns = [self.position[n] for n in self.history_names]
        self.text_columns = [self.position[n] for n in self.text.feature_names_] if self.text is not None else []
        self.category_columns = [self.position[c] for c in self.categories]

    def transform_many(self, tickets: list[dict]) -> tuple[np.ndarray, list[dict[int, object]]]:
        """Model input rows (float32 values as float64, categories as codes, NaN = missing) and,
        per ticket, the raw values of its categorical columns for showing reasons."""
        n = len(tickets)
        ticket_rows = np.empty((n, len(TICKET_FEATURES)))
        t_seconds = np.empty(n, dtype=np.int64)
        own_created = np.empty(n)
        entity_keys: dict[str, list[str | None]] = {entity: [] for entity in ENTITIES}
        raw_categories: list[dict[int, object]] = []
        ticket_texts, last_messages = [], []
        for i, ticket in enumerate(tickets):
            t_ns = self.ticket_values(ticket, ticket_rows[i])
            t_seconds[i] = t_ns // 1_000_000_000
            own = self.ticket_created.get(str(ticket["ticket_id"]))
            own_created[i] = np.nan if own is None else float(own)
            for entity, columns in ENTITIES.items():
                parts = [_nullable(ticket.get(c)) for c in columns]
                entity_keys[entity].append(None if any(p is None for p in parts) else "\x1f".join(parts))
            if self.text is not None:
                ticket_texts.append(_text(ticket.get("subject")) + ". " + _text(ticket.get("description")))
                last_messages.append(_text(ticket.get("last_customer_message")))
            # An importer's extra columns (opened_by, location, ...) come in the ticket's `extra` object.
            extra = ticket.get("extra") or {}
            raw_categories.append({
                self.position[column]: _normal_priority(ticket.get(column)) if column == "priority"
                else _nullable(ticket.get(column, extra.get(column)))
                for column in self.categories
            })

        out = np.full((n, len(self.names)), np.nan)
        out[:, self.ticket_columns] = ticket_rows[:, self.ticket_kept]
        codes = {entity: self.history.entity_codes(entity, keys) for entity, keys in entity_keys.items()}
        history = self.history.transform_arrays(t_seconds, own_created, codes)
        out[:, self.history_columns] = np.column_stack([history[name] for name in self.history_names])
        if self.text is not None:
            out[:, self.text_columns] = self.text.transform_texts(ticket_texts, last_messages)
        # The builder stores features as float32; round the same way, then widen for LightGBM.
        out = out.astype(np.float32).astype(np.float64)
        for column, codes_of in self.categories.items():
            j = self.position[column]
            out[:, j] = [np.nan if (v := raw[j]) is None else codes_of.get(v, np.nan) for raw in raw_categories]
        return out, raw_categories

    def ticket_values(self, ticket: dict, row: np.ndarray) -> int:
        """compute_ticket_features for one ticket, written into `row` (TICKET_FEATURES order);
        returns the update time in ns."""
        t, created = _parse(ticket["event_time"]), _parse(ticket["created_at"])
        t_ns, created_ns = _ns(t), _ns(created)
        age = (t_ns - created_ns) / _NS_PER_HOUR
        due = _parse(ticket.get("sla_due_at"))
        counters = []
        for column in COUNTER_FEATURES:
            raw = ticket.get(column)
            counters.append(float(max(round(float(raw)), 0)) if raw is not None else 0.0)
        cm, am = counters[2], counters[3]
        priority = _normal_priority(ticket.get("priority"))
        row[:] = [
            age, float(created.hour), float(created.weekday()), float(t.hour), float(t.weekday()),
            float(t.weekday() < 5 and 8 <= t.hour <= 17),
            np.nan if due is None else (_ns(due) - t_ns) / _NS_PER_HOUR,
            np.nan if due is None else float(due < t),
            *counters,
            cm + am, cm / (am + 1), cm / (age / 24 + 1),
            _PRIORITY_RANK.get(priority, np.nan) if priority is not None else np.nan,
        ]
        return t_ns

    def show(self, features: np.ndarray, raw_categories: list[dict[int, object]], i: int, j: int) -> object:
        """Ticket i's value of feature j as a reason shows it (see model_store.show_value)."""
        value = features[i, j]
        if j in self.category_names:
            if np.isnan(value):
                return UNSEEN if raw_categories[i][j] is not None else MISSING
            return self.category_names[j][int(value)]
        return MISSING if np.isnan(value) else float(value)


def _normal_priority(value: object) -> str | None:
    if value is None:
        return None
    priority = str(value).strip().lower()
    return PRIORITY_ALIASES.get(priority, priority)
