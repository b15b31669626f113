"""The pre-segmentation engine interface (DESIGN §5) and what every engine returns.

An engine says what it is and what it can produce (``info()``), whether it can run here
(``available()``), and turns an image into a labelmap (``run()``) with, per structure, a name, a
confidence in [0, 1], and for the whole case an uncertainty score usable as task priority. Structures
carry DICOM codes, so they map onto any protocol's structures by code, not by spelling.
"""

from __future__ import annotations

import getpass
import platform
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from ..jobs import CancelCallback, ProgressCallback
from ..protocol import Code, Protocol, Structure, Terminology
from ..structure_names import ANATOMY, match_name
from ..structure_names import LEFT as LEFT  # re-exported: the codes engines build their structures from
from ..structure_names import RIGHT as RIGHT
from ..structure_names import TISSUE as TISSUE


class EngineError(ValueError):
    """The input cannot be segmented by this engine (the message says why and what was expected)."""


class EngineUnavailable(RuntimeError):  # noqa: N818 - reads as a state, like FileNotFoundError
    """The engine is not installed or not reachable here; the message says what to install or start."""


@dataclass(frozen=True)
class EngineStructure:
    """A structure an engine can produce, with the codes that match it to protocol structures."""

    id: str
    name: str
    color: str  # "#rrggbb"
    terminology: Terminology

    def as_structure(self) -> Structure:
        return Structure(self.id, self.name, self.color, self.terminology, required=False)


def anatomy(id: str, name: str, color: str, code: Code, modifier: Code | None = None, category: Code = ANATOMY):
    return EngineStructure(id, name, color, Terminology(category, code, modifier))


@dataclass(frozen=True)
class EngineInfo:
    name: str
    version: str
    description: str
    modality: str  # "CT", "MR" or "any"
    structures: tuple[EngineStructure, ...]
    interactive: bool = False  # needs prompts (seeds, clicks)
    requirements: tuple[str, ...] = ()  # pip requirement strings

    def structure(self, structure_id: str) -> EngineStructure:
        for item in self.structures:
            if item.id == structure_id:
                return item
        known = ", ".join(s.id for s in self.structures)
        raise EngineError(f"structures: engine '{self.name}' cannot produce '{structure_id}' (it produces {known})")


@dataclass
class Prompts:
    """Interactive input: per structure id, the (k, j, i) voxel indices of the expert's seed strokes;
    ``background`` are strokes on what belongs to none of them."""

    seeds: dict[str, np.ndarray] = field(default_factory=dict)
    background: np.ndarray | None = None


@dataclass
class EngineResult:
    labels: np.ndarray  # (k, j, i) on the input image's grid; 0 is background
    names: dict[int, str]  # label value -> engine structure id
    confidence: dict[str, float]  # engine structure id -> confidence in [0, 1]
    uncertainty: float  # case-level, in [0, 1]: higher means the expert should look sooner
    provenance: dict  # engine, version, parameters, started, seconds, host, user

    def mask(self, structure_id: str) -> np.ndarray:
        for value, name in self.names.items():
            if name == structure_id:
                return self.labels == value
        return np.zeros(self.labels.shape, bool)


def provenance(info: EngineInfo, parameters: Mapping, started: float) -> dict:
    return {
        "engine": info.name,
        "version": info.version,
        "parameters": dict(parameters),
        "started": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
        "seconds": round(time.time() - started, 3),
        "host": platform.node(),
        "user": getpass.getuser(),
    }


class Engine(ABC):
    """Subclasses set ``info()`` and ``run()``; ``available()`` says whether this machine can run it."""

    name = "engine"

    @abstractmethod
    def info(self) -> EngineInfo: ...

    @classmethod
    def probe(cls) -> tuple[bool, str]:
        """Whether this machine can run the engine at all (packages installed), without options."""
        return True, "built in"

    @abstractmethod
    def run(
        self,
        image,
        structures: Sequence[str] | None = None,
        prompts: Prompts | None = None,
        progress: ProgressCallback | None = None,
        cancel: CancelCallback | None = None,
    ) -> EngineResult:
        """Segment ``image`` (a SimpleITK image); ``structures`` limits the output to those ids."""

    def wanted(self, structures: Sequence[str] | None) -> list[str]:
        info = self.info()
        if not structures:
            return [s.id for s in info.structures]
        return [info.structure(s).id for s in structures]


def match_protocol(info: EngineInfo, protocol: Protocol, parts: bool = False) -> dict[str, Structure]:
    """Engine structure id -> protocol structure, by code, then by the maintained name map
    (``core.structure_names.match_name``); with ``parts``, a part (a lung lobe) maps onto its whole."""
    matched = {}
    for item in info.structures:
        structure, _ = match_name(protocol, item.id, item.terminology, parts)
        if structure is None:
            structure, _ = match_name(protocol, item.name, None, parts)
        if structure is not None:
            matched[item.id] = structure
    return matched


def check_image(image, modality: str, engine: str) -> None:
    """Refuse what the engine cannot segment: not 3-D, empty, or (for CT engines) not in Hounsfield units."""
    size = image.GetSize()
    if image.GetDimension() != 3 or min(size) < 2:
        raise EngineError(f"image: engine '{engine}' needs a 3-D volume, got size {' x '.join(map(str, size))}")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise EngineError(
            f"image: engine '{engine}' needs a scalar volume, got {image.GetNumberOfComponentsPerPixel()} components"
        )
