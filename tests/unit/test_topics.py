"""The topics of the bundled tweets (../shared/DRIFT.md) and leaving one out of training, splits unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferry.data.dataset import load_dataset
from ferry.data.topics import TOPICS, check_topics, topic_of
from ferry.train.config import InvalidTrainConfigError, TrainConfig


def test_the_first_matching_topic_wins_case_insensitively():
    assert topic_of("@united lost my bag again") == "airline"
    assert topic_of("COACHELLA weekend 2 was amazing") == "coachella"
    assert topic_of("Flight to Coachella was late") == "airline"  # airline is matched first
    assert topic_of("Brady and the deflated footballs") == "deflategate"
    assert topic_of("my new iPhone is great") == "apple"
    assert topic_of("nothing to see here") is None


def test_an_unknown_topic_is_refused_with_the_known_ones():
    assert check_topics(["coachella"]) == ("coachella",)
    with pytest.raises(ValueError, match="unknown topic 'weather'; the topics are " + ", ".join(TOPICS)):
        check_topics(["weather"])
    with pytest.raises(InvalidTrainConfigError, match="unknown topic") as raised:
        TrainConfig(base="b", data="default", out=Path("/nonexistent/out"),
                    exclude_topics=("weather",))
    assert raised.value.field == "exclude_topics"


def test_leaving_a_topic_out_removes_its_texts_and_keeps_every_other_text_in_its_split():
    whole = load_dataset("default")
    without = load_dataset("default", exclude_topics=["coachella"])
    for split in ("train", "validation", "test"):
        kept = {row.text for row in without.splits[split]}
        assert not any(topic_of(text) == "coachella" for text in kept)
        assert kept == {row.text for row in whole.splits[split] if topic_of(row.text) != "coachella"}
    removed = sum(len(rows) for rows in whole.splits.values()) - sum(len(rows) for rows in without.splits.values())
    assert 2_500 < removed < 3_000  # DRIFT.md: 546 negative + 2,227 positive Coachella tweets
