"""Texts that stress the text features' fast paths: emoji, "but", negations, punctuation, capitals,
non-ASCII case mappings (Greek final sigma, dotted capital I, Kelvin sign), combining marks,
digits and underscores, empty and whitespace-only texts, and a very long text."""

from __future__ import annotations

import random

from vaderSentiment.vaderSentiment import BOOSTER_DICT, NEGATE, SPECIAL_CASES

from features.text import CUE_PATTERNS

FIXED = [
    "", " ", "\n\t ", ".", ". ", "!!!???", "a", "ab", "_", "__", "a_b", "x1", "12", "1", "é", "ÉÉ",
    "😀", "😀😡💘", "good 😀 bad 😡 but ok", "I am NOT happy but the refund was GREAT!!!",
    "no no no never not bad", "not bad at all but never this good", "kind of good, sort of bad",
    "the shit", "THE SHIT", "yeah right", "kiss of death", "at least it is not the least good",
    "ΟΔΟΣ ΚΑΙ ΤΕΛΟΣ", "ΟΔΟΣ. ΟΔΟΣ", "İstanbul İİ good", "\u212a kelvin good", "cafe\u0301 good",
    "ｆｕｌｌｗｉｄｔｈ　ｇｏｏｄ", "don't can't won't isn't ain't good", "It's 3rd time, 21st time, 1000th time!",
    "already called, still waiting, no one has replied, keep calling", "cancel CANCEL cancelling cancel",
    "switching to another provider; switch provider; switching another", "sue sued suez lawsuit court courteous",
    "is it down? down-time, sundown, down", "not working, can't connect, cannot connect, offline!",
    "urgent URGENT asap today immediately right now", "thank you thanks please, kind regards, no rush",
    "I want a manager / supervisor / someone senior / team lead - escalate, escalation",
    "fed up fed  up fed\tup", "terrible terrible terrible but great", "but", "but but but good but bad",
    "word. word", "end with word", "end with word.", "word_under_score end_", "Ünïcödé wörds ärë hërë",
]


def hostile_texts(n: int = 300, seed: int = 5) -> list[str]:
    """The fixed texts above, then n word salads over VADER's rule words, cue phrases, emoji,
    punctuation and non-ASCII words, then one text of about 6,000 words."""
    rng = random.Random(seed)
    cue_words = [w for pattern in CUE_PATTERNS.values() for w in pattern.replace("|", " ").split()
                 if w.isalpha()]
    vocabulary = (list(BOOSTER_DICT) + list(NEGATE) + [w for p in SPECIAL_CASES for w in p.split()] + cue_words
                  + ["but", "BUT", "no", "least", "kind", "of", "never", "so", "this", "without", "doubt",
                     "good", "GOOD", "bad", "great", "terrible", "happy", "angry", "😀", "😡", "💘", "!", "?",
                     "...", ":)", ":(", "ΟΔΟΣ", "İ", "é", "ß", "2nd", "3rd", "10th", "time", "_x", "a"])
    texts = list(FIXED)
    for _ in range(n):
        words = [rng.choice(vocabulary) for _ in range(rng.randint(0, 30))]
        if rng.random() < 0.2:
            words = [w.upper() for w in words]
        texts.append(rng.choice([" ", "  ", ", ", ". ", "! ", "\n", ""]).join(words)
                     + rng.choice(["", "!", "?!", "??", ".", " 😀"]))
    texts.append(" ".join(rng.choice(vocabulary) for _ in range(6000)))
    return texts
