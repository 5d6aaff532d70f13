import numpy as np
import pandas as pd
import pytest
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer

from features.build import FeatureBuilder, compute_ticket_features
from features.history import summarize_tickets
from features.schema import validate_events
from features.snapshots import build_snapshots
from features.text import CUE_PATTERNS, TextFeatures, count_cues, score_sentiment
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
