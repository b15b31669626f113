"""The ONNX engine on the real CT, with real ONNX networks built here with fixed weights.

The networks are tiny but real ONNX graphs run by onnxruntime: a 1x1x1 convolution mapping the
windowed intensity x in [0, 1] to three class logits (background, soft tissue, bone), optionally after a
3x3x3 mean filter. Their output is computed independently here with numpy/scipy and compared voxel
by voxel with the engine's sliding-window result.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper  # noqa: E402

from MedAnnotAssistLib.core.engines import EngineError, get_engine, list_engines  # noqa: E402
from MedAnnotAssistLib.core.engines.onnx import OnnxEngine  # noqa: E402
from MedAnnotAssistLib.core.jobs import CancelledError  # noqa: E402
from MedAnnotAssistLib.core.protocol import Code  # noqa: E402

# logits of the 1x1x1 convolution, l_c = slope_c * x + bias_c: background below HU -99.5, soft tissue up
# to HU 300.5, bone above (thresholds between integer HU, so no voxel of the real CT sits on a tie)
SLOPES = np.array([0.0, 20.0, 40.0])
BIASES = np.array([0.0, -20.0 * 0.45025, -40.0 * 0.55025])
TISSUE = {"CodingSchemeDesignator": "SCT", "CodeValue": "85756007", "CodeMeaning": "Tissue"}
LABELS = [
    {
        "value": 5,
        "id": "soft_tissue",
        "name": "Soft tissue",
        "color": "#dd8265",
        "terminology": {
            "category": TISSUE,
            "type": {"CodingSchemeDesignator": "SCT", "CodeValue": "87784001", "CodeMeaning": "Soft tissue"},
        },
    },
    {
        "value": 7,
        "id": "bone",
        "name": "Bone",
        "color": "#f1d691",
        "terminology": {
            "category": TISSUE,
            "type": {"CodingSchemeDesignator": "SCT", "CodeValue": "272673000", "CodeMeaning": "Bone structure"},
        },
    },
]


def build_model(path: Path, smooth: bool = False, channels: int = 3, softmax: bool = False) -> Path:
    """A real ONNX network with fixed weights: [3x3x3 mean filter ->] 1x1x1 conv -> logits [-> softmax]."""
    nodes, inits = [], []
    current = "image"
    if smooth:
        inits.append(helper.make_tensor("mean_w", TensorProto.FLOAT, [1, 1, 3, 3, 3], [1.0 / 27] * 27))
        nodes.append(helper.make_node("Conv", ["image", "mean_w"], ["smoothed"], pads=[1] * 6))
        current = "smoothed"
    slopes = np.resize(SLOPES, channels)
    biases = np.resize(BIASES, channels)
    inits.append(helper.make_tensor("class_w", TensorProto.FLOAT, [channels, 1, 1, 1, 1], slopes.tolist()))
    inits.append(helper.make_tensor("class_b", TensorProto.FLOAT, [channels], biases.tolist()))
    nodes.append(helper.make_node("Conv", [current, "class_w", "class_b"], ["logits" if softmax else "scores"]))
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["scores"], axis=1))
    graph = helper.make_graph(
        nodes,
        "tissue-classes",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, "D", "H", "W"])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, channels, "D", "H", "W"])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def write_sidecar(model: Path, **changes) -> Path:
    data = {
        "name": "tissue-demo",
        "version": "1.0.0",
        "modality": "CT",
        "spacing": [3.0, 3.0, 3.0],
        "normalization": {"type": "ct-window", "min": -1000, "max": 1000},
        "patchSize": [16, 48, 48],
        "overlap": 0.5,
        "labels": LABELS,
    }
    data.update(changes)
    path = model.with_name(model.name + ".json")
    path.write_text(json.dumps(data, indent=2))
    return path


def expected(x: np.ndarray, smooth: bool = False):
    """Class probabilities of the network computed with numpy/scipy on the whole image."""
    from scipy import ndimage

    x = x.astype(np.float64)
    if smooth:
        x = ndimage.correlate(x, np.full((3, 3, 3), 1.0 / 27), mode="constant", cval=0.0)
    logits = SLOPES[:, None, None, None] * x[None] + BIASES[:, None, None, None]
    e = np.exp(logits - logits.max(axis=0))
    return e / e.sum(axis=0)


def starts(size: int, patch: int, overlap: float) -> list[int]:
    """Patch origins written out from the documented rule (step = patch * (1 - overlap), last at the edge)."""
    if size <= patch:
        return [0]
    step = int(round(patch * (1 - overlap)))
    out = list(range(0, size - patch + 1, step))
    return out if out[-1] == size - patch else [*out, size - patch]


@pytest.fixture(scope="module")
def ct(sample_dir):
    import SimpleITK as sitk

    return sitk.ReadImage(str(sample_dir / "example_ct_sm.nii.gz"))


def window(ct) -> np.ndarray:
    import SimpleITK as sitk

    hu = sitk.GetArrayFromImage(ct).astype(np.float64)
    return (np.clip(hu, -1000, 1000) + 1000) / 2000


def to_values(probs: np.ndarray) -> np.ndarray:
    return np.array([0, 5, 7])[probs.argmax(axis=0)]


@pytest.mark.parametrize("softmax", [False, True], ids=["logits", "probabilities"])
def test_pointwise_network_matches_numpy_everywhere(tmp_path, ct, softmax):
    model = build_model(tmp_path / "tissue.onnx", softmax=softmax)
    write_sidecar(model, output="probabilities" if softmax else "logits")
    reports = []
    result = get_engine("onnx", model=model).run(ct, progress=lambda f, m: reports.append((f, m)))

    probs = expected(window(ct))
    assert result.labels.shape == ct.GetSize()[::-1]
    np.testing.assert_array_equal(result.labels, to_values(probs))
    assert result.names == {5: "soft_tissue", 7: "bone"}
    best, winner = probs.max(axis=0), probs.argmax(axis=0)
    for channel, name in ((1, "soft_tissue"), (2, "bone")):
        assert result.confidence[name] == pytest.approx(best[winner == channel].mean(), rel=1e-5)
    fg = probs[:, winner != 0]
    entropy = -(fg * np.log(fg)).sum(axis=0) / np.log(3)
    assert result.uncertainty == pytest.approx(entropy.mean(), rel=1e-4)
    # one progress report per patch: the 30 x 101 x 122 image in 16 x 48 x 48 patches at 50 % overlap
    patches = len(starts(30, 16, 0.5)) * len(starts(101, 48, 0.5)) * len(starts(122, 48, 0.5))
    assert sum(m.startswith("patch ") for _, m in reports) == patches == 60
    assert reports[-1] == (1.0, "done")
    assert result.provenance["engine"] == "onnx" and len(result.provenance["parameters"]["sha256"]) == 64
    assert (result.labels == 5).sum() > 10000 and (result.labels == 7).sum() > 1000  # real anatomy


@pytest.mark.parametrize(
    ("patch", "overlap", "blending"),
    [([16, 48, 48], 0.25, "uniform"), ([32, 64, 64], 0.5, "gaussian")],  # the second pads the 30 slices to 32
)
def test_smoothing_network_matches_numpy_away_from_patch_seams(tmp_path, ct, patch, overlap, blending):
    model = build_model(tmp_path / "smooth.onnx", smooth=True)
    write_sidecar(model, patchSize=patch, overlap=overlap, blending=blending)
    result = OnnxEngine(model).run(ct)

    truth = to_values(expected(window(ct), smooth=True))
    # a patch's edge voxels see the network's zero padding instead of their neighbours
    seam = np.zeros(truth.shape, bool)
    for axis, (size, p) in enumerate(zip(truth.shape, patch, strict=True)):
        planes = [s for s in starts(size, p, overlap) if s > 0]
        planes += [s + p - 1 for s in starts(size, p, overlap) if s + p < size]
        index = [slice(None)] * 3
        index[axis] = planes
        seam[tuple(index)] = True
    assert seam.mean() < 0.5
    np.testing.assert_array_equal(result.labels[~seam], truth[~seam])
    if blending == "gaussian":  # the Gaussian map gives patch edges little weight: seams mostly right too
        assert (result.labels[seam] == truth[seam]).mean() > 0.95


def test_resamples_to_the_model_spacing_and_back(tmp_path, ct):
    import SimpleITK as sitk

    model = build_model(tmp_path / "coarse.onnx")
    write_sidecar(model, spacing=[4.5, 4.5, 6.0], patchSize=[8, 32, 32])
    result = OnnxEngine(model).run(ct)

    size = [round(n * 3.0 / s) for n, s in zip(ct.GetSize(), (4.5, 4.5, 6.0), strict=True)]
    air = float(sitk.GetArrayViewFromImage(ct).min())  # what lies beyond the last voxel
    coarse = sitk.Resample(
        sitk.Cast(ct, sitk.sitkFloat32), size, sitk.Transform(), sitk.sitkLinear, ct.GetOrigin(), (4.5, 4.5, 6.0),
        ct.GetDirection(), air, sitk.sitkFloat32,
    )  # fmt: skip
    x = (np.clip(sitk.GetArrayFromImage(coarse), -1000, 1000) + 1000) / 2000
    small = sitk.GetImageFromArray(to_values(expected(x)).astype(np.uint8))
    small.CopyInformation(coarse)
    back = sitk.GetArrayFromImage(sitk.Resample(small, ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0))
    assert result.labels.shape == ct.GetSize()[::-1]
    assert (result.labels == back).mean() > 0.999  # linear resampling in float32 may flip a voxel on a tie


def test_zscore_normalisation_and_structure_subset(tmp_path, ct):
    import SimpleITK as sitk

    model = build_model(tmp_path / "z.onnx")
    write_sidecar(model, normalization={"type": "zscore", "mean": -1000.0, "std": 2000.0})
    result = OnnxEngine(model).run(ct, structures=["bone"])
    hu = sitk.GetArrayFromImage(ct).astype(np.float64)
    truth = to_values(expected((hu + 1000.0) / 2000.0))
    np.testing.assert_array_equal(result.labels, np.where(truth == 7, 7, 0))
    assert result.names == {7: "bone"} and set(result.confidence) == {"bone"}


def test_info_and_probe(tmp_path):
    model = build_model(tmp_path / "tissue.onnx")
    write_sidecar(model, description="demo network")
    info = OnnxEngine(model).info()
    assert [s.id for s in info.structures] == ["soft_tissue", "bone"]
    assert info.structures[1].terminology.type == Code("SCT", "272673000", "Bone structure")
    assert info.version == "1.0.0" and info.modality == "CT" and "demo network" in info.description
    row = next(r for r in list_engines() if r["name"] == "onnx")
    assert row["usable"] and "onnxruntime" in row["detail"]


def test_missing_model_and_missing_sidecar(tmp_path):
    with pytest.raises(EngineError, match=r"ONNX model file not found: .*absent\.onnx"):
        OnnxEngine(tmp_path / "absent.onnx")
    model = build_model(tmp_path / "tissue.onnx")
    with pytest.raises(EngineError, match=r"tissue\.onnx\.json: model sidecar not found"):
        OnnxEngine(model)
    other = write_sidecar(model)
    sidecar = other.rename(tmp_path / "elsewhere.json")
    assert OnnxEngine(model, sidecar=sidecar).sidecar_path == sidecar


def test_label_list_that_does_not_match_the_model_outputs(tmp_path, ct):
    model = build_model(tmp_path / "four.onnx", channels=4)
    write_sidecar(model)
    engine = OnnxEngine(model)
    with pytest.raises(
        EngineError, match=r"four\.onnx\.json: \$\.labels: lists 2 labels, but the model four\.onnx has 4"
    ):
        engine.run(ct)


def test_malformed_sidecar_names_every_json_path(tmp_path):
    model = build_model(tmp_path / "model.onnx")
    labels = json.loads(json.dumps(LABELS))
    del labels[1]["terminology"]["type"]
    labels[0]["color"] = "red"
    write_sidecar(model, labels=labels, overlap=1.5, patchSize=[16, 0, 48], normalization={"type": "ct-window"})
    with pytest.raises(EngineError) as caught:
        OnnxEngine(model)
    message = str(caught.value)
    assert "model.onnx.json: $.labels[1].terminology.type: required" in message
    assert "model.onnx.json: $.labels[0].color: expected a colour written #RRGGBB" in message
    assert "$.overlap: expected a number in [0, 1)" in message
    assert "$.patchSize: expected 3 positive integers" in message
    assert "$.normalization.min: required" in message
    model.with_name("model.onnx.json").write_text('{"name": "x",\n "labels": [}')
    with pytest.raises(EngineError, match=r"model\.onnx\.json: line 2 column \d+: invalid JSON"):
        OnnxEngine(model)


def test_refuses_a_2d_image(tmp_path):
    import SimpleITK as sitk

    model = build_model(tmp_path / "tissue.onnx")
    write_sidecar(model)
    with pytest.raises(EngineError, match="3-D"):
        OnnxEngine(model).run(sitk.Image(64, 64, sitk.sitkInt16))


def test_cancel_between_patches(tmp_path, ct):
    model = build_model(tmp_path / "tissue.onnx")
    write_sidecar(model)
    reports = []
    with pytest.raises(CancelledError):
        OnnxEngine(model).run(ct, progress=lambda f, m: reports.append(m), cancel=lambda: len(reports) > 3)
    assert sum(m.startswith("patch ") for m in reports) == 3  # stopped after the third of 60 patches
