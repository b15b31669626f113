"""docs/benchmarks.md is rewritten one section, or one table inside a section, at a time."""

from __future__ import annotations

import pytest

from bench.benchdoc import replace_section

DOC = """# Benchmarks

## Consensus

Measured on day 1.

### STAPLE, sample grid

old sample table

### STAPLE, big grid

old big table

### Run and notes

- notes of the whole run

## DICOM

dicom table
"""


def test_a_table_rewritten_alone_keeps_the_rest_of_its_section_and_the_other_sections(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text(DOC)
    replace_section(doc, "### STAPLE, big grid\n\nnew big table\n", parent="## Consensus")
    replace_section(doc, "### STAPLE, sample grid\n\nnew sample table\n", parent="## Consensus")
    assert doc.read_text() == DOC.replace("old big", "new big").replace("old sample", "new sample")


def test_a_new_table_goes_at_the_end_of_its_section(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text(DOC)
    replace_section(doc, "### STAPLE, huge grid\n\nhuge table\n", parent="## Consensus")
    assert doc.read_text() == DOC.replace(
        "whole run\n\n## DICOM", "whole run\n\n### STAPLE, huge grid\n\nhuge table\n\n## DICOM"
    )


def test_a_section_replaces_its_subsections_and_a_missing_parent_is_an_error(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text(DOC)
    replace_section(doc, "## Consensus\n\nall new\n")
    assert doc.read_text() == "# Benchmarks\n\n## Consensus\n\nall new\n\n## DICOM\n\ndicom table\n"
    with pytest.raises(ValueError, match=r"benchmarks\.md: no section '## Queue' to put '### x' in"):
        replace_section(doc, "### x\n\ny\n", parent="## Queue")
