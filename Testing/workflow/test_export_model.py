"""The export panel's model on a case opened from the real 20-slice DICOM series: a DICOM SEG that reads back
voxel for voxel, an RTSTRUCT stored on a real Orthanc through DICOMweb; a case without a DICOM series says
why Export is off."""

from __future__ import annotations

import numpy as np

from MedAnnotAssistLib.core.dicom.rtstruct import read_rtstruct
from MedAnnotAssistLib.core.dicom.seg import labels_for_series, read_seg
from MedAnnotAssistLib.core.dicom.series import read_series
from MedAnnotAssistLib.core.dicom.web import DicomWebSource
from MedAnnotAssistLib.core.protocol import bundled_protocol
from MedAnnotAssistLib.mrml.task_session import TaskSession
from MedAnnotAssistLib.workflow.background import Background
from MedAnnotAssistLib.workflow.events import Action, wait_until
from MedAnnotAssistLib.workflow.export import ExportModel
from Testing.dicom.orthanc import orthanc_server  # noqa: F401
from Testing.readers import ABDOMEN_LABELS


def test_seg_and_rtstruct_of_the_open_case_one_sent_to_dicomweb(context, sample_dir, orthanc_server, tmp_path):  # noqa: F811
    protocol = bundled_protocol("abdominal-organs")
    folder = sample_dir / "example_ct_dicom"
    series = read_series(folder)
    truth, _ = labels_for_series(sample_dir / "example_seg_dicom.nii.gz", series, protocol, ABDOMEN_LABELS)
    session = TaskSession.open(context, protocol, folder, name="series-1")
    background = Background()
    try:
        session.setMask("liver", truth.mask("liver"))  # the reader's liver, on the series' grid
        model = ExportModel(background, tmp_path / "out")

        def pump():
            background.poll()
            model.poll()

        assert model.state.actions["export"] == Action(False, "no case is open")
        model.set_case(session.segmentationNode, protocol, session.name, "your segmentation")
        assert model.state.what == "series-1: your segmentation"
        assert not model.state.actions["export"].enabled
        assert "no DICOM series (its image came as NIfTI or NRRD)" in model.state.actions["export"].reason
        model.set_dicom_source(folder)
        assert model.state.dicom_source == f"DICOM folder {folder}" and model.state.actions["export"].enabled

        assert model.export()
        wait_until(pump, lambda: model.state.progress is None, 120)
        result = model.state.last
        assert result is not None, model.message
        assert result.format == "seg" and result.structures == ("liver",) and result.sent == ()
        assert result.path == str(tmp_path / "out" / "series-1.seg.dcm")
        back = read_seg(result.path, series, protocol)
        assert np.array_equal(back.mask("liver"), truth.mask("liver"))

        source = DicomWebSource(orthanc_server.dicomweb_url, user=orthanc_server.user, password=orthanc_server.password)
        model.set_destination(source)
        assert model.choose_format("rtstruct") and not model.choose_format("nifti")
        assert model.state.destination == orthanc_server.dicomweb_url
        assert model.export()
        wait_until(pump, lambda: model.state.progress is None, 120)
        result = model.state.last
        assert result.format == "rtstruct" and len(result.sent) == 1, model.message
        assert f"sent to {orthanc_server.dicomweb_url}" in model.message
        stored = orthanc_server.rest("POST", "/tools/find", json={"Level": "Instance", "Query": {}, "Expand": True})
        assert result.sent[0] in {item["MainDicomTags"]["SOPInstanceUID"] for item in stored.json()}
        contoured = read_rtstruct(result.path, series, protocol, warnings=[]).mask("liver")
        overlap = 2 * np.count_nonzero(contoured & truth.mask("liver"))
        assert overlap / (contoured.sum() + truth.mask("liver").sum()) > 0.97  # polygons of the voxel outlines
    finally:
        session.close()
        background.shutdown()
