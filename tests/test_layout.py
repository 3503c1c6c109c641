"""The house rules: engines (model, data, train, rl, eval) never import the pipeline that orchestrates
them, no module imports another that imports it back, and importing the library changes no global
state (matplotlib's backend, the RNGs, the environment)."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "mimolab"
ENGINES = ("model", "data", "train", "rl", "eval")


def import_graph() -> dict[str, set[str]]:
    """Module -> the mimolab modules it imports anywhere in its body (function-level imports count)."""
    modules = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
               for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mimolab"):
                deps |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("mimolab")}
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def test_engines_never_import_the_pipeline():
    upward = [(m, d) for m, deps in import_graph().items() for d in deps
              if m.split(".")[1:2] and m.split(".")[1] in ENGINES and d.startswith(("mimolab.pipeline", "mimolab.cli"))]
    assert not upward, f"engines importing what orchestrates them: {upward}"


def test_no_import_cycles():
    graph = import_graph()

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), list(graph[start])
        while todo:
            node = todo.pop()
            if node == goal:
                return True
            if node not in seen:
                seen.add(node)
                todo += graph.get(node, ())
        return False

    cycles = sorted(m for m in graph if reaches(m, m))
    assert not cycles, f"modules on an import cycle: {cycles}"


IMPORT_EVERYTHING = """
import importlib, os, pkgutil, random
import matplotlib, torch
import mimolab
backend = matplotlib.rcParams._get_backend_or_none()
torch_rng, python_rng, environ = torch.get_rng_state(), random.getstate(), dict(os.environ)
for info in pkgutil.walk_packages(mimolab.__path__, "mimolab."):
    if info.name not in ("mimolab.__main__",):
        importlib.import_module(info.name)
assert matplotlib.rcParams._get_backend_or_none() == backend, "an import set the matplotlib backend"
assert torch.equal(torch.get_rng_state(), torch_rng), "an import moved torch's global RNG"
assert random.getstate() == python_rng, "an import moved Python's global RNG"
ours = lambda env: {k: v for k, v in env.items() if not k.startswith("TORCHINDUCTOR_")}  # torch's own import sets it
assert ours(os.environ) == ours(environ), "an import changed the environment"
"""


def test_importing_the_library_changes_no_global_state():
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "WANDB_MODE": "disabled"}  # no MPLBACKEND
    done = subprocess.run([sys.executable, "-c", IMPORT_EVERYTHING], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]


def test_committed_results_carry_no_machine_paths():
    """Results record paths relative to the runs root: a machine's absolute path means nothing elsewhere."""
    import json

    def strings(value):
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for v in value.values():
                yield from strings(v)
        elif isinstance(value, list):
            for v in value:
                yield from strings(v)

    results = sorted((PACKAGE.parent / "experiments" / "results").glob("*.json"))
    assert results
    for path in results:
        absolute = [s for s in strings(json.loads(path.read_text())) if s.startswith("/") and s.count("/") > 1]
        assert not absolute, f"{path.name}: {absolute[:3]}"
