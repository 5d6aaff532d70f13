"""Text features from subject, description and the latest customer message.

Three views, cheapest first: counts of the cue phrases escalations follow (anger, repeat
contact, asking for a supervisor, legal or regulator threats, cancellation, outages), VADER
sentiment, and a low-rank TF-IDF embedding learned from the training period's texts.
Every text is scored once however many snapshots share it.

Bounded and linear: each text field (subject, description, latest customer message) is read
up to `max_field_chars` characters (10,000 by default, params `text.max_field_chars`; the rest
is ignored, in training and serving alike, and the service warns about it), and every step is
linear in what is read: the cue patterns match without nested repetition (a digit run is
entered at its start only), VADER runs in linear time (features.sentiment) and the embedding
is one pass over the tokens.

The learned state (the vocabulary, idf weights and SVD components) is plain data:
`state()` returns JSON-ready values and float64 arrays, `TextFeatures.from_state` rebuilds
the same object from them (the model bundle stores them as JSON and .npz, never a pickle).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import pandas as pd
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer

from features.sentiment import load_linear_vader

MAX_FIELD_CHARS = 10_000
TEXT_FIELDS = ("subject", "description", "last_customer_message")
CUE_PATTERNS = {
    "anger": r"unacceptable|furious|outrageous|ridiculous|disgust|angry|fed up|appalling|worst|terrible|joke",
    "repeat_contact": r"(?:second|third|fourth|fifth|(?<!\d)\d+(?:st|nd|rd|th)) time|again|already (?:called|contacted|"
    r"spoke|told|emailed|written)|still (?:not|no|waiting)|last week|keep calling|no one (?:has )?(?:called|replied)",
    "supervisor": r"supervisor|manager|escalat|someone senior|team lead|higher up",
    "legal": r"lawyer|solicitor|attorney|legal action|court|ombudsman|regulator|sue\b|trading standards|complaint to",
    "cancellation": r"cancel|close my account|switch(?:ing)? (?:to )?(?:provider|another)|leave your|terminate",
    "outage": r"outage|\bdown\b|not working|offline|no service|cannot connect|can't connect|service interruption",
    "urgency": r"urgent|asap|immediately|right now|emergency|today",
    "politeness": r"thank|please|appreciate|kind regards|no rush|when you can",
}


def clip_text(value: object, limit: int) -> str:
    """A field's text as the features read it: at most `limit` characters ("" for missing)."""
    return "" if value is None else str(value)[:limit]


def _field(snapshots: pd.DataFrame, column: str, limit: int) -> pd.Series:
    if column not in snapshots:
        return pd.Series("", index=snapshots.index, dtype="string")
    return snapshots[column].astype("string").fillna("").str.slice(0, limit)


def join_ticket_text(snapshots: pd.DataFrame, limit: int = MAX_FIELD_CHARS) -> pd.Series:
    """Subject and description, each clipped to `limit` characters, joined by ". "."""
    parts = [_field(snapshots, c, limit) for c in ("subject", "description") if c in snapshots]
    text = parts[0] if parts else pd.Series("", index=snapshots.index, dtype="string")
    for part in parts[1:]:
        text = text + ". " + part
    return text


def _score_unique(texts: pd.Series, score) -> np.ndarray:
    """Apply a per-text scorer once per distinct text and broadcast back."""
    codes, uniques = pd.factorize(texts.fillna(""))
    scored = score(list(uniques))
    return np.asarray(scored)[codes]


def count_cues(texts: Sequence[str]) -> np.ndarray:
    """(n, cues) matches of each cue pattern in the lower-cased text."""
    patterns = compile_cue_patterns()
    out = np.empty((len(texts), len(patterns)))
    for i, text in enumerate(texts):
        lowered = text.lower()
        out[i] = [len(pattern.findall(lowered)) for pattern in patterns]
    return out


def count_words(texts: Sequence[str]) -> np.ndarray:
    words = compile_word_pattern()
    return np.array([len(words.findall(text)) for text in texts], dtype="float64")


@lru_cache(maxsize=1)
def compile_cue_patterns() -> tuple[re.Pattern, ...]:
    return tuple(re.compile(p) for p in CUE_PATTERNS.values())


@lru_cache(maxsize=1)
def compile_word_pattern() -> re.Pattern:
    return re.compile(r"\S+")


def score_sentiment_one(text: str) -> float:
    """VADER compound score in [-1, 1] (features.sentiment, linear time); empty text is neutral (0)."""
    return load_linear_vader().compound_score(text) if text else 0.0


def score_sentiment(texts: Sequence[str]) -> np.ndarray:
    return np.array([score_sentiment_one(text) for text in texts], dtype="float64")


def build_analyzer(ngram_max: int):
    """scikit-learn's word analyzer (lower-case, tokens of 2+ word characters, 1..ngram_max-grams)."""
    return TfidfVectorizer(ngram_range=(1, ngram_max)).build_analyzer()


class TextEmbedding:
    """TF-IDF (sublinear tf, idf, l2) followed by the SVD projection, as one sparse pass.

    Equal to scikit-learn's `svd.transform(vectorizer.transform(texts))` up to float rounding
    (tests/features/test_text_and_build.py), from the fitted vocabulary, idf weights and SVD
    components alone, and without scikit-learn's per-call validation, which costs a live ticket
    more than the arithmetic. Training and serving both embed through this class, so they agree exactly.
    """

    def __init__(self, terms: list[str], idf: np.ndarray, components: np.ndarray, ngram_max: int,
                 sublinear: bool = True):
        self.analyze = build_analyzer(ngram_max)
        self.vocabulary = {term: i for i, term in enumerate(terms)}
        self.idf = np.asarray(idf, dtype="float64")
        self.idf_values: list[float] = self.idf.tolist()
        self.projection = np.ascontiguousarray(np.asarray(components, dtype="float64").T)  # (terms, components)
        self.sublinear = sublinear

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        """(n, components): each text through `embed`, so a batch and single texts agree bit for bit."""
        out = np.zeros((len(texts), self.projection.shape[1]))
        for i, text in enumerate(texts):
            row = self.embed(text)
            if row is not None:
                out[i] = row
        return out

    def transform_one(self, text: str) -> np.ndarray:
        """`transform` of one text, shape (1, components)."""
        out = np.zeros((1, self.projection.shape[1]))
        row = self.embed(text)
        if row is not None:
            out[0] = row
        return out

    def embed(self, text: str) -> np.ndarray | None:
        """One text's projection (None when it has no known term): tf (1 + log count when sublinear)
        times idf, l2-normalised, times the SVD components. Terms in index order; the weights in
        plain floats and the projection summed row by row without BLAS (whose results can depend
        on memory alignment), so every call on the same text gives the same bits."""
        known = self.vocabulary.get
        found = [i for token in self.analyze(text) if (i := known(token)) is not None]
        if not found:
            return None
        counted = Counter(found)
        terms = sorted(counted)
        idf = self.idf_values
        if self.sublinear:
            weights = [(1.0 + math.log(counted[t])) * idf[t] for t in terms]
        else:
            weights = [counted[t] * idf[t] for t in terms]
        norm = math.sqrt(sum(w * w for w in weights))
        scaled = np.array([w / norm for w in weights])
        return (scaled[:, None] * self.projection[terms]).sum(axis=0)


class TextFeatures:
    """Cue counts and sentiment (stateless) plus a TF-IDF+SVD embedding fitted on training texts.

    Learned state: `terms_` (the vocabulary in column order), `idf_` (float64, one per term) and
    `components_` (float64, SVD components x terms); all None when there were too few texts.
    """

    PARAMS = ("max_features", "ngram_max", "min_df", "svd_components", "seed", "max_fit_texts", "max_field_chars")

    def __init__(self, max_features: int = 20000, ngram_max: int = 2, min_df: int = 3, svd_components: int = 24,
                 seed: int = 42, max_fit_texts: int = 200_000, max_field_chars: int = MAX_FIELD_CHARS):
        self.max_features = max_features
        self.ngram_max = ngram_max
        self.min_df = min_df
        self.svd_components = svd_components
        self.seed = seed
        self.max_fit_texts = max_fit_texts
        self.max_field_chars = max_field_chars

    def ticket_text(self, snapshots: pd.DataFrame) -> pd.Series:
        return join_ticket_text(snapshots, self.max_field_chars)

    def last_message(self, snapshots: pd.DataFrame) -> pd.Series:
        return _field(snapshots, "last_customer_message", self.max_field_chars)

    def fit(self, snapshots: pd.DataFrame) -> TextFeatures:
        # Sorted: the fit depends on the set of texts, not on the order rows arrive in (one machine or Dask).
        texts = (self.ticket_text(snapshots) + ". " + self.last_message(snapshots)).drop_duplicates().sort_values()
        if len(texts) > self.max_fit_texts:
            texts = texts.sample(self.max_fit_texts, random_state=self.seed)
        self.terms_: list[str] | None = None
        self.idf_: np.ndarray | None = None
        self.components_: np.ndarray | None = None
        if self.svd_components > 0 and len(texts) >= max(10, self.min_df):
            vectorizer = TfidfVectorizer(
                max_features=self.max_features,
                ngram_range=(1, self.ngram_max),
                min_df=self.min_df,
                sublinear_tf=True,
                dtype=np.float32,
            )
            matrix = vectorizer.fit_transform(texts.to_numpy(dtype=object))
            n_components = min(self.svd_components, matrix.shape[1] - 1)
            if n_components >= 1:
                svd = TruncatedSVD(n_components=n_components, random_state=self.seed).fit(matrix)
                self.terms_ = sorted(vectorizer.vocabulary_, key=vectorizer.vocabulary_.get)
                self.idf_ = np.asarray(vectorizer.idf_, dtype="float64")
                self.components_ = np.asarray(svd.components_, dtype="float64")
        self.feature_names_ = self._feature_names()
        self._embedding = None
        return self

    def _feature_names(self) -> list[str]:
        names = [f"cue_{c}" for c in CUE_PATTERNS] + [f"last_message_cue_{c}" for c in CUE_PATTERNS]
        names += ["sentiment_description", "sentiment_last_message", "description_words"]
        if self.components_ is not None:
            names += [f"text_svd_{i}" for i in range(len(self.components_))]
        return names

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """The parameters and learned state as JSON-ready values, and the arrays (float64)."""
        values = {name: getattr(self, name) for name in self.PARAMS}
        values |= {"terms": self.terms_, "feature_names": list(self.feature_names_)}
        arrays = {} if self.components_ is None else {"idf": self.idf_, "components": self.components_}
        return values, arrays

    @classmethod
    def from_state(cls, values: dict, arrays: dict[str, np.ndarray]) -> TextFeatures:
        """The fitted object `state()` describes; ValueError when the parts do not fit together."""
        text = cls(**{name: values[name] for name in cls.PARAMS})
        terms = values.get("terms")
        text.terms_, text.idf_, text.components_ = None, None, None
        if terms is not None:
            idf, components = arrays.get("idf"), arrays.get("components")
            if idf is None or components is None:
                raise ValueError("the text embedding lists terms but its idf or components arrays are missing")
            if idf.shape != (len(terms),) or components.ndim != 2 or components.shape[1] != len(terms):
                raise ValueError(f"text embedding arrays do not fit {len(terms)} terms (idf {idf.shape}, "
                                 f"components {components.shape})")
            if not (np.isfinite(idf).all() and np.isfinite(components).all()):
                raise ValueError("text embedding arrays hold NaN or infinite values")
            text.terms_, text.idf_, text.components_ = list(terms), idf, components
        text.feature_names_ = text._feature_names()
        if text.feature_names_ != list(values["feature_names"]):
            raise ValueError("the text features' names do not match their learned state")
        text._embedding = None
        return text

    @property
    def embedding(self) -> TextEmbedding | None:
        """The fast TF-IDF+SVD pass, compiled on first use."""
        if self.components_ is None:
            return None
        if getattr(self, "_embedding", None) is None:
            self._embedding = TextEmbedding(self.terms_, self.idf_, self.components_, self.ngram_max)
        return self._embedding

    def transform_texts(self, ticket_texts: Sequence[str], last_messages: Sequence[str]) -> np.ndarray:
        """(n, features) in feature_names_ order, from joined ticket texts and latest messages
        (each field already clipped to max_field_chars: features.online does that)."""
        if len(ticket_texts) == 1:
            return self.transform_one(ticket_texts[0], last_messages[0])
        parts = [count_cues(ticket_texts), count_cues(last_messages),
                 score_sentiment(ticket_texts)[:, None], score_sentiment(last_messages)[:, None],
                 count_words(ticket_texts)[:, None]]
        if self.embedding is not None:
            parts.append(self.embedding.transform([t + ". " + m for t, m in zip(ticket_texts, last_messages,
                                                                                 strict=True)]))
        return np.hstack(parts)

    def transform_one(self, ticket_text: str, last_message: str) -> np.ndarray:
        """transform_texts for one ticket: (1, features), built as one list instead of five arrays."""
        patterns = compile_cue_patterns()
        lowered, lowered_message = ticket_text.lower(), last_message.lower()
        values = [len(p.findall(lowered)) for p in patterns] + [len(p.findall(lowered_message)) for p in patterns]
        values += [score_sentiment_one(ticket_text), score_sentiment_one(last_message),
                   len(compile_word_pattern().findall(ticket_text))]
        row = np.array(values, dtype="float64")
        if self.embedding is not None:
            row = np.concatenate([row, self.embedding.transform_one(ticket_text + ". " + last_message)[0]])
        return row[None, :]

    def transform(self, snapshots: pd.DataFrame) -> pd.DataFrame:
        ticket_text = self.ticket_text(snapshots)
        last_message = self.last_message(snapshots)
        n_cues = len(CUE_PATTERNS)
        out = np.empty((len(snapshots), len(self.feature_names_)))
        out[:, :n_cues] = _score_unique(ticket_text, count_cues)
        out[:, n_cues:2 * n_cues] = _score_unique(last_message, count_cues)
        out[:, 2 * n_cues] = _score_unique(ticket_text, score_sentiment)
        out[:, 2 * n_cues + 1] = _score_unique(last_message, score_sentiment)
        out[:, 2 * n_cues + 2] = _score_unique(ticket_text, count_words)
        if self.embedding is not None:
            out[:, 2 * n_cues + 3:] = _score_unique(ticket_text + ". " + last_message, self.embedding.transform)
        return pd.DataFrame(out, columns=self.feature_names_, index=snapshots.index)
