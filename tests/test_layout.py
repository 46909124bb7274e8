"""The code's layering, read from its source: which module imports which."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "ft_cli"


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_only(tree: ast.AST) -> set[ast.AST]:
    """The nodes under `if TYPE_CHECKING:`: imports for annotations, never run."""
    inside: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            for statement in node.body:
                inside |= set(ast.walk(statement))
    return inside


def import_graph() -> dict[str, set[str]]:
    """{module: the ft_cli modules it imports when it runs, at any depth of its code}."""
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        tree = ast.parse(path.read_text())
        skipped = _type_only(tree)
        for node in ast.walk(tree):
            if node in skipped:
                continue
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                    base = f"{base}.{node.module}" if node.module else base
                for alias in node.names:  # a submodule, else a name of the module itself
                    found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_outside_the_command_layer_imports_a_command() -> None:
    graph = import_graph()
    upward = sorted(
        f"{name} imports {other}"
        for name, imported in graph.items()
        if not name.startswith("ft_cli.commands") and name not in ("ft_cli.cli", "ft_cli.__main__")
        for other in imported
        if other.startswith("ft_cli.commands")
    )
    assert upward == []


def test_the_run_dir_floor_imports_nothing_above_it() -> None:
    graph = import_graph()
    allowed = ("ft_cli.rundir", "ft_cli.errors", "ft_cli.host", "ft_cli.paths")
    above = sorted(
        f"{name} imports {other}"
        for name, imported in graph.items()
        if name.startswith("ft_cli.rundir")
        for other in imported
        if not other.startswith(allowed) and other != "ft_cli"
    )
    assert above == []


def test_the_import_graph_finds_cycles_where_there_are_some() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_two_modules_import_each_other_even_indirectly() -> None:
    assert cycles(import_graph()) == []


def _names_compared(tree: ast.AST, names: set[str]) -> list[str]:
    """The comparisons in `tree` with one of `names` as a string (`DataFormat.text` is a file
    format, not the text modality)."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        for part in ast.walk(node):
            if isinstance(part, ast.Constant) and part.value in names:
                found.append(f"{node.lineno}: {ast.unparse(node)}")
                break
    return found


def test_the_finder_of_name_comparisons_finds_them() -> None:
    code = (
        "a = kind == 'image'\nb = kind in ('mlm', x)\nc = kind == 'other'\n"
        "d = fmt == DataFormat.image\n"
    )
    assert _names_compared(ast.parse(code), {"image", "mlm"}) == [
        "1: kind == 'image'",
        "2: kind in ('mlm', x)",
    ]


def test_no_code_outside_tasks_and_inputs_compares_with_a_task_or_modality_name() -> None:
    from ft_cli.inputs import MODALITIES
    from ft_cli.tasks import TASKS

    names = set(TASKS) | set(MODALITIES)
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{line}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.relative_to(PACKAGE).parts[0] not in ("tasks", "inputs")
        for line in _names_compared(ast.parse(path.read_text()), names)
    ]
    assert found == []
