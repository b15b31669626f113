"""The Slicer extension's build files and UI agree with the files on disk and the Python code."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

from Testing.conftest import MODULE_DIR, REPO

# Keys allowed by Slicer's slicer-extension-catalog-entry-schema-v1.0.2.json
CATALOG_KEYS = {
    "$schema",
    "category",
    "scm_url",
    "scm_revision",
    "scm_type",
    "build_dependencies",
    "dicom_support_rule",
    "build_subdirectory",
    "enabled",
    "tier",
}


def _cmake_set(text: str, name: str) -> list[str]:
    match = re.search(rf"set\(\s*{name}\s+(.*?)\)", text, re.S)
    assert match, f"{name} is not set in MedAnnotAssist/CMakeLists.txt"
    return [line.strip() for line in match.group(1).split() if line.strip() and not line.strip().startswith("#")]


def test_module_cmake_lists_exactly_the_files_on_disk():
    text = (MODULE_DIR / "CMakeLists.txt").read_text()
    scripts = _cmake_set(text, "MODULE_PYTHON_SCRIPTS")
    resources = _cmake_set(text, "MODULE_PYTHON_RESOURCES")
    scripts = [s.replace("${MODULE_NAME}", "MedAnnotAssist") for s in scripts]
    on_disk_scripts = sorted(
        p.relative_to(MODULE_DIR).as_posix()
        for p in [MODULE_DIR / "MedAnnotAssist.py", *(MODULE_DIR / "MedAnnotAssistLib").rglob("*.py")]
    )
    on_disk_resources = sorted(
        p.relative_to(MODULE_DIR).as_posix() for p in (MODULE_DIR / "Resources").rglob("*") if p.is_file()
    )
    assert sorted(s.removesuffix(".py") + ".py" for s in scripts) == on_disk_scripts
    assert sorted(resources) == on_disk_resources
    assert "slicerMacroBuildScriptedModule" in text and "WITH_GENERIC_TESTS" in text


def test_extension_cmake_metadata():
    text = (REPO / "CMakeLists.txt").read_text()
    for key in (
        "EXTENSION_HOMEPAGE",
        "EXTENSION_CONTRIBUTORS",
        "EXTENSION_DESCRIPTION",
        "EXTENSION_ICONURL",
        "EXTENSION_SCREENSHOTURLS",
        "EXTENSION_DEPENDS",
    ):
        assert re.search(rf"set\({key}\b", text), key
    assert "EXTENSION_CATEGORY" not in text  # the category lives in the catalog entry since Slicer 5.x
    assert "find_package(Slicer REQUIRED)" in text
    assert "add_subdirectory(MedAnnotAssist)" in text


def test_catalog_entry():
    entry = json.loads((REPO / "MedAnnotAssist.json").read_text())
    assert set(entry) <= CATALOG_KEYS
    assert {"$schema", "category", "scm_url"} <= set(entry)
    assert entry["$schema"].endswith("slicer-extension-catalog-entry-schema-v1.0.2.json#")
    assert 1 <= entry.get("tier", 1) <= 5


def _ui_names() -> set[str]:
    names = set()
    for ui in (MODULE_DIR / "Resources" / "UI").glob("*.ui"):
        names |= {w.get("name") for w in ET.parse(ui).iter("widget")}
    return names


def _python_ui_lookups() -> dict[str, set[str]]:
    files = [MODULE_DIR / "MedAnnotAssist.py", *(MODULE_DIR / "MedAnnotAssistLib" / "widgets").rglob("*.py")]
    return {p.name: set(re.findall(r"\bui\.(\w+)", p.read_text())) for p in files}


def test_every_widget_name_the_code_reads_exists_in_the_ui():
    names = _ui_names()
    lookups = _python_ui_lookups()
    assert sum(map(len, lookups.values())) >= 5  # the panel is really wired through self.ui
    missing = {f: sorted(used - names) for f, used in lookups.items() if used - names}
    assert not missing, f"widgets used in Python but absent from the .ui: {missing}"


def test_ui_binds_parameters_by_slicer_parameter_name():
    ui = (MODULE_DIR / "Resources" / "UI" / "MedAnnotAssist.ui").read_text()  # the module's parameter node's widgets
    assert "SlicerParameterName" in ui
