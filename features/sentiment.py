"""VADER's compound sentiment score in time linear in the text's length.

Source of the method, lexicons and constants: Hutto & Gilbert (2014), "VADER: A Parsimonious
Rule-based Model for Sentiment Analysis of Social Media Text", ICWSM-14, as implemented by the
vaderSentiment package (pinned), whose lexicon files and rule constants are read from it here.

vaderSentiment's `polarity_scores` is quadratic in the number of words: for every lexicon word
it lower-cases the whole text again (up to four times, in `_negation_check` and
`_special_idioms_check`), and its "but" rule looks each score up with `list.index`. This module
applies the same rules in the same order to words lower-cased once, and replays the "but" rule
with a first-position index per value, so `compound_score(text)` equals
`SentimentIntensityAnalyzer().polarity_scores(text)["compound"]` on every text (checked against
the package in tests/features/test_sentiment.py), in O(n log n) at worst and O(n) without "but".
Only the compound score is computed: it is the one the features use.
"""

from __future__ import annotations

import heapq
import math
import re
import string
from functools import lru_cache

from vaderSentiment import vaderSentiment as vader

B_INCR, C_INCR, N_SCALAR = vader.B_INCR, vader.C_INCR, vader.N_SCALAR
BOOSTER_DICT = vader.BOOSTER_DICT
SPECIAL_CASES = vader.SPECIAL_CASES
NEGATE = frozenset(vader.NEGATE)
_PUNCTUATION = string.punctuation


class LinearVader:
    """The lexicons of vaderSentiment's analyzer, and its compound score in linear time."""

    def __init__(self) -> None:
        analyzer = vader.SentimentIntensityAnalyzer()
        self.lexicon: dict[str, float] = analyzer.lexicon
        # polarity_scores replaces emojis one character at a time, so only one-character keys can match.
        self.emojis = {k: v for k, v in analyzer.emojis.items() if len(k) == 1}
        self.emoji_chars = frozenset(self.emojis)

    def replace_emojis(self, text: str) -> str:
        """Each emoji by its description, a space before it unless it follows a space or starts the text."""
        present = self.emoji_chars.intersection(text)  # one pass in C; most texts have none
        if not present:
            return text
        emojis = self.emojis
        pattern = re.compile("[" + "".join(re.escape(k) for k in sorted(present)) + "]")

        def describe(match: re.Match) -> str:
            start = match.start()
            return (" " if start > 0 and text[start - 1] != " " else "") + emojis[match.group()]

        return pattern.sub(describe, text)

    def compound_score(self, text: str) -> float:
        """VADER's normalised, rounded compound score in [-1, 1] (0.0 for text without sentiment words)."""
        text = self.replace_emojis(text).strip()
        words = [_strip_punc_if_word(token) for token in text.split()]
        if not words:
            return 0.0
        lower = [w.lower() for w in words]
        n = len(words)
        allcaps = sum(1 for w in words if w.isupper())
        is_cap_diff = 0 < n - allcaps < n
        lexicon = self.lexicon
        sentiments: list[float] = []
        append = sentiments.append
        for i, item_lower in enumerate(lower):
            if item_lower not in lexicon or item_lower in BOOSTER_DICT:
                append(0)
                continue
            if item_lower == "kind" and i < n - 1 and lower[i + 1] == "of":
                append(0)
                continue
            append(self._valence(words, lower, i, is_cap_diff))
        if "but" in lower:
            _but_check(lower.index("but"), sentiments)
        sum_s = float(sum(sentiments))
        emphasis = _punctuation_emphasis(text)
        if sum_s > 0:
            sum_s += emphasis
        elif sum_s < 0:
            sum_s -= emphasis
        return round(_normalize(sum_s), 4)

    def _valence(self, words: list[str], lower: list[str], i: int, is_cap_diff: bool) -> float:
        """SentimentIntensityAnalyzer.sentiment_valence for a lexicon word at position i."""
        lexicon = self.lexicon
        item_lower = lower[i]
        n = len(lower)
        valence = lexicon[item_lower]
        if item_lower == "no" and i != n - 1 and lower[i + 1] in lexicon:
            valence = 0.0
        if (i > 0 and lower[i - 1] == "no") or (i > 1 and lower[i - 2] == "no") \
                or (i > 2 and lower[i - 3] == "no" and lower[i - 1] in ("or", "nor")):
            valence = lexicon[item_lower] * N_SCALAR
        if words[i].isupper() and is_cap_diff:
            valence = valence + C_INCR if valence > 0 else valence - C_INCR
        for start_i in range(3):
            j = i - (start_i + 1)
            if i > start_i and lower[j] not in lexicon:
                s = _scalar_inc_dec(words[j], lower[j], valence, is_cap_diff)
                if start_i == 1 and s != 0:
                    s = s * 0.95
                if start_i == 2 and s != 0:
                    s = s * 0.9
                valence = valence + s
                valence = _negation_check(valence, lower, start_i, i)
                if start_i == 2:
                    valence = _special_idioms_check(valence, lower, i)
        return _least_check(valence, lower, i, lexicon)


def _strip_punc_if_word(token: str) -> str:
    stripped = token.strip(_PUNCTUATION)
    return token if len(stripped) <= 2 else stripped


def _negated(word_lower: str) -> bool:
    word = word_lower.lower()  # vaderSentiment.negated lower-cases again; kept for identical results
    return word in NEGATE or "n't" in word


def _scalar_inc_dec(word: str, word_lower: str, valence: float, is_cap_diff: bool) -> float:
    scalar = 0.0
    if word_lower in BOOSTER_DICT:
        scalar = BOOSTER_DICT[word_lower]
        if valence < 0:
            scalar *= -1
        if word.isupper() and is_cap_diff:
            scalar = scalar + C_INCR if valence > 0 else scalar - C_INCR
    return scalar


def _negation_check(valence: float, lower: list[str], start_i: int, i: int) -> float:
    if start_i == 0 and _negated(lower[i - 1]):
        valence = valence * N_SCALAR
    if start_i == 1:
        if lower[i - 2] == "never" and (lower[i - 1] == "so" or lower[i - 1] == "this"):
            valence = valence * 1.25
        elif lower[i - 2] == "without" and lower[i - 1] == "doubt":
            pass
        elif _negated(lower[i - 2]):
            valence = valence * N_SCALAR
    if start_i == 2:
        if (lower[i - 3] == "never" and (lower[i - 2] == "so" or lower[i - 2] == "this")) or \
                (lower[i - 1] == "so" or lower[i - 1] == "this"):
            valence = valence * 1.25
        elif lower[i - 3] == "without" and (lower[i - 2] == "doubt" or lower[i - 1] == "doubt"):
            pass
        elif _negated(lower[i - 3]):
            valence = valence * N_SCALAR
    return valence


def _special_idioms_check(valence: float, lower: list[str], i: int) -> float:
    onezero = f"{lower[i - 1]} {lower[i]}"
    twoonezero = f"{lower[i - 2]} {lower[i - 1]} {lower[i]}"
    twoone = f"{lower[i - 2]} {lower[i - 1]}"
    threetwoone = f"{lower[i - 3]} {lower[i - 2]} {lower[i - 1]}"
    threetwo = f"{lower[i - 3]} {lower[i - 2]}"
    for seq in (onezero, twoonezero, twoone, threetwoone, threetwo):
        if seq in SPECIAL_CASES:
            valence = SPECIAL_CASES[seq]
            break
    if len(lower) - 1 > i:
        zeroone = f"{lower[i]} {lower[i + 1]}"
        if zeroone in SPECIAL_CASES:
            valence = SPECIAL_CASES[zeroone]
    if len(lower) - 1 > i + 1:
        zeroonetwo = f"{lower[i]} {lower[i + 1]} {lower[i + 2]}"
        if zeroonetwo in SPECIAL_CASES:
            valence = SPECIAL_CASES[zeroonetwo]
    for n_gram in (threetwoone, threetwo, twoone):
        if n_gram in BOOSTER_DICT:
            valence = valence + BOOSTER_DICT[n_gram]
    return valence


def _least_check(valence: float, lower: list[str], i: int, lexicon: dict[str, float]) -> float:
    if i > 1 and lower[i - 1] not in lexicon and lower[i - 1] == "least":
        if lower[i - 2] != "at" and lower[i - 2] != "very":
            valence = valence * N_SCALAR
    elif i > 0 and lower[i - 1] not in lexicon and lower[i - 1] == "least":
        valence = valence * N_SCALAR
    return valence


def _but_check(but_index: int, sentiments: list[float]) -> None:
    """vaderSentiment's "but" rule, in place, with its exact behaviour.

    The package walks the list by position and, for the value at each position, rescales the
    FIRST position holding an equal value (`list.index`): halved before the first "but",
    times 1.5 after it. Here the first position of each value comes from a heap per value
    (stale entries skipped), instead of a scan from the start.
    """
    positions: dict[float, list[int]] = {}
    for k, value in enumerate(sentiments):
        positions.setdefault(value, []).append(k)  # ascending: already heaps
    for k in range(len(sentiments)):
        sentiment = sentiments[k]
        heap = positions[sentiment]
        while sentiments[heap[0]] != sentiment:
            heapq.heappop(heap)
        si = heap[0]
        if si == but_index:
            continue
        new = sentiment * 0.5 if si < but_index else sentiment * 1.5
        sentiments[si] = new
        if new != sentiment:
            heapq.heappop(heap)
            heapq.heappush(positions.setdefault(new, []), si)


def _punctuation_emphasis(text: str) -> float:
    ep_amplifier = min(text.count("!"), 4) * 0.292
    qm_count = text.count("?")
    qm_amplifier = 0.0
    if qm_count > 1:
        qm_amplifier = qm_count * 0.18 if qm_count <= 3 else 0.96
    return ep_amplifier + qm_amplifier


def _normalize(score: float, alpha: float = 15) -> float:
    norm_score = score / math.sqrt((score * score) + alpha)
    return max(-1.0, min(1.0, norm_score))


@lru_cache(maxsize=1)
def load_linear_vader() -> LinearVader:
    """Built once per process: reading VADER's lexicon files is too slow to repeat per request."""
    return LinearVader()
