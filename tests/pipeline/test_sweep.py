"""Budget-driven builds: picking on a synthetic sweep, the messages when nothing fits, and one real sweep."""

import json
import xml.etree.ElementTree as ET

import pytest

from edge_distill.config import BudgetConfig
from edge_distill.errors import BudgetExceededError
from edge_distill.pipeline.sweep import build_for_budget, mark_pareto, pick_smallest, render_svg, sweep_table
from tests.conftest import tiny_config


def measured(size, params, p50, accuracy):
    return {"size": size, "params": params, "p50_ms": p50, "accuracy": accuracy, "status": "measured",
            "macs": params * 10, "estimate_ms": p50, "measured_over_estimate": 1.0}


SWEEP = [
    measured("w4-d1", 300, 0.10, 0.90),
    measured("w8-d1", 800, 0.12, 0.97),
    measured("w16-d1", 2700, 0.15, 0.985),
    measured("w8-d2", 4400, 0.30, 0.99),
    measured("w16-d2", 16800, 0.35, 0.985),  # dominated: slower and no more accurate than w8-d2
    {"size": "w32-d3", "params": 90000, "macs": 1, "estimate_ms": 9.0, "status": "skipped by estimate"},
]


def test_picks_the_smallest_size_meeting_both_budgets():
    chosen, why = pick_smallest(SWEEP, BudgetConfig(max_latency_ms=0.2, min_accuracy=0.98))
    assert chosen["size"] == "w16-d1" and "smallest student meeting both budgets" in why
    assert pick_smallest(SWEEP, BudgetConfig(min_accuracy=0.95))[0]["size"] == "w8-d1"
    assert pick_smallest(SWEEP, BudgetConfig(max_latency_ms=1.0))[0]["size"] == "w4-d1"


def test_pareto_front():
    rows = [dict(r) for r in SWEEP]
    mark_pareto(rows)
    assert {r["size"] for r in rows if r.get("pareto")} == {"w4-d1", "w8-d1", "w16-d1", "w8-d2"}


@pytest.mark.parametrize(
    "budget, message",
    [
        (BudgetConfig(max_latency_ms=0.05), r"latency: the fastest, w4-d1, has p50 0.1000 ms, 100% over 0.05 ms"),
        (BudgetConfig(min_accuracy=0.995), r"test accuracy: the best, w8-d2, reaches 0.9900, 0.50 points under 0.995"),
        (BudgetConfig(max_latency_ms=0.11, min_accuracy=0.98), r"no single size meets both"),
    ],
)
def test_impossible_budget_says_which_failed_and_by_how_much(budget, message):
    with pytest.raises(BudgetExceededError, match=message) as e:
        pick_smallest(SWEEP, budget)
    assert "\n" not in e.value.message and "--ship-best-effort" in e.value.hint and "budget.sweep_widths" in e.value.hint


def test_best_effort_ships_the_most_accurate_fast_enough_size():
    chosen, why = pick_smallest(SWEEP, BudgetConfig(max_latency_ms=0.13, min_accuracy=0.99, ship_best_effort=True))
    assert chosen["size"] == "w8-d1" and why.startswith("best effort")


def test_everything_skipped_by_estimate():
    skipped = [{"size": "w4-d1", "params": 1, "macs": 1, "estimate_ms": 0.4, "status": "skipped by estimate"}]
    with pytest.raises(BudgetExceededError, match=r"estimated over the latency budget: the fastest, w4-d1, at 0.400 ms vs 0.1 ms \(x4.0\)"):
        pick_smallest(skipped, BudgetConfig(max_latency_ms=0.1))


def test_plot_is_valid_svg_with_a_point_per_measured_size():
    rows = [dict(r) for r in SWEEP]
    mark_pareto(rows)
    rows[2]["chosen"] = True
    svg = ET.fromstring(render_svg(rows, BudgetConfig(max_latency_ms=0.2, min_accuracy=0.98)))
    ids = {g.get("id") for g in svg.iter("{http://www.w3.org/2000/svg}g")}
    measured = {f"point-{r['size']}" for r in rows if r["status"] == "measured"}
    assert len(measured) == 5 and measured <= ids  # a point per measured size
    assert {"shipped", "latency-budget", "accuracy-budget", "pareto-front"} <= ids  # the chosen one ringed
    texts = {"".join(t.itertext()) for t in svg.iter("{http://www.w3.org/2000/svg}text")}
    assert {"p50 latency (ms)", "test accuracy"} <= texts
    assert "w32-d3" in sweep_table({"rows": rows, "why": "x"})


@pytest.mark.slow
def test_real_sweep_ships_the_smallest_fitting_size(tiny_cache, tmp_path):
    config = tiny_config("budget.sweep=true", "budget.sweep_widths=[2, 4]", "budget.sweep_depths=[1]",
                         "budget.max_latency_ms=1000.0", "budget.min_accuracy=0.0")
    run, report = build_for_budget(config, tmp_path / "dist", tiny_cache)
    assert report["chosen"] == "w2-d1"  # both fit a generous budget: the smaller ships
    assert [r["status"] for r in report["rows"]] == ["measured", "measured"]
    manifest = json.loads((tmp_path / "dist" / "manifest.json").read_text())
    assert "w2-d1" in json.loads((tmp_path / "dist" / "sweep.json").read_text())["chosen"]
    assert manifest["config"]["student"]["width"] == 2
    ET.parse(tmp_path / "dist" / "sweep.svg")


def test_a_layer_sweep_that_fits_nothing_names_its_own_flags():
    """llm's "nothing fits" named the image build's budget.sweep_widths; a layer sweep names its flags."""
    from edge_distill.errors import BudgetExceededError

    rows = [{"size": "2-layer", "status": "measured", "params": 10, "p50_ms": 9.0, "accuracy": 0.2, "estimate_ms": 9.0}]
    with pytest.raises(BudgetExceededError) as e:
        pick_smallest(rows, BudgetConfig(max_latency_ms=1.0, min_accuracy=0.0), "agreement with the teacher",
                      "--sweep-layers", "--max-ms-per-token")
    assert "--sweep-layers" in e.value.hint and "budget.sweep_widths" not in e.value.hint
