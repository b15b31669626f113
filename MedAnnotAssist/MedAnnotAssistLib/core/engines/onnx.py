"""ONNX engine: any 3-D segmentation network exported to ONNX, described by a JSON sidecar.

The model file (``liver.onnx``) comes with a sidecar (``liver.onnx.json`` next to it, or an explicit
path) that says how to feed the network and what its output channels mean::

    {
      "name": "demo-abdomen", "version": "1.0.0", "description": "optional text",
      "modality": "CT",                         # "CT", "MR" or "any"
      "spacing": [1.5, 1.5, 3.0],               # mm, in (i, j, k) order = SimpleITK/Slicer (x, y, z)
      "normalization": {"type": "ct-window", "min": -1000, "max": 1000},
      "patchSize": [64, 128, 128],              # voxels, in (k, j, i) order = the model's (D, H, W)
      "overlap": 0.5,                           # fraction of a patch shared with its neighbour, [0, 1)
      "blending": "gaussian",                   # or "uniform"; optional, default "gaussian"
      "output": "logits",                       # or "probabilities"; optional, default "logits"
      "labels": [{"value": 1, "id": "liver", "name": "Liver", "color": "#dd8265",
                  "terminology": {"category": {...}, "type": {...}, "typeModifier": {...}}}]
    }

Normalisations: ``ct-window`` clips to [min, max] and scales to [0, 1]; ``zscore`` subtracts the mean
and divides by the standard deviation (of the resampled image, or the sidecar's ``mean``/``std``);
``none`` passes intensities through. Terminology codes are written as in protocol files.

The network takes one float32 tensor (1, 1, D, H, W) and returns (1, C, D, H, W) with C = number of
labels + 1: channel 0 is background, channel n is ``labels[n-1]`` and is written with its ``value``.

``run()`` resamples the image to ``spacing`` (linear; same origin and direction, the image minimum
beyond its last voxel), normalises it, pads it with 0 (in normalised units) up to the patch size where
smaller, and runs the network over overlapping patches (last patch aligned with the far edge). Patch
softmax probabilities are blended with a Gaussian importance map (sigma = patch / 8, as in nnU-Net) or
uniformly. The argmax labelmap is resampled back to the image grid (nearest neighbour).

Per structure, the confidence is the mean of the winning probability over the voxels labelled with it
(0 when absent). The case uncertainty is the mean normalised softmax entropy, -sum(p log p) / log C in
[0, 1], over the foreground (voxels whose argmax is not background), or over the whole image when the
network found no foreground. Both are computed on the model's grid.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import time
from pathlib import Path

import numpy as np

from ..jobs import check_cancel
from ..protocol import Terminology
from .base import (
    Engine,
    EngineError,
    EngineInfo,
    EngineResult,
    EngineStructure,
    EngineUnavailable,
    check_image,
    provenance,
)

ADAPTER_VERSION = "1.0.0"
INSTALL_HINT = "needs onnxruntime: pip install onnxruntime"
_ID = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")
_CODE_KEYS = ("CodingSchemeDesignator", "CodeValue", "CodeMeaning")
_TERMINOLOGY_KEYS = ("category", "type", "typeModifier", "anatomicRegion", "anatomicRegionModifier")


class _Checker:
    """Collects sidecar problems as ``FILE: $.json.path: message``."""

    def __init__(self, source: str):
        self.source = source
        self.problems: list[str] = []

    def fail(self, path: str, message: str) -> None:
        self.problems.append(f"{self.source}: {path}: {message}")

    def field(self, data: dict, key: str, path: str, kinds, what: str, required: bool = True):
        if key not in data:
            if required:
                self.fail(f"{path}.{key}", "required")
            return None
        value = data[key]
        if not isinstance(value, kinds) or isinstance(value, bool):
            self.fail(f"{path}.{key}", f"expected {what}, got {json.dumps(value)[:40]}")
            return None
        return value

    def numbers(self, data: dict, key: str, path: str, count: int, integer: bool):
        value = self.field(data, key, path, list, f"a list of {count} numbers")
        kinds = int if integer else (int, float)
        if value is not None and (
            len(value) != count or not all(isinstance(v, kinds) and not isinstance(v, bool) and v > 0 for v in value)
        ):
            self.fail(f"{path}.{key}", f"expected {count} positive {'integers' if integer else 'numbers'}")
            return None
        return value

    def code(self, data, path: str) -> None:
        if not isinstance(data, dict):
            self.fail(path, "expected a code object with CodingSchemeDesignator, CodeValue and CodeMeaning")
            return
        for key in _CODE_KEYS:
            text = self.field(data, key, path, str, "a text")
            if text is not None and not text.strip():
                self.fail(f"{path}.{key}", "must not be blank")


def _check_normalization(check: _Checker, data: dict) -> None:
    norm = check.field(data, "normalization", "$", dict, "an object with a 'type'")
    if norm is None:
        return
    kind = check.field(norm, "type", "$.normalization", str, "a text")
    if kind == "ct-window":
        low = check.field(norm, "min", "$.normalization", (int, float), "a number")
        high = check.field(norm, "max", "$.normalization", (int, float), "a number")
        if low is not None and high is not None and high <= low:
            check.fail("$.normalization.max", f"must be greater than min ({low})")
    elif kind == "zscore":
        if ("mean" in norm) != ("std" in norm):
            check.fail("$.normalization", "give both mean and std, or neither (then the image's own)")
        check.field(norm, "mean", "$.normalization", (int, float), "a number", required=False)
        std = check.field(norm, "std", "$.normalization", (int, float), "a number", required=False)
        if std is not None and std <= 0:
            check.fail("$.normalization.std", "must be positive")
    elif kind is not None and kind != "none":
        check.fail("$.normalization.type", f"expected 'ct-window', 'zscore' or 'none', got '{kind}'")


def _check_labels(check: _Checker, data: dict) -> None:
    labels = check.field(data, "labels", "$", list, "a list of label objects")
    if labels is None:
        return
    if not labels:
        check.fail("$.labels", "needs at least one label")
    values, ids = set(), set()
    for n, label in enumerate(labels):
        path = f"$.labels[{n}]"
        if not isinstance(label, dict):
            check.fail(path, "expected an object with value, id, name, color and terminology")
            continue
        value = check.field(label, "value", path, int, "an integer label value")
        if value is not None and not 0 < value < 65536:
            check.fail(f"{path}.value", "must be between 1 and 65535 (0 is background)")
        elif value in values:
            check.fail(f"{path}.value", f"duplicate label value {value}")
        values.add(value)
        ident = check.field(label, "id", path, str, "a text")
        if ident is not None and not _ID.match(ident):
            check.fail(f"{path}.id", "expected an id starting with a lower-case letter, then letters, digits or _")
        elif ident in ids:
            check.fail(f"{path}.id", f"duplicate id '{ident}'")
        ids.add(ident)
        check.field(label, "name", path, str, "a text")
        color = check.field(label, "color", path, str, "a colour written #RRGGBB")
        if color is not None and not _COLOR.match(color):
            check.fail(f"{path}.color", "expected a colour written #RRGGBB")
        terminology = check.field(label, "terminology", path, dict, "an object with category and type codes")
        if terminology is not None:
            for key in _TERMINOLOGY_KEYS:
                if key in terminology:
                    check.code(terminology[key], f"{path}.terminology.{key}")
                elif key in ("category", "type"):
                    check.fail(f"{path}.terminology.{key}", "required")


def load_sidecar(path: str | Path) -> dict:
    """Read and validate a model sidecar; raises ``EngineError`` listing every problem with its JSON path."""
    path = Path(path)
    source = str(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EngineError(f"{source}: model sidecar not found (write <model>.json next to the model)") from None
    except (OSError, UnicodeDecodeError) as error:
        raise EngineError(f"{source}: cannot read the model sidecar: {error}") from None
    except json.JSONDecodeError as error:
        raise EngineError(f"{source}: line {error.lineno} column {error.colno}: invalid JSON: {error.msg}") from None
    check = _Checker(source)
    if not isinstance(data, dict):
        check.fail("$", "expected a JSON object")
        raise EngineError("\n".join(check.problems))
    check.field(data, "name", "$", str, "a text")
    check.field(data, "version", "$", str, "a text")
    check.field(data, "description", "$", str, "a text", required=False)
    modality = check.field(data, "modality", "$", str, "a text")
    if modality is not None and modality not in ("CT", "MR", "any"):
        check.fail("$.modality", f"expected 'CT', 'MR' or 'any', got '{modality}'")
    check.numbers(data, "spacing", "$", 3, integer=False)
    check.numbers(data, "patchSize", "$", 3, integer=True)
    overlap = check.field(data, "overlap", "$", (int, float), "a number in [0, 1)")
    if overlap is not None and not 0 <= overlap < 1:
        check.fail("$.overlap", "expected a number in [0, 1)")
    for key, allowed in (("blending", ("gaussian", "uniform")), ("output", ("logits", "probabilities"))):
        value = check.field(data, key, "$", str, "a text", required=False)
        if value is not None and value not in allowed:
            check.fail(f"$.{key}", f"expected one of {', '.join(allowed)}, got '{value}'")
    _check_normalization(check, data)
    _check_labels(check, data)
    if check.problems:
        raise EngineError("\n".join(check.problems))
    return data


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """First index of every patch along one axis; the last patch ends at the far edge."""
    if size <= patch:
        return [0]
    step = max(1, int(round(patch * (1.0 - overlap))))
    starts = list(range(0, size - patch + 1, step))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def importance_map(patch: tuple[int, int, int], blending: str) -> np.ndarray:
    """Per-voxel weight of a patch's prediction: Gaussian (sigma = patch / 8, peak 1) or uniform."""
    if blending == "uniform":
        return np.ones(patch, np.float32)
    axes = []
    for size in patch:
        x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
        axes.append(np.exp(-(x**2) / (2.0 * (size / 8.0) ** 2)))
    weight = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    return np.maximum(weight / weight.max(), 1e-4).astype(np.float32)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=0, keepdims=True))
    return shifted / shifted.sum(axis=0, keepdims=True)


class OnnxEngine(Engine):
    """Runs an ONNX segmentation network on CPU (onnxruntime) with sliding-window inference."""

    name = "onnx"

    def __init__(self, model: str | Path, sidecar: str | Path | None = None):
        self.model = Path(model)
        if not self.model.is_file():
            raise EngineError(f"model: ONNX model file not found: {self.model}")
        self.sidecar_path = Path(sidecar) if sidecar else self.model.with_name(self.model.name + ".json")
        self.sidecar = load_sidecar(self.sidecar_path)
        self._session = None

    @classmethod
    def probe(cls) -> tuple[bool, str]:
        try:
            import onnxruntime
        except ImportError:
            return False, INSTALL_HINT
        return True, f"onnxruntime {onnxruntime.__version__}; needs a model FILE.onnx with its FILE.onnx.json sidecar"

    def info(self) -> EngineInfo:
        data = self.sidecar
        structures = tuple(
            EngineStructure(label["id"], label["name"], label["color"], Terminology.from_json(label["terminology"]))
            for label in data["labels"]
        )
        description = f"{data['name']} ({self.model.name})"
        if "description" in data:
            description += f": {data['description']}"
        return EngineInfo(
            self.name, data["version"], description, data["modality"], structures, requirements=("onnxruntime>=1.17",)
        )

    def load(self):
        """Open the model (once) and check its tensors against the sidecar; returns the onnxruntime session."""
        if self._session is not None:
            return self._session
        try:
            import onnxruntime
        except ImportError:
            raise EngineUnavailable(f"engine 'onnx' {INSTALL_HINT}") from None
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        try:
            session = onnxruntime.InferenceSession(str(self.model), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own exception types for unreadable models
            raise EngineError(f"{self.model}: cannot load the ONNX model: {error}") from None
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 5:
            shapes = ", ".join(str(i.shape) for i in inputs)
            raise EngineError(f"{self.model}: expected one input tensor (1, 1, D, H, W), got {shapes}")
        if len(outputs[0].shape) != 5:
            raise EngineError(f"{self.model}: expected an output tensor (1, C, D, H, W), got {outputs[0].shape}")
        patch = list(self.sidecar["patchSize"])
        fixed = [d if isinstance(d, int) else None for d in inputs[0].shape[2:]]
        if any(d is not None and d != p for d, p in zip(fixed, patch, strict=True)):
            raise EngineError(
                f"{self.sidecar_path}: $.patchSize: {patch} does not fit the model's input "
                f"{inputs[0].shape} (1, 1, D, H, W)"
            )
        channels = outputs[0].shape[1]
        if isinstance(channels, int):
            self._check_channels(channels)
        self._session = session
        return session

    def _check_channels(self, channels: int) -> None:
        expected = len(self.sidecar["labels"]) + 1
        if channels != expected:
            raise EngineError(
                f"{self.sidecar_path}: $.labels: lists {expected - 1} labels, but the model {self.model.name} "
                f"has {channels} output channels (expected labels + 1 for background = {expected})"
            )

    def _prepare(self, image):
        """The image resampled to the model spacing (linear) as float32 (k, j, i), and the resampled image."""
        import SimpleITK as sitk

        source = sitk.Cast(image, sitk.sitkFloat32)
        spacing = np.array(self.sidecar["spacing"], float)
        current = np.array(image.GetSpacing(), float)
        if np.allclose(current, spacing, rtol=1e-3, atol=0):
            return sitk.GetArrayFromImage(source), None
        size = [max(1, int(round(n * c / s))) for n, c, s in zip(image.GetSize(), current, spacing, strict=True)]
        outside = float(sitk.GetArrayViewFromImage(source).min())  # beyond the last voxel: air, not 0 HU
        resampled = sitk.Resample(
            source, size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(), spacing.tolist(), image.GetDirection(),
            outside, sitk.sitkFloat32,
        )  # fmt: skip
        return sitk.GetArrayFromImage(resampled), resampled

    def _normalize(self, array: np.ndarray) -> np.ndarray:
        norm = self.sidecar["normalization"]
        if norm["type"] == "ct-window":
            low, high = float(norm["min"]), float(norm["max"])
            return ((np.clip(array, low, high) - low) / (high - low)).astype(np.float32)
        if norm["type"] == "zscore":
            mean = float(norm.get("mean", array.mean()))
            std = float(norm.get("std", array.std()))
            return ((array - mean) / max(std, 1e-8)).astype(np.float32)
        return array.astype(np.float32)

    def _infer(self, array: np.ndarray, progress, cancel) -> np.ndarray:
        """Blended class probabilities (C, k, j, i) of the sliding-window inference over ``array``."""
        session = self.load()
        input_name, output_name = session.get_inputs()[0].name, session.get_outputs()[0].name
        patch = tuple(int(p) for p in self.sidecar["patchSize"])
        overlap = float(self.sidecar["overlap"])
        shape = array.shape
        padded = np.pad(array, [(0, max(0, p - s)) for s, p in zip(shape, patch, strict=True)])
        weight = importance_map(patch, self.sidecar.get("blending", "gaussian"))
        logits = self.sidecar.get("output", "logits") == "logits"
        starts = [window_starts(s, p, overlap) for s, p in zip(padded.shape, patch, strict=True)]
        windows = list(itertools.product(*starts))
        channels = len(self.sidecar["labels"]) + 1
        total = np.zeros((channels, *padded.shape), np.float32)
        weights = np.zeros(padded.shape, np.float32)
        for n, corner in enumerate(windows):
            check_cancel(cancel, "ONNX inference")
            box = tuple(slice(c, c + p) for c, p in zip(corner, patch, strict=True))
            out = session.run([output_name], {input_name: padded[box][None, None]})[0]
            if out.shape[1] != channels:
                self._check_channels(out.shape[1])
            if out.shape[0] != 1 or tuple(out.shape[2:]) != patch:
                raise EngineError(f"{self.model}: the model returned {out.shape}, expected (1, {channels}, *{patch})")
            probs = _softmax(out[0].astype(np.float32)) if logits else out[0].astype(np.float32)
            total[(slice(None), *box)] += probs * weight
            weights[box] += weight
            if progress:
                progress(0.05 + 0.85 * (n + 1) / len(windows), f"patch {n + 1}/{len(windows)}")
        crop = tuple(slice(0, s) for s in shape)
        return total[(slice(None), *crop)] / weights[crop]

    def run(self, image, structures=None, prompts=None, progress=None, cancel=None) -> EngineResult:
        import SimpleITK as sitk

        started = time.time()
        check_image(image, self.sidecar["modality"], self.name)
        wanted = self.wanted(structures)
        self.load()
        if progress:
            progress(0.0, "resampling")
        array, resampled = self._prepare(image)
        check_cancel(cancel, "ONNX inference")
        probs = self._infer(self._normalize(array), progress, cancel)
        check_cancel(cancel, "ONNX inference")
        labels_json = self.sidecar["labels"]
        winner = probs.argmax(axis=0)
        best = probs.max(axis=0)
        keep = np.zeros(len(labels_json) + 1, bool)
        keep[[1 + n for n, label in enumerate(labels_json) if label["id"] in wanted]] = True
        confidence = {}
        for n, label in enumerate(labels_json, start=1):
            if keep[n]:
                inside = winner == n
                confidence[label["id"]] = float(best[inside].mean()) if inside.any() else 0.0
        foreground = winner != 0
        region = foreground if foreground.any() else np.ones(winner.shape, bool)
        p = probs[:, region]
        entropy = -(p * np.log(np.clip(p, 1e-12, None))).sum(axis=0) / np.log(probs.shape[0])
        uncertainty = float(np.clip(entropy.mean(), 0.0, 1.0))
        values = np.array([0] + [label["value"] for label in labels_json])
        values[~keep] = 0
        dtype = np.uint8 if values.max() < 256 else np.uint16
        labels = values[winner].astype(dtype)
        if resampled is not None:
            if progress:
                progress(0.95, "resampling labels to the image grid")
            small = sitk.GetImageFromArray(labels)
            small.CopyInformation(resampled)
            labels = sitk.GetArrayFromImage(sitk.Resample(small, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0))
            labels = labels.astype(dtype)
        if progress:
            progress(1.0, "done")
        names = {int(label["value"]): label["id"] for n, label in enumerate(labels_json, start=1) if keep[n]}
        return EngineResult(
            labels, names, confidence, uncertainty, provenance(self.info(), self._parameters(), started)
        )

    def _parameters(self) -> dict:
        import onnxruntime

        digest = hashlib.sha256()
        with self.model.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
        data = self.sidecar
        return {
            "model": str(self.model),
            "modelName": data["name"],
            "sha256": digest.hexdigest(),
            "sidecar": str(self.sidecar_path),
            "spacing": list(data["spacing"]),
            "patchSize": list(data["patchSize"]),
            "overlap": data["overlap"],
            "blending": data.get("blending", "gaussian"),
            "normalization": dict(data["normalization"]),
            "onnxruntime": onnxruntime.__version__,
            "adapter": ADAPTER_VERSION,
        }


__all__ = ["OnnxEngine", "importance_map", "load_sidecar", "window_starts"]
