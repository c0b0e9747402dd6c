"""Data flows one way: contract -> ingest -> quality -> features -> training -> promotion
-> ops. A stage never imports a later one; shared pieces live in lib/, resources/,
settings/ and read only the contract; nothing imports the root definitions. Read from
the source (every import statement, top-level or in a function)."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "e2i_platform"
ORDER = ["contract", "ingest", "quality", "features", "training", "promotion", "ops"]
SHARED = {"lib", "resources", "settings"}
ROOT = "e2i_platform.definitions"


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            # `from e2i_platform import definitions` imports the module too.
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "e2i_platform" else None


def test_no_stage_imports_a_later_stage_and_shared_code_imports_no_stage():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = path.relative_to(PACKAGE).parts[0]
        for module in _imports(path):
            there = _stage(module)
            if there is None or there == here:
                continue
            later = here in ORDER and there in ORDER and ORDER.index(there) > ORDER.index(here)
            # The contract is everyone's vocabulary: shared code may read it.
            shared_to_stage = here in SHARED and there in ORDER and there != "contract"
            if later or shared_to_stage:
                wrong.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert wrong == []


def test_nothing_imports_the_root_definitions():
    """The root is Dagster's entry point: it imports every stage, so a product module
    importing it closes a package circle (`ops.location` loads it by name, as Dagster
    does). Tests and benchmarks may import it; the product code (the package and the
    Feast repository) may not."""
    wrong = [
        f"{path.relative_to(REPO)} imports {module}"
        for path in sorted([*PACKAGE.rglob("*.py"), *(REPO / "feature_repo").rglob("*.py")])
        for module in _imports(path)
        if module == ROOT or module.startswith(ROOT + ".")
    ]
    assert wrong == []


def test_the_import_check_sees_every_spelling_of_an_import_of_the_root(tmp_path):
    for line in (
        "from e2i_platform.definitions import build_definitions",
        "from e2i_platform import definitions",
        "import e2i_platform.definitions as root",
    ):
        module = tmp_path / "m.py"
        module.write_text(f"def f():\n    {line}\n")
        assert ROOT in _imports(module), line


def test_training_reads_releases_through_lib_not_promotion():
    text = (PACKAGE / "training" / "model_run.py").read_text()
    assert "e2i_platform.lib.releases" in text and "e2i_platform.promotion" not in text
