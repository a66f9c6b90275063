"""No module of airflow_saga uses another's private names (the developers' guide; issue 12 item 7).

A private helper borrowed across modules is how the label and statistics helpers once forked; a public
name in the module that owns it is the fix. Libraries' private internals go through ``core/compat.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "airflow_saga"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        out[".".join(rel.parts).removesuffix(".__init__")] = path
    return out


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_private_names_imported_or_used_across_airflow_saga_modules():
    modules = _modules()
    found = []
    for mod, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases: dict[str, str] = {}  # local name -> airflow_saga module it is bound to
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("airflow_saga"):
                for a in node.names:
                    target = f"{node.module}.{a.name}"
                    if node.module != mod and _private(a.name) and target not in modules:
                        found.append(f"{path.name}:{node.lineno} imports {node.module}.{a.name}")
                    if target in modules:
                        aliases[a.asname or a.name] = target
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("airflow_saga") and any(_private(p) for p in a.name.split(".")[1:]):
                        found.append(f"{path.name}:{node.lineno} imports {a.name}")
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and aliases[node.value.id] != mod
                and _private(node.attr)
            ):
                found.append(f"{path.name}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}")
    assert not found, "private names used across modules:\n" + "\n".join(found)
