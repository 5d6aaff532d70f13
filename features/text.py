"""Text features from subject, description and the latest customer message.

Three views, cheapest first: counts of the cue phrases escalations follow (anger, repeat
contact, asking for a supervisor, legal or regulator threats, cancellation, outages), VADER
sentiment, and a low-rank TF-IDF embedding learned from the training period's texts.
Every text is scored once however many snapshots share it.
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np
import pandas as pd
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

CUE_PATTERNS = {
    "anger": r"unacceptable|furious|outrageous|ridiculous|disgust|angry|fed up|appalling|worst|terrible|joke",
    "repeat_contact": r"(?:second|third|fourth|fifth|\d+(?:st|nd|rd|th)) time|again|already (?:called|contacted|"
    r"spoke|told|emailed|written)|still (?:not|no|waiting)|last week|keep calling|no one (?:has )?(?:called|replied)",
    "supervisor": r"supervisor|manager|escalat|someone senior|team lead|higher up",
    "legal": r"lawyer|solicitor|attorney|legal action|court|ombudsman|regulator|sue\b|trading standards|complaint to",
    "cancellation": r"cancel|close my account|switch(?:ing)? (?:to )?(?:provider|another)|leave your|terminate",
    "outage": r"outage|\bdown\b|not working|offline|no service|cannot connect|can't connect|service interruption",
    "urgency": r"urgent|asap|immediately|right now|emergency|today",
    "politeness": r"thank|please|appreciate|kind regards|no rush|when you can",
}


def join_ticket_text(snapshots: pd.DataFrame) -> pd.Series:
    parts = [snapshots[c].astype("string").fillna("") for c in ("subject", "description") if c in snapshots]
    text = parts[0] if parts else pd.Series("", index=snapshots.index, dtype="string")
    for part in parts[1:]:
        text = text + ". " + part
    return text


def _last_message(snapshots: pd.DataFrame) -> pd.Series:
    if "last_customer_message" not in snapshots:
        return pd.Series("", index=snapshots.index, dtype="string")
    return snapshots["last_customer_message"].astype("string").fillna("")


def _score_unique(texts: pd.Series, score) -> np.ndarray:
    """Apply a per-text scorer once per distinct text and broadcast back."""
    codes, uniques = pd.factorize(texts.fillna(""))
    scored = score(pd.Series(uniques, dtype="string"))
    return np.asarray(scored)[codes]


def count_cues(texts: pd.Series) -> pd.DataFrame:
    def score(uniques: pd.Series) -> np.ndarray:
        lowered = uniques.str.lower()
        return np.column_stack(
            [lowered.str.count(re.compile(p)).to_numpy(dtype="float64") for p in CUE_PATTERNS.values()]
        )

    return pd.DataFrame(_score_unique(texts, score), columns=list(CUE_PATTERNS), index=texts.index)


@lru_cache(maxsize=1)
def load_sentiment_analyzer() -> SentimentIntensityAnalyzer:
    """Built once per process: it reads VADER's lexicon file, too slow to repeat per request."""
    return SentimentIntensityAnalyzer()


def score_sentiment(texts: pd.Series) -> np.ndarray:
    """VADER compound score in [-1, 1]; empty text is neutral (0)."""
    analyzer = load_sentiment_analyzer()

    def score(uniques: pd.Series) -> np.ndarray:
        return np.array([analyzer.polarity_scores(t)["compound"] if t else 0.0 for t in uniques])

    return _score_unique(texts, score)


class TextFeatures:
    """Cue counts and sentiment (stateless) plus a TF-IDF+SVD embedding fitted on training texts."""

    def __init__(self, max_features: int = 20000, ngram_max: int = 2, min_df: int = 3, svd_components: int = 24,
                 seed: int = 42, max_fit_texts: int = 200_000):
        self.max_features = max_features
        self.ngram_max = ngram_max
        self.min_df = min_df
        self.svd_components = svd_components
        self.seed = seed
        self.max_fit_texts = max_fit_texts

    def fit(self, snapshots: pd.DataFrame) -> TextFeatures:
        texts = (join_ticket_text(snapshots) + ". " + _last_message(snapshots)).drop_duplicates()
        if len(texts) > self.max_fit_texts:
            texts = texts.sample(self.max_fit_texts, random_state=self.seed)
        self.vectorizer_ = None
        self.svd_ = None
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
                self.vectorizer_ = vectorizer
                self.svd_ = TruncatedSVD(n_components=n_components, random_state=self.seed).fit(matrix)
        self.feature_names_ = self._feature_names()
        return self

    def _feature_names(self) -> list[str]:
        names = [f"cue_{c}" for c in CUE_PATTERNS] + [f"last_message_cue_{c}" for c in CUE_PATTERNS]
        names += ["sentiment_description", "sentiment_last_message", "description_words"]
        if self.svd_ is not None:
            names += [f"text_svd_{i}" for i in range(self.svd_.n_components)]
        return names

    def transform(self, snapshots: pd.DataFrame) -> pd.DataFrame:
        ticket_text = join_ticket_text(snapshots)
        last_message = _last_message(snapshots)
        cues = count_cues(ticket_text).add_prefix("cue_")
        last_cues = count_cues(last_message).add_prefix("last_message_cue_")
        frame = pd.concat([cues, last_cues], axis=1)
        frame["sentiment_description"] = score_sentiment(ticket_text)
        frame["sentiment_last_message"] = score_sentiment(last_message)
        frame["description_words"] = _score_unique(
            ticket_text, lambda u: u.str.count(r"\S+").to_numpy(dtype="float64")
        )
        if self.svd_ is not None:
            combined = ticket_text + ". " + last_message

            def embed(uniques: pd.Series) -> np.ndarray:
                return self.svd_.transform(self.vectorizer_.transform(uniques.to_numpy(dtype=object)))

            svd = _score_unique(combined, embed)
            for i in range(svd.shape[1]):
                frame[f"text_svd_{i}"] = svd[:, i]
        return frame[self.feature_names_]
