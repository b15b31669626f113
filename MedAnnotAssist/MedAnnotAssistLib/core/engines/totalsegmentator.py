"""TotalSegmentator engine: runs the ``TotalSegmentator`` command line in a child process.

``TotalSegmentatorEngine(task="total", fast=True, device="cpu")`` writes the image to a temporary
NIfTI, runs ``TotalSegmentator -i image.nii.gz -o labels.nii.gz --ml --task TASK [--fast] --device DEV``,
reports progress from the stages the program prints (polled from its log), terminates the child (and
its workers, one process group) when the user cancels, and reads the multi-label result back.

It is usable only where the program AND its weights are installed: TotalSegmentator would otherwise
download weights on first use. Weights are looked up as TotalSegmentator 2.x does (``config.py``):
``$TOTALSEG_WEIGHTS_PATH``, else ``$TOTALSEG_HOME_DIR/nnunet/results``, else
``~/.totalsegmentator/nnunet/results``; task "total" needs ``Dataset297_*`` (``--fast``, 3 mm) or
``Dataset291_*`` ... ``Dataset295_*`` (1.5 mm). Install: ``pip install TotalSegmentator`` then
``totalseg_download_weights -t total_fast`` (or ``-t total``).

Label values are named from, in order: the label table TotalSegmentator writes into the output's NIfTI
header extension, its installed ``map_to_binary.class_map[task]``, and the built-in table of the "total"
classes (``core.structure_names.TOTAL_CLASSES``). Names map to DICOM codes through the maintained name map,
``core.structure_names`` (``portal_vein_and_splenic_vein`` is the protocol's ``portal_vein``), else the
generic "Anatomical structure" code. The MONAI Label engine uses the same map (``structure_for``).

TotalSegmentator gives no probabilities: structures carry no confidence (reported as unknown), and the
case uncertainty is a shape proxy, ``fragmentation()``: the fraction of labelled voxels outside the
largest connected component of their structure.
"""

from __future__ import annotations

import gzip
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np

from ..jobs import CancelledError
from ..protocol import Terminology
from ..structure_names import ANATOMY, GENERIC, TOTAL_CLASSES, canonical_name, coded, color_for
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
INSTALL_HINT = "pip install TotalSegmentator, then totalseg_download_weights -t total_fast"

# nnU-Net dataset ids of each task's weights (map_tasks_config.TASK_CONFIGS), by (task, fast)
TASK_DATASETS = {
    ("total", True): (297,),
    ("total", False): (291, 292, 293, 294, 295),
    ("total_mr", True): (852,),
    ("total_mr", False): (850, 851),
}
_STAGES = (("Resampling", 0.1), ("Predicting", 0.2), ("Predicted in", 0.8), ("Resampling", 0.85), ("Saving", 0.95))


def known_structure(name: str, structure_id: str | None = None) -> EngineStructure | None:
    """The coded structure for an engine's class name, or None when no code is known for it."""
    found = coded(name)
    if found is None:
        return None
    label, color, terminology = found
    return EngineStructure(structure_id or canonical_name(name), label, color, terminology)


def structure_for(name: str, structure_id: str | None = None) -> EngineStructure:
    """Like ``known_structure``, with the generic "Anatomical structure" code for unknown names."""
    found = known_structure(name, structure_id)
    if found is not None:
        return found
    key = structure_id or canonical_name(name)
    return EngineStructure(key, name.replace("_", " ").strip() or key, color_for(key), Terminology(ANATOMY, GENERIC))


def fragmentation(labels: np.ndarray) -> float:
    """Fraction of labelled voxels outside the largest 26-connected component of their label (0 if none)."""
    from scipy import ndimage

    total = int(np.count_nonzero(labels))
    if total == 0:
        return 0.0
    stray = 0
    boxes = ndimage.find_objects(labels.astype(np.int64))
    for value, box in enumerate(boxes, start=1):
        if box is None:
            continue
        mask = labels[box] == value
        components, count = ndimage.label(mask, np.ones((3, 3, 3), bool))
        if count > 1:
            sizes = np.bincount(components.ravel())[1:]
            stray += int(sizes.sum() - sizes.max())
    return stray / total


def weights_dir() -> Path:
    """Where TotalSegmentator 2.x keeps (and looks for) its nnU-Net weights."""
    if os.environ.get("TOTALSEG_WEIGHTS_PATH"):
        return Path(os.environ["TOTALSEG_WEIGHTS_PATH"])
    if os.environ.get("TOTALSEG_HOME_DIR"):
        home = Path(os.environ["TOTALSEG_HOME_DIR"])
    else:
        home = (Path("/tmp") if str(Path.home()) == "/" else Path.home()) / ".totalsegmentator"
    return home / "nnunet" / "results"


def _task_datasets(task: str, fast: bool) -> tuple[int, ...] | None:
    if (task, fast) in TASK_DATASETS:
        return TASK_DATASETS[(task, fast)]
    try:  # other tasks: from the installed package's own table, when it is importable here
        from totalsegmentator.map_tasks_config import TASK_CONFIGS
    except Exception:
        return None
    config = TASK_CONFIGS.get(task, {})
    if "sub_modes" in config:
        config = config["sub_modes"].get("fast" if fast else "default", {})
    ids = config.get("task_id")
    return None if ids is None else tuple(ids) if isinstance(ids, list) else (ids,)


def missing_weights(task: str = "total", fast: bool = True) -> list[str]:
    """The ``DatasetNNN_*`` weight folders of the task that are not installed ([] if all are, or unknown)."""
    folder = weights_dir()
    present = {p.name.split("_")[0] for p in folder.iterdir() if p.is_dir()} if folder.is_dir() else set()
    return [f"Dataset{i:03d}_*" for i in _task_datasets(task, fast) or () if f"Dataset{i:03d}" not in present]


def class_map(task: str) -> dict[int, str]:
    """Label value -> class name: the installed package's ``class_map[task]``, else the built-in "total" table."""
    try:
        from totalsegmentator.map_to_binary import class_map as installed

        return {int(k): v for k, v in installed[task].items()}
    except Exception:
        return dict(TOTAL_CLASSES) if task == "total" else {}


def read_label_table(path: str | Path) -> dict[int, str]:
    """The label table TotalSegmentator writes into a NIfTI-1 header extension (value -> name), or {}."""
    try:
        with gzip.open(path, "rb") if str(path).endswith(".gz") else open(path, "rb") as stream:
            header = stream.read(352)
            order = "<" if struct.unpack("<i", header[:4])[0] == 348 else ">"
            offset = int(struct.unpack(order + "f", header[108:112])[0])
            if len(header) < 352 or header[348] == 0 or offset <= 352:
                return {}
            extensions = stream.read(offset - 352)
    except (OSError, EOFError, struct.error):
        return {}
    table, position = {}, 0
    while position + 8 <= len(extensions):
        size, _code = struct.unpack(order + "ii", extensions[position : position + 8])
        if size < 8:
            break
        content = extensions[position + 8 : position + size].rstrip(b"\0 \n")
        position += size
        try:
            root = ElementTree.fromstring(content.decode("utf-8"))
        except (ElementTree.ParseError, UnicodeDecodeError):
            continue
        for label in root.iter("Label"):
            if label.get("Key", "").isdigit() and (label.text or "").strip():
                table[int(label.get("Key"))] = label.text.strip()
    return table


class TotalSegmentatorEngine(Engine):
    """TotalSegmentator (Wasserthal et al., Radiology: AI 2023) as a child process."""

    name = "totalsegmentator"

    def __init__(self, task: str = "total", fast: bool = True, device: str = "cpu", timeout_s: float | None = None):
        self.task, self.fast, self.device = str(task), bool(fast), str(device)
        self.timeout_s = timeout_s
        self.poll_s = 0.2

    @classmethod
    def probe(cls) -> tuple[bool, str]:
        executable = shutil.which("TotalSegmentator")
        if executable is None:
            return False, f"TotalSegmentator is not installed: {INSTALL_HINT}"
        missing = missing_weights("total", True)
        if missing:
            return False, (
                f"TotalSegmentator is installed ({executable}) but its 'total --fast' weights ({', '.join(missing)}) "
                f"are not in {weights_dir()}: run totalseg_download_weights -t total_fast"
            )
        return True, f"{executable}; weights in {weights_dir()}"

    def info(self) -> EngineInfo:
        structures = tuple(structure_for(name, name) for _, name in sorted(class_map(self.task).items()))
        mode = " --fast (3 mm)" if self.fast else ""
        return EngineInfo(
            self.name,
            ADAPTER_VERSION,
            f"TotalSegmentator task '{self.task}'{mode} on {self.device}, run as a child process",
            "MR" if self.task.endswith("_mr") else "CT",
            structures,
            requirements=("TotalSegmentator>=2.0",),
        )

    def _command(self, source: Path, target: Path) -> list[str]:
        executable = shutil.which("TotalSegmentator")
        if executable is None:
            raise EngineUnavailable(f"engine '{self.name}': TotalSegmentator is not installed: {INSTALL_HINT}")
        missing = missing_weights(self.task, self.fast)
        if missing:
            download = f"{self.task}_fast" if self.fast and self.task in ("total", "total_mr") else self.task
            raise EngineUnavailable(
                f"engine '{self.name}': the weights of task '{self.task}' ({', '.join(missing)}) are not in "
                f"{weights_dir()}: run totalseg_download_weights -t {download}"
            )
        command = [executable, "-i", str(source), "-o", str(target), "--ml", "--task", self.task]
        return command + (["--fast"] if self.fast else []) + ["--device", self.device]

    def run(self, image, structures=None, prompts=None, progress=None, cancel=None) -> EngineResult:
        import SimpleITK as sitk

        started = time.time()
        check_image(image, self.info().modality, self.name)
        with tempfile.TemporaryDirectory(prefix="medannot-totalseg-") as folder:
            source, target, log = Path(folder, "image.nii.gz"), Path(folder, "labels.nii.gz"), Path(folder, "log.txt")
            command = self._command(source, target)
            if progress:
                progress(0.02, "writing the image")
            sitk.WriteImage(image, str(source))
            self._run_child(command, log, progress, cancel)
            if not target.is_file():
                raise EngineError(f"TotalSegmentator wrote no labelmap: {_tail(log)}")
            table = read_label_table(target) or class_map(self.task)
            result = sitk.ReadImage(str(target))
            if result.GetSize() != image.GetSize() or not np.allclose(result.GetOrigin(), image.GetOrigin(), atol=1e-3):
                result = sitk.Resample(result, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
            labels = sitk.GetArrayFromImage(result)
        present = [int(v) for v in np.unique(labels) if v != 0]
        names = {v: table.get(v, f"label_{v}") for v in present}
        if structures:
            keep = set(self.wanted(structures))
            names = {v: n for v, n in names.items() if n in keep}
        dtype = np.uint16 if max(names, default=0) > 255 else np.uint8
        labels = np.where(np.isin(labels, list(names)), labels, 0).astype(dtype)
        if progress:
            progress(1.0, "done")
        parameters = {"task": self.task, "fast": self.fast, "device": self.device, "command": command[1:]}
        parameters["executable"] = command[0]
        parameters["uncertainty"] = "fragmentation"
        return EngineResult(labels, names, {}, fragmentation(labels), provenance(self.info(), parameters, started))

    def _run_child(self, command: list[str], log: Path, progress, cancel) -> None:
        """Run the child to its end, polling its log for progress; terminate it on cancel or timeout."""
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        posix = os.name == "posix"
        begun = time.monotonic()
        with log.open("wb") as stream:
            try:
                child = subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=stream, stderr=subprocess.STDOUT, env=env,
                    start_new_session=posix,
                )  # fmt: skip
            except OSError as error:
                raise EngineUnavailable(f"engine '{self.name}': cannot start {command[0]}: {error}") from None
            try:
                while child.poll() is None:
                    if cancel is not None and cancel():
                        raise CancelledError("TotalSegmentator was cancelled")
                    if self.timeout_s is not None and time.monotonic() - begun > self.timeout_s:
                        raise EngineError(f"TotalSegmentator did not finish within {self.timeout_s:g} s: {_tail(log)}")
                    if progress:
                        progress(*_progress(log, time.monotonic() - begun))
                    time.sleep(self.poll_s)
            except BaseException:
                _stop(child, posix)
                raise
        if child.returncode != 0:
            raise EngineError(f"TotalSegmentator failed (exit status {child.returncode}): {_tail(log)}")


def _stop(child: subprocess.Popen, posix: bool) -> None:
    """Terminate the child and its process group (nnU-Net's workers); kill what is left after 5 s."""
    kill = getattr(signal, "SIGKILL", signal.SIGTERM)

    def send(sig) -> None:
        try:
            if posix:
                os.killpg(child.pid, sig)
            elif sig == signal.SIGTERM:
                child.terminate()
            else:
                child.kill()
        except (ProcessLookupError, PermissionError):
            pass

    send(signal.SIGTERM)
    try:
        child.wait(5.0)
    except subprocess.TimeoutExpired:
        send(kill)
        child.wait()
    if posix:
        send(kill)  # workers of the group that outlived the leader


def _read(log: Path) -> str:
    try:
        return log.read_bytes()[-200_000:].decode("utf-8", "replace")
    except OSError:
        return ""


def _tail(log: Path, lines: int = 15) -> str:
    text = [line.rstrip() for line in _read(log).replace("\r", "\n").splitlines() if line.strip()]
    return "\n".join(text[-lines:]) or "(no output)"


def _progress(log: Path, elapsed: float) -> tuple[float, str]:
    """(fraction, message) from the stages TotalSegmentator has printed so far."""
    text = _read(log)
    position, fraction, following = 0, 0.05, _STAGES[0][1]
    for n, (keyword, value) in enumerate(_STAGES):
        found = text.find(keyword, position)
        if found < 0:
            following = value
            break
        position, fraction = found + len(keyword), value
        following = _STAGES[n + 1][1] if n + 1 < len(_STAGES) else 0.99
    fraction += (following - fraction) * (1.0 - np.exp(-elapsed / 60.0)) * 0.5
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    return float(fraction), (lines[-1][:80] if lines else "starting TotalSegmentator")
