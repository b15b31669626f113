"""The CT engine on contrast-enhanced CT (issue 15): the phase, blood is not bone, plaque is not bone, the blood pool.

Cases: the real contrast DICOM series (portal-venous, the calcified aorta on the spine) against TotalSegmentator's
labels of it; example_ct_sm made arterial and portal-venous from its reference labels (contrast_cases.py), also
thinned to 0.8 x 0.8 x 1.5 mm; and the chest phantom (chest_phantom.py: heart, aorta on the spine, pulmonary
trunk, undiluted contrast in the superior vena cava, plaque, sternum, ribs, arms), native too. Acceptance: at most
2 % of the aorta, heart, pulmonary artery and inferior vena cava is skeleton; vertebrae and ribs recall >= 0.90;
the phase right on every case. The figures are in docs/presegmentation.md.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MedAnnotAssistLib.core.engines.ct import CTEngine
from MedAnnotAssistLib.core.labelio import Geometry, ReaderLabels, reoriented
from Testing.presegment import chest_phantom, contrast_cases

BLOOD_IN_SKELETON = 0.02
BONE_RECALL = 0.90


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1)


def named(labels: np.ndarray, names: dict[int, str], *prefixes: str) -> np.ndarray:
    return np.isin(labels, [v for v, n in names.items() if n.startswith(prefixes)])


def fraction(mask: np.ndarray, where: np.ndarray) -> float:
    return float(mask[where].mean()) if where.any() else 0.0


@functools.lru_cache(maxsize=1)
def _dicom(sample_dir: str):
    folder = Path(sample_dir)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder / "example_ct_dicom")))
    image = reader.Execute()
    labels = sitk.ReadImage(str(folder / "example_seg_dicom.nii.gz"))
    seg = ReaderLabels("seg", None, Geometry.of(labels), [sitk.GetArrayFromImage(labels)], {}, [])
    reference = reoriented(seg, Geometry.of(image)).layers[0]  # the same voxels, flipped in y: exact
    return image, reference, CTEngine().run(image)


@functools.lru_cache(maxsize=4)
def _synthetic(sample_dir: str, phase: str, thin: bool):
    image, labels, plaque = contrast_cases.sample_case(sample_dir, phase)
    if thin:
        hu = sitk.GetArrayFromImage(image).astype(np.float32)
        sigma = contrast_cases.noise_sigma(hu, (hu > 0) & (hu < 100))
        fine = contrast_cases.thin_slices(hu, image.GetSpacing()[::-1], (1.5, 0.8, 0.8), sigma)
        thin_image = sitk.GetImageFromArray(np.round(fine).astype(np.int16))
        thin_image.SetSpacing((0.8, 0.8, 1.5))
        thin_image.SetDirection(image.GetDirection())
        thin_image.SetOrigin(image.GetOrigin())
        grid = sitk.GetImageFromArray(labels)
        grid.CopyInformation(image)
        labels = sitk.GetArrayFromImage(sitk.Resample(grid, thin_image, sitk.Transform(), sitk.sitkNearestNeighbor))
        image, plaque = thin_image, None
    return image, labels, plaque, CTEngine().run(image)


@functools.lru_cache(maxsize=4)
def _chest(phase: str, marrow: float = 230.0):
    hu, truth, spacing = chest_phantom.chest(phase, (1.5, 1.0, 1.0), marrow=marrow)
    return truth, CTEngine().run(chest_phantom.as_image(hu, spacing))


@pytest.fixture(scope="session")
def dicom_case(sample_dir):
    return _dicom(str(sample_dir))


# -- the phase --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "case, phase",
    [("native sm", "native"), ("native", "native"), ("dicom", "portal-venous"), ("arterial", "arterial"),
     ("portal-venous", "portal-venous"), ("chest arterial", "arterial"), ("chest portal-venous", "portal-venous"),
     ("chest native", "native")],
)  # fmt: skip
def test_phase_is_read_from_the_image(case, phase, sample_dir):
    if case == "dicom":
        result = _dicom(str(sample_dir))[2]
    elif case.startswith("chest"):
        result = _chest(case.split()[1])[1]
    elif case.startswith("native"):
        name = "example_ct_sm.nii.gz" if case == "native sm" else "example_ct.nii.gz"
        result = CTEngine().run(sitk.ReadImage(str(sample_dir / name)), structures=["skeleton"])
    else:
        result = _synthetic(str(sample_dir), case, False)[3]
    contrast = result.provenance["notes"]["contrast"]
    assert contrast["phase"] == phase
    assert 0.5 <= contrast["confidence"] <= 1.0
    if phase == "native":
        assert contrast["blood_hu"] is None and not result.mask("blood_pool").any()
    else:
        assert contrast["enhancement_hu"] >= 60 and result.mask("blood_pool").any()


# -- the real contrast series ------------------------------------------------------------------------------------
def test_dicom_blood_is_not_bone(dicom_case, total_labels):
    """The calcified aorta lies on the spine: before, 84 % of it was skeleton."""
    _, reference, result = dicom_case
    skeleton = result.mask("skeleton")
    for name in ("aorta", "inferior_vena_cava"):
        assert fraction(skeleton, named(reference, total_labels, name)) <= BLOOD_IN_SKELETON, name
    assert fraction(skeleton, named(reference, total_labels, "portal_vein")) <= 0.05
    pool = result.mask("blood_pool")
    assert fraction(pool, named(reference, total_labels, "aorta")) >= 0.75
    assert not (pool & skeleton).any()


def reference_cells(image, labels_image) -> np.ndarray:
    """The cell of TotalSegmentator's 3 mm working grid behind each voxel of ``image``: example_seg_dicom was made by
    its ``--fast`` model, which resamples the CT to 3 mm and its labels back by nearest neighbour (scipy's zoom of
    order 0: index o of n voxels comes from round(o (m - 1) / (n - 1)) of m). Labels stored flipped are flipped."""
    axes = []
    for a in range(3):  # i, j, k
        n = image.GetSize()[a]
        m = int(round(n * image.GetSpacing()[a] / 3.0))
        cell = np.round(np.arange(n) * (m - 1) / (n - 1)).astype(np.int64)
        if image.GetDirection()[4 * a] * labels_image.GetDirection()[4 * a] < 0:
            cell = cell[::-1]
        axes.append((cell, m))
    (ci, mi), (cj, mj), (ck, _) = axes
    return (ck[:, None, None] * mj + cj[None, :, None]) * mi + ci[None, None, :]


def at_cells(mask, cells) -> np.ndarray:
    """``mask`` decided per cell by majority, on the original voxels."""
    count = np.bincount(cells.ravel())
    return (np.bincount(cells.ravel(), weights=mask.ravel(), minlength=len(count)) >= 0.5 * count)[cells]


def test_dicom_bones(dicom_case, total_labels, sample_dir):
    """The reference is a 3 mm segmentation brought to the 0.98 x 0.98 x 2 mm grid (constant over each 3 mm cell):
    its edges are off by up to 1.5 mm either way, and it leaves out bone (rib heads, osteophytes, the xiphoid).
    The engine's skeleton is compared at full resolution and, fairly, on the reference's own 3 mm cells."""
    image, reference, result = dicom_case
    skeleton = result.mask("skeleton")
    assert fraction(skeleton, named(reference, total_labels, "vertebrae_", "rib_")) >= BONE_RECALL  # 0.906
    bones = named(reference, total_labels, "vertebrae_", "rib_", "humerus")
    cells = reference_cells(image, sitk.ReadImage(str(sample_dir / "example_seg_dicom.nii.gz")))
    count, inside = np.bincount(cells.ravel()), np.bincount(cells.ravel(), weights=bones.ravel())
    assert np.all((inside == 0) | (inside == count)), "the reference is constant over each 3 mm cell"
    # measured 0.782 at full resolution, 0.828 on the reference's cells (engine 1.1: 0.747, 0.783): discs, the
    # spinal canal and the partial-volume layer outside the cortex are no longer bone (docs/presegmentation.md)
    assert dice(skeleton, bones) >= 0.77
    assert dice(at_cells(skeleton, cells), bones) >= 0.82


# -- synthetic contrast from the native sample --------------------------------------------------------------------
@pytest.mark.parametrize("phase", ["arterial", "portal-venous"])
def test_synthetic_blood_is_not_bone(phase, sample_dir, total_labels):
    _, labels, plaque, result = _synthetic(str(sample_dir), phase, False)
    skeleton = result.mask("skeleton")
    for name in ("aorta", "inferior_vena_cava"):
        assert fraction(skeleton, named(labels, total_labels, name)) <= BLOOD_IN_SKELETON, name
    assert fraction(skeleton, named(labels, total_labels, "portal_vein", "kidney_")) <= 0.02
    assert plaque.any() and fraction(skeleton, plaque) <= 0.10
    assert fraction(skeleton, named(labels, total_labels, "vertebrae_", "rib_")) >= BONE_RECALL
    assert dice(skeleton, named(labels, total_labels, "vertebrae_", "rib_")) >= 0.85
    assert fraction(result.mask("blood_pool"), named(labels, total_labels, "aorta")) >= 0.7


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["arterial", "portal-venous"])
def test_thin_slices(phase, sample_dir, total_labels):
    """The same at 0.8 x 0.8 x 1.5 mm (working grid 3.2 mm, full-resolution boundaries)."""
    _, labels, _, result = _synthetic(str(sample_dir), phase, True)
    assert result.provenance["notes"]["contrast"]["phase"] == phase
    skeleton = result.mask("skeleton")
    for name in ("aorta", "inferior_vena_cava"):
        assert fraction(skeleton, named(labels, total_labels, name)) <= BLOOD_IN_SKELETON, name


# -- the chest phantom ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("phase, marrow", [("arterial", 230.0), ("arterial", 380.0), ("portal-venous", 230.0)])
def test_chest_phantom(phase, marrow):
    """Heart, aorta on a vertebra with dense marrow (380: as bright as the blood), pulmonary trunk, undiluted
    contrast in the superior vena cava, plaque on the aortic wall, coronary calcium, sternum and ribs near the
    heart."""
    truth, result = _chest(phase, marrow)
    skeleton = result.mask("skeleton")
    for name in ("aorta", "heart", "pulmonary", "svc"):
        assert fraction(skeleton, truth[name]) <= BLOOD_IN_SKELETON, name
    assert fraction(skeleton, truth["plaque"]) <= 0.25 and fraction(skeleton, truth["coronary_calcium"]) <= 0.25
    for name in ("vertebrae", "ribs", "bone"):
        assert fraction(skeleton, truth[name]) >= 0.95, name
    assert dice(result.mask("blood_pool"), truth["blood"]) >= 0.75
    assert dice(skeleton, truth["bone"]) >= 0.95  # 0.966-0.970; 0.886-0.889 with a fixed 150 HU edge


@pytest.mark.parametrize("phase", ["arterial", "native"])
def test_chest_phantom_discs_and_canal_are_not_bone(phase):
    """The discs (90 HU, 8 mm between vertebral bodies, bridged by the 9 mm closing of the cortex) and the spinal
    canal (enclosed by the arch) are not bone: before, 49 % and 84 % of them were skeleton."""
    truth, result = _chest(phase)
    skeleton = result.mask("skeleton")
    assert fraction(skeleton, truth["discs"]) <= 0.25  # 0.14: their edges against the endplates
    assert fraction(skeleton, truth["canal"]) <= 0.10  # 0.04


def test_chest_phantom_native_is_unchanged():
    truth, result = _chest("native")
    assert result.provenance["notes"]["contrast"]["phase"] == "native"
    assert "blood_pool" in result.provenance["notes"]["absent"] and result.confidence["blood_pool"] == 0.0
    assert fraction(result.mask("skeleton"), truth["bone"]) >= 0.95


# -- the blood pool structure, provenance and the command line ------------------------------------------------------
def test_blood_pool_structure():
    structure = CTEngine().info().structure("blood_pool")
    terms = structure.terminology
    assert (terms.category.value, terms.type.value, terms.type.meaning) == ("85756007", "87612001", "Blood")
    assert structure.name == "Contrast-enhanced vessels and heart chambers"


def test_phase_in_provenance_and_command_line(sample_dir, tmp_path):
    image = contrast_cases.sample_case(str(sample_dir), "arterial")[0]
    path = tmp_path / "arterial.nii.gz"
    sitk.WriteImage(image, str(path))
    out = tmp_path / "arterial.seg.nrrd"
    command = [str(Path(sys.executable).parent / "medannot"), "presegment", str(path), "--engine", "ct", "--out",
               str(out), "--quiet"]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "contrast phase arterial (confidence 0.84" in run.stdout
    assert "Contrast-enhanced vessels and heart chambers" in run.stdout
    summary = json.loads(out.with_name("arterial.presegment.json").read_text())
    assert summary["provenance"]["notes"]["contrast"]["phase"] == "arterial"


@pytest.mark.parametrize("layout", ["lps", "nifti", "coronal"])
def test_fine_blocks_are_the_working_voxels(layout):
    """The original voxels behind each working voxel (for the texture tests), in every storage layout: their mean
    is the working grid's block mean, oriented (S, P, L)."""
    from MedAnnotAssistLib.core.engines.ct_grid import FineBlocks, orientation, to_lps
    from Testing.presegment.test_ct_engine import as_image

    rng = np.random.default_rng(3)
    image = as_image(rng.integers(-1000, 1000, (14, 17, 20)).astype(np.int16), (1.5, 1.0, 0.5), layout)
    factors = [2, 3, 4]  # i, j, k
    hu = sitk.GetArrayFromImage(sitk.BinShrink(image, factors)).astype(np.float32)
    order, flips = orientation(np.array(image.GetDirection()).reshape(3, 3))
    hu = to_lps(hu, order, flips)
    fine = FineBlocks(sitk.GetArrayViewFromImage(image), factors[::-1], order, flips, hu.shape)
    points = np.argwhere(np.ones(hu.shape, bool))
    assert np.allclose(fine.values(points).mean(axis=1), hu[tuple(points.T)], atol=0.51)  # int16 means, rounded
    assert fine.finer and np.allclose(fine.spread(points), fine.values(points).std(axis=1))


def test_dense_bone_apart_from_blood_stays_bone():
    """A homogeneous block of dense bone (1600 HU, 24 mm, like the petrous bone) in the arterial chest's wall is
    as bright and thick as undiluted contrast, but lies apart from blood: it stays skeleton, out of the pool."""
    hu, _, spacing = chest_phantom.chest("arterial", (1.5, 1.0, 1.0))
    hu = hu.copy()
    block = (slice(40, 56), slice(150, 174), slice(40, 64))  # z 60-84, y 150-174, x 40-64 mm: right chest wall
    hu[block] = 1600 + np.random.default_rng(5).normal(0, 25, hu[block].shape).astype(np.int16)
    result = CTEngine().run(chest_phantom.as_image(hu, spacing))
    assert result.provenance["notes"]["contrast"]["phase"] == "arterial"
    assert result.mask("skeleton")[block].mean() >= 0.9 and not result.mask("blood_pool")[block].any()
