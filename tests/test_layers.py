"""Imports point one way: models <- diffusion <- export <- {runtime, hardware_sim} <- metrics <- commands.

Read from the source (every import, at module level or inside a function), so a cycle cannot creep in
through a lazy import either."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "spikediff"
# what each layer may import (besides itself and the utilities every layer may use)
UTILITIES = {"spikediff", "atomic", "images", "lava_compat"}
ALLOWED = {
    "data": set(),
    "models": set(),
    "diffusion": {"models"},
    "export": {"diffusion", "models"},
    "runtime": {"export", "diffusion", "models"},
    "hardware_sim": {"export", "diffusion", "models"},
    "checkpoint": {"diffusion", "models"},
    "train": {"models", "diffusion", "data", "checkpoint", "export"},  # export: quantization-aware training
    "metrics": {"export", "runtime", "hardware_sim", "diffusion", "models", "data", "checkpoint"},
}
COMMANDS = {"cli", "inspect", "run_graph", "__main__"}  # the top: may import anything


def _layer(parts: tuple) -> str:
    return parts[0] if parts and parts[0] != "__init__" else "spikediff"


def _imports(path: Path) -> set:
    rel = path.relative_to(PACKAGE).with_suffix("").parts
    here = rel[:-1] if path.name != "__init__.py" else rel[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - (node.level - 1)] if node.level > 1 else here
                target = tuple(base) + (tuple(node.module.split(".")) if node.module else ())
                if not node.module:  # from . import x, y: modules, or names of the package itself
                    for alias in node.names:
                        sub = PACKAGE.joinpath(*target, alias.name)
                        is_module = sub.is_dir() or sub.with_suffix(".py").is_file()
                        found.add(_layer(target + (alias.name,)) if is_module else _layer(target))
                    continue
            elif node.module and node.module.split(".")[0] == "spikediff":
                target = tuple(node.module.split(".")[1:])
            else:
                continue
            found.add(_layer(target))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "spikediff":
                    found.add(_layer(tuple(alias.name.split(".")[1:])))
    return found


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_one_way(path):
    layer = _layer(path.relative_to(PACKAGE).with_suffix("").parts)
    if layer in COMMANDS or layer in UTILITIES:
        allowed = None
    else:
        assert layer in ALLOWED, f"{path}: a layer the rules do not know ({layer}); add it to ALLOWED"
        allowed = ALLOWED[layer] | {layer} | UTILITIES
    bad = set() if allowed is None else {imp for imp in _imports(path) if imp not in allowed}
    assert not bad, f"{path.relative_to(PACKAGE)} ({layer}) imports {sorted(bad)}"


def test_the_rules_have_no_cycle():
    seen, stack = set(), set()

    def visit(layer):
        assert layer not in stack, f"cycle through {layer}"
        if layer in seen:
            return
        stack.add(layer)
        for dep in ALLOWED.get(layer, ()):
            visit(dep)
        stack.discard(layer)
        seen.add(layer)

    for layer in ALLOWED:
        visit(layer)


def test_ruff_finds_nothing():
    """The small things (unused imports, import order, shadowed loop variables, line length): ruff, as
    configured in pyproject.toml."""
    import shutil
    import subprocess
    import sys

    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed (make install installs it)")
    root = PACKAGE.parent
    res = subprocess.run([ruff, "check", "--output-format", "concise", "spikediff", "tests", "benchmarks", "examples"],
                         cwd=root, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-3000:]
