"""Rule evaluation on small synthetic masks with known answers (real masks: Testing/mrml)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from MedAnnotAssistLib.core.protocol import Protocol
from MedAnnotAssistLib.core.protocol_check import ABSENT, COMPLETE, DRAFTED, PENDING, check_masks, count_components

from .test_protocol_errors import VALID

# 2 x 2 x 2 mm voxels (8 mm^3); RAS x grows with i, so high i is the patient's right.
IJK_TO_RAS = np.diag([2.0, 2.0, 2.0, 1.0])
SHAPE = (10, 40, 40)


def protocol(**changes) -> Protocol:
    data = copy.deepcopy(VALID)
    for structure_id, rules in changes.items():
        next(s for s in data["structures"] if s["id"] == structure_id)["rules"] = rules
    return Protocol.from_json(data)


def box(i0, i1, j0=5, j1=15, k0=2, k1=8):
    mask = np.zeros(SHAPE, bool)
    mask[k0:k1, j0:j1, i0:i1] = True
    return mask


def test_volume_components_and_states():
    liver = box(25, 35)  # 6 * 10 * 10 voxels * 8 mm^3 = 4.8 ml
    p = protocol(liver={"volumeMl": {"min": 1, "max": 5}, "maxComponents": 1})
    check = check_masks(p, {"liver": liver}, IJK_TO_RAS)
    liver_check = check.structure("liver")
    assert liver_check.state == COMPLETE
    assert liver_check.volume_ml == pytest.approx(4.8)
    assert check.structure("lesion").state == PENDING  # optional and empty: not a problem
    assert check.ready

    two = liver | box(2, 6)
    check = check_masks(p, {"liver": two}, IJK_TO_RAS)
    assert check.structure("liver").state == DRAFTED
    assert [r.message for r in check.structure("liver").problems] == [
        "volume 6.7 ml, expected 1-5 ml",
        "2 connected component(s), at most 1 allowed",
    ]
    assert not check.ready


def test_required_empty_blocks_and_warning_does_not():
    p = protocol(liver={"volumeMl": {"max": 1}, "severity": "warning"})
    check = check_masks(p, {}, IJK_TO_RAS)
    assert check.blocking_messages() == ["Liver: required structure is empty"]
    check = check_masks(p, {"liver": box(25, 35)}, IJK_TO_RAS)
    assert check.structure("liver").problems[0].rule == "volumeMl"
    assert check.ready  # a warning informs, it does not block


def test_inside_outside_and_laterality():
    liver = box(20, 40)
    p = protocol(
        liver={"laterality": {"side": "right"}},
        lesion={"inside": {"structure": "liver", "fraction": 0.9}},
    )
    inside = check_masks(p, {"liver": liver, "lesion": box(22, 26)}, IJK_TO_RAS)
    assert inside.structure("lesion").state == COMPLETE
    assert inside.structure("liver").results[0].message.startswith("centre 20.0 mm to the patient's right")
    half = check_masks(p, {"liver": liver, "lesion": box(16, 24)}, IJK_TO_RAS)
    assert half.structure("lesion").problems[0].message == "50.0% inside Liver, at least 90% required"
    wrong_side = check_masks(p, {"liver": box(0, 10)}, IJK_TO_RAS)
    assert (
        "to the patient's left of the image centre, expected right" in wrong_side.structure("liver").problems[0].message
    )
    p = protocol(lesion={"outside": {"structure": "liver"}})
    overlap = check_masks(p, {"liver": liver, "lesion": box(16, 24)}, IJK_TO_RAS)
    assert overlap.structure("lesion").problems[0].message == "50.0% overlaps Liver, at most 0% allowed"


def test_declared_absent():
    p = protocol(liver={})
    check = check_masks(p, {"liver": box(25, 35)}, IJK_TO_RAS, declared_absent=["lesion"])
    assert check.structure("lesion").state == ABSENT and check.ready
    check = check_masks(p, {"liver": box(25, 35), "lesion": box(26, 27)}, IJK_TO_RAS, declared_absent=["lesion"])
    assert check.structure("lesion").problems[0].message == "declared absent but 60 voxels are drawn"
    check = check_masks(p, {}, IJK_TO_RAS, declared_absent=["liver"])
    assert check.blocking_messages() == ["Liver: required structure cannot be declared absent"]


def test_components_count_diagonal_neighbours_as_connected():
    mask = np.zeros((4, 4, 4), bool)
    mask[0, 0, 0] = mask[1, 1, 1] = True
    assert count_components(mask) == 1
    mask[3, 3, 3] = True
    assert count_components(mask) == 2
    assert count_components(np.zeros((2, 2, 2), bool)) == 0


# --- the server's path: crops from a file's label layers ----------------------------------------------------


def _reader(layers, segments, geometry):
    from MedAnnotAssistLib.core.labelio import ReaderLabels

    return ReaderLabels("reader", None, geometry, layers, segments)


def test_label_layers_give_the_verdicts_of_full_masks(real_readers):
    """check_reader (bounding boxes of a file's label layers) equals check_masks (one full mask per structure),
    with a second layer whose label values are too large for one box slot per value."""
    from MedAnnotAssistLib.core.labelio import Geometry
    from MedAnnotAssistLib.core.protocol import bundled_protocol
    from MedAnnotAssistLib.core.protocol_check import check_reader
    from Testing.readers import ABDOMEN_LABELS

    full, fast, _spacing, image = real_readers
    protocol = bundled_protocol("abdominal-organs")
    second = np.zeros(full.shape, np.int32)
    second[fast == 3] = 70_000  # the fast reader's left kidney, overlapping the first layer's
    second[(fast == 1) & (full != 1)] = 90_000  # what the fast reader adds to the spleen
    segments = {sid: (0, value) for value, sid in ABDOMEN_LABELS.items()}
    segments |= {"kidney_left": (1, 70_000), "spleen": (1, 90_000)}
    reader = _reader([full, second], segments, Geometry.of(image))
    masks = {sid: reader.mask(sid) for sid in segments}
    for absent in ([], ["gallbladder"], ["liver", "superior_mesenteric_artery"]):
        expected = check_masks(protocol, masks, reader.geometry.ijk_to_ras, declared_absent=absent)
        assert check_reader(protocol, reader, declared_absent=absent).to_json() == expected.to_json()
    verdicts = check_reader(protocol, reader)
    assert verdicts.structure("spleen").components > 1  # only the fast reader's extra voxels
    assert verdicts.structure("kidney_left").voxels == int(np.count_nonzero(fast == 3))


def test_reader_check_works_on_crops_not_volumes():
    """No structure costs a full-grid copy: the check's peak allocation stays far below the grid's size."""
    import tracemalloc

    from MedAnnotAssistLib.core.labelio import Geometry
    from MedAnnotAssistLib.core.protocol_check import check_reader

    labels = np.zeros((200, 256, 256), np.uint8)  # 13 MB: one full bool mask is as large
    labels[50:80, 100:140, 150:200] = 1
    labels[50:80, 100:140, 205:210] = 1  # a second liver component
    lesions = np.zeros_like(labels)  # a second layer, as Slicer writes overlapping segments
    lesions[60:70, 110:120, 160:170] = 1
    geometry = Geometry((256, 256, 200), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    reader = _reader([labels, lesions], {"liver": (0, 1), "lesion": (1, 1)}, geometry)
    p = protocol(liver={"volumeMl": {"min": 1}, "maxComponents": 1, "laterality": {"side": "right"}})
    tracemalloc.start()
    try:
        check = check_reader(p, reader)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [r.rule for r in check.structure("liver").blocking] == ["maxComponents", "laterality"]
    assert check.structure("lesion").state == COMPLETE
    assert peak < labels.nbytes / 4, f"peak {peak} bytes for a {labels.nbytes}-byte grid"
    assert check.structure("lesion").results[0].value == 1.0  # inside the liver


def test_components_are_the_same_without_cc3d(monkeypatch):
    """cc3d is optional (Slicer's Python may lack it): SimpleITK then counts the same components."""
    import sys

    from MedAnnotAssistLib.core import protocol_check

    rng = np.random.default_rng(3)
    masks = [rng.random((12, 14, 16)) < fraction for fraction in (0.05, 0.2, 0.35)]
    with_cc3d = [protocol_check._components(m) for m in masks]
    monkeypatch.setitem(sys.modules, "cc3d", None)  # import cc3d now raises ImportError
    assert [protocol_check._components(m) for m in masks] == with_cc3d
    assert len(set(with_cc3d)) == 3 and min(with_cc3d) > 1
