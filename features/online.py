"""Features for one live ticket without pandas: the serving fast path of FeatureBuilder.transform.

The same fitted FeatureBuilder state (category vocabularies, the as-of history index, the
text embedding) applied to plain dicts, so a single ticket costs microseconds of Python
instead of a DataFrame round trip. It must give exactly what `FeatureBuilder.transform`
gives after `validate_events`; tests/serving/test_parity.py checks that on many generated
tickets, so any change to the builder that this file does not follow fails the tests.
"""

from __future__ import annotations

import hashlib
import threading
import zlib
from contextlib import nullcontext
from datetime import UTC, datetime
from functools import lru_cache

import numpy as np
from cachetools import LRUCache

from features.build import COUNTER_FEATURES, MISSING, RATE_FOLDS, TICKET_FEATURES, UNSEEN, FeatureBuilder
from features.history import ENTITIES
from features.labels import RATE_FEATURES, rate_feature
from features.schema import (
    CATEGORICAL_COLUMNS,
    PRIORITY_ALIASES,
    PRIORITY_ORDER,
    normalize_category,
    normalize_priority_value,
)
from features.text import TEXT_FIELDS, TextPart, clip_text

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NS_PER_HOUR = 3_600_000_000_000
_PRIORITY_RANK = {name: float(i) for i, name in enumerate(PRIORITY_ORDER)}
TEXT_CACHE_ENTRIES = 32_768
# The ticket-text part cache is bounded by memory (TextPart.size, 8-byte units), not entries: a
# 10,000-character description holds ~30 times the terms of a 60-word one. 2**21 units is about
# 16 MB: some 14,000 ticket texts of 60 words, or 1,100 of 10,000 characters.
TICKET_PART_CACHE_UNITS = 2_097_152


def _ns(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def _parse(value: object) -> datetime | None:
    if value is None or value == "":
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class OnlineFeatures:
    """Compiled from a fitted FeatureBuilder; `transform_many(tickets)` -> float64 matrix in feature order.

    `text_cache_entries` bounds the cache of text-feature rows (one per ticket text and latest
    message), `ticket_part_units` the cache of ticket texts' parts (TextPart.size units, ~8 bytes).
    """

    def __init__(self, builder: FeatureBuilder, text_cache_entries: int = TEXT_CACHE_ENTRIES,
                 ticket_part_units: int = TICKET_PART_CACHE_UNITS):
        self.builder = builder
        self.names = list(builder.feature_names_)
        self.position = {name: i for i, name in enumerate(self.names)}
        self.categories = {c: {v: float(i) for i, v in enumerate(cats)} for c, cats in builder.categories_.items()}
        self.category_names = {self.position[c]: list(cats) for c, cats in builder.categories_.items()}
        # Builders fitted with normalised categories (features.schema.normalize_category) see
        # them normalised here too; older ones as sent, as they were trained.
        self.normalize = bool(getattr(builder, "category_normalization_", 0))
        self.history = builder.history_
        created = builder.history_.ticket_created_
        self.ticket_created = dict(zip(created.index.tolist(), created.to_numpy().tolist(), strict=True))
        self.text = builder.text_
        # Each text field is read up to this many characters, as in training (features.text).
        self.max_field_chars = self.text.max_field_chars if self.text is not None else 0
        # A params file may leave built-in features out (features.exclude): compute, then keep only the used.
        self.ticket_kept = [i for i, n in enumerate(TICKET_FEATURES) if n in self.position]
        self.ticket_columns = [self.position[TICKET_FEATURES[i]] for i in self.ticket_kept]
        self.history_names = [n for n in self.history.feature_names_ if n in self.position]
        self.history_columns = [self.position[n] for n in self.history_names]
        self.history_kept = [i for i, n in enumerate(self.history.feature_names_) if n in self.position]
        self.text_columns = [self.position[n] for n in self.text.feature_names_] if self.text is not None else []
        # Per label with its own outcome: its history, and (index in its features, column) of each rate
        # kept. Its tables are fitted on the same tickets as the any-rise one, so entity codes agree.
        self.label_rates = []
        for label, history in builder.label_histories.items():
            if any(history.indexes_[e].codes != self.history.indexes_[e].codes for e in ENTITIES):
                raise ValueError(f"the history of label {label!r} codes entities differently from the main one")
            slots = [(history.feature_names_.index(f), self.position[rate_feature(f, label)])
                     for f in RATE_FEATURES if rate_feature(f, label) in self.position]
            if slots:
                self.label_rates.append((history, slots))
        # (feature position, column, whether it is the priority) of each categorical column
        self.category_slots = [(self.position[c], c, c == "priority") for c in self.categories]
        # (feature position, column, rate table) of each out-of-fold rate feature (FeatureBuilder.transform_rates)
        self.rate_slots = [(self.position[f"{c}_rate"], c, table) for c, table in getattr(builder, "rates_", {}).items()
                           if f"{c}_rate" in self.position]
        cutoff = getattr(builder, "history_as_of_", None)
        self.rate_cutoff_ns = _ns(cutoff.to_pydatetime()) if self.rate_slots and cutoff is not None else None
        # A ticket's subject and description stay the same across its updates, and the latest
        # customer message changes only when the customer writes, so most calls repeat a text
        # this worker has already scored. Keys are digests: memory does not grow with text length.
        # The queue watcher re-scores every open ticket each tick: it keeps one entry per open ticket
        # (Settings.watch_text_cache_entries) so that only new texts are computed again.
        self.text_cache: LRUCache = LRUCache(maxsize=max(1, text_cache_entries))
        # When only the latest message is new (the common update), the ticket text's share of the
        # row (features.text.TextPart: cues, sentiment, words, known n-grams) comes from this cache.
        self.ticket_part_cache: LRUCache = LRUCache(maxsize=max(1, ticket_part_units), getsizeof=_part_size)
        self.text_lock = threading.Lock()

    def text_features(self, ticket_texts: list[str], last_messages: list[str]) -> np.ndarray:
        """(n, text features): each distinct (ticket text, latest message) computed once per worker,
        and each distinct ticket text's part once while it stays in `ticket_part_cache` (the same
        values as computing it all again: tests/serving/test_parity.py)."""
        out = np.empty((len(ticket_texts), len(self.text_columns)))
        missing: dict[bytes, list[int]] = {}
        first: dict[bytes, tuple[str, str]] = {}
        with self.text_lock:
            for i, pair in enumerate(zip(ticket_texts, last_messages, strict=True)):
                key = hashlib.blake2b("\x00".join(pair).encode("utf-8", "surrogatepass"), digest_size=16).digest()
                row = self.text_cache.get(key)
                if row is None:
                    missing.setdefault(key, []).append(i)
                    first.setdefault(key, pair)
                else:
                    out[i] = row
        if missing:
            text = self.text
            digests = {ticket_text: _digest(ticket_text) for ticket_text, _ in first.values()}
            with self.text_lock:
                parts: dict[str, TextPart | None] = {t: self.ticket_part_cache.get(d) for t, d in digests.items()}
            new_parts: dict[str, TextPart] = {}
            rows = []
            for ticket_text, last_message in first.values():
                part = parts[ticket_text]
                if part is None:
                    part = parts[ticket_text] = new_parts[ticket_text] = text.score_part(ticket_text)
                rows.append(text.combine_parts(part, text.score_part(last_message)))
            rows = np.array(rows, dtype="float64")
            with self.text_lock:
                for ticket_text, part in new_parts.items():
                    if part.size <= self.ticket_part_cache.maxsize:
                        self.ticket_part_cache[digests[ticket_text]] = part
                for key, row in zip(first, rows, strict=True):
                    out[missing[key]] = row
                    self.text_cache[key] = row.copy()
        return out

    def transform_many(self, tickets: list[dict]) -> tuple[np.ndarray, list[dict[int, object]]]:
        """Model input rows (float32 values as float64, categories as codes, NaN = missing) and,
        per ticket, the raw values of its categorical columns for showing reasons."""
        n = len(tickets)
        if n == 1:
            return self.transform_one(tickets[0])
        live = getattr(self.history, "live_", None)
        ticket_rows = []
        t_seconds = np.empty(n, dtype=np.int64)
        own_created = np.empty(n)
        entity_keys: dict[str, list[str | None]] = {entity: [] for entity in ENTITIES}
        raw_categories: list[dict[int, object]] = []
        ticket_texts, last_messages = [], []
        for i, ticket in enumerate(tickets):
            t_ns, values = self.ticket_values(ticket)
            ticket_rows.append(values)
            t_seconds[i] = t_ns // 1_000_000_000
            own = self.ticket_created.get(str(ticket["ticket_id"]))
            own_created[i] = np.nan if own is None else float(own)
            for entity, columns in ENTITIES.items():
                entity_keys[entity].append(_entity_key(ticket, columns, self.normalize))
            if self.text is not None:
                ticket_text, last_message = self.ticket_texts(ticket)
                ticket_texts.append(ticket_text)
                last_messages.append(last_message)
            raw_categories.append(self.raw_categories(ticket))

        out = np.full((n, len(self.names)), np.nan)
        out[:, self.ticket_columns] = np.array(ticket_rows, dtype=np.float64)[:, self.ticket_kept]
        if live is None:
            codes = {entity: self.history.entity_codes(entity, keys) for entity, keys in entity_keys.items()}
            history = self.history.transform_arrays(t_seconds, own_created, codes)
        else:
            # The store's overlay too (what transform_one counts ticket by ticket), under its lock.
            with live.lock:
                for i, ticket in enumerate(tickets):
                    if np.isnan(own_created[i]) and (own := live.ticket_created.get(str(ticket["ticket_id"]))) is not None:
                        own_created[i] = float(own)
                codes = {entity: np.array([self.history.entity_code(entity, key) for key in keys], dtype="int64")
                         for entity, keys in entity_keys.items()}
                history = self.history.transform_arrays(t_seconds, own_created, codes, live.arrays())
        out[:, self.history_columns] = np.column_stack([history[name] for name in self.history_names])
        for label_history, slots in self.label_rates:
            rates = label_history.transform_arrays(t_seconds, own_created, codes)
            for i, j in slots:
                out[:, j] = rates[label_history.feature_names_[i]]
        if self.text is not None:
            out[:, self.text_columns] = self.text_features(ticket_texts, last_messages)
        if self.rate_slots:
            for i, ticket in enumerate(tickets):
                for j, value in self.rate_values(ticket):
                    out[i, j] = value
        # The builder stores features as float32; round the same way, then widen for LightGBM.
        out = out.astype(np.float32).astype(np.float64)
        for column, codes_of in self.categories.items():
            j = self.position[column]
            out[:, j] = [np.nan if (v := raw[j]) is None else codes_of.get(v, np.nan) for raw in raw_categories]
        return out, raw_categories

    def transform_one(self, ticket: dict) -> tuple[np.ndarray, list[dict[int, object]]]:
        """transform_many for one ticket, with Python scalars where numpy's per-call cost would
        dominate (the history's binary searches, one list for the row); identical values."""
        t_ns, row = self.ticket_values(ticket)
        ticket_id = str(ticket["ticket_id"])
        own = self.ticket_created.get(ticket_id)
        live = getattr(self.history, "live_", None)
        codes = {}
        with live.lock if live is not None else nullcontext():
            if live is not None and own is None:
                own = live.ticket_created.get(ticket_id)
            for entity, columns in ENTITIES.items():
                codes[entity] = self.history.entity_code(entity, _entity_key(ticket, columns, self.normalize))
            own_seconds = np.nan if own is None else float(own)
            history = self.history.transform_one(t_ns // 1_000_000_000, own_seconds, codes)
        values = [np.nan] * len(self.names)
        for j, value in zip(self.ticket_columns, [row[i] for i in self.ticket_kept], strict=True):
            values[j] = value
        for j, value in zip(self.history_columns, [history[i] for i in self.history_kept], strict=True):
            values[j] = value
        for label_history, slots in self.label_rates:
            rates = label_history.transform_rates_one(t_ns // 1_000_000_000, codes)
            for i, j in slots:
                values[j] = rates[label_history.feature_names_[i]]
        if self.text is not None:
            ticket_text, last_message = self.ticket_texts(ticket)
            text = self.text_features([ticket_text], [last_message])
            for j, value in zip(self.text_columns, text[0].tolist(), strict=True):
                values[j] = value
        for j, value in self.rate_values(ticket) if self.rate_slots else ():
            values[j] = value
        raw = self.raw_categories(ticket)
        for j, column, _ in self.category_slots:
            value = raw[j]
            values[j] = np.nan if value is None else self.categories[column].get(value, np.nan)
        out = np.array(values, dtype=np.float32).astype(np.float64)[None, :]
        return out, [raw]

    def ticket_texts(self, ticket: dict) -> tuple[str, str]:
        """(subject ". " description, latest customer message), each field clipped as in training."""
        limit = self.max_field_chars
        return (clip_text(ticket.get("subject"), limit) + ". " + clip_text(ticket.get("description"), limit),
                clip_text(ticket.get("last_customer_message"), limit))

    def text_warnings(self, ticket: dict) -> list[dict]:
        """A warning {field, value, message} per text field longer than the features read (the rest is
        ignored); the value is the field's length in characters, never its text."""
        if self.text is None:
            return []
        limit = self.max_field_chars
        return [{"field": field, "value": len(value),
                 "message": f"only the first {limit} of its {len(value)} characters were read"}
                for field in TEXT_FIELDS if isinstance(value := ticket.get(field), str) and len(value) > limit]

    def rate_values(self, ticket: dict) -> list[tuple[int, float]]:
        """(feature position, value) of each out-of-fold rate: a ticket opened in the training period
        reads its fold's table, a later one the table over all training rows (FeatureBuilder.transform_rates)."""
        created = _parse(ticket["created_at"])
        fold = None
        if self.rate_cutoff_ns is not None and _ns(created) <= self.rate_cutoff_ns:
            fold = zlib.crc32(str(ticket["ticket_id"]).encode("utf-8")) % RATE_FOLDS
        raw = self.raw_categories(ticket)  # the categorical values in training's normal form
        out = []
        for j, column, table in self.rate_slots:
            value = raw.get(self.position[column])
            rates, prior = (table["all"], table["prior"]) if fold is None else (table["folds"][fold],
                                                                                 table["fold_priors"][fold])
            out.append((j, prior if value is None else rates.get(str(value), prior)))
        return out

    def raw_categories(self, ticket: dict) -> dict[int, object]:
        """The ticket's own values of the categorical columns, by feature position (None = missing)."""
        raw = {}
        extra = ticket.get("extra") or {}  # an importer's extra columns (opened_by, location, ...)
        for j, column, is_priority in self.category_slots:
            value = ticket.get(column, extra.get(column))
            if self.normalize:
                raw[j] = normalize_priority_value(value) if is_priority else normalize_category(value)
            else:
                raw[j] = _normal_priority(value) if is_priority else (None if value is None else str(value))
        return raw

    def ticket_values(self, ticket: dict) -> tuple[int, list[float]]:
        """compute_ticket_features for one ticket: the update time in ns and the values in
        TICKET_FEATURES order."""
        t, created = _parse(ticket["event_time"]), _parse(ticket["created_at"])
        t_ns, created_ns = _ns(t), _ns(created)
        age = (t_ns - created_ns) / _NS_PER_HOUR
        due = _parse(ticket.get("sla_due_at"))
        counters = []
        for column in COUNTER_FEATURES:
            raw = ticket.get(column)
            counters.append(float(max(round(float(raw)), 0)) if raw is not None else 0.0)
        cm, am = counters[2], counters[3]
        priority = (normalize_priority_value if self.normalize else _normal_priority)(ticket.get("priority"))
        return t_ns, [
            age, float(created.hour), float(created.weekday()), float(t.hour), float(t.weekday()),
            float(t.weekday() < 5 and 8 <= t.hour <= 17),
            np.nan if due is None else (_ns(due) - t_ns) / _NS_PER_HOUR,
            np.nan if due is None else float(due < t),
            *counters,
            cm + am, cm / (am + 1), cm / (age / 24 + 1),
            _PRIORITY_RANK.get(priority, np.nan) if priority is not None else np.nan,
        ]

    def show(self, features: np.ndarray, raw_categories: list[dict[int, object]], i: int, j: int) -> object:
        """Ticket i's value of feature j as a reason shows it (see bundle.model.show_value)."""
        value = features[i, j]
        if j in self.category_names:
            if np.isnan(value):
                return UNSEEN if raw_categories[i][j] is not None else MISSING
            return self.category_names[j][int(value)]
        return MISSING if np.isnan(value) else float(value)


def _digest(text: str) -> bytes:
    """A text's cache key: 16 bytes however long the text."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _part_size(part) -> int:
    return part.size


def _entity_key(ticket: dict, columns: tuple[str, ...], normalize: bool = False) -> str | None:
    """The history index key of an entity: its columns' values joined, None when one is missing.
    Canonical categorical columns (the category) are in normal form as in the validated log."""
    parts = []
    for column in columns:
        value = ticket.get(column)
        if normalize and column in CATEGORICAL_COLUMNS:
            value = normalize_category(value)
        if value is None:
            return None
        parts.append(str(value))
    return parts[0] if len(parts) == 1 else "\x1f".join(parts)


@lru_cache(maxsize=1024)  # a handful of distinct values in practice; bounded because clients send them
def _normal_priority(value: object) -> str | None:
    if value is None:
        return None
    priority = str(value).strip().lower()
    return PRIORITY_ALIASES.get(priority, priority)
