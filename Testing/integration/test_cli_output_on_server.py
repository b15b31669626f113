"""What `medannot presegment --protocol` and `medannot prepare --labels` write is what the queue server accepts:
the real server, a project with the protocol, a case on the same image, and the CLI's file uploaded as the
case's AI pre-segmentation (PUT …/ai-segmentation runs the same segment checks as a submission)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from MedAnnotAssistLib.core.labelio import read_reader
from MedAnnotAssistLib.core.protocol import bundled_protocol
from Testing.server.harness import Api, ServerProcess, create_site_admin, unique

MEDANNOT = [str(Path(sys.executable).parent / "medannot")]


def run(*args):
    return subprocess.run([*MEDANNOT, *map(str, args)], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def admin(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("queue") / "data"
    data_dir.mkdir()
    token = create_site_admin(data_dir, None)
    server = ServerProcess(data_dir).start()
    api = Api(server.url, token, "admin")
    yield api
    api.close()
    server.stop()


def upload_as_ai_segmentation(admin: Api, protocol_id: str, image: Path, segmentation: Path):
    project = admin.new_project(unique(protocol_id), protocol_id, readers=1)
    case = admin.upload_case(project, image, "ct")
    with open(segmentation, "rb") as handle:
        files = {"segmentation": (segmentation.name, handle.read())}
    return admin.put(f"/api/v1/projects/{project}/cases/{case['id']}/ai-segmentation", files=files)


def test_presegment_with_a_protocol_writes_only_its_structures(admin, sample_dir, tmp_path):
    out = tmp_path / "case.seg.nrrd"
    image = sample_dir / "example_ct_sm.nii.gz"
    result = run("presegment", image, "--engine", "ct", "--protocol", "lung-nodule", "--out", out, "--quiet")
    assert result.returncode == 0, result.stderr
    assert "dropped (not in lung-nodule@" in result.stdout
    for name in ("Body", "Airways", "Skeleton", "Subcutaneous fat"):
        assert name in result.stdout.split("dropped (not in lung-nodule@")[1].splitlines()[0]
    assert "left empty (the engine does not produce them): Index nodule" in result.stdout

    protocol = bundled_protocol("lung-nodule")
    written = read_reader(out, protocol)
    assert written.unmatched == []
    assert list(written.segments) == ["lung_left", "lung_right", "nodule"]
    assert written.mask("lung_left").any() and written.mask("lung_right").any() and not written.mask("nodule").any()

    answer = upload_as_ai_segmentation(admin, "lung-nodule", image, out)
    assert answer.status_code == 200, answer.text


def test_prepare_with_totalsegmentator_labels_keeps_the_protocol_structures(admin, sample_dir, tmp_path):
    image = sample_dir / "example_ct_sm.nii.gz"
    labels, names = sample_dir / "example_seg.nii.gz", sample_dir / "labels_total.json"
    result = run("prepare", image, "--protocol", "abdominal-organs", "--out", tmp_path,
                 "--labels", labels, "--labels-json", names)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "1 segment(s) created, 13 matched, 0 not in the protocol" in result.stdout
    assert "dropped (not in abdominal-organs@" in result.stdout and "vertebrae_T12" in result.stdout

    protocol = bundled_protocol("abdominal-organs")
    written = read_reader(tmp_path / "example_ct_sm.seg.nrrd", protocol)
    assert written.unmatched == []
    assert list(written.segments) == [s.id for s in protocol.structures]
    labels = read_reader(sample_dir / "example_seg.nii.gz", protocol, {64: "portal_vein"})
    assert (written.mask("portal_vein") == labels.mask("portal_vein")).all()  # portal_vein_and_splenic_vein
    assert written.mask("portal_vein").sum() > 100

    answer = upload_as_ai_segmentation(admin, "abdominal-organs", image, tmp_path / "example_ct_sm.seg.nrrd")
    assert answer.status_code == 200, answer.text
