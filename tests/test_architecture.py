"""The layer rule of docs/ARCHITECTURE.md, checked on the source (lazy imports inside functions
count too), and every module importable in a fresh interpreter."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "rtmdet"

# layer -> packages/modules it must never import (directly or lazily)
FORBIDDEN = {
    "ops": {"models", "families", "inference", "train", "eval", "deploy", "cli", "api"},
    "data": {"models", "families", "inference", "train", "eval", "deploy", "cli", "api"},
    "config": {"models", "families", "inference", "train", "eval", "deploy", "cli", "api", "data"},
    "presets": {"models", "families", "inference", "train", "eval", "deploy", "cli", "api", "data"},
    "models": {"train", "eval", "deploy", "cli"},  # predict() runs the inference loop
    "families": {"inference", "deploy", "cli"},
    "inference": {"train", "eval", "deploy", "cli"},
    "eval": {"train", "deploy", "cli"},
    "train": {"deploy", "cli"},
    "deploy": {"train", "cli"},
    # the shared host threads: used by `data`, `inference` and `eval`, importing none of them
    "host_pool": {"ops", "data", "config", "presets", "models", "families", "inference", "train", "eval",
                  "deploy", "cli", "api"},
    "host_memory": {"ops", "data", "config", "presets", "models", "families", "inference", "train",
                    "eval", "deploy", "cli", "api"},
}


def _modules():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def _imports(name: str, path: Path) -> set[str]:
    """Absolute rtmdet module names imported anywhere in the file."""
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("rtmdet")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                mod = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.startswith("rtmdet"):
                out.add(mod)
                out |= {f"{mod}.{a.name}" for a in node.names}
    return out


def test_layer_rule():
    bad = []
    for name, path in _modules():
        parts = name.split(".")
        layer = parts[1] if len(parts) > 1 else None
        for imp in _imports(name, path):
            target = imp.split(".")[1] if imp.count(".") else None
            if layer in FORBIDDEN and target in FORBIDDEN[layer]:
                bad.append(f"{name} imports {imp}")
            if target == "cli" and layer not in ("cli", "__main__"):
                bad.append(f"{name} imports {imp}")
    assert not bad, "layer rule broken:\n" + "\n".join(sorted(bad))


def test_no_private_names_imported_across_modules():
    bad = []
    for name, path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("rtmdet")):
                bad += [f"{name}: {a.name}" for a in node.names if a.name.startswith("_")
                        and not a.name.startswith("__")]
    assert not bad, bad


@pytest.mark.parametrize("probe", ["every", "light"])
def test_modules_import_in_a_fresh_interpreter(probe):
    if probe == "every":
        names = [n for n, _ in _modules() if not n.endswith("__main__")]
        code = "import importlib\n" + "".join(f"importlib.import_module({n!r})\n" for n in names)
    else:  # `import rtmdet` stays light: no exporter, no training stack, no ONNX
        code = ("import sys, rtmdet\n"
                "heavy = [m for m in sys.modules if m.startswith(('rtmdet.deploy', 'rtmdet.train', "
                "'rtmdet.cli', 'onnx'))]\n"
                "assert not heavy, heavy\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=PKG.parent, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
