"""Series import on the real JPEG 2000 CT series, pydicom's compressed files, and damaged copies."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from MedAnnotAssistLib.core.dicom import DicomError
from MedAnnotAssistLib.core.dicom.series import read_all_series, read_series, series_from_datasets
from MedAnnotAssistLib.core.jobs import CancelledError
from MedAnnotAssistLib.core.labelio import Geometry, ReaderLabels, reoriented

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


@pytest.fixture(scope="module")
def ct_dir(sample_dir) -> Path:
    return sample_dir / "example_ct_dicom"


@pytest.fixture(scope="module")
def ct_series(ct_dir):
    return read_series(ct_dir)


@pytest.fixture
def ct_copy(ct_dir, tmp_path) -> list[Path]:
    """A writable copy of the series, files in slice order (their names sort along z)."""
    target = tmp_path / "series"
    shutil.copytree(ct_dir, target)
    return sorted(target.iterdir(), key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).SliceLocation))


def _edit(path: Path, **values) -> None:
    dataset = pydicom.dcmread(path)
    for keyword, value in values.items():
        setattr(dataset, keyword, value)
    dataset.save_as(path)


def test_real_jpeg2000_series_has_the_geometry_of_its_segmentation(ct_series, ct_dir, sample_dir):
    first = pydicom.dcmread(next(ct_dir.iterdir()), stop_before_pixels=True)
    assert first.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"  # JPEG 2000 lossless
    image = ct_series.image
    assert image.GetSize() == (512, 512, 20) and ct_series.modality == "CT" and ct_series.slice_count == 20
    assert image.GetSpacing() == pytest.approx((0.9765625, 0.9765625, 2.0))
    assert ct_series.warnings == [] and ct_series.skipped == []
    # the NIfTI stores the same voxels flipped along y: the same grid once permuted, voxel for voxel
    labels = sitk.ReadImage(str(sample_dir / "example_seg_dicom.nii.gz"))
    assert Geometry.of(labels) != Geometry.of(image)
    reader = ReaderLabels("seg", None, Geometry.of(labels), [sitk.GetArrayFromImage(labels)], {}, [])
    on_series = reoriented(reader, Geometry.of(image))
    resampled = sitk.Resample(labels, image, sitk.Transform(), sitk.sitkNearestNeighbor, 255)
    assert np.array_equal(on_series.layers[0], sitk.GetArrayFromImage(resampled))
    assert not (sitk.GetArrayFromImage(resampled) == 255).any()  # every voxel of the series has a label voxel
    for corner in [(0, 0, 0), (511, 511, 19), (0, 511, 7)]:
        point = image.TransformIndexToPhysicalPoint(corner)
        assert labels.TransformPhysicalPointToIndex(point) in {(corner[0], 511 - corner[1], corner[2])}


def test_real_series_voxels_equal_gdcm(ct_series, ct_dir):
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(ct_dir)))
    reference = reader.Execute()
    assert np.array_equal(sitk.GetArrayFromImage(reference), sitk.GetArrayFromImage(ct_series.image))
    assert Geometry.of(reference).differences(Geometry.of(ct_series.image)) == []
    assert ct_series.image.GetPixelID() == sitk.sitkInt16  # integer rescale keeps integers


@pytest.mark.parametrize(
    "name", ["MR_small_jp2klossless.dcm", "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_bigendian.dcm"]
)
def test_compressed_and_other_syntaxes_decode_like_the_uncompressed_file(name, tmp_path):
    plain = read_series(PYDICOM_FILES / "MR_small.dcm")
    other = read_series(PYDICOM_FILES / name)
    assert np.array_equal(sitk.GetArrayFromImage(plain.image), sitk.GetArrayFromImage(other.image))
    assert Geometry.of(plain.image).differences(Geometry.of(other.image)) == []


def test_missing_slice_fails_loudly_naming_the_neighbours(ct_copy):
    gone = ct_copy.pop(9)
    gone.unlink()
    with pytest.raises(DicomError) as error:
        read_series(ct_copy[0].parent)
    message = str(error.value)
    assert "1 slice(s) missing between" in message
    assert ct_copy[8].name in message and ct_copy[9].name in message
    assert "gap 4.000 mm, the other slices are 2.000 mm apart" in message


def test_uneven_spacing_duplicate_position_and_tilt_are_errors(ct_copy):
    positions = [[float(v) for v in pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient] for p in ct_copy]
    x, y, z = positions[5]
    _edit(ct_copy[5], ImagePositionPatient=[x, y, z + 0.7])
    with pytest.raises(DicomError, match=rf"uneven slice spacing between .*{ct_copy[4].name} and .*{ct_copy[5].name}"):
        read_series(ct_copy[0].parent)
    _edit(ct_copy[5], ImagePositionPatient=[x, y, z - 2.0])  # where slice 4 is
    with pytest.raises(DicomError, match="two slices at the same position"):
        read_series(ct_copy[0].parent)
    for index, (path, (x, y, z)) in enumerate(zip(ct_copy, positions, strict=True)):
        _edit(path, ImagePositionPatient=[x, y + 0.5 * index, z])  # 0.5 mm along y per 2 mm slice: 14 degrees
    with pytest.raises(DicomError, match=r"stacked 14\.04 degrees off their normal \(gantry tilt"):
        read_series(ct_copy[0].parent)


def test_two_orientations_and_mixed_sizes_are_errors(ct_copy, tmp_path):
    _edit(ct_copy[3], ImageOrientationPatient=[1, 0, 0, 0, 0, -1])
    with pytest.raises(DicomError, match=rf"2 slice orientations in one series .*{ct_copy[3].name}"):
        read_series(ct_copy[0].parent)
    _edit(ct_copy[3], ImageOrientationPatient=[1, 0, 0, 0, 1, 0], PixelSpacing=[0.5, 0.5])
    with pytest.raises(DicomError, match="do not share one pixel spacing"):
        read_series(ct_copy[0].parent)


def test_non_dicom_files_are_skipped_and_reported(ct_copy, ct_series):
    folder = ct_copy[0].parent
    (folder / "README.txt").write_text("scanned on Tuesday\n")
    (folder / "DICOMDIR-notes").write_bytes(b"\x00" * 300)
    series = read_series(folder)
    assert [Path(name).name for name, _ in series.skipped] == ["DICOMDIR-notes", "README.txt"]
    assert all("not a DICOM file" in why for _, why in series.skipped)
    assert np.array_equal(sitk.GetArrayFromImage(series.image), sitk.GetArrayFromImage(ct_series.image))


def test_truncated_file_is_an_error_naming_it(ct_copy):
    data = ct_copy[7].read_bytes()
    ct_copy[7].write_bytes(data[: len(data) // 2])
    with pytest.raises(DicomError, match=rf"{ct_copy[7].name}: the file is truncated or damaged"):
        read_series(ct_copy[0].parent)


def test_zip_archive_imports_like_the_folder(ct_dir, ct_series, tmp_path):
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in sorted(ct_dir.iterdir()):
            zipped.write(path, f"patient/ct/{path.name}")
    series = read_series(archive)
    assert np.array_equal(sitk.GetArrayFromImage(series.image), sitk.GetArrayFromImage(ct_series.image))
    assert series.sources[0].startswith(f"{archive}:patient/ct/")


def test_two_series_need_a_choice(ct_dir, tmp_path):
    folder = tmp_path / "study"
    shutil.copytree(ct_dir, folder / "ct")
    shutil.copy(PYDICOM_FILES / "MR_small.dcm", folder / "mr.dcm")
    found = read_all_series(folder)
    assert [s.slice_count for s in found] == [20, 1]
    with pytest.raises(DicomError, match=r"2 image series found, choose one: .*\(CT, 20 files\); .*\(MR, 1 files\)"):
        read_series(folder)
    assert read_series(folder, series_uid=found[1].series_uid).modality == "MR"
    with pytest.raises(DicomError, match="no series with SeriesInstanceUID 1.2.3"):
        read_series(folder, series_uid="1.2.3")


def test_folder_without_images_and_cancel(tmp_path, ct_dir):
    (tmp_path / "notes.txt").write_text("x")
    shutil.copy(PYDICOM_FILES / "rtstruct.dcm", tmp_path / "rtstruct.dcm")
    with pytest.raises(DicomError, match=r"no DICOM image series found; skipped: .*rtstruct.dcm \(no pixel data"):
        read_series(tmp_path)
    with pytest.raises(DicomError, match="no such file or folder"):
        read_series(tmp_path / "absent")
    with pytest.raises(CancelledError):
        read_series(ct_dir, cancel=lambda: True)


def test_datasets_in_memory_build_the_same_image(ct_series):
    shuffled = list(reversed(ct_series.datasets))
    series = series_from_datasets(shuffled, source="wado")
    assert np.array_equal(sitk.GetArrayFromImage(series.image), sitk.GetArrayFromImage(ct_series.image))
    mixed = [*shuffled[:2], pydicom.dcmread(PYDICOM_FILES / "MR_small.dcm")]
    with pytest.raises(DicomError, match="wado: datasets from 2 series"):
        series_from_datasets(mixed, source="wado")
