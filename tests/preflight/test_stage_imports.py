"""Data flows one way: contract -> ingest -> quality -> features -> training -> promotion
-> ops. A stage never imports a later one; shared pieces live in lib/, resources/,
settings/. Read from the source (every import statement, top-level or in a function)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "e2i_platform"
ORDER = ["contract", "ingest", "quality", "features", "training", "promotion", "ops"]
# Known exceptions, each to be removed by issue 13 item 6 (not to be added to).
KNOWN = {
    ("settings", "features"),  # settings/models.py validates view names against features/specs
    ("lib", "features"),  # lib/table_metadata.py documents feature columns from features/specs
}
SHARED = {"lib", "resources", "settings"}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
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
            if there is None or there == here or (here, there) in KNOWN:
                continue
            later = here in ORDER and there in ORDER and ORDER.index(there) > ORDER.index(here)
            # The contract is everyone's vocabulary: shared code may read it.
            shared_to_stage = here in SHARED and there in ORDER and there != "contract"
            if later or shared_to_stage:
                wrong.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert wrong == []


def test_training_reads_releases_through_lib_not_promotion():
    text = (PACKAGE / "training" / "model_run.py").read_text()
    assert "e2i_platform.lib.releases" in text and "e2i_platform.promotion" not in text
