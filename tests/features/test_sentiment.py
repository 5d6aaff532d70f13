"""features.sentiment: VADER's compound score, identical to the vaderSentiment package, in linear time."""

from __future__ import annotations

import math
import random
import sys

import pandas as pd
import pytest
from vaderSentiment.vaderSentiment import BOOSTER_DICT, NEGATE, SPECIAL_CASES, SentimentIntensityAnalyzer

from features.sentiment import _strip_punc_if_word, _strip_punc_if_words, load_linear_vader
from features.synthetic import generate_event_log
from tests.features.hostile_text import hostile_texts

# The package's own examples (vaderSentiment.py's __main__), which exercise each of its rules.
PACKAGE_EXAMPLES = [
    "VADER is smart, handsome, and funny.", "VADER is smart, handsome, and funny!",
    "VADER is very smart, handsome, and funny.", "VADER is VERY SMART, handsome, and FUNNY.",
    "VADER is VERY SMART, handsome, and FUNNY!!!", "VADER is VERY SMART, uber handsome, and FRIGGIN FUNNY!!!",
    "VADER is not smart, handsome, nor funny.", "The book was good.", "At least it isn't a horrible book.",
    "The book was only kind of good.",
    "The plot was good, but the characters are uncompelling and the dialog is not great.", "Today SUX!",
    "Today only kinda sux! But I'll get by, lol", "Make sure you :) or :D today!",
    "Catch utf-8 emoji such as 💘 and 💋 and 😁", "Not bad at all", "Sentiment analysis has never been good.",
    "Sentiment analysis has never been this good!", "Most automated sentiment analysis tools are shit.",
    "With VADER, sentiment analysis is the shit!", "Other sentiment analysis tools can be quite bad.",
    "On the other hand, VADER is quite bad ass", "VADER is such a badass!", "Without a doubt, excellent idea.",
    "Roger Dodger is one of the least compelling variations on this theme.",
    "Roger Dodger is at least compelling as a variation on the theme.", "Not such a badass after all.",
    "It was one of the worst movies I've seen, despite good reviews. Unbelievably bad acting!! Poor "
    "direction. VERY poor production. The movie was bad. Very bad movie. VERY BAD movie!", "", "   ", "😀",
]


@pytest.fixture(scope="module")
def reference() -> SentimentIntensityAnalyzer:
    return SentimentIntensityAnalyzer()


def tricky_texts(n: int, seed: int) -> list[str]:
    """Word salads over the words VADER's rules look at: lexicon words, boosters, negations, 'but',
    'no', 'least', 'kind of', idioms, capitals, emojis and punctuation, with repeated values."""
    rng = random.Random(seed)
    analyzer = SentimentIntensityAnalyzer()
    emojis = sorted(k for k in analyzer.emojis if len(k) == 1)
    vocabulary = (rng.sample(sorted(analyzer.lexicon), 300) + list(BOOSTER_DICT) + NEGATE
                  + [w for phrase in SPECIAL_CASES for w in phrase.split()] + emojis[:40]
                  + ["but", "BUT", "But", "no", "No", "least", "at", "very", "kind", "of", "so", "this", "never",
                     "without", "doubt", "or", "nor", "the", "refund", "GOOD", "bad", "!", "?", ":)", ":(", "can't"])
    texts = []
    for _ in range(n):
        words = [rng.choice(vocabulary) for _ in range(rng.randint(0, 40))]
        if rng.random() < 0.3:
            words = [w.upper() for w in words]
        text = rng.choice([" ", "  ", ", ", ". ", "! ", ""]).join(words) + rng.choice(["", "!", "?!", "??", "???!"])
        if rng.random() < 0.1:
            text = "".join(rng.choice([*emojis[:30], " ", "a"]) for _ in range(rng.randint(0, 12)))
        texts.append(text)
    return texts


def test_compound_equals_vader_on_its_examples_and_tricky_texts(reference):
    vader = load_linear_vader()
    texts = PACKAGE_EXAMPLES + tricky_texts(3000, seed=7)
    differ = [(t, reference.polarity_scores(t)["compound"], vader.compound_score(t)) for t in texts
              if reference.polarity_scores(t)["compound"] != vader.compound_score(t)]
    assert not differ, f"{len(differ)} texts score differently, e.g. {differ[:3]}"
    assert len({vader.compound_score(t) for t in texts}) > 100, "the texts should cover many scores"


def test_compound_equals_vader_on_the_demo_tickets_texts(reference, tmp_path):
    path = tmp_path / "events.parquet"
    generate_event_log(path, n_tickets=300, seed=3)
    events = pd.read_parquet(path)
    texts = pd.concat([events[c].dropna() for c in ("subject", "description", "last_customer_message")]).unique()
    vader = load_linear_vader()
    differ = [t for t in texts if reference.polarity_scores(t)["compound"] != vader.compound_score(t)]
    assert len(texts) > 200 and not differ, differ[:3]


def count_lines(function, *args) -> int:
    """Python lines executed by a call (a count of work that does not depend on the machine's speed)."""
    executed = 0

    def trace(frame, event, arg):
        nonlocal executed
        if event == "line":
            executed += 1
        return trace

    sys.settrace(trace)
    try:
        function(*args)
    finally:
        sys.settrace(None)
    return executed


@pytest.mark.parametrize("unit", [
    "this is NOT good but the refund was really terrible, no help at least ",
    "😡 😀 angry but happy 💘 ",
])
def test_work_grows_linearly_with_the_number_of_words(unit):
    """Four times the words, about four times the lines executed (vaderSentiment's own grows ~16x here)."""
    vader = load_linear_vader()
    small = count_lines(vader.compound_score, unit * 100)
    large = count_lines(vader.compound_score, unit * 400)
    assert small > 1000
    assert large <= 4.4 * small, f"{large} lines for 4x the words vs {small}: not linear"


def test_punctuation_is_stripped_as_vader_strips_it():
    tokens = [t for text in hostile_texts(100) for t in text.split()] + ["no.", "'a'", "!!", "(ok)", "a.b", "..."]
    assert _strip_punc_if_words(tokens) == [_strip_punc_if_word(t) for t in tokens]


def test_compound_equals_vader_on_hostile_texts(reference):
    """The shortcuts (unscored words skipped, the ASCII path, "but" over non-zero values only) on
    emoji, unicode case mappings, negations, repeated "but", punctuation, empty and long texts.
    Compared as floats and by sign, so a -0.0 for 0.0 would show too."""
    vader = load_linear_vader()
    texts = hostile_texts()
    texts += [t + " é" for t in texts[:200]]  # the same words through the non-ASCII path
    scores = [(reference.polarity_scores(t)["compound"], vader.compound_score(t)) for t in texts]
    differ = [(t[:80], a, b) for t, (a, b) in zip(texts, scores, strict=True)
              if a != b or math.copysign(1, a) != math.copysign(1, b)]
    assert not differ, f"{len(differ)} texts score differently, e.g. {differ[:3]}"
    assert sum(a != 0 for a, _ in scores) > 200, "most texts should carry sentiment"
