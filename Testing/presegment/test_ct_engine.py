"""The built-in CT engine (core/engines/ct.py) on the real sample CTs and on a phantom with known truth.

Acceptance on example_ct_sm (TotalSegmentator's reference labels): lungs and each lung Dice >= 0.93,
skeleton vs vertebrae + ribs Dice >= 0.85, the body holds all labelled voxels and no outside air
or table. Not tuned to that scan: the same checks on the bigger example_ct, on the real 0.98 mm DICOM series
(contrast, arms beside the body), on example_ct resampled to 512 x 512 x 300, and on a phantom.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage as ndi

from MedAnnotAssistLib.core.engines import EngineError, get_engine, list_engines
from MedAnnotAssistLib.core.engines.ct import CTEngine
from MedAnnotAssistLib.core.jobs import CancelledError

LOBES_LEFT, LOBES_RIGHT = (10, 11), (12, 13, 14)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1)


def bone_labels(total_labels: dict[int, str]) -> list[int]:
    return [v for v, name in total_labels.items() if name.startswith(("vertebrae_", "rib_"))]


def outside_air(hu: np.ndarray) -> np.ndarray:
    """Voxels below -900 HU connected (3-D, through such voxels) to the in-plane sides of the image.

    The top and bottom slices do not count as sides: lungs leaving the volume through them are not outside."""
    parts, _ = ndi.label(hu < -900)
    side = np.unique(np.concatenate([parts[:, [0, -1], :].ravel(), parts[:, :, [0, -1]].ravel()]))
    return np.isin(parts, side[side > 0])


def table_voxels(image) -> np.ndarray:
    """The table, found independently of the engine: thin (<= 12 mm along y, on average) components of
    HU > -200 of at least 50 voxels, other than the patient's (the largest), outside each axial slice of the
    patient's filled outline and behind (ITK LPS: +y) its centre. Arms are thick; tiny fragments of the pad
    under the back are not counted."""
    hu = sitk.GetArrayFromImage(image)
    parts, count = ndi.label(hu > -200)
    sizes = np.bincount(parts.ravel())
    sizes[0] = 0
    patient = parts == sizes.argmax()
    flat = np.zeros((3, 3, 3), bool)
    flat[1] = ndi.generate_binary_structure(2, 1)
    outline = ndi.binary_fill_holes(patient, flat)
    posterior = np.sign(image.GetDirection()[4])  # +1 when j runs toward the patient's back
    centre = np.nonzero(patient)[1].mean()
    table = np.zeros(hu.shape, bool)
    for value in np.nonzero(sizes >= 50)[0]:
        part = (parts == value) & ~outline
        columns = np.count_nonzero(part.any(axis=1))
        rows = np.nonzero(part)[1]
        thin = part.sum() / max(columns, 1) * image.GetSpacing()[1] <= 12.0
        if value != sizes.argmax() and len(rows) and thin and (rows.mean() - centre) * posterior > 0:
            table |= part
    return table


def run(image, **kwargs):
    started = time.perf_counter()
    result = CTEngine().run(image, **kwargs)
    return result, time.perf_counter() - started


@pytest.fixture(scope="module")
def sample(sample_dir, total_labels):
    image = sitk.ReadImage(str(sample_dir / "example_ct_sm.nii.gz"))
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(sample_dir / "example_seg.nii.gz")))
    result, seconds = run(image)
    return image, reference, result, seconds


# -- the sample CT: acceptance ---------------------------------------------------------------------------------
def test_sample_lungs(sample):
    _, reference, result, _ = sample
    left, right = np.isin(reference, LOBES_LEFT), np.isin(reference, LOBES_RIGHT)
    got_left, got_right = result.mask("lung_left"), result.mask("lung_right")
    assert dice(got_left | got_right, left | right) >= 0.93
    assert dice(got_left, left) >= 0.93, "left lung (patient's left, from the direction cosines)"
    assert dice(got_right, right) >= 0.93


def test_sample_skeleton(sample, total_labels):
    _, reference, result, _ = sample
    assert dice(result.mask("skeleton"), np.isin(reference, bone_labels(total_labels))) >= 0.85


def test_sample_body_holds_the_patient_and_no_outside_air_or_table(sample):
    image, reference, result, _ = sample
    body = result.labels > 0  # the "body" label holds what no other structure claims
    assert body[reference > 0].all()
    hu = sitk.GetArrayFromImage(image)
    assert outside_air(hu).sum() > 10_000 and not (body & outside_air(hu)).any()
    table = table_voxels(image)
    assert table.sum() >= 100, "the sample CT shows its table behind the patient"
    assert not (body & table).any()


def test_sample_result_contents(sample):
    image, _, result, seconds = sample
    assert result.labels.shape == sitk.GetArrayViewFromImage(image).shape and result.labels.dtype == np.uint8
    assert set(result.names.values()) == {s.id for s in CTEngine().info().structures}
    assert all(0.0 <= c <= 1.0 for c in result.confidence.values()) and 0.0 <= result.uncertainty <= 1.0
    assert result.confidence["airways"] == 0.0 and "airways" in result.provenance["notes"]["absent"]
    assert result.confidence["lung_left"] > 0.5 and result.confidence["body"] > 0.5
    parameters = result.provenance["parameters"]
    assert parameters["lung_hu"] == -400.0 and parameters["body_hu"] == -500.0 and parameters["bone_hu"] == 150.0
    assert result.provenance["engine"] == "ct" and seconds < 10.0


def test_codes_are_slicer_terminology(sample_dir):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("trame_slicer")
    assert spec is not None, "trame-slicer (which ships Slicer's terminology files) is not installed"
    folder = Path(next(iter(spec.submodule_search_locations))) / "resources" / "terminologies"
    table = json.loads((folder / "SegmentationCategoryTypeModifier-DICOM-Master.term.json").read_text())
    known = set()
    for category in table["SegmentationCodes"]["Category"]:
        known.add((category["CodeValue"], category["CodeMeaning"]))
        for kind in category.get("Type", []):
            known.add((kind["CodeValue"], kind["CodeMeaning"]))
            known.update((m["CodeValue"], m["CodeMeaning"]) for m in kind.get("Modifier", []))
    for structure in CTEngine().info().structures:
        terms = structure.terminology
        for code in (terms.category, terms.type, terms.type_modifier):
            if code is not None:
                assert code.scheme == "SCT" and (code.value, code.meaning) in known, (structure.id, code)
    lung = CTEngine().info().structure("lung_left").terminology
    assert (lung.type.value, lung.type_modifier.value) == ("39607008", "7771000")


# -- laterality follows the image geometry, not the array ------------------------------------------------------
def test_laterality_follows_direction_cosines(sample):
    image, _, result, _ = sample
    array = sitk.GetArrayFromImage(image)
    # the same patient stored with the i axis reversed: direction and origin say so
    flipped = sitk.GetImageFromArray(np.ascontiguousarray(array[:, :, ::-1]))
    flipped.SetSpacing(image.GetSpacing())
    direction = np.array(image.GetDirection()).reshape(3, 3)
    flipped.SetOrigin(image.TransformIndexToPhysicalPoint((image.GetSize()[0] - 1, 0, 0)))
    direction[:, 0] *= -1
    flipped.SetDirection(direction.ravel().tolist())
    same = CTEngine().run(flipped, structures=["lung_left", "lung_right"])
    assert dice(same.mask("lung_left")[:, :, ::-1], result.mask("lung_left")) > 0.99
    # a mirrored patient (pixels reversed, geometry kept): the sides swap
    mirror = sitk.GetImageFromArray(np.ascontiguousarray(array[:, :, ::-1]))
    mirror.CopyInformation(image)
    swapped = CTEngine().run(mirror, structures=["lung_left", "lung_right"])
    assert dice(swapped.mask("lung_left")[:, :, ::-1], result.mask("lung_right")) > 0.99


def test_lung_cut_by_the_field_of_view(sample):
    image, reference, _, _ = sample
    right = np.isin(reference, LOBES_RIGHT)
    cut = int(np.nonzero(right.any(axis=(0, 1)))[0].max()) - 8  # the right lung now runs into the image side
    result = CTEngine().run(image[:cut, :, :], structures=["body", "lung_left", "lung_right"])
    assert result.provenance["notes"].get("lung_at_image_side")
    assert dice(result.mask("lung_right"), right[:, :, :cut]) >= 0.93
    assert dice(result.mask("lung_left"), np.isin(reference, LOBES_LEFT)[:, :, :cut]) >= 0.93


# -- not tuned to one scan ------------------------------------------------------------------------------------
def test_example_ct_whole_volume(sample_dir, total_labels):
    """example_ct (112 slices, pelvis to lung bases): example_ct_sm is its slices 82-111, where the reference
    applies; the rest is checked for plausible volumes."""
    image = sitk.ReadImage(str(sample_dir / "example_ct.nii.gz"))
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(sample_dir / "example_seg.nii.gz")))
    small = sitk.GetArrayFromImage(sitk.ReadImage(str(sample_dir / "example_ct_sm.nii.gz")))
    hu = sitk.GetArrayFromImage(image)
    assert np.array_equal(hu[82:], small)
    result, seconds = run(image)
    top = slice(82, None)
    left, right = np.isin(reference, LOBES_LEFT), np.isin(reference, LOBES_RIGHT)
    assert dice(result.mask("lung_left")[top], left) >= 0.93 and dice(result.mask("lung_right")[top], right) >= 0.93
    assert dice(result.mask("skeleton")[top], np.isin(reference, bone_labels(total_labels))) >= 0.85
    body = result.labels > 0
    assert body[top][reference > 0].all() and not (body & outside_air(hu)).any()
    ml = {name: np.count_nonzero(result.mask(name)) * 27 / 1000 for name in result.names.values()}
    assert 8_000 < np.count_nonzero(body) * 27 / 1000 < 30_000
    assert 20 < ml["lung_left"] < 200 and 20 < ml["lung_right"] < 200  # lung bases only
    assert 500 < ml["skeleton"] < 3_000 and 1_000 < ml["subcutaneous_fat"] < 12_000 and ml["airways"] == 0
    assert seconds < 20


def test_dicom_series_with_arms_and_contrast(sample_dir, total_labels):
    """The real 512 x 512 x 20 DICOM series (0.98 x 0.98 x 2 mm, contrast, arms beside the body, table), whose
    reference (example_seg_dicom) is stored with the other y direction: compared in physical space."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(sample_dir / "example_ct_dicom")))
    image = reader.Execute()
    reference = sitk.ReadImage(str(sample_dir / "example_seg_dicom.nii.gz"))
    reference = sitk.GetArrayFromImage(sitk.Resample(reference, image, sitk.Transform(), sitk.sitkNearestNeighbor))
    result, seconds = run(image)
    body = result.labels > 0
    hu = sitk.GetArrayFromImage(image)
    assert body[reference > 0].all()
    arms = np.isin(reference, [v for v, n in total_labels.items() if n.startswith("humerus")])
    assert arms.sum() > 1000 and body[arms].all(), "the arms stay in the body"
    assert not (body & outside_air(hu)).any()
    table = table_voxels(image)
    assert table.sum() >= 1000 and not (body & table).any()
    bones = [v for v, n in total_labels.items() if n.startswith(("vertebrae_", "rib_", "humerus", "costal"))]
    assert dice(result.mask("skeleton"), np.isin(reference, bones)) >= 0.72  # 0.74 (0.72 with a 150 HU edge)
    spacing_ml = np.prod(image.GetSpacing()) / 1000
    assert np.count_nonzero(result.mask("lung_left") | result.mask("lung_right")) * spacing_ml < 5  # no lung
    assert seconds < 10


def test_large_grid(sample_dir):
    """example_ct resampled (linear) to 512 x 512 x 300: the engine works on a ~3 mm grid and refines the
    boundaries on the original voxels; its labels agree with the native-grid run."""
    image = sitk.ReadImage(str(sample_dir / "example_ct.nii.gz"))
    size = (512, 512, 300)
    spacing = [image.GetSpacing()[a] * image.GetSize()[a] / size[a] for a in range(3)]
    origin = image.TransformContinuousIndexToPhysicalPoint(
        [(s - o) / (2 * o) for s, o in zip(spacing, image.GetSpacing(), strict=True)]
    )
    big = sitk.Resample(image, size, sitk.Transform(), sitk.sitkLinear, origin, spacing, image.GetDirection(), -1024)
    result, seconds = run(big)
    native = CTEngine().run(image)
    back = sitk.GetImageFromArray(result.labels)
    back.CopyInformation(big)
    back = sitk.GetArrayFromImage(sitk.Resample(back, image, sitk.Transform(), sitk.sitkNearestNeighbor))
    for value, name in native.names.items():
        if name not in ("airways", "blood_pool"):  # empty on this native CT
            assert dice(back == value, native.labels == value) >= (0.95 if name.startswith("lung") else 0.8), name
    assert dice(back > 0, native.labels > 0) >= 0.98
    assert seconds < 15  # about 1.2 s on 2 cores; see bench/presegment.py


# -- a phantom with known truth --------------------------------------------------------------------------------
def phantom(spacing=(3.0, 2.5, 2.5), noise=20.0, trachea=True):
    """A chest: torso with skin, subcutaneous fat, muscle wall, ribs, vertebra, two lungs with vessels, trachea
    and main bronchi, bowel gas, arms with a humerus beside it, a table behind it. Arrays (z, y, x) with +z
    superior, +y posterior, +x the patient's left (ITK LPS). Returns (hu, truth, spacing)."""
    rng = np.random.default_rng(7)
    nz, ny, nx = int(150 / spacing[0]), int(300 / spacing[1]), int(420 / spacing[2])
    z, y, x = np.meshgrid(*(np.arange(n) * s for n, s in zip((nz, ny, nx), spacing, strict=True)), indexing="ij")
    cy, cx = 140.0, 210.0

    def ellipse(a, b, dy=0.0, dx=0.0):
        return ((y - cy - dy) / a) ** 2 + ((x - cx - dx) / b) ** 2 <= 1

    hu = np.full(z.shape, -1000.0)
    torso, wall_out = ellipse(95, 130), ellipse(80, 115)
    hu[torso] = 30.0  # skin
    hu[ellipse(93, 128)] = -100.0  # subcutaneous fat
    hu[wall_out] = 50.0  # muscle wall
    hu[ellipse(70, 105)] = 20.0  # organs
    ribs = ellipse(75, 110) & ~ellipse(70, 105) & (np.cos(np.arctan2(y - cy, x - cx) * 10) > -0.3)
    hu[ribs] = 700.0
    vertebra = ellipse(18, 18, dy=45)
    hu[vertebra] = 400.0
    hu[ellipse(14, 14, dy=45)] = 150.0  # marrow
    lungs = {}
    for name, side in (("lung_left", 1), ("lung_right", -1)):
        lungs[name] = (z >= 30) & (((y - cy + 5) / 55) ** 2 + ((x - cx - side * 50) / 40) ** 2 <= 1)
        hu[lungs[name]] = -850.0
    vessels = (np.cos(z / 4.0) * np.cos(y / 5.0) * np.cos(x / 6.0) > 0.9) & (lungs["lung_left"] | lungs["lung_right"])
    hu[vessels] = 30.0
    gas = (z < 25) & ellipse(20, 25, dy=-20, dx=-40)  # bowel gas below the lungs
    hu[gas] = -1000.0
    airways = np.zeros(z.shape, bool)
    if trachea:
        reach = np.clip((100 - z) / 20.0, 0, 1)  # the main bronchi run 30 mm sideways from the carina at 100 mm
        airways = (z >= 100) & ellipse(8, 8, dy=-15)
        for side in (-1, 1):
            airways |= (z >= 80) & (z < 100) & ((y - cy + 15) ** 2 + (x - cx - side * 30 * reach) ** 2 <= 25)
        hu[airways] = -1000.0
    arms = np.zeros(z.shape, bool)
    arm_fat, humerus = arms.copy(), arms.copy()
    for side in (-1, 1):
        dx = side * 180
        arm, muscle = ellipse(40, 35, dx=dx), ellipse(28, 24, dx=dx)
        hu[arm], hu[ellipse(38, 33, dx=dx)], hu[muscle] = 30.0, -100.0, 50.0
        humerus |= ellipse(10, 10, dx=dx)
        hu[ellipse(10, 10, dx=dx)], hu[ellipse(6, 6, dx=dx)] = 700.0, 100.0
        arms |= arm
        arm_fat |= ellipse(38, 33, dx=dx) & ~muscle
    back = cy + 95
    hu[(y > back) & (y <= back + 10)] = -950.0  # mattress
    table = (y > back + 10) & (y <= back + 15) & (np.abs(x - cx) < 200)
    hu[table] = 200.0
    hu += rng.normal(0, noise, hu.shape)
    truth = {
        "body": torso | arms,
        "lung_left": (lungs["lung_left"]) & ~airways,
        "lung_right": (lungs["lung_right"]) & ~airways,
        "airways": airways,
        "skeleton": ribs | vertebra | humerus,
        "subcutaneous_fat": (ellipse(93, 128) & ~wall_out) | arm_fat,
        "table": table,
        "gas": gas,
    }
    return hu.astype(np.int16), truth, spacing


def as_image(hu, spacing, layout):
    """The phantom as a SimpleITK image: "lps" (array axes z, y, x along +S, +P, +L), "nifti" (x and y stored
    reversed, as from RAS files), or "coronal" (slices along y, rows running inferior)."""
    if layout == "lps":
        array, direction, sp = hu, np.eye(3), spacing[::-1]
    elif layout == "nifti":
        array, direction, sp = hu[:, ::-1, ::-1], np.diag([-1.0, -1.0, 1.0]), spacing[::-1]
    else:  # index i -> +x, j -> -z, k -> +y
        array = np.transpose(hu, (1, 0, 2))[:, ::-1, :]
        direction, sp = np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], float), (spacing[2], spacing[0], spacing[1])
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing([float(s) for s in sp])
    image.SetDirection(direction.ravel().tolist())
    return image


def back_to_lps(labels, layout):
    if layout == "lps":
        return labels
    if layout == "nifti":
        return labels[:, ::-1, ::-1]
    return np.transpose(labels[:, ::-1, :], (1, 0, 2))


PHANTOM_DICE = {"lung_left": 0.95, "lung_right": 0.95, "airways": 0.8, "skeleton": 0.85, "subcutaneous_fat": 0.85}


@pytest.mark.parametrize("layout", ["lps", "nifti", "coronal"])
def test_phantom(layout):
    hu, truth, spacing = phantom()
    result = CTEngine().run(as_image(hu, spacing, layout))
    labels = back_to_lps(result.labels, layout)
    names = {name: value for value, name in result.names.items()}
    assert dice(labels > 0, truth["body"]) >= 0.98
    assert not (labels > 0)[truth["table"]].any(), "the table is not body"
    assert (labels > 0)[truth["gas"]].all() and not np.isin(labels[truth["gas"]], [2, 3]).any(), "gas is body"
    for name, minimum in PHANTOM_DICE.items():
        assert dice(labels == names[name], truth[name]) >= minimum, name
    assert "grown below" in result.provenance["notes"]["airways"]


def test_phantom_fine_grid_is_refined():
    """At 1 mm the engine works on a 3 mm grid and re-decides boundary voxels on the original HU."""
    hu, truth, spacing = phantom(spacing=(1.5, 1.0, 1.0))
    result = CTEngine().run(as_image(hu, spacing, "nifti"))
    labels = back_to_lps(result.labels, "nifti")
    names = {name: value for value, name in result.names.items()}
    assert result.provenance["parameters"]["working_factors_ijk"] == [3, 3, 2]
    assert dice(labels > 0, truth["body"]) >= 0.99 and not (labels > 0)[truth["table"]].any()
    for name, minimum in PHANTOM_DICE.items():
        assert dice(labels == names[name], truth[name]) >= minimum, name
    # the edge at half maximum of the cortex: 0.997 (0.975 with a fixed 150 HU edge)
    assert dice(labels == names["skeleton"], truth["skeleton"]) >= 0.99


def test_phantom_without_trachea_has_empty_airways():
    hu, truth, spacing = phantom(trachea=False)
    result = CTEngine().run(as_image(hu, spacing, "lps"), structures=["airways", "lung_left"])
    assert not result.mask("airways").any() and result.confidence["airways"] == 0.0
    assert result.provenance["notes"]["absent"] == ["airways"]
    assert dice(result.mask("lung_left"), truth["lung_left"]) >= 0.95


# -- refusals, structures, cancel, progress --------------------------------------------------------------------
def test_refuses_mr(sample_dir):
    with pytest.raises(EngineError, match="needs a CT in Hounsfield units.*no air.*Is it an MR"):
        CTEngine().run(sitk.ReadImage(str(sample_dir / "example_mr_sm.nii.gz")))


def test_refuses_stored_values_and_shifted_mr(sample_dir):
    ct = sitk.ReadImage(str(sample_dir / "example_ct_sm.nii.gz"))
    with pytest.raises(EngineError, match="not HU-like"):
        CTEngine().run(sitk.ShiftScale(ct, 1024))  # stored pixel values, rescale intercept not applied
    mr = sitk.Cast(sitk.ReadImage(str(sample_dir / "example_mr_sm.nii.gz")), sitk.sitkInt16)
    with pytest.raises(EngineError, match="soft-tissue range"):
        CTEngine().run(sitk.ShiftScale(mr, -1024))  # has "air" but no soft tissue near 0 HU


def test_refuses_constant_and_2d_images():
    with pytest.raises(EngineError, match="constant image"):
        CTEngine().run(sitk.Image(40, 40, 20, sitk.sitkInt16))
    with pytest.raises(EngineError, match="needs a 3-D volume"):
        CTEngine().run(sitk.Image(40, 40, sitk.sitkInt16))


def test_structures_subset_and_unknown(sample):
    image = sample[0]
    result = CTEngine().run(image, structures=["lung_right", "body"])
    assert result.names == {1: "lung_right", 2: "body"} and set(result.confidence) == {"lung_right", "body"}
    assert set(np.unique(result.labels)) == {0, 1, 2}
    assert np.array_equal(result.labels > 0, sample[2].labels > 0), "skeleton and fat count as body"
    with pytest.raises(EngineError, match="cannot produce 'liver'"):
        CTEngine().run(image, structures=["liver"])


def test_cancel_and_progress(sample):
    image = sample[0]
    with pytest.raises(CancelledError):
        CTEngine().run(image, cancel=lambda: True)
    calls = []

    def cancel_later():
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(CancelledError):
        CTEngine().run(image, cancel=cancel_later)
    reports = []
    CTEngine().run(image, progress=lambda fraction, message: reports.append((fraction, message)))
    fractions = [f for f, _ in reports]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(reports) >= 5


def test_registry():
    assert isinstance(get_engine("ct"), CTEngine)
    assert {"name": "ct", "usable": True, "detail": "built in"} in list_engines()


def test_fov_padding_and_reversed_slices(sample):
    """-3024 padding outside the reconstruction circle, and slices stored superior first: same labels."""
    image, _, result, _ = sample
    array = sitk.GetArrayFromImage(image)
    rows, columns = np.mgrid[: array.shape[1], : array.shape[2]]
    padded = array.copy()
    padded[:, (rows - 50) ** 2 + (columns - 61) ** 2 > 61**2] = -3024
    padded_image = sitk.GetImageFromArray(padded)
    padded_image.CopyInformation(image)
    reversed_image = sitk.GetImageFromArray(np.ascontiguousarray(array[::-1]))
    reversed_image.SetSpacing(image.GetSpacing())
    direction = np.array(image.GetDirection()).reshape(3, 3)
    direction[:, 2] *= -1
    reversed_image.SetDirection(direction.ravel().tolist())
    reversed_image.SetOrigin(image.TransformIndexToPhysicalPoint((0, 0, array.shape[0] - 1)))
    for other, labels in ((padded_image, lambda x: x), (reversed_image, lambda x: x[::-1])):
        got = labels(CTEngine().run(other).labels)
        for value, name in result.names.items():
            if name not in ("airways", "blood_pool"):
                assert dice(got == value, result.labels == value) > 0.99, name
