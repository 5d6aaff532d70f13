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

New texts are cheap without changing a value (tests/features/test_text_and_build.py compares
each shortcut with the plain computation bit for bit): a cue pattern runs with only the
alternatives whose literal the text holds (none: no run), the embedding's tokens and n-grams
are scikit-learn's rebuilt without its per-call overhead, and a row can be assembled from the
ticket text's part and the latest message's (`TextFeatures.score_part`, `combine_parts`), so
features.online keeps a ticket text's part and scores only the new message on an update.

The learned state (the vocabulary, idf weights and SVD components) is plain data:
`state()` returns JSON-ready values and float64 arrays, `TextFeatures.from_state` rebuilds
the same object from them (the model bundle stores them as JSON and .npz, never a pickle).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache, partial
from itertools import compress
from operator import is_not, mul

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
# Per cue, one literal for each top-level alternative of its pattern, in the same order: a
# substring every match of that alternative contains (tests/features/test_text_and_build.py
# derives them from the patterns). An alternative whose literal the text lacks cannot match
# anywhere in it, so it can be left out of the alternation without changing any match.
CUE_LITERALS = {
    "anger": ("unacceptable", "furious", "outrageous", "ridiculous", "disgust", "angry", "fed up", "appalling",
              "worst", "terrible", "joke"),
    "repeat_contact": (" time", "again", "already ", "still ", "last week", "keep calling", "no one "),
    "supervisor": ("supervisor", "manager", "escalat", "someone senior", "team lead", "higher up"),
    "legal": ("lawyer", "solicitor", "attorney", "legal action", "court", "ombudsman", "regulator", "sue",
              "trading standards", "complaint to"),
    "cancellation": ("cancel", "close my account", "switch", "leave your", "terminate"),
    "outage": ("outage", "down", "not working", "offline", "no service", "cannot connect", "can't connect",
               "service interruption"),
    "urgency": ("urgent", "asap", "immediately", "right now", "emergency", "today"),
    "politeness": ("thank", "please", "appreciate", "kind regards", "no rush", "when you can"),
}
# scikit-learn's default token pattern (TfidfVectorizer.token_pattern) is r"(?u)\b\w\w+\b": the
# runs of 2+ word characters. This finds the same runs without the boundary checks: greedy \w
# repetition ends at a run's end, and a left-to-right scan enters a run at its start; \b and \w
# test the same characters (alphanumeric or "_").
TOKEN_PATTERN = r"\w{2,}"
# 1 + log(count), the sublinear term frequency, for the counts a short text has.
SUBLINEAR_TF = [0.0] + [1.0 + math.log(count) for count in range(1, 256)]


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
    out = np.empty((len(texts), len(CUE_PATTERNS)))
    for i, text in enumerate(texts):
        out[i] = count_cues_one(text)
    return out


def count_cues_one(text: str) -> list[int]:
    """Matches of each cue pattern (CUE_PATTERNS order) in the lower-cased text, `len(findall)`:
    0 without running the pattern when the text holds none of its CUE_LITERALS, otherwise the
    matches of the alternation of only the alternatives whose literal it holds (in their order,
    so each position tries the same alternatives first: the same matches)."""
    lowered = text.lower()
    holds = lowered.__contains__
    counts = []
    for cue, literals in enumerate(compile_cue_literals()):
        present = tuple(compress(range(len(literals)), map(holds, literals)))  # the alternatives that can match
        counts.append(len(compile_cue_alternatives(cue, present).findall(lowered)) if present else 0)
    return counts


def split_alternatives(pattern: str) -> list[str]:
    """The top-level alternatives of a regular expression ("|" outside groups and classes; the
    cue patterns escape no parenthesis, bracket or bar)."""
    parts, depth, start, in_class = [], 0, 0, False
    for i, char in enumerate(pattern):
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            parts.append(pattern[start:i])
            start = i + 1
    return [*parts, pattern[start:]]


@lru_cache(maxsize=1)
def compile_cue_literals() -> tuple[tuple[str, ...], ...]:
    """CUE_LITERALS in CUE_PATTERNS order; ValueError when a cue's literals do not pair with its alternatives."""
    for cue, pattern in CUE_PATTERNS.items():
        if len(split_alternatives(pattern)) != len(CUE_LITERALS[cue]):
            raise ValueError(f"cue {cue!r}: {len(CUE_LITERALS[cue])} literals for "
                             f"{len(split_alternatives(pattern))} alternatives")
    return tuple(CUE_LITERALS[cue] for cue in CUE_PATTERNS)


@lru_cache(maxsize=4096)  # bounded: a handful of alternative sets occur in practice
def compile_cue_alternatives(cue: int, present: tuple[int, ...]) -> re.Pattern:
    """The cue pattern at position `cue` with only the alternatives numbered in `present`."""
    alternatives = split_alternatives(list(CUE_PATTERNS.values())[cue])
    return re.compile("|".join(alternatives[k] for k in present))


def count_words(texts: Sequence[str]) -> np.ndarray:
    """(n,) words of each text (float64), as `count_words_one`."""
    return np.array([count_words_one(text) for text in texts], dtype="float64")


def count_words_one(text: str) -> int:
    """The runs of non-space characters (the matches of the pattern \\S+): what str.split() returns, as
    both split at the characters str.isspace() accepts."""
    return len(text.split())


def score_sentiment_one(text: str) -> float:
    """VADER compound score in [-1, 1] (features.sentiment, linear time); empty text is neutral (0)."""
    return load_linear_vader().compound_score(text) if text else 0.0


def score_sentiment(texts: Sequence[str]) -> np.ndarray:
    return np.array([score_sentiment_one(text) for text in texts], dtype="float64")


def build_analyzer(ngram_max: int):
    """scikit-learn's word analyzer (lower-case, tokens of 2+ word characters, 1..ngram_max-grams):
    the reference `TextEmbedding.analyze` reproduces (tests/features/test_text_and_build.py)."""
    return TfidfVectorizer(ngram_range=(1, ngram_max)).build_analyzer()


@lru_cache(maxsize=1)
def compile_token_pattern() -> re.Pattern:
    return re.compile(TOKEN_PATTERN)


def tokenize(text: str) -> list[str]:
    """scikit-learn's word tokens of a text: TOKEN_PATTERN's matches in the lower-cased text."""
    return compile_token_pattern().findall(text.lower())


def make_ngrams(tokens: list[str], ngram_max: int) -> list[str]:
    """The 1..ngram_max-grams of tokens in scikit-learn's order (`_VectorizerMixin._word_ngrams`):
    the tokens, then each size's n-grams (tokens joined by one space) left to right."""
    grams = list(tokens)
    if ngram_max >= 2:
        grams += map(" ".join, zip(tokens, tokens[1:], strict=False))
    for n in range(3, min(ngram_max, len(tokens)) + 1):
        grams += [" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return grams


class TextEmbedding:
    """TF-IDF (sublinear tf, idf, l2) followed by the SVD projection, as one sparse pass.

    Equal to scikit-learn's `svd.transform(vectorizer.transform(texts))` up to float rounding
    (tests/features/test_text_and_build.py), from the fitted vocabulary, idf weights and SVD
    components alone, and without scikit-learn's per-call validation, which costs a live ticket
    more than the arithmetic. Training and serving both embed through this class, so they agree exactly.

    A text's embedding depends only on the counts of its known n-grams (`find_terms`), so the
    embedding of "ticket text. message" can also be built from the two parts' terms plus the
    n-grams that span the join (`join_terms`): the same counts, so the same bits.
    """

    def __init__(self, terms: list[str], idf: np.ndarray, components: np.ndarray, ngram_max: int,
                 sublinear: bool = True):
        self.ngram_max = ngram_max
        self.vocabulary = {term: i for i, term in enumerate(terms)}
        self.idf = np.asarray(idf, dtype="float64")
        self.idf_values: list[float] = self.idf.tolist()
        self.projection = np.ascontiguousarray(np.asarray(components, dtype="float64").T)  # (terms, components)
        self.sublinear = sublinear

    def analyze(self, text: str) -> list[str]:
        """scikit-learn's analyzer (`build_analyzer(ngram_max)`): the text's n-grams, in its order."""
        return make_ngrams(tokenize(text), self.ngram_max)

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
        """One text's projection (None when it has no known term): `embed_counts` of its n-gram counts."""
        return self.embed_counts(Counter(self.find_terms(tokenize(text))))

    def find_terms(self, tokens: list[str]) -> list[int]:
        """The vocabulary indices of the known 1..ngram_max-grams of a token list, in n-gram order."""
        return list(filter(partial(is_not, None), map(self.vocabulary.get, make_ngrams(tokens, self.ngram_max))))

    def join_terms(self, left: list[int], left_tail: list[str], right: list[int], right_head: list[str]) -> list[int]:
        """The known n-grams (`find_terms`) of two token lists put end to end, from each one's terms
        and its last / first `ngram_max - 1` tokens: both lists, then the n-grams across the join."""
        joined = left + right
        known = self.vocabulary.get
        for n in range(2, self.ngram_max + 1):
            for from_left in range(max(1, n - len(right_head)), min(n - 1, len(left_tail)) + 1):
                gram = " ".join(left_tail[len(left_tail) - from_left:] + right_head[:n - from_left])
                if (i := known(gram)) is not None:
                    joined.append(i)
        return joined

    def embed_counts(self, counted: dict[int, int]) -> np.ndarray | None:
        """The projection of n-gram counts (None when empty): tf (1 + log count when sublinear)
        times idf, l2-normalised, times the SVD components. Terms in index order; the weights in
        plain floats (the squares summed one by one) and the projection summed row by row without
        BLAS (whose results can depend on memory alignment), so every call on the same counts
        gives the same bits. (1 + log count comes from a table for counts below 256: the same floats.)"""
        if not counted:
            return None
        terms = sorted(counted)
        counts = list(map(counted.__getitem__, terms))
        idf = map(self.idf_values.__getitem__, terms)
        if not self.sublinear:
            weights = list(map(mul, counts, idf))
        elif max(counts) < len(SUBLINEAR_TF):
            weights = list(map(mul, map(SUBLINEAR_TF.__getitem__, counts), idf))
        else:
            weights = [(1.0 + math.log(count)) * w for count, w in zip(counts, idf, strict=True)]
        norm = math.sqrt(sum(map(mul, weights, weights)))
        scaled = np.array(weights) / norm  # IEEE division, element by element: as w / norm in Python
        rows = self.projection.take(terms, axis=0)  # (terms, components), C order
        np.multiply(rows, scaled[:, None], out=rows)
        return np.add.reduce(rows, axis=0)  # row after row, as ndarray.sum(axis=0)


class TextPart:
    """What one text field contributes to a row: its cue counts, sentiment and word count, and,
    for the embedding of the joined text, its known n-grams' vocabulary indices and its first and last
    `ngram_max - 1` tokens (`TextFeatures.score_part`, combined by `TextFeatures.combine_parts`)."""

    __slots__ = ("cues", "sentiment", "words", "terms", "head", "tail")

    def __init__(self, cues: list[int], sentiment: float, words: int, terms: list[int] | None,
                 head: list[str], tail: list[str]):
        self.cues, self.sentiment, self.words = cues, sentiment, words
        self.terms, self.head, self.tail = terms, head, tail

    @property
    def size(self) -> int:
        """The part's memory in units of 8 bytes, roughly (for caches bounded by content): a
        list slot per term plus about 640 bytes for the rest (measured on 60-word texts)."""
        return 80 + (len(self.terms) if self.terms else 0)


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
        return np.array([self.combine_parts(self.score_part(t), self.score_part(m))
                         for t, m in zip(ticket_texts, last_messages, strict=True)], dtype="float64").reshape(
            len(ticket_texts), len(self.feature_names_))

    def transform_one(self, ticket_text: str, last_message: str) -> np.ndarray:
        """transform_texts for one ticket: (1, features)."""
        return np.array(self.combine_parts(self.score_part(ticket_text), self.score_part(last_message)),
                        dtype="float64")[None, :]

    def score_part(self, text: str) -> TextPart:
        """One field's share of the text features (a joined ticket text, or a latest message)."""
        embedding = self.embedding
        terms, head, tail = None, [], []
        if embedding is not None:
            tokens = tokenize(text)
            terms = embedding.find_terms(tokens)
            keep = self.ngram_max - 1
            head, tail = tokens[:keep], (tokens[max(0, len(tokens) - keep):] if keep else [])
        return TextPart(count_cues_one(text), score_sentiment_one(text), count_words_one(text),
                        terms, head, tail)

    def combine_parts(self, ticket: TextPart, message: TextPart) -> list[float]:
        """The row (feature_names_ order) of a ticket text and a latest message from their parts:
        the same values as `transform` of the two texts, the embedding's of "ticket. message"
        included (the separator ". " holds no word character, so the joined text's tokens are the
        ticket's then the message's, and its n-grams theirs plus those across the join)."""
        row = [*ticket.cues, *message.cues, ticket.sentiment, message.sentiment, ticket.words]
        embedding = self.embedding
        if embedding is not None:
            projected = embedding.embed_counts(Counter(embedding.join_terms(ticket.terms, ticket.tail,
                                                                            message.terms, message.head)))
            row += [0.0] * len(self.components_) if projected is None else projected.tolist()
        return row

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
