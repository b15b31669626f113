"""DICOMweb client against a real Orthanc (Debian's orthanc + orthanc-dicomweb, started by the fixtures in
orthanc.py): STOW-RS the real 20-slice JPEG 2000 CT, find it with QIDO-RS, retrieve it with WADO-RS into the
same image as the local import, STOW-RS a SEG back and find it; authentication, errors, progress and cancel.

The sample CT is de-identified down to blank UIDs (StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID,
SOPClassUID and PatientID are empty), which no DICOMweb server stores. The ``ct_files`` fixture writes copies
with those filled in (SOP UIDs from the file meta, fixed study/series UIDs); their pixel data bytes and
transfer syntax are untouched. Nothing here mocks Orthanc.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from MedAnnotAssistLib.core.dicom import DicomError
from MedAnnotAssistLib.core.dicom.series import read_series
from MedAnnotAssistLib.core.dicom.web import (
    JPEG2000_LOSSLESS,
    DicomWebClient,
    DicomWebError,
    DicomWebSource,
)
from MedAnnotAssistLib.core.jobs import CancelledError
from Testing.dicom.orthanc import free_port

PATIENT_ID = "MEDANNOT-DICOMWEB-TEST"
UID_PREFIX = "1.2.826.0.1.3680043.8.498."  # pydicom's root, as generate_uid uses


@dataclass
class Upload:
    study_uid: str
    series_uid: str
    stored: list[str]
    progress: list[tuple[float, str]]
    seconds: float


@pytest.fixture(scope="module")
def ct_dir(sample_dir):
    return sample_dir / "example_ct_dicom"


@pytest.fixture(scope="module")
def ct_files(ct_dir, tmp_path_factory):
    """The real CT slices with the blank UIDs and PatientID filled in (pixel data as is)."""
    import pydicom
    from pydicom.uid import generate_uid

    study_uid = generate_uid(entropy_srcs=["medannot dicomweb test study"])
    series_uid = generate_uid(entropy_srcs=["medannot dicomweb test series"])
    folder = tmp_path_factory.mktemp("ct-with-uids")
    files = []
    for source in sorted(ct_dir.iterdir()):
        dataset = pydicom.dcmread(source)
        dataset.SOPClassUID = dataset.file_meta.MediaStorageSOPClassUID
        dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID
        dataset.StudyInstanceUID, dataset.SeriesInstanceUID = study_uid, series_uid
        dataset.PatientID = PATIENT_ID
        files.append(folder / source.name)
        dataset.save_as(files[-1], enforce_file_format=True)
    return files


@pytest.fixture(scope="module")
def client(orthanc_server):
    source = DicomWebSource(orthanc_server.dicomweb_url, user=orthanc_server.user, password=orthanc_server.password)
    with DicomWebClient(source) as client:
        yield client


@pytest.fixture(scope="module")
def uploaded(client, ct_files) -> Upload:
    """The CT stored through our STOW-RS client."""
    import pydicom

    first = pydicom.dcmread(ct_files[0], stop_before_pixels=True)
    progress: list[tuple[float, str]] = []
    started = time.perf_counter()
    stored = client.store(
        ct_files, progress=lambda fraction, message: progress.append((fraction, message)), batch_size=8
    )
    seconds = time.perf_counter() - started
    return Upload(str(first.StudyInstanceUID), str(first.SeriesInstanceUID), stored, progress, seconds)


def _seg_of(ct_files, sample_dir, out: Path):
    """Our DICOM SEG of TotalSegmentator's labels (abdominal-organs protocol) for the CT as stored."""
    import pydicom

    from MedAnnotAssistLib.core.dicom.seg import export_seg, labels_for_series
    from MedAnnotAssistLib.core.dicom.series import read_series
    from MedAnnotAssistLib.core.protocol import bundled_protocol
    from Testing.readers import ABDOMEN_LABELS

    protocol = bundled_protocol("abdominal-organs")
    series = read_series(ct_files[0].parent)
    labels, tags = labels_for_series(sample_dir / "example_seg_dicom.nii.gz", series, protocol, ABDOMEN_LABELS)
    export_seg(series, labels, protocol, out, segment_tags=tags)
    return pydicom.dcmread(out), series, labels, protocol


# -- the round trip --------------------------------------------------------------------------------------
def test_stow_stores_every_instance(uploaded, ct_files, orthanc_server):
    import pydicom

    sent = [str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in ct_files]
    assert uploaded.stored == sent
    assert uploaded.progress == [
        (0.4, "8/20 instances stored"),
        (0.8, "16/20 instances stored"),
        (1.0, "20/20 instances stored"),
    ]
    # Orthanc's own REST API (not DICOMweb) confirms what is stored
    found = orthanc_server.rest(
        "POST", "/tools/find", json={"Level": "Instance", "Query": {"SeriesInstanceUID": uploaded.series_uid}}
    )
    assert found.status_code == 200 and len(found.json()) == 20


def test_qido_finds_the_study_and_series(client, uploaded):
    studies = client.search_studies(patient_id=PATIENT_ID)
    assert [s.study_uid for s in studies] == [uploaded.study_uid]
    assert studies[0].modalities == ("CT",) and studies[0].instance_count == 20 and studies[0].series_count == 1

    series = client.search_series(study_uid=uploaded.study_uid, modality="CT")
    assert [(s.series_uid, s.modality, s.instance_count) for s in series] == [(uploaded.series_uid, "CT", 20)]
    assert series[0].description == "CT Body 3.0"
    assert client.search_series(series_uid=uploaded.series_uid)[0].study_uid == uploaded.study_uid
    assert client.search_series(study_uid=uploaded.study_uid, modality="MR") == []


def test_wado_retrieves_the_image_of_the_local_import(client, uploaded, ct_dir, ct_files):
    import pydicom

    progress: list[tuple[float, str]] = []
    series = client.retrieve_series(
        uploaded.study_uid, uploaded.series_uid, progress=lambda fraction, message: progress.append((fraction, message))
    )
    local = read_series(ct_dir)
    assert progress[-1] == (1.0, "20/20 instances retrieved") and len(progress) == 20
    assert series.series_uid == uploaded.series_uid and series.slice_count == 20
    remote_image, local_image = series.image, local.image
    assert remote_image.GetSize() == local_image.GetSize() == (512, 512, 20)
    assert remote_image.GetSpacing() == local_image.GetSpacing()
    assert remote_image.GetOrigin() == local_image.GetOrigin()
    assert remote_image.GetDirection() == local_image.GetDirection()
    import SimpleITK as sitk

    assert np.array_equal(sitk.GetArrayViewFromImage(remote_image), sitk.GetArrayViewFromImage(local_image))
    # kept as stored: JPEG 2000, the very bytes that were sent (no transcoding on the way)
    assert {str(ds.file_meta.TransferSyntaxUID) for ds in series.datasets} == {JPEG2000_LOSSLESS}
    sent = {str(d.SOPInstanceUID): d.PixelData for d in (pydicom.dcmread(path) for path in ct_files)}
    assert all(ds.PixelData == sent[str(ds.SOPInstanceUID)] for ds in series.datasets)


def test_seg_is_stored_back_and_found(client, uploaded, ct_files, sample_dir, tmp_path):
    from MedAnnotAssistLib.core.dicom.seg import read_seg

    seg, series, labels, protocol = _seg_of(ct_files, sample_dir, tmp_path / "sent.dcm")
    assert client.store([seg], study_uid=uploaded.study_uid) == [str(seg.SOPInstanceUID)]

    found = client.search_series(study_uid=uploaded.study_uid, modality="SEG")
    assert [(s.series_uid, s.instance_count) for s in found] == [(str(seg.SeriesInstanceUID), 1)]
    (back,) = client.retrieve_datasets(uploaded.study_uid, str(seg.SeriesInstanceUID))
    assert back.SOPInstanceUID == seg.SOPInstanceUID and back.Modality == "SEG"
    assert back.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"  # liver
    # what came back from the PACS reads into the same masks on the same series
    back.save_as(tmp_path / "back.dcm", enforce_file_format=True)
    masks = read_seg(tmp_path / "back.dcm", series, protocol)
    assert sorted(masks.segments) == sorted(s for s in labels.segments if labels.mask(s).any())
    for structure_id in masks.segments:
        assert np.array_equal(masks.mask(structure_id), labels.mask(structure_id)), structure_id


# -- progress and cancel ---------------------------------------------------------------------------------
def test_cancel_stops_the_retrieval_between_instances(client, uploaded):
    progress: list[tuple[float, str]] = []
    with pytest.raises(CancelledError, match="retrieving series"):
        client.retrieve_series(
            uploaded.study_uid,
            uploaded.series_uid,
            progress=lambda fraction, message: progress.append((fraction, message)),
            cancel=lambda: len(progress) >= 5,
        )
    assert progress == [(done / 20, f"{done}/20 instances retrieved") for done in range(1, 6)]
    # the client is still usable after a cancelled stream
    assert client.search_series(series_uid=uploaded.series_uid)[0].instance_count == 20


# -- authentication ----------------------------------------------------------------------------------------
def test_basic_auth_wrong_password_is_a_clear_401(orthanc_server, uploaded):
    source = DicomWebSource(orthanc_server.dicomweb_url, user=orthanc_server.user, password="not-the-password")
    with DicomWebClient(source) as wrong, pytest.raises(DicomWebError) as caught:
        wrong.search_studies(patient_id=PATIENT_ID)
    assert caught.value.status == 401
    message = str(caught.value)
    assert f"{orthanc_server.dicomweb_url}/studies" in message and "HTTP 401" in message and "credentials" in message


def test_bearer_token_is_sent_as_authorization_header(orthanc_bearer_server, ct_files):
    """Real: Orthanc receives the request and evaluates its ``Authorization`` header itself, in its built-in
    Lua ``IncomingHttpRequestFilter``; it answers 403 to anything but ``Bearer <token>``. Test double: that
    Lua policy stands in for a token-validating authorization service (Debian packages no Orthanc
    authorization plugin: ``apt-cache search orthanc`` lists none)."""
    server = orthanc_bearer_server
    with DicomWebClient(DicomWebSource(server.dicomweb_url, token=server.token)) as client:
        assert client.store(ct_files[:1]) == [str(_sop_uid(ct_files[0]))]
        assert len(client.search_studies(patient_id=PATIENT_ID)) == 1
    for token in ("wrong-token", None):
        with DicomWebClient(DicomWebSource(server.dicomweb_url, token=token)) as other:
            with pytest.raises(DicomWebError, match="HTTP 403") as caught:
                other.search_studies()
            assert caught.value.status == 403 and server.dicomweb_url in str(caught.value)


def _sop_uid(path):
    import pydicom

    return pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID


@pytest.fixture
def tls_server(tmp_path):
    """A loopback https server (Python's ssl, a named test double: Debian's Orthanc 1.10.1 segfaults on TLS)
    with a self-signed certificate for 127.0.0.1. It answers ``/dicom-web/...`` with an empty DICOM JSON list
    and anything else with an HTML page, as a proxy's login portal would."""
    import http.server
    import shutil
    import ssl
    import subprocess
    import threading

    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl command not found (apt-get install openssl)")
    certificate, key = tmp_path / "certificate.pem", tmp_path / "key.pem"
    options = "req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1"
    subprocess.run([openssl, *options.split(), "-keyout", key, "-out", certificate], check=True, capture_output=True)

    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            dicom = self.path.startswith("/dicom-web/")
            body = b"[]" if dicom else b"<html><body>Please log in</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "application/dicom+json" if dicom else "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{server.server_address[1]}/dicom-web", str(certificate)
    server.shutdown()
    server.server_close()


def test_tls_is_verified_against_the_ca_bundle(tls_server):
    """Verification is on by default (a self-signed server is refused with a clear error) and a CA bundle
    makes the same server trusted. The server is a test double (see ``tls_server``); the client is ours."""
    url, certificate = tls_server
    untrusting = DicomWebClient(url)
    with untrusting, pytest.raises(DicomWebError, match="certificate verify failed") as caught:
        untrusting.search_studies()
    assert f"{url}/studies" in str(caught.value) and "ca_bundle" in str(caught.value)
    with DicomWebClient(DicomWebSource(url, ca_bundle=certificate)) as trusting:
        assert trusting.search_studies() == []


def test_html_answer_is_not_taken_for_dicom(tls_server):
    """A 200 answer in HTML (e.g. a login portal in front of the PACS) is an error naming the media type."""
    url, certificate = tls_server
    portal = url.replace("/dicom-web", "/portal")
    client = DicomWebClient(DicomWebSource(portal, ca_bundle=certificate))
    with client, pytest.raises(DicomWebError, match="answered 'text/html', expected application/dicom\\+json"):
        client.search_studies()


# -- errors ------------------------------------------------------------------------------------------------
def test_connection_refused_names_the_url():
    url = f"http://127.0.0.1:{free_port()}/dicom-web"  # nothing listens there
    with DicomWebClient(url) as client, pytest.raises(DicomWebError) as caught:
        client.search_studies()
    assert caught.value.status is None
    assert f"{url}/studies" in str(caught.value) and "Connection refused" in str(caught.value)


def test_unknown_series_is_a_clear_404(client, uploaded):
    from pydicom.uid import generate_uid

    unknown = generate_uid(prefix=UID_PREFIX)
    with pytest.raises(DicomWebError) as caught:
        client.retrieve_series(uploaded.study_uid, unknown)
    assert caught.value.status == 404
    message = str(caught.value)
    assert f"/studies/{uploaded.study_uid}/series/{unknown}" in message and "HTTP 404" in message
    assert "no such resource" in message


def test_non_dicom_answer_points_at_the_dicomweb_root(orthanc_server, uploaded):
    # Orthanc's own REST API answers /studies with a JSON list of its internal ids, not DICOM JSON
    source = DicomWebSource(orthanc_server.url, user=orthanc_server.user, password=orthanc_server.password)
    with DicomWebClient(source) as client, pytest.raises(DicomWebError) as caught:
        client.search_studies()
    message = str(caught.value)
    assert f"{orthanc_server.url}/studies" in message and "not DICOM JSON" in message and "DICOMweb root" in message


def test_stow_rejection_names_the_instance(client, uploaded, ct_files):
    from pydicom.uid import generate_uid

    other_study = generate_uid(prefix=UID_PREFIX)
    with pytest.raises(DicomWebError) as caught:
        client.store(ct_files[:1], study_uid=other_study)
    message = str(caught.value)
    assert caught.value.status == 409 and f"/studies/{other_study}" in message
    assert str(_sop_uid(ct_files[0])) in message and "processing failure" in message and "is not the study" in message


def test_store_refuses_datasets_without_uids(ct_dir):
    raw = sorted(ct_dir.iterdir())[0]  # the sample as shipped: blank UIDs
    # checked before any request: nothing listens at this URL, so a request would fail differently
    client = DicomWebClient(f"http://127.0.0.1:{free_port()}/dicom-web")
    with client, pytest.raises(DicomError, match="SOPInstanceUID, StudyInstanceUID, SeriesInstanceUID empty") as caught:
        client.store([raw])
    assert str(raw) in str(caught.value)


# -- configuration (no server) ----------------------------------------------------------------------------
def test_source_checks_its_settings(tmp_path):
    with pytest.raises(DicomError, match="expected the service root"):
        DicomWebSource("pacs.example.org/dicom-web")
    with pytest.raises(DicomError, match="not both"):
        DicomWebSource("https://pacs.example.org/dicom-web", user="a", password="b", token="t")
    with pytest.raises(DicomError, match="no such file"):
        DicomWebSource("https://pacs.example.org/dicom-web", ca_bundle=str(tmp_path / "missing.pem"))
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    assert DicomWebSource("https://pacs.example.org/dicom-web/", ca_bundle=str(bundle)).session().verify == str(bundle)
    assert DicomWebSource("https://pacs.example.org/dicom-web").session().verify is True
    assert "secret" not in repr(DicomWebSource("https://pacs.example.org", user="a", password="secret"))
    with pytest.warns(UserWarning, match="verification is OFF"):
        DicomWebClient(DicomWebSource("https://pacs.example.org/dicom-web", verify_tls=False)).close()
    with pytest.warns(UserWarning, match="unencrypted"):
        DicomWebClient(DicomWebSource("http://pacs.example.org/dicom-web", token="t")).close()
