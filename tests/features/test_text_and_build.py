import math
import re
import re._constants as re_constants
import re._parser as re_parser
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer

from features.build import FeatureBuilder, compute_ticket_features
from features.history import summarize_tickets
from features.schema import validate_events
from features.snapshots import build_snapshots
from features.text import (
    CUE_LITERALS,
    CUE_PATTERNS,
    TextFeatures,
    build_analyzer,
    compile_cue_literals,
    count_cues,
    count_words,
    score_sentiment,
    split_alternatives,
)
from tests.features.hostile_text import hostile_texts
from tests.helpers import make_log, make_ticket


def test_cue_counts_find_the_phrases_escalations_follow():
    texts = [
        "This is the third time I'm calling, I want to speak to your supervisor",
        "My lawyer will hear about this, I will report you to the ombudsman",
        "Please cancel my account, I am switching provider",
        "The service is down for everyone, total outage",
        "Thanks, no rush",
    ]
    cues = pd.DataFrame(count_cues(texts), columns=list(CUE_PATTERNS))
    assert cues.loc[0, "repeat_contact"] >= 1 and cues.loc[0, "supervisor"] >= 1
    assert cues.loc[1, "legal"] >= 2
    assert cues.loc[2, "cancellation"] >= 2
    assert cues.loc[3, "outage"] >= 2
    assert cues.loc[4, ["anger", "legal", "supervisor", "cancellation"]].sum() == 0
    assert cues.loc[4, "politeness"] >= 1


def test_sentiment_orders_angry_below_polite_and_empty_is_neutral():
    scores = score_sentiment(["This is absolutely unacceptable, I am furious", "Thank you, great help", ""])
    assert scores[0] < 0 < scores[1]
    assert scores[2] == 0


def test_text_embedding_is_learned_then_only_applied():
    rows = pd.DataFrame({
        "subject": ["refund", "router down", "refund please", "password reset"] * 10,
        "description": [f"text number {i} about billing and routers" for i in range(40)],
        "last_customer_message": [None] * 40,
    })
    text = TextFeatures(svd_components=3, min_df=1).fit(rows)
    first = text.transform(rows.head(5))
    again = text.transform(rows.head(5))
    pd.testing.assert_frame_equal(first, again)
    assert [c for c in first.columns if c.startswith("text_svd_")] == ["text_svd_0", "text_svd_1", "text_svd_2"]
    unseen = text.transform(pd.DataFrame({"subject": ["zebra"], "description": ["quantum"],
                                          "last_customer_message": ["x"]}))
    assert np.allclose(unseen.filter(like="text_svd_").to_numpy(), 0), "unknown words embed to zero"


def test_fast_embedding_equals_scikit_learn_tfidf_then_svd():
    """The one-pass TF-IDF+SVD projection is scikit-learn's pipeline, up to float32 rounding."""
    rows = pd.DataFrame({
        "subject": ["refund refund", "router down", "refund please", "password reset", ""] * 8,
        "description": [f"text number {i} about billing and routers, billing again" for i in range(40)],
        "last_customer_message": ["still waiting", None, "router router down", None] * 10,
    })
    text = TextFeatures(svd_components=3, min_df=1).fit(rows)
    combined = (rows["subject"].fillna("") + ". " + rows["description"] + ". "
                + rows["last_customer_message"].fillna("")).tolist() + ["", "zebra"]
    # scikit-learn's own pipeline, fitted as TextFeatures.fit does (same texts, settings and seed).
    vectorizer = TfidfVectorizer(max_features=20000, ngram_range=(1, 2), min_df=1, sublinear_tf=True,
                                 dtype=np.float32)
    matrix = vectorizer.fit_transform(pd.Series(combined[:-2]).drop_duplicates().sort_values().to_numpy(dtype=object))
    svd = TruncatedSVD(n_components=3, random_state=42).fit(matrix)
    assert text.terms_ == vectorizer.get_feature_names_out().tolist()
    expected = svd.transform(vectorizer.transform(combined))
    got = text.embedding.transform(combined)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert np.abs(expected).max() > 0.1
    np.testing.assert_array_equal(got[-2:], 0)
    np.testing.assert_array_equal(text.embedding.transform(combined[7:8]), got[7:8])


def test_ticket_features_read_the_row_at_its_time():
    events = validate_events(make_log(make_ticket("T1", "2025-03-03 09:00", [
        {"hours": 30, "customer_messages": 3, "agent_messages": 1}]))).events
    events["snapshot_time"] = events["event_time"]
    features = compute_ticket_features(events)
    assert features["age_hours"].tolist() == [0.0, 30.0]
    assert features["hours_to_sla"].tolist() == [24.0, -6.0]
    assert features["sla_breached"].tolist() == [0.0, 1.0]
    assert features.loc[1, "customer_to_agent_messages"] == 1.5
    assert features.loc[0, "business_hours"] == 1.0


def test_builder_fixes_categories_and_maps_unseen_values_to_missing():
    events = validate_events(make_log(
        make_ticket("T1", "2025-03-03 09:00", [{"hours": 1}, {"hours": 2, "status": "closed"}]),
        make_ticket("T2", "2025-03-04 09:00", [{"hours": 1}, {"hours": 3, "status": "closed"}], channel="chat"),
    )).events
    snaps = build_snapshots(events, horizon_hours=None, data_end=pd.Timestamp("2025-06-01", tz="UTC"))
    builder = FeatureBuilder(text_enabled=False).fit(snaps, summarize_tickets(events))
    live = snaps.head(1).copy()
    live["channel"] = "carrier pigeon"
    out = builder.transform(live)
    assert list(out.columns) == builder.feature_names_
    assert pd.isna(out.loc[0, "channel"])
    assert list(out["channel"].cat.categories) == ["chat", "email"]


def test_builder_extra_categoricals_rare_levels_and_excluded_features():
    events = validate_events(make_log(*[
        make_ticket(f"T{i}", "2025-03-03 09:00", [{"hours": 1}, {"hours": 2, "status": "closed"}],
                    location="south" if i == 4 else "north")
        for i in range(5)
    ])).events
    snaps = build_snapshots(events, horizon_hours=None, data_end=pd.Timestamp("2025-06-01", tz="UTC"))
    builder = FeatureBuilder(text_enabled=False, extra_categorical=["location"], min_category_count=3,
                             exclude_features=["group_escalation_rate", "created_hour"]).fit(
        snaps, summarize_tickets(events))
    out = builder.transform(snaps)
    assert builder.categories_["location"] == ["north"], "a level seen fewer than 3 times is not learned"
    assert out["location"].isna().sum() == (snaps["location"] == "south").sum()
    assert "group_escalation_rate" not in out and "created_hour" not in out
    assert list(out.columns) == builder.feature_names_
    with pytest.raises(ValueError, match="unknown feature"):
        FeatureBuilder(text_enabled=False, exclude_features=["no_such_feature"]).fit(snaps, summarize_tickets(events))


def required_runs(sequence) -> list[list[str]]:
    """Per way through a parsed pattern's top level (its alternatives, inline groups expanded),
    the runs of plain characters every match taking that way contains (repeats, classes,
    look-arounds and boundaries end a run)."""
    ways = [[""]]
    for op, arg in sequence:
        if op is re_constants.LITERAL:
            ways = [way[:-1] + [way[-1] + chr(arg)] for way in ways]
        elif op is re_constants.BRANCH or (op is re_constants.SUBPATTERN and arg[0] is None and not any(arg[1:3])):
            inner = [w for branch in arg[1] for w in required_runs(branch)] if op is re_constants.BRANCH \
                else required_runs(arg[3])
            ways = [way[:-1] + [way[-1] + sub[0]] + sub[1:] for way in ways for sub in inner]
        else:
            ways = [[*way, ""] for way in ways]
    return ways


def test_each_cue_alternative_holds_its_literal():
    """CUE_LITERALS are sound: the patterns split into their top-level alternatives, one literal
    each, and every way an alternative can match contains its literal, so an alternative whose
    literal the text lacks can be left out of the alternation."""
    assert len(compile_cue_literals()) == len(CUE_PATTERNS)
    for cue, pattern in CUE_PATTERNS.items():
        alternatives = split_alternatives(pattern)
        assert "|".join(alternatives) == pattern and len(alternatives) == len(CUE_LITERALS[cue]) > 1
        for alternative, literal in zip(alternatives, CUE_LITERALS[cue], strict=True):
            for way in required_runs(re_parser.parse(alternative)):
                assert any(literal in run for run in way), (cue, alternative, literal, way)


def test_word_counts_are_the_runs_of_non_space_characters():
    spaces = "".join(chr(c) for c in range(0x3100) if chr(c).isspace())
    texts = hostile_texts(50) + [f"a{s}b{s}{s}c" for s in spaces] + [spaces, "x" + spaces + "y"]
    np.testing.assert_array_equal(count_words(texts), [len(re.findall(r"\S+", t)) for t in texts])


def test_cue_counts_equal_every_pattern_run_on_every_text():
    # One text per way each pattern can match (its plain runs joined by a space or by a digit),
    # alone, so that a missing literal would show as a match not counted.
    ways = [sep.join(way) for p in CUE_PATTERNS.values() for way in required_runs(re_parser.parse(p))
            for sep in (" ", "1")]
    texts = hostile_texts() + ways + [t.upper() for t in hostile_texts()[:100]]
    patterns = [re.compile(p) for p in CUE_PATTERNS.values()]
    expected = np.array([[len(p.findall(t.lower())) for p in patterns] for t in texts], dtype=float)
    np.testing.assert_array_equal(count_cues(texts), expected)
    assert (expected > 0).sum(axis=0).min() >= 5, "every cue should be found in several texts"


@pytest.fixture(scope="module")
def fitted_texts() -> dict[int, TextFeatures]:
    """TextFeatures fitted with 1-, 2- and 3-grams on texts that share words across the join."""
    words = ["refund", "router", "down", "again", "please", "billing", "still", "waiting", "ΟΔΟΣ", "é", "x1", "_a"]
    rng = np.random.default_rng(3)
    rows = pd.DataFrame({
        "subject": [" ".join(rng.choice(words, 3)) for _ in range(60)],
        "description": [" ".join(rng.choice(words, 8)) for _ in range(60)],
        "last_customer_message": [" ".join(rng.choice(words, 4)) for _ in range(60)],
    })
    return {n: TextFeatures(svd_components=4, min_df=1, ngram_max=n).fit(rows) for n in (1, 2, 3)}


def reference_embed(embedding, analyzer, text: str):
    """The embedding as it was computed before the fast analyzer: scikit-learn's analyzer,
    the known terms counted, then the same weights and projection."""
    found = [i for token in analyzer(text) if (i := embedding.vocabulary.get(token)) is not None]
    if not found:
        return np.zeros(embedding.projection.shape[1])
    counted = Counter(found)
    terms = sorted(counted)
    weights = [(1.0 + math.log(counted[t])) * embedding.idf_values[t] for t in terms]
    norm = math.sqrt(sum(w * w for w in weights))
    scaled = np.array([w / norm for w in weights])
    return (scaled[:, None] * embedding.projection[terms]).sum(axis=0)


def test_fast_analyzer_and_embedding_equal_scikit_learn_bit_for_bit(fitted_texts):
    texts = hostile_texts(150) + ["refund router down again", "ΟΔΟΣ ΟΔΟΣ é x1 _a refund refund",
                                  "refund " * 300 + "router " * 255]  # counts past the 1 + log table
    for n, text in fitted_texts.items():
        analyzer, embedding = build_analyzer(n), text.embedding
        for t in texts:
            assert embedding.analyze(t) == analyzer(t), (n, t[:60])
        got = embedding.transform(texts)
        want = np.array([reference_embed(embedding, analyzer, t) for t in texts])
        assert got.tobytes() == want.tobytes(), f"{n}-grams: the embedding differs from the reference"
        assert (np.abs(got).sum(axis=1) > 0).sum() > 20


def test_row_from_parts_equals_the_joined_text_bit_for_bit(fitted_texts):
    """combine_parts(score_part(ticket), score_part(message)) is transform of the two texts, the
    embedding of "ticket. message" included, also when the join makes known n-grams
    ("... refund" + "router ..." has "refund router") and when a part is empty or all punctuation."""
    rng = np.random.default_rng(8)
    hostile = hostile_texts(60)
    words = ["refund", "router", "down", "again", "please", "still", "waiting", "ΟΔΟΣ", "é", "x1", "_a", "!", "."]
    tickets = [" ".join(rng.choice(words, rng.integers(0, 6))) + ". " + " ".join(rng.choice(words, 5))
               for _ in range(60)] + hostile[:40] + ["refund. billing refund", ". ", "ΟΔΟΣ. ΟΔΟΣ"]
    messages = [" ".join(rng.choice(words, rng.integers(0, 4))) for _ in range(60)] + hostile[-40:] \
        + ["router down", "", "ΟΔΟΣ"]
    for n, text in fitted_texts.items():
        for ticket, message in zip(tickets, messages, strict=True):
            cold = np.concatenate([count_cues([ticket])[0], count_cues([message])[0],
                                   score_sentiment([ticket]), score_sentiment([message]),
                                   count_words([ticket]),
                                   text.embedding.transform([ticket + ". " + message])[0]])
            row = np.array(text.combine_parts(text.score_part(ticket), text.score_part(message)), dtype="float64")
            assert row.tobytes() == cold.tobytes(), (n, ticket[:40], message[:40])
            assert text.transform_one(ticket, message)[0].tobytes() == cold.tobytes()
        batch = text.transform_texts(tickets, messages)
        assert batch.tobytes() == np.vstack([text.transform_one(t, m) for t, m in zip(tickets, messages,
                                                                                    strict=True)]).tobytes()
    text = fitted_texts[2]
    crossing = text.embedding.join_terms([], ["refund"], [], ["router"])
    assert crossing == [text.embedding.vocabulary["refund router"]], "the bigram across the join is counted"
