"""The bundle holds data only: the feature builder's state round-trips through JSON and .npz, and
nothing shaped like a pickle is ever loaded, even under a valid manifest."""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bundle.model import BundleError, load_bundle, write_manifest
from features.online import OnlineFeatures
from training.packaging import write_bundle


@pytest.fixture(scope="module")
def bundle_dir(small_result, tmp_path_factory) -> Path:
    return write_bundle(small_result, tmp_path_factory.mktemp("format"), "v-format")


def test_bundle_files_are_data_and_the_builder_round_trips(bundle_dir, small_result):
    names = sorted(p.name for p in bundle_dir.rglob("*") if p.is_file())
    assert "feature_builder.json" in names and "feature_builder.npz" in names
    assert not [n for n in names if n.endswith((".joblib", ".pkl", ".pickle"))]
    for path in bundle_dir.rglob("*"):
        if path.is_file():
            assert not path.read_bytes()[:2].startswith(b"\x80"), f"{path.name} looks like a pickle"
    loaded = load_bundle(bundle_dir).builder
    original = small_result.builder
    assert loaded.feature_names_ == original.feature_names_ and loaded.categories_ == original.categories_
    rows = small_result.snapshots.head(400)
    pd.testing.assert_frame_equal(loaded.transform(rows), original.transform(rows))


class Danger:
    """Unpickling this writes a marker file: it shows whether anything was unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def old_pickled_builder(bundle: Path, marker: Path) -> None:
    (bundle / "feature_builder.json").unlink()
    (bundle / "feature_builder.npz").unlink()
    (bundle / "feature_builder.joblib").write_bytes(pickle.dumps(Danger(marker)))


def pickle_as_arrays(bundle: Path, marker: Path) -> None:
    (bundle / "feature_builder.npz").write_bytes(pickle.dumps(Danger(marker)))


def object_array_in_archive(bundle: Path, marker: Path) -> None:
    buffer = io.BytesIO()
    with np.load(bundle / "feature_builder.npz") as npz:
        arrays = {name: npz[name] for name in npz.files}
    np.savez(buffer, **arrays, text_extra=np.array([Danger(marker)], dtype=object))
    (bundle / "feature_builder.npz").write_bytes(buffer.getvalue())


def pickle_as_state(bundle: Path, marker: Path) -> None:
    (bundle / "feature_builder.json").write_bytes(pickle.dumps(Danger(marker)))


def state_of_another_shape(bundle: Path, marker: Path) -> None:
    state = json.loads((bundle / "feature_builder.json").read_text())
    state["text"]["terms"] = state["text"]["terms"][:-1]  # arrays no longer fit the vocabulary
    (bundle / "feature_builder.json").write_text(json.dumps(state))


@pytest.mark.parametrize(("tamper", "message"), [
    (old_pickled_builder, "pickles are never loaded"),
    (pickle_as_arrays, "feature_builder.npz is not a plain NumPy array archive"),
    (object_array_in_archive, "feature_builder.npz is not a plain NumPy array archive"),
    (pickle_as_state, "feature_builder.json cannot be read"),
    (state_of_another_shape, "not a valid feature builder state"),
], ids=lambda v: getattr(v, "__name__", "")[:30])
def test_code_running_pickle_under_a_valid_manifest_is_refused_unread(bundle_dir, tmp_path, tamper, message):
    bundle = shutil.copytree(bundle_dir, tmp_path / "tampered")
    marker = tmp_path / "pickle-ran"
    tamper(bundle, marker)
    write_manifest(bundle)  # whoever can write the models folder can re-hash it too
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle)
    assert not marker.exists(), "something in the bundle was unpickled"


def test_old_bundle_message_says_to_retrain(bundle_dir, tmp_path):
    bundle = shutil.copytree(bundle_dir, tmp_path / "old")
    old_pickled_builder(bundle, tmp_path / "marker")
    write_manifest(bundle)
    with pytest.raises(BundleError, match="Retrain") as caught:
        load_bundle(bundle)
    assert "make train" in str(caught.value)


def test_online_features_of_a_loaded_bundle_read_text_up_to_the_cap(bundle_dir):
    builder = load_bundle(bundle_dir).builder
    online = OnlineFeatures(builder)
    limit = builder.text_.max_field_chars
    ticket = {"subject": "s" * (limit + 5), "description": "d" * 10, "last_customer_message": "m" * (3 * limit)}
    text, message = online.ticket_texts(ticket)
    assert text == "s" * limit + ". " + "d" * 10 and message == "m" * limit
    assert online.text_warnings(ticket) == [
        {"field": "subject", "value": limit + 5,
         "message": f"only the first {limit} of its {limit + 5} characters were read"},
        {"field": "last_customer_message", "value": 3 * limit,
         "message": f"only the first {limit} of its {3 * limit} characters were read"}]
