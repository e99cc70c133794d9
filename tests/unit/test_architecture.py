"""The module map holds: components never reach back into the plugin facade.

``plugin.py`` is the composition root; the parts it wires (dispatch,
coalescing, placement, recovery, hosting, registry, runtime) get what they
use passed in.  An import of ``plugin`` from one of them would bring back the
back-reference this layout removed, so the imports are checked here by
parsing the source (no import side effects).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "celery_persistent"

COMPONENTS = [
    "coalescing.py", "dispatch.py", "placement.py", "recovery.py", "registry.py", "runtime.py",
    "execution.py", "planning.py", "protocol.py", "inbox.py", "queues.py", "answers.py", "leases.py",
    *[f"hosting/{path.name}" for path in sorted((PACKAGE / "hosting").glob("*.py"))],
]


def imported_modules(path: Path, root: Path = PACKAGE) -> set[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved against ``root``)."""
    package = ["celery_persistent", *path.relative_to(root).parent.parts]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("component", COMPONENTS)
def test_components_do_not_import_the_plugin(component: str) -> None:
    modules = imported_modules(PACKAGE / component)
    assert "celery_persistent.plugin" not in modules, f"{component} imports the plugin facade"


def test_the_check_sees_a_plugin_import(tmp_path: Path) -> None:
    """Relative imports are resolved: a planted back-reference is found."""
    sample = tmp_path / "celery_persistent" / "hosting" / "x.py"
    sample.parent.mkdir(parents=True)
    sample.write_text("from ..plugin import Persistent\n")
    assert "celery_persistent.plugin" in imported_modules(sample, tmp_path / "celery_persistent")


def test_no_component_holds_a_plugin_back_reference() -> None:
    """No ``self.p`` / ``persistent`` attribute in the wired parts."""
    for component in COMPONENTS:
        text = (PACKAGE / component).read_text("utf-8")
        assert "self.p." not in text and "self.p =" not in text, component
