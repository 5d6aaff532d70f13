"""VADER's compound sentiment score in time linear in the text's length.

Source of the method, lexicons and constants: Hutto & Gilbert (2014), "VADER: A Parsimonious
Rule-based Model for Sentiment Analysis of Social Media Text", ICWSM-14, as implemented by the
vaderSentiment package (pinned), whose lexicon files and rule constants are read from it here.

vaderSentiment's `polarity_scores` is quadratic in the number of words: for every lexicon word
it lower-cases the whole text again (up to four times, in `_negation_check` and
`_special_idioms_check`), and its "but" rule looks each score up with `list.index`. This module
applies the same rules in the same order to words lower-cased once, only around the words the
lexicon scores (most words are not), and replays the "but" rule over the non-zero scores with a
first-position index per value, so `compound_score(text)` equals
`SentimentIntensityAnalyzer().polarity_scores(text)["compound"]` on every text (checked against
the package in tests/features/test_sentiment.py, on its examples, generated word salads and
hostile texts), in O(n log n) at worst and O(n) without "but".
Only the compound score is computed: it is the one the features use.
"""

from __future__ import annotations

import heapq
import math
import re
import string
from functools import lru_cache
from itertools import compress, repeat
from operator import is_not

from vaderSentiment import vaderSentiment as vader

B_INCR, C_INCR, N_SCALAR = vader.B_INCR, vader.C_INCR, vader.N_SCALAR
BOOSTER_DICT = vader.BOOSTER_DICT
SPECIAL_CASES = vader.SPECIAL_CASES
NEGATE = frozenset(vader.NEGATE)
# Every word of the multi-word special cases and boosters: the idiom rules can only match around one.
IDIOM_WORDS = frozenset(w for phrase in [*SPECIAL_CASES, *BOOSTER_DICT] if " " in phrase for w in phrase.split(" "))
_PUNCTUATION = string.punctuation


class LinearVader:
    """The lexicons of vaderSentiment's analyzer, and its compound score in linear time."""

    def __init__(self) -> None:
        analyzer = vader.SentimentIntensityAnalyzer()
        self.lexicon: dict[str, float] = analyzer.lexicon
        # polarity_scores replaces emojis one character at a time, so only one-character keys can match.
        self.emojis = {k: v for k, v in analyzer.emojis.items() if len(k) == 1}
        self.emoji_chars = frozenset(self.emojis)
        self.emojis_non_ascii = not any(k.isascii() for k in self.emoji_chars)
        # The words VADER scores: lexicon words that are not boosters (polarity_scores gives the rest 0).
        self.scored = frozenset(w for w in self.lexicon if w not in BOOSTER_DICT)

    def replace_emojis(self, text: str) -> str:
        """Each emoji by its description, a space before it unless it follows a space or starts the text."""
        if text.isascii() and self.emojis_non_ascii:  # isascii is a flag lookup: no pass over the text
            return text
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
        """VADER's normalised, rounded compound score in [-1, 1] (0.0 for text without sentiment words).

        Words that VADER does not score (neither in the lexicon nor a booster) are only looked
        at as neighbours of scored words, so a text costs one pass of set look-ups plus the work
        around its scored words. Two facts make the shortcuts exact: a word's isupper() is its
        token's (the punctuation stripped is uncased), and the 0 sentiments of unscored words
        change neither the sum (x + 0 is x; a sum of zeros is 0.0) nor, under the "but" rule,
        any non-zero value, so a text without a scored word is 0.0 and only non-zero values
        go through the "but" rule and the sum (`_but_sum`)."""
        text = self.replace_emojis(text).strip()
        tokens = text.split()
        if text.isascii():
            # ASCII lower-casing maps character for character and leaves punctuation alone, so
            # stripping the lower-cased token gives the lower-cased stripped word.
            lower = _strip_punc_if_words(text.lower().split())
        else:
            lower = list(map(str.lower, _strip_punc_if_words(tokens)))
        scored = self.scored
        if scored.isdisjoint(lower):
            return 0.0
        n = len(tokens)
        allcaps = sum(map(str.isupper, tokens))
        is_cap_diff = 0 < n - allcaps < n
        valence = self._valence
        sentiments: list[tuple[int, float]] = []  # (position, sentiment) of the non-zero ones
        for i in [i for i, item_lower in enumerate(lower) if item_lower in scored]:
            if lower[i] == "kind" and i < n - 1 and lower[i + 1] == "of":
                continue
            if value := valence(tokens, lower, i, is_cap_diff):
                sentiments.append((i, value))
        sum_s = float(_but_sum(lower.index("but") if "but" in lower else None, sentiments))
        emphasis = _punctuation_emphasis(text)
        if sum_s > 0:
            sum_s += emphasis
        elif sum_s < 0:
            sum_s -= emphasis
        return round(_normalize(sum_s), 4)

    def _valence(self, words: list[str], lower: list[str], i: int, is_cap_diff: bool) -> float:
        """SentimentIntensityAnalyzer.sentiment_valence for a lexicon word at position i (`words`
        may be the unstripped tokens: only their isupper() is read, and `lower` the stripped words).

        The package's loop over the three preceding words, unrolled: each step adds the word's
        booster scalar (0.0 for a non-booster, added all the same so that a -0.0 becomes 0.0 as
        there), then applies the negation rules; the idiom rules run only when a word around
        position i occurs in an idiom (otherwise none of their look-ups can match)."""
        lexicon = self.lexicon
        item_lower = lower[i]
        n = len(lower)
        valence = lexicon[item_lower]
        if item_lower == "no" and i != n - 1 and lower[i + 1] in lexicon:
            valence = 0.0
        if (i > 0 and lower[i - 1] == "no") or (i > 1 and lower[i - 2] == "no") \
                or (i > 2 and lower[i - 3] == "no" and lower[i - 1] in ("or", "nor")):
            valence = lexicon[item_lower] * N_SCALAR
        if is_cap_diff and words[i].isupper():
            valence = valence + C_INCR if valence > 0 else valence - C_INCR
        if i > 0 and (w1 := lower[i - 1]) not in lexicon:
            valence = valence + (_scalar_inc_dec(words[i - 1], w1, valence, is_cap_diff) if w1 in BOOSTER_DICT else 0.0)
            if w1 in NEGATE or "n't" in w1:  # _negated(w1): lower-casing again changes no lower-case text
                valence = valence * N_SCALAR
        if i > 1 and (w2 := lower[i - 2]) not in lexicon:
            s = _scalar_inc_dec(words[i - 2], w2, valence, is_cap_diff) if w2 in BOOSTER_DICT else 0.0
            if s != 0:
                s = s * 0.95
            valence = valence + s
            if w2 == "never" and (lower[i - 1] == "so" or lower[i - 1] == "this"):
                valence = valence * 1.25
            elif w2 == "without" and lower[i - 1] == "doubt":
                pass
            elif w2 in NEGATE or "n't" in w2:
                valence = valence * N_SCALAR
        if i > 2 and (w3 := lower[i - 3]) not in lexicon:
            s = _scalar_inc_dec(words[i - 3], w3, valence, is_cap_diff) if w3 in BOOSTER_DICT else 0.0
            if s != 0:
                s = s * 0.9
            valence = valence + s
            valence = _negation_check(valence, lower, 2, i)
            if not IDIOM_WORDS.isdisjoint(lower[i - 3:i + 3]):
                valence = _special_idioms_check(valence, lower, i)
        return _least_check(valence, lower, i, lexicon)


def _strip_punc_if_words(tokens: list[str]) -> list[str]:
    """`_strip_punc_if_word` of each token: stripped in one C-level pass, then the few tokens
    that lost punctuation and came out with 2 characters or fewer put back (str.strip returns
    the same object when there is nothing to strip)."""
    words = list(map(str.strip, tokens, repeat(_PUNCTUATION, len(tokens))))
    for i in compress(range(len(tokens)), map(is_not, words, tokens)):
        if len(words[i]) <= 2:
            words[i] = tokens[i]
    return words


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


def _but_sum(but_index: int | None, sentiments: list[tuple[int, float]]) -> float:
    """The sum of the sentiments after vaderSentiment's "but" rule, from the (position, value)
    pairs of the non-zero sentiments in position order (0 when there are none).

    The package walks the list by position and, for the value at each position, rescales the
    FIRST position holding an equal value (`list.index`): halved before the first "but",
    times 1.5 after it. A zero stays zero and equals no non-zero value, so the zeros are
    left out. Here the first position of each value comes from a heap per value (stale
    entries skipped) instead of a scan from the start, so the rule is O(k log k) in the k
    non-zero values. The sum is taken in position order, as the package's.
    """
    values = [value for _, value in sentiments]
    if but_index is None:
        return sum(values)
    place = [position for position, _ in sentiments]
    heaps: dict[float, list[int]] = {}
    for k, value in enumerate(values):
        heaps.setdefault(value, []).append(k)  # ascending: already heaps
    for k in range(len(values)):
        value = values[k]
        heap = heaps[value]
        while values[heap[0]] != value:
            heapq.heappop(heap)
        first = heap[0]
        if place[first] == but_index:
            continue
        new = value * 0.5 if place[first] < but_index else value * 1.5
        values[first] = new
        if new != value:
            heapq.heappop(heap)
            heapq.heappush(heaps.setdefault(new, []), first)
    return sum(values)


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
