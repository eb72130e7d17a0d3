"""The shape of the house, as the design review of 2026-12-05 measured it (issue 36): no import
cycle between the package's modules, and the counts that are still above their goal held where
they are, so that a change can only lower them."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "edge_distill"
MAX_LINES = 450
# Files still over MAX_LINES, each at most its size today; a file leaves this list by shrinking.
OVER_MAX_LINES: dict[str, int] = {}
# device/runner.py is copied to devices as one self-contained file (numpy and onnxruntime only), so it
# may stay whole; it is held at this size.
SELF_CONTAINED = {"device/runner.py": 500}
# Where an onnxruntime session is made: the factory (device/runner.create_session), the only one.
SESSION_SITES = {"device/runner.py"}
# The floors of the house, the ground first: a module imports only from lower floors, or from its own
# room (a top-level module or a package). docs/architecture.md names the one import that runs up.
FLOORS = [{"errors", "hashing", "progress", "staging", "device"}, {"files", "schema", "sessions", "typed_fields"},
          {"onnx_model", "profiles"}, {"config"}, {"data", "models"}, {"measure"}, {"export"},
          {"bundle", "distill"}, {"targets"}, {"text"}, {"lm"}, {"pipeline"}, {"api"}, {"commands"}, {"cli"}]
RUNS_UP = {("edge_distill.export.selection", "edge_distill.targets.remote")}  # a choice timed on a device


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")


@functools.cache
def import_graph() -> dict[str, set[str]]:
    """Every module of the package -> the modules of the package it imports (in functions too)."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: set() for name in files}
    for name, path in files.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module:
                base = node.module if not node.level else ".".join(name.split(".")[:-node.level] + [node.module])
                targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            graph[name] |= {t for t in targets if t in files and t != name and files[t].name != "__init__.py"}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_two_modules_import_each_other_even_through_others():
    assert cycles(import_graph()) == []


def test_imports_run_down_the_floors():
    floor = {room: level for level, rooms in enumerate(FLOORS) for room in rooms}
    room = {name: name.split(".")[1] for name in import_graph() if name != "edge_distill"}
    assert set(room.values()) == set(floor), "a new room: give it a floor in FLOORS"
    up = {(a, b) for a, targets in import_graph().items() if a in room for b in targets
          if room[a] != room[b] and floor[room[b]] >= floor[room[a]]}
    assert up == RUNS_UP, f"imports that do not run down: {sorted(up - RUNS_UP)}"


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_files_stay_readable_in_one_sitting():
    sizes = {p.relative_to(PACKAGE).as_posix(): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    over = {name: lines for name, lines in sizes.items() if lines > MAX_LINES}
    limits = OVER_MAX_LINES | SELF_CONTAINED
    grown = {name: lines for name, lines in over.items() if lines > limits.get(name, MAX_LINES)}
    assert not grown, f"over {MAX_LINES} lines and growing: {grown}"
    shrunk = set(OVER_MAX_LINES) - set(over)
    assert not shrunk, f"now under {MAX_LINES} lines: take {shrunk} off OVER_MAX_LINES"


def test_sessions_are_made_in_no_new_place():
    sites = {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py") if "InferenceSession(" in p.read_text()}
    assert sites <= SESSION_SITES, f"a new InferenceSession( site: {sites - SESSION_SITES}; use create_session"


def test_one_module_calls_onnx_runtimes_quantizers():
    """Static, dynamic and weight-only int8 and the pre-processing, for every pipeline, go through
    export/quantize.py. Elsewhere only ORT's helpers are read: the QDQ debugging that ranks nodes
    (export/sensitivity.py) and the integer ranges of a type (export/qdq_distill.py)."""
    helpers = {"onnxruntime.quantization.qdq_loss_debug", "onnxruntime.quantization.quant_utils"}
    importers = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else \
                [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if any(name.startswith("onnxruntime.quantization") and name not in helpers for name in names):
                importers.add(path.relative_to(PACKAGE).as_posix())
    assert importers == {"export/quantize.py"}


def test_api_is_the_one_module_that_runs_and_publishes_a_pipeline():
    """Each pipeline's stages are assembled in pipeline/stages/; api.py runs them (pipeline/runner's
    run_and_publish) and is what the commands call."""
    callers = {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")
               if "run_and_publish(" in p.read_text() and p.name != "runner.py"}
    assert callers == {"api.py"}


def test_commands_reach_the_library_through_api_only():
    """The click commands parse and render: what they call of the library beside api.py is a
    settings class or constant, a flag parser, a config loader or a renderer, never the work."""
    import re

    allowed = re.compile(r"[A-Z].*|render.*|.*_table|parse_.*|load_config")
    called = set()
    for path in [*(PACKAGE / "commands").glob("*.py"), PACKAGE / "cli.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("edge_distill.") and \
                    node.module not in ("edge_distill.api", "edge_distill.errors", "edge_distill.progress") and \
                    not node.module.startswith("edge_distill.commands"):
                called |= {f"{node.module}.{alias.name}" for alias in node.names if not allowed.fullmatch(alias.name)}
    assert called == set(), f"commands that do work beside api.py: {sorted(called)}"
