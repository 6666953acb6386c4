"""The web demo's Model card tab (demo/lab_demo/card.py)."""

from __future__ import annotations

from lab_demo import card

from qwen2_lab.arch import count
from qwen2_lab.tiny.evaluate import shipped_scores


def test_model_card(demo_lab):
    text = card.model_card(demo_lab)
    assert "`tiny` (bundled toy model)" in text and "`cpu`" in text and "`float32`" in text
    assert count(demo_lab.arch.total_params) in text
    assert "| field | value |" in text and "| | |" not in text  # every table says what its columns hold


def test_the_model_card_has_the_scores_the_banner_points_to(demo_lab):
    """The banner says the model card has the table: the scores the checkpoint ships, one row per task."""
    text = card.model_card(demo_lab)
    assert "| task | exact match |" in text
    for task, share in shipped_scores("tiny").items():
        assert f"| {task} | {100 * share:.1f}% |" in text
