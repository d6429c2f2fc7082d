"""The study's one vocabulary: the 'mean [lo, hi]' cell and its rule for missing numbers,
the one Reading type every chapter returns, and the one key of the pooled language."""

from __future__ import annotations

import json
import math
import typing

import numpy as np
import pandas as pd
import pytest

from selfish_lib.engine.validation import ParameterError
from selfish_lib.study import bilingual, frequency, geometry, gradients, layout, readings
from selfish_lib.study.readings import (
    NO_DATA,
    NO_INTERVAL,
    POOLED,
    Reading,
    format_interval,
    interval_of,
)

NAN = math.nan

# --- format_interval ------------------------------------------------------------------------


def test_a_mean_with_its_interval():
    assert format_interval(0.5123, 0.4981, 0.5262) == "0.512 [0.498, 0.526]"
    assert format_interval(0.5123, 0.4981, 0.5262, digits=1) == "0.5 [0.5, 0.5]"
    assert format_interval(2.0, 1.5, 2.5, digits=0) == "2 [2, 2]"


def test_sign_signs_every_number():
    assert format_interval(0.1, -0.05, 0.25, sign="+") == "+0.100 [-0.050, +0.250]"
    assert format_interval(-0.1, -0.2, 0.0, digits=2, sign="+") == "-0.10 [-0.20, +0.00]"


def test_percent_and_significant_digits():
    assert format_interval(0.1234, 0.1, 0.15, digits=1, percent=True) == "12.3% [10.0%, 15.0%]"
    assert format_interval(1234.5, 0.0123, 2.0, digits=3, significant=True) == (
        "1.23e+03 [0.0123, 2]"
    )
    assert format_interval(0.02, 0.01, 0.03, digits=2, sign="+", percent=True) == (
        "+2.00% [+1.00%, +3.00%]"
    )


@pytest.mark.parametrize("lo, hi", [(NAN, NAN), (NAN, 1.0), (0.0, NAN)])
def test_a_missing_interval_shows_the_mean_and_one_seed(lo, hi):
    assert format_interval(0.5, lo, hi) == f"0.500 {NO_INTERVAL}" == "0.500 (1 seed)"
    assert format_interval(0.5) == "0.500 (1 seed)"  # bounds default to missing
    assert format_interval(0.1, lo, hi, sign="+", percent=True, digits=1) == "+10.0% (1 seed)"


@pytest.mark.parametrize("lo, hi", [(NAN, NAN), (0.1, 0.2)])
def test_a_missing_mean_is_no_data_whatever_the_bounds(lo, hi):
    assert format_interval(NAN, lo, hi) == NO_DATA == "n/a"
    assert format_interval(np.float64("nan"), lo, hi, sign="+", percent=True) == "n/a"


def test_numpy_scalars_format_like_floats():
    values = np.array([0.25, 0.2, 0.3])
    assert format_interval(*values) == format_interval(0.25, 0.2, 0.3) == "0.250 [0.200, 0.300]"


@pytest.mark.parametrize(
    "kwargs, name",
    [({"sign": "-"}, "sign"), ({"sign": " "}, "sign"), ({"digits": -1}, "digits")],
)
def test_bad_options_are_refused(kwargs, name):
    with pytest.raises(ParameterError, match=name):
        format_interval(0.5, 0.4, 0.6, **kwargs)


def test_interval_of_reads_a_value_and_its_bounds_from_a_row():
    row = {"loss": 2.0, "loss_lo": 1.9, "loss_hi": 2.1, "A_mean": 1.0, "A_lo": 0.5, "A_hi": 1.5}
    assert interval_of(row, "loss") == (2.0, 1.9, 2.1)
    assert interval_of(pd.Series(row), "A", ("_mean", "_lo", "_hi")) == (1.0, 0.5, 1.5)


def test_tables_use_the_one_rule():
    """A one-seed table and a table without data, through a chapter's readable table."""
    table = pd.DataFrame(
        [
            {
                "group": g,
                "count": count,
                **{
                    f"{k}_{m}{s}": v
                    for k in ("CE", "HNS", "diff")
                    for m in ("loss", "top1", "recall5", "mrr")
                    for s, v in (("", mean), ("_lo", NAN), ("_hi", NAN))
                },
                **{f"verdict_{m}": "indistinguishable" for m in ("loss", "top1", "recall5", "mrr")},
            }
            for g, count, mean in (("1-10", 50, 2.0), ("61-65", 0, NAN))
        ]
    )
    text = frequency.readable_table(table).set_index(["group", "metric"])
    assert text.loc[("1-10", "loss"), "CE"] == "2.000 (1 seed)"
    assert text.loc[("1-10", "loss"), "HNS − CE"] == "+2.000 (1 seed)"
    assert text.loc[("61-65", "loss"), "CE"] == "n/a"


# --- the one Reading type --------------------------------------------------------------------


def test_reading_keeps_text_and_makes_the_summary_json_safe():
    summary = {
        "mean": np.float64(0.25),
        "n": np.int64(3),
        "ci": [np.float64("nan"), math.inf],
        "nested": {"verdict": "better", "values": np.array([1.0, 2.0])},
    }
    reading = Reading("**text**", summary)
    assert reading.text == "**text**"
    assert reading.summary == {
        "mean": 0.25,
        "n": 3,
        "ci": ["nan", "inf"],
        "nested": {"verdict": "better", "values": [1.0, 2.0]},
    }
    assert type(reading.summary["mean"]) is float and type(reading.summary["n"]) is int
    json.dumps(reading.summary, allow_nan=False)  # strict JSON as it is
    with pytest.raises(AttributeError):
        reading.text = "other"  # frozen


@pytest.mark.parametrize("text, summary", [(None, {}), (b"x", {}), ("x", [1, 2]), ("x", None)])
def test_reading_refuses_what_is_not_text_and_a_mapping(text, summary):
    with pytest.raises(ParameterError):
        Reading(text, summary)


@pytest.mark.parametrize(
    "function",
    [
        gradients.reading,
        frequency.group_reading,
        bilingual.reading,
        geometry.reading,
        layout.sweep_reading,
    ],
)
def test_every_chapter_returns_the_one_reading_type(function):
    assert typing.get_type_hints(function)["return"] is readings.Reading


def test_no_chapter_defines_a_reading_type_of_its_own():
    for module in (gradients, frequency, bilingual, geometry, layout):
        own = [
            name
            for name, value in vars(module).items()
            if isinstance(value, type) and name.endswith("Reading") and value is not Reading
        ]
        assert own == [], module.__name__


def test_the_bilingual_reading_names_the_pooled_language():
    diffs = pd.DataFrame(
        [
            {"language": lang, "metric": m, "diff": d, "diff_lo": d - 0.01, "diff_hi": d + 0.01}
            for lang, d in (("low", 0.05), ("high", -0.05), (POOLED, 0.0))
            for m in ("loss", "top1", "recall5", "mrr")
        ]
    )
    mass = pd.DataFrame(
        [
            {"experiment": e, "language": lang, "easy_mass": 0.1}
            for e in ("baseline", "HNS")
            for lang in ("high", "low")
        ]
    )
    claims = pd.DataFrame(
        [{"claim": "C4", "scope": "both languages", "metric": "loss", "verdict": "supported"}]
    )
    out = bilingual.reading(diffs, mass, claims)
    assert isinstance(out, Reading)
    assert "- **both languages**: loss +0.0000 [-0.0100, +0.0100]" in out.text
    assert "- **low-resource**: loss +0.0500 [+0.0400, +0.0600] (**worse**)" in out.text
    assert out.summary["hns_minus_baseline"][POOLED]["loss"]["verdict"] == "indistinguishable"
    assert out.summary["claims"] == {"C4 both languages loss": "supported"}
    json.dumps(out.summary, allow_nan=False)


# --- the one pooled language -------------------------------------------------------------


def test_the_pooled_language_has_one_key_and_one_name():
    assert readings.LANGUAGE_NAMES[POOLED] == "both languages"
    assert set(readings.LANGUAGE_NAMES) == {"high", "low", POOLED, readings.MIXTURE}
    assert (POOLED, "loss") in layout.TABLE_VALUES
    assert layout.POOLED_LOSS.startswith(POOLED)
    assert list(readings.METRIC_NAMES) == list(frequency.METRICS)


# --- what goes with the numbers: clipping and the smoke profile --------------------------------


def test_only_the_smoke_profile_is_a_pipeline_check():
    assert readings.pipeline_check_only("smoke")
    assert not readings.pipeline_check_only("paper")
    assert not readings.pipeline_check_only("large")
    assert "only check that the pipeline runs" in readings.PIPELINE_CHECK_NOTE
    assert "not results" in readings.PIPELINE_CHECK_NOTE


def test_a_reading_says_when_its_intervals_were_clipped():
    # two seeds whose top-1 accuracies are small and spread: the raw t interval leaves [0, 1]
    rows = []
    for seed, (ce, hns) in enumerate(((0.01, 0.3), (0.2, 0.02))):
        for objective, top1 in (("CE", ce), ("HNS", hns)):
            rows.append(
                {
                    "objective": objective,
                    "seed": seed,
                    "language": "high",
                    "group": "61-65",
                    "count": 40,
                    "loss": 4.0 + seed,
                    "top1": top1,
                    "recall5": 2 * top1,
                    "mrr": top1,
                }
            )
    per_seed = pd.DataFrame(rows)
    train_final = per_seed[["objective", "seed", "language", "group", "loss"]]
    table = frequency.validation_table(per_seed)
    assert table["CE_top1_lo"].iloc[0] == 0.0 and table["CE_top1_clipped"].iloc[0]
    assert table["diff_top1_lo"].iloc[0] == -1.0 and table["diff_top1_hi"].iloc[0] == 1.0
    out = frequency.group_reading(train_final, table)
    assert out.text.endswith(readings.CLIPPED_NOTE) and out.summary["intervals_clipped"] is True
    assert out.summary["validation"]["61-65"]["top1"]["ci"] == [-1.0, 1.0]
    # the same seeds, close together: nothing clipped, nothing said
    calm = per_seed.assign(top1=per_seed["top1"].clip(0.3, 0.31), mrr=0.5, recall5=0.5)
    calm = calm.assign(loss=4.0 + 0.01 * calm["seed"])
    quiet = frequency.group_reading(
        calm[["objective", "seed", "language", "group", "loss"]], frequency.validation_table(calm)
    )
    assert readings.CLIPPED_NOTE not in quiet.text and quiet.summary["intervals_clipped"] is False


def test_the_bilingual_reading_states_clipped_differences():
    diffs = pd.DataFrame(
        [
            {"language": "low", "metric": "top1", "diff": 0.01, "diff_lo": -1.0, "diff_hi": 1.0,
             "diff_clipped": True},
        ]
    )  # fmt: skip
    mass = pd.DataFrame([{"experiment": "baseline", "language": "low", "easy_mass": 0.1}])
    claims = pd.DataFrame(columns=["claim", "scope", "metric", "verdict"])
    out = bilingual.reading(diffs, mass, claims)
    assert readings.CLIPPED_NOTE in out.text and out.summary["intervals_clipped"] is True
