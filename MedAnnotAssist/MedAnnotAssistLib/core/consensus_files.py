"""``medannot consensus``: readers' files in, ``consensus.seg.nrrd``, ``disagreement.nrrd``,
``agreement.json`` and ``report.html`` out."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .consensus import ConsensusResult, compute_consensus
from .jobs import ProgressCallback, no_progress
from .labelio import check_same_grid, read_reader, write_json, write_seg_nrrd, write_volume
from .protocol import Protocol

OUTPUTS = ("consensus.seg.nrrd", "disagreement.nrrd", "agreement.json", "report.html")


def read_readers(
    paths: Sequence[str | Path],
    protocol: Protocol,
    label_names: dict[int, str] | None = None,
    reader_names: Sequence[str] | None = None,
):
    if reader_names is not None and len(reader_names) != len(paths):
        raise ValueError(f"--readers-names: {len(reader_names)} names for {len(paths)} reader files")
    names = list(reader_names) if reader_names else [None] * len(paths)
    readers = [read_reader(path, protocol, label_names, name) for path, name in zip(paths, names, strict=True)]
    if reader_names is None:  # two files with one stem (a/reader.seg.nrrd, b/reader.seg.nrrd): number them
        stems = [reader.name for reader in readers]
        if len(set(stems)) != len(stems):
            for index, reader in enumerate(readers, start=1):
                reader.name = f"reader{index}"
    return readers


def read_image_on_grid(path: str | Path, readers) -> object:
    """The case image as a (k, j, i) array, checked to be on the readers' grid."""
    import SimpleITK as sitk

    from .labelio import Geometry

    image = sitk.ReadImage(str(path))
    problems = readers[0].geometry.differences(Geometry.of(image))
    if problems:
        raise ValueError(f"{path}: the image is not on the readers' grid: {'; '.join(problems)}")
    return sitk.GetArrayFromImage(image)


def write_consensus(result: ConsensusResult, out_dir: str | Path, image=None) -> dict[str, Path]:
    from .report import write_report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    geometry = result.readers[0].geometry
    segments = [(value, item.structure) for value, item in enumerate(result.structures, start=1)]
    tags = {"MedAnnotAssist.Consensus": f"{result.fusion} of {len(result.readers)} readers"}
    written = {
        "consensus.seg.nrrd": write_seg_nrrd(
            out / "consensus.seg.nrrd", result.labels, geometry, segments, result.protocol, tags
        ),
        "disagreement.nrrd": write_volume(out / "disagreement.nrrd", result.disagreement, geometry),
        "agreement.json": write_json(out / "agreement.json", result.as_dict()),
    }
    written["report.html"] = write_report(out / "report.html", result, image)
    return written


def run_consensus(
    paths: Sequence[str | Path],
    protocol: Protocol,
    out_dir: str | Path,
    label_names: dict[int, str] | None = None,
    reader_names: Sequence[str] | None = None,
    image_path: str | Path | None = None,
    progress: ProgressCallback | None = None,
    **options,
) -> tuple[ConsensusResult, dict[str, Path]]:
    report = progress or no_progress
    report(0.0, "reading the readers' files")
    readers = read_readers(paths, protocol, label_names, reader_names)
    check_same_grid(readers)
    image = read_image_on_grid(image_path, readers) if image_path else None
    # the structures' metrics and fusion take most of the time: 10 % .. 85 % of the bar
    result = compute_consensus(readers, protocol, progress=lambda f, m: report(0.1 + 0.75 * f, m), **options)
    report(0.85, "writing the consensus and the report")
    written = write_consensus(result, out_dir, image)
    report(1.0, "done")
    return result, written
