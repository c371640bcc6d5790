"""Import rules of the controller, proved on the source: no module under ``lab/`` imports
the root CLI (``lab.cli``) except ``lab/__main__.py``, and the runners never touch Docker."""

from __future__ import annotations

import ast
import functools
import graphlib
from pathlib import Path

import pytest
from source_tree import parsed, python_files

import lab

LAB_PACKAGE = Path(lab.__file__).parent


def imported_modules(tree: ast.Module) -> set[str]:
    """Every module an import statement names, function-local imports included
    (``from lab import cli`` counts as ``lab.cli``)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


@functools.cache
def _imports_by_module() -> dict[str, frozenset[str]]:
    """Each ``lab/…`` file and what it imports, parsed once for every rule."""
    return {
        path.relative_to(LAB_PACKAGE.parent).as_posix(): frozenset(imported_modules(parsed(path)))
        for path in python_files(LAB_PACKAGE)
    }


def modules_importing(module: str) -> list[str]:
    return [
        path
        for path, names in _imports_by_module().items()
        if any(name == module or name.startswith(f"{module}.") for name in names)
    ]


def test_only_the_main_module_imports_the_root_cli() -> None:
    assert modules_importing("lab.cli") == ["lab/__main__.py"]


def test_the_rule_sees_function_local_and_from_imports() -> None:
    tree = ast.parse("def f():\n    from lab import cli\n")
    assert "lab.cli" in imported_modules(tree)
    tree = ast.parse("def g():\n    from lab.cli import out_console  # noqa: PLC0415\n")
    assert "lab.cli" in imported_modules(tree)


def test_docker_is_imported_only_where_its_errors_are_translated() -> None:
    # lab.images builds images with the SDK itself; lab.engine translates every other
    # Docker error; lab.api is the Docker implementation of the Lab protocol.
    importing = {path for module in ("docker", "requests") for path in modules_importing(module)}
    assert importing <= {"lab/api.py", "lab/engine.py", "lab/images.py"}


SHAPING = LAB_PACKAGE / "shaping"
# lab.shaping's sans-IO side: no Lab, no module of the I/O side.
SHAPING_PURE = {"errors", "spec", "builders", "expected", "measure", "partitions"}
SHAPING_PURE |= {"congestion", "links"}


def sibling_imports(package: str) -> dict[str, set[str]]:
    """Each module of ``lab.<package>`` (not the package or its CLI) -> the siblings it
    imports."""
    prefix = f"lab.{package}."
    graph = {}
    for path in sorted((LAB_PACKAGE / package).glob("*.py")):
        if path.stem in {"__init__", "cli"}:
            continue
        names = _imports_by_module()[path.relative_to(LAB_PACKAGE.parent).as_posix()]
        graph[path.stem] = {
            name.removeprefix(prefix).split(".")[0] for name in names if name.startswith(prefix)
        } - {path.stem}
    return graph


def shaping_imports() -> dict[str, set[str]]:
    return sibling_imports("shaping")


def test_the_shaping_modules_import_each_other_one_way() -> None:
    graph = shaping_imports()
    assert {"helpers", "shape", "cuts", "status", "selfcheck"} <= set(graph)
    order = list(graphlib.TopologicalSorter(graph).static_order())  # CycleError on a cycle
    assert order.index("helpers") < min(order.index(m) for m in ("shape", "cuts", "status"))
    assert order.index("selfcheck") < order.index("shape")


def test_the_pure_shaping_modules_import_nothing_of_the_io_side() -> None:
    graph = shaping_imports()
    io_side = set(graph) - SHAPING_PURE
    for module in sorted(SHAPING_PURE):
        names = imported_modules(parsed(SHAPING / f"{module}.py"))
        assert "lab.interface" not in names, module
        assert not graph[module] & io_side, (module, graph[module] & io_side)


def test_the_scenario_modules_import_each_other_one_way() -> None:
    graph = sibling_imports("scenario")
    order = list(graphlib.TopologicalSorter(graph).static_order())  # CycleError on a cycle
    # faults <- staging, execution <- runner (one scenario) <- session (many files)
    assert order.index("faults") < order.index("execution") < order.index("runner")
    assert order.index("staging") < order.index("runner") < order.index("session")
    assert "session" not in set().union(*graph.values()), "only the CLI drives sessions"


# lab.bench, lowest layer first: a module imports only from the layers before its own;
# the sans-IO modules may also import each other (acyclic), no other layer imports within.
BENCH_LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"errors", "throughput", "ceiling", "grid", "idle", "records", "tool_output"})
    | frozenset({"capacity", "engine", "report"}),
    frozenset({"lab_state", "storage"}),
    frozenset({"iperf3_runs", "client_probes", "peer", "transfers"}),
    frozenset({"bench_runner", "sweep_runner", "engine_runner", "capacity_runner"}),
)


def layering_violations(
    graph: dict[str, set[str]], layers: tuple[frozenset[str], ...]
) -> list[str]:
    """Each import of ``graph`` that does not go to an earlier layer (or, from the first
    layer, to the first layer), and each module no layer names."""
    layer_of = {module: index for index, layer in enumerate(layers) for module in layer}
    found = [f"{module} is in no layer" for module in sorted(set(graph) - set(layer_of))]
    for module, imported in sorted(graph.items()):
        for name in sorted(imported):
            own, theirs = layer_of.get(module), layer_of.get(name)
            if own is None or theirs is None:
                continue
            if theirs > own or (theirs == own and own > 0):
                found.append(f"{module} (layer {own}) imports {name} (layer {theirs})")
    return found


def test_the_bench_modules_import_each_other_one_way() -> None:
    graph = sibling_imports("bench")
    assert set(graph) == set().union(*BENCH_LAYERS)  # a new module must be placed
    order = list(graphlib.TopologicalSorter(graph).static_order())  # CycleError on a cycle
    assert layering_violations(graph, BENCH_LAYERS) == []
    # tool output and storage under every measurement; each measurement under bench_runner
    for measurement in ("iperf3_runs", "client_probes", "peer", "transfers"):
        assert order.index("tool_output") < order.index(measurement)
        assert order.index(measurement) < order.index("bench_runner")
    for measurement in ("client_probes", "peer", "transfers"):
        assert order.index("storage") < order.index(measurement)
    assert order.index("lab_state") < min(
        order.index(runner) for runner in ("bench_runner", "sweep_runner", "capacity_runner")
    )
    assert order.index("transfers") < order.index("sweep_runner")
    runners = BENCH_LAYERS[-1]
    assert not runners & set().union(*graph.values()), "only the CLI drives the runners"


def test_the_bench_layering_rule_sees_a_cycle_and_an_upward_import() -> None:
    graph = {"storage": {"tool_output", "peer"}, "peer": {"storage"}, "tool_output": set()}
    with pytest.raises(graphlib.CycleError):
        list(graphlib.TopologicalSorter(graph).static_order())
    # peer -> storage goes down a layer; storage -> peer is the wrong way round
    assert layering_violations(graph, BENCH_LAYERS) == ["storage (layer 1) imports peer (layer 2)"]
    sideways = {"peer": {"transfers"}, "transfers": set()}
    assert layering_violations(sideways, BENCH_LAYERS) == [
        "peer (layer 2) imports transfers (layer 2)"
    ]
    assert layering_violations({"newcomer": set()}, BENCH_LAYERS) == ["newcomer is in no layer"]
