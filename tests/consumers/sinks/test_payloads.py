"""The sinks' label JSON: where the label sits in its video."""

from __future__ import annotations

from fer_pipeline.consumers.sinks.payloads import label_json
from tests.factories import make_label


def test_a_label_says_its_position_in_the_video_or_none_live():
    assert label_json(make_label(position_s=12.5))["position_s"] == 12.5
    assert label_json(make_label())["position_s"] is None  # a live camera has no position
