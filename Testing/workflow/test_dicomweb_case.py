"""A case the queue server knows only by a DICOMweb reference: the task model retrieves its series from a real
Orthanc (WADO-RS) once the workstation has that server's credentials, opens it from the DICOM files, and the
export model writes the reader's DICOM SEG against that series and stores it back on Orthanc."""

from __future__ import annotations

import numpy as np
import pydicom
from pydicom.uid import generate_uid

from MedAnnotAssistLib.core.dicom.seg import labels_for_series, read_seg
from MedAnnotAssistLib.core.dicom.series import read_series
from MedAnnotAssistLib.core.dicom.web import DicomWebClient, DicomWebSource
from MedAnnotAssistLib.core.protocol import bundled_protocol
from Testing.dicom.orthanc import orthanc_server  # noqa: F401
from Testing.readers import ABDOMEN_LABELS

from .conftest import TIMEOUT_S, make_ready


def _series_on_orthanc(sample_dir, source: DicomWebSource, folder) -> tuple[str, str]:
    """The sample series, its blank UIDs filled (new ones for this test), stored on Orthanc."""
    study_uid, series_uid = generate_uid(), generate_uid()
    folder.mkdir()
    files = []
    for path in sorted((sample_dir / "example_ct_dicom").iterdir()):
        dataset = pydicom.dcmread(path)
        dataset.SOPClassUID = dataset.file_meta.MediaStorageSOPClassUID
        dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        dataset.StudyInstanceUID, dataset.SeriesInstanceUID = study_uid, series_uid
        dataset.PatientID = "MEDANNOT-WORKFLOW-TEST"
        files.append(folder / path.name)
        dataset.save_as(files[-1], enforce_file_format=True)
    with DicomWebClient(source) as client:
        assert len(client.store(files)) == len(files)
    return study_uid, series_uid


def test_a_dicomweb_case_opens_from_its_series_and_exports_back(study, sample_dir, orthanc_server, tmp_path):  # noqa: F811
    source = DicomWebSource(orthanc_server.dicomweb_url, user=orthanc_server.user, password=orthanc_server.password)
    study_uid, series_uid = _series_on_orthanc(sample_dir, source, tmp_path / "series")
    reference = {"url": orthanc_server.dicomweb_url, "study_uid": study_uid, "series_uid": series_uid}
    admin = study.admin
    body = {"cases": [{"name": "pacs-1", "dicomweb": reference, "priority": 10}]}
    admin.ok(admin.post(f"/api/v1/projects/{study.project_id}/cases/bulk", json=body), 201)

    desk = study.desk(study.a)
    task = desk.task
    assert task.next_task()
    desk.wait_until(lambda: task.current is not None and not desk.background.running("case"), TIMEOUT_S)
    assert task.session is None and task.state.message_is_error
    assert f"pacs-1 is a series on the DICOMweb server {orthanc_server.dicomweb_url}" in task.message
    assert task.state.actions["release"].enabled  # the claim stands: the reader gives it back
    assert task.release()
    desk.wait_until(lambda: task.current is None, TIMEOUT_S)

    task.add_dicomweb_source(source)
    assert task.next_task()
    desk.wait_until(lambda: task.session is not None, TIMEOUT_S)
    session = task.session
    assert task.state.task.case_name == "pacs-1" and session.imagePath.name == series_uid
    assert session.volumeNode.GetImageData().GetDimensions() == (512, 512, 20)

    series = read_series(session.imagePath)
    protocol = bundled_protocol("abdominal-organs")
    truth, _ = labels_for_series(sample_dir / "example_seg_dicom.nii.gz", series, protocol, ABDOMEN_LABELS)
    session.setMask("liver", truth.mask("liver"))
    export = desk.export
    assert export.state.dicom_source == f"DICOM folder {session.imagePath}" and export.state.actions["export"]
    export.set_destination(source)
    assert export.export()
    desk.wait_until(lambda: export.state.progress is None, TIMEOUT_S)
    result = export.state.last
    assert result is not None and result.structures == ("liver",) and len(result.sent) == 1, export.message
    back = read_seg(result.path, series, desk.task.protocol)
    assert np.array_equal(back.mask("liver"), truth.mask("liver"))
    with DicomWebClient(source) as client:
        found = client.search_series(study_uid=study_uid)
    assert {s.modality for s in found} == {"CT", "SEG"}

    make_ready(desk)
    assert task.submit()
    desk.wait_until(lambda: task.current is None, TIMEOUT_S)
    assert "submitted (submission" in task.message
