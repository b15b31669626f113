"""Pre-segmentation engines: the registry. ``get_engine(name, **options)`` builds one;
``list_engines()`` says which are usable here and, for the others, what to install or start."""

from __future__ import annotations

from importlib import import_module

from .base import (
    Engine,
    EngineError,
    EngineInfo,
    EngineResult,
    EngineStructure,
    EngineUnavailable,
    Prompts,
    match_protocol,
)

# name -> (module, class); modules import lazily so an engine's missing package never breaks the others
_ENGINES = {
    "ct": ("ct", "CTEngine"),
    "seeds": ("seeds", "SeedsEngine"),
    "onnx": ("onnx", "OnnxEngine"),
    "monai-label": ("monailabel", "MonaiLabelEngine"),
    "totalsegmentator": ("totalsegmentator", "TotalSegmentatorEngine"),
}

__all__ = [
    "Engine",
    "EngineError",
    "EngineInfo",
    "EngineResult",
    "EngineStructure",
    "EngineUnavailable",
    "Prompts",
    "engine_names",
    "get_engine",
    "list_engines",
    "match_protocol",
]


def engine_names() -> list[str]:
    return list(_ENGINES)


def engine_class(name: str) -> type[Engine]:
    if name not in _ENGINES:
        raise EngineError(f"engine: unknown engine '{name}', expected one of {', '.join(_ENGINES)}")
    module, cls = _ENGINES[name]
    return getattr(import_module(f"{__name__}.{module}"), cls)


def get_engine(name: str, **options) -> Engine:
    return engine_class(name)(**options)


def list_engines() -> list[dict]:
    """One row per engine: name, usable (bool), detail (version, or what to install/start)."""
    rows = []
    for name in _ENGINES:
        try:
            usable, detail = engine_class(name).probe()
        except Exception as error:  # a broken optional install must not hide the other engines
            usable, detail = False, f"cannot load: {error}"
        rows.append({"name": name, "usable": usable, "detail": detail})
    return rows
