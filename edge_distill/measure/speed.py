"""The one speed rule every pipeline chooses by (build, optimize, text, llm): a variant is quicker
than another only where it was quicker in every interleaved round of one timing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def quickest_beyond_noise(rows: list[dict], prefer: Callable[[dict], Any] = lambda row: (row["variant"] != "fp32",
                                                                                         row["threads"])
                          ) -> tuple[dict, dict]:
    """(the row to ship, the quickest row): the one speed rule of every pipeline. The quickest
    beats another row only where it was quicker in every interleaved round (round_p50s; with 5
    rounds, a 1 in 32 chance if the two were equal); otherwise they are tied, and a tie goes to the
    row `prefer` ranks first: by default float, the simpler variant, then fewer threads (a
    generator prefers the smaller file). Rows without rounds compare by p50 alone."""
    quickest = min(rows, key=lambda row: row["p50"])

    def tied(row: dict) -> bool:
        ours, theirs = quickest.get("round_p50s"), row.get("round_p50s")
        if row is quickest:
            return True
        if not ours or not theirs or len(ours) != len(theirs):
            return row["p50"] == quickest["p50"]
        return not all(a < b for a, b in zip(ours, theirs))

    chosen = min((row for row in rows if tied(row)), key=prefer)
    return chosen, quickest
