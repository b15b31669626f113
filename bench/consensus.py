"""Benchmark: our consensus engine against its peers, on the same five readers, in one run.

Two tasks, on the sample grid (122x101x30 at 3 mm) and on the same labelmaps resampled (nearest neighbour)
to 512x512x300 over the same extent. *metrics*: every pairwise metric (10 pairs) of 10 structures, starting
from the five uint8 labelmaps: ours (``pairwise_metrics`` on compute_consensus's crops; a whole
``compute_consensus`` for context) against DeepMind's surface-distance, SimpleITK's overlap and Hausdorff
filters, and seg-metrics. *staple*: per-structure binary STAPLE, ours (crops + ``staple``) against SimpleITK's
STAPLEImageFilter on whole volumes. Readers 1-2 are TotalSegmentator's full and fast models, 3-5 reader 1
eroded, dilated, and shifted with a missed slice. Each method runs in its own spawned process: best-of-N
time, peak RSS over the RSS after loading; values are checked against ours afterwards, untimed.
Prints the tables and writes the "Consensus" section of docs/benchmarks.md.

Run: ``make bench`` or ``.venv/bin/python -m bench.consensus [--quick] [--repeats 3] [--big-repeats 1]``;
``--only staple`` (or ``metrics``) runs one task and rewrites only its tables in that section.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import math
import multiprocessing as mp
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import psutil
import SimpleITK as sitk
import surface_distance as sd
from scipy import ndimage

from bench.benchdoc import replace_section
from MedAnnotAssistLib.core.consensus import MARGIN, compute_consensus
from MedAnnotAssistLib.core.fusion import staple
from MedAnnotAssistLib.core.labelio import Geometry, ReaderLabels
from MedAnnotAssistLib.core.metrics import pairwise_metrics, union_box
from MedAnnotAssistLib.core.protocol import bundled_protocol

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("MEDANNOT_SHARED_DATA", REPO.parent / "shared" / "data" / "totalseg-example"))
STRUCTURES = {  # abdominal-organs structure id -> TotalSegmentator label value
    "liver": 5, "spleen": 1, "kidney_right": 2, "kidney_left": 3, "pancreas": 7,
    "gallbladder": 4, "stomach": 6, "aorta": 52, "inferior_vena_cava": 63, "portal_vein": 64,
}  # fmt: skip
READERS, BIG_SIZE = 5, (512, 512, 300)  # BIG_SIZE in i, j, k
PAIRS = list(itertools.combinations(range(READERS), 2))
TOLERANCE_MM, PERCENT = 2.0, 95.0
SLAB_ABOVE, SLAB = 4_000_000, 3  # seg-metrics: grids above this many voxels are timed on slabs this thick
LONG_RUN_S = 300.0  # a method whose run takes longer than this is not repeated
TASKS = {
    "metrics": {"ours": "ours (pairwise_metrics on crops)", "consensus": "ours, whole compute_consensus (+ STAPLE)",
                "deepmind": "DeepMind surface-distance", "simpleitk": "SimpleITK overlap + Hausdorff filters",
                "seg-metrics": "seg-metrics"},
    "staple": {"ours-staple": "ours (crops + staple)", "sitk-staple": "SimpleITK STAPLEImageFilter"},
}  # fmt: skip
GOALS = {"metrics": 5.0, "staple": 3.0}
NAMES = {"dice": "Dice", "jaccard": "Jaccard", "volume_similarity": "VS", "hd_mm": "HD", "hd95_mm": "HD95",
         "assd_mm": "avg HD", "asd_ab_mm": "ASD a→b", "asd_ba_mm": "ASD b→a", "surface_dice": "sDice"}  # fmt: skip


def perturbed(labels: np.ndarray, kind: str) -> np.ndarray:
    """Reader 1 redrawn per structure: eroded, dilated, or shifted one voxel along j with its middle slice
    missed. Where two redrawn structures meet, the earlier one keeps the voxel."""
    out = np.zeros_like(labels)
    for value in STRUCTURES.values():
        mask = labels == value
        if kind == "eroded":
            mask = ndimage.binary_erosion(mask)
        elif kind == "dilated":
            mask = ndimage.binary_dilation(mask)
        else:
            mask = np.concatenate([np.zeros_like(mask[:, :1]), mask[:, :-1]], axis=1)
            slices = np.flatnonzero(mask.any(axis=(1, 2)))
            mask[slices[len(slices) // 2]] = False
        out[mask & (out == 0)] = value
    return out


def resampled(labels: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, Geometry]:
    """Nearest-neighbour resampling to BIG_SIZE over the same physical extent (outer voxel corners kept)."""
    image = sitk.GetImageFromArray(labels)
    geometry.apply(image)
    old = np.array(geometry.spacing)
    new = old * np.array(geometry.size) / np.array(BIG_SIZE)
    origin = np.array(geometry.origin) + np.array(geometry.direction).reshape(3, 3) @ ((new - old) / 2)
    out = sitk.Resample(image, BIG_SIZE, sitk.Transform(), sitk.sitkNearestNeighbor, origin.tolist(), new.tolist(),
                        geometry.direction, 0, sitk.sitkUInt8)  # fmt: skip
    return sitk.GetArrayFromImage(out), Geometry.of(out)


def prepare(tmp: Path, quick: bool) -> list[dict]:
    """Write each dataset's five labelmaps to ``tmp`` as .npy; return the datasets' descriptions."""
    images = [sitk.ReadImage(str(DATA / name)) for name in ("example_seg.nii.gz", "example_seg_fast.nii.gz")]
    geometry = Geometry.of(images[0])
    labelmaps = [sitk.GetArrayFromImage(image).astype(np.uint8) for image in images]
    labelmaps += [perturbed(labelmaps[0], kind) for kind in ("eroded", "dilated", "shifted")]
    datasets = [("sample grid", labelmaps, geometry)]
    if not quick:
        big = [resampled(labels, geometry) for labels in labelmaps]
        datasets.append(("512x512x300 grid", [labels for labels, _ in big], big[0][1]))
    out = []
    for index, (name, maps, geom) in enumerate(datasets):
        folder = tmp / f"dataset{index}"
        folder.mkdir()
        for n, labels in enumerate(maps):
            np.save(folder / f"reader{n + 1}.npy", labels)
        out.append({"name": name, "dir": str(folder), "geometry": [list(g) for g in vars(geom).values()],
                    "structure_voxels": [int(np.isin(m, list(STRUCTURES.values())).sum()) for m in maps]})  # fmt: skip
    return out


def load(meta: dict) -> tuple[list[np.ndarray], Geometry]:
    maps = [np.load(Path(meta["dir"]) / f"reader{n + 1}.npy") for n in range(READERS)]
    return maps, Geometry(*(tuple(g) for g in meta["geometry"]))


def readers_of(labelmaps, geometry) -> list[ReaderLabels]:
    segments = {sid: (0, value) for sid, value in STRUCTURES.items()}
    return [ReaderLabels(f"reader{n + 1}", None, geometry, [m], segments) for n, m in enumerate(labelmaps)]


def union_boxes(labelmaps) -> dict[str, tuple[slice, ...]]:
    """Each structure's crop, as compute_consensus finds it: one find_objects per labelmap, union box."""
    found, shape, boxes = [ndimage.find_objects(labels) for labels in labelmaps], labelmaps[0].shape, {}
    for sid, value in STRUCTURES.items():
        box = union_box([f[value - 1] if value <= len(f) else None for f in found], shape, margin=MARGIN)
        boxes[sid] = box if box is not None else tuple(slice(0, 1) for _ in shape)
    return boxes


class Sink:
    """Keeps values for the checks; the time spent keeping them is taken off the method's time."""

    def __init__(self, folder: str, boxes: dict):
        self.folder, self.boxes, self.values, self.seconds = Path(folder), boxes, {}, 0.0
        self.scale, self.note = 1.0, ""  # the time is extrapolated by ``scale`` from what ``note`` says

    def put(self, key, make) -> None:
        start = time.perf_counter()
        self.values[key] = make()
        self.seconds += time.perf_counter() - start

    def array(self, name: str, array: np.ndarray) -> str:
        np.save(path := self.folder / f"{name}.npy", array.astype(np.float32))
        return str(path)


def ours(data, sink, convention="surfels"):
    labelmaps, geometry = data
    readers = readers_of(labelmaps, geometry)
    names = [reader.name for reader in readers]
    for sid, box in union_boxes(labelmaps).items():
        masks = [reader.mask(sid, box) for reader in readers]
        pairs = pairwise_metrics(masks, geometry.array_spacing, names, TOLERANCE_MM, PERCENT, convention)
        for (i, j), pair in zip(PAIRS, pairs, strict=True):
            sink.put((sid, i, j), pair.as_dict)


def consensus(data, sink):
    compute_consensus(readers_of(*data), bundled_protocol("abdominal-organs"), default_tolerance_mm=TOLERANCE_MM)


def deepmind(data, sink):
    labelmaps, geometry = data
    for sid, value in STRUCTURES.items():
        masks = [labels == value for labels in labelmaps]
        for i, j in PAIRS:
            d = sd.compute_surface_distances(masks[i], masks[j], geometry.array_spacing)
            ab, ba = sd.compute_average_surface_distance(d)
            row = {"dice": sd.compute_dice_coefficient(masks[i], masks[j]), "asd_ab_mm": ab, "asd_ba_mm": ba,
                   "hd_mm": sd.compute_robust_hausdorff(d, 100), "hd95_mm": sd.compute_robust_hausdorff(d, PERCENT),
                   "surface_dice": sd.compute_surface_dice_at_tolerance(d, TOLERANCE_MM)}  # fmt: skip
            sink.put((sid, i, j), lambda row=row: row)


def simpleitk(data, sink):
    labelmaps, geometry = data
    images = [sitk.GetImageFromArray(labels) for labels in labelmaps]
    for image in images:
        geometry.apply(image)
    overlap, hausdorff = sitk.LabelOverlapMeasuresImageFilter(), sitk.HausdorffDistanceImageFilter()
    for sid, value in STRUCTURES.items():
        masks = [image == value for image in images]
        for i, j in PAIRS:
            overlap.Execute(masks[i], masks[j])
            hausdorff.Execute(masks[i], masks[j])
            row = {"dice": overlap.GetDiceCoefficient(), "jaccard": overlap.GetJaccardCoefficient(),
                   "volume_similarity": overlap.GetVolumeSimilarity(), "hd_mm": hausdorff.GetHausdorffDistance(),
                   "assd_mm": hausdorff.GetAverageHausdorffDistance()}  # fmt: skip
            sink.put((sid, i, j), lambda row=row: row)


def segmetrics(data, sink, budget_s=900.0):
    """All of seg-metrics' metrics, one call per pair and structure. Stops after the first pair whose average
    projects a full pass beyond ``budget_s``; above SLAB_ABOVE voxels only readers 1-2 on SLAB slices through
    each structure's middle are timed. The caller extrapolates the time by ``sink.scale``."""
    from seg_metrics import seg_metrics as sg  # here: `--only staple` runs without the bench extras

    labelmaps, geometry = data
    slab = labelmaps[0].size > SLAB_ABOVE
    start, done = time.perf_counter(), 0
    for done, (i, j) in enumerate(PAIRS[:1] if slab else PAIRS, start=1):
        for sid, value in STRUCTURES.items():
            a, b = labelmaps[i], labelmaps[j]
            if slab:
                middle = (sink.boxes[sid][0].start + sink.boxes[sid][0].stop - SLAB) // 2
                a, b = a[middle : middle + SLAB], b[middle : middle + SLAB]
            out = sg.write_metrics(labels=[value], gdth_img=a, pred_img=b, spacing=geometry.array_spacing)[0]
            if not slab:
                sink.put((sid, i, j), lambda out=out: {"dice": out["dice"][0], "hd95_mm": out["hd95"][0]})
        spent = time.perf_counter() - start - sink.seconds
        if not slab and done < len(PAIRS) and spent / done * len(PAIRS) > budget_s:
            break
    if slab:
        sink.scale = len(PAIRS) * labelmaps[0].shape[0] / SLAB
        sink.note = f"readers 1-2, {SLAB} of {labelmaps[0].shape[0]} slices per structure"
    elif done < len(PAIRS):
        sink.scale, sink.note = len(PAIRS) / done, f"{done} of {len(PAIRS)} pairs"


def ours_staple(data, sink):
    labelmaps, geometry = data
    readers = readers_of(labelmaps, geometry)
    for sid, box in union_boxes(labelmaps).items():
        masks = [reader.mask(sid, box) for reader in readers]
        result = staple(masks, outside_voxels=labelmaps[0].size - masks[0].size)
        sink.put(sid, lambda sid=sid, r=result: {"probability": sink.array(f"ours-{sid}", r.probability),
                 "sensitivity": r.sensitivity, "specificity": r.specificity, "iterations": r.iterations,
                 "converged": r.converged})  # fmt: skip


def sitk_staple(data, sink):
    labelmaps, geometry = data
    images = [sitk.GetImageFromArray(labels) for labels in labelmaps]
    for image in images:
        geometry.apply(image)
    for sid, value in STRUCTURES.items():
        fusion = sitk.STAPLEImageFilter()
        fusion.SetForegroundValue(1.0)
        image = fusion.Execute([labels == value for labels in images])
        sink.put(sid, lambda sid=sid, f=fusion, image=image: {"sensitivity": f.GetSensitivity(),
                 "specificity": f.GetSpecificity(),
                 "probability": sink.array(f"sitk-{sid}", sitk.GetArrayViewFromImage(image)[sink.boxes[sid]]),
                 "iterations": f.GetElapsedIterations()})  # fmt: skip


METHODS = {"ours": ours, "consensus": consensus, "deepmind": deepmind, "simpleitk": simpleitk,
           "seg-metrics": segmetrics, "ours-staple": ours_staple, "sitk-staple": sitk_staple}  # fmt: skip


def child(method: str, meta: dict, repeats: int, budget_s: float, conn) -> None:
    """One method in a fresh process: load, time ``repeats`` runs, measure peak memory, send the values."""
    data = load(meta)
    boxes = union_boxes(data[0])  # for the value checks only
    kwargs = {"budget_s": budget_s} if method == "seg-metrics" else {}
    baseline = psutil.Process().memory_info().rss
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (ru_maxrss keeps the parent's RSS at fork)
    best, sink, runs, cpu = math.inf, None, 0, ""
    while runs < repeats and (runs == 0 or best < LONG_RUN_S):
        sink, runs = Sink(meta["dir"], boxes), runs + 1
        start, before = time.perf_counter(), os.times()
        METHODS[method](data, sink, **kwargs)
        seconds, after = time.perf_counter() - start - sink.seconds, os.times()
        if seconds < best:
            best, cpu = seconds, f"{after.user - before.user:.1f} / {after.system - before.system:.1f}"
    status = Path("/proc/self/status").read_text()
    peak = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024
    values = sink.values
    if method == "ours":  # untimed: SimpleITK's voxel convention, for the check against it
        voxels = Sink(meta["dir"], boxes)
        ours(data, voxels, convention="voxels")
        values = {"surfels": values, "voxels": voxels.values}
    conn.send({"seconds": best * sink.scale, "measured": best, "scale": sink.scale, "note": sink.note, "runs": runs,
               "cpu": cpu, "mib": (peak - baseline) / 2**20, "values": values})  # fmt: skip
    conn.close()


def max_diff(mine: dict, theirs: dict, key: str) -> float:
    """Largest |ours - peer| of one metric over the pairs both computed (finite values only)."""
    diffs = [abs(mine[pair][key] - row[key]) for pair, row in theirs.items()
             if mine[pair][key] is not None and math.isfinite(mine[pair][key]) and math.isfinite(row[key])]  # fmt: skip
    return max(diffs) if diffs else math.nan


def diffs(mine: dict, theirs: dict, keys) -> str:
    return ", ".join(f"{NAMES[key]} {max_diff(mine, theirs, key):.2g}" for key in keys)


def check(method: str, results: dict) -> str:
    values = results[method]["values"]
    if method in ("ours", "ours-staple", "consensus"):
        return "—" if method == "consensus" else "reference"
    if method == "sitk-staple":
        return check_staple(results["ours-staple"]["values"], values)
    surfels, voxels = results["ours"]["values"]["surfels"], results["ours"]["values"]["voxels"]
    if method == "deepmind":
        keys = ["dice", "hd_mm", "hd95_mm", "asd_ab_mm", "asd_ba_mm", "surface_dice"]
        return "max abs diff (surfels): " + diffs(surfels, values, keys)
    if method == "simpleitk":
        return (f"max abs diff: {diffs(surfels, values, ['dice', 'jaccard', 'volume_similarity'])}; "
                f"voxel convention: {diffs(voxels, values, ['hd_mm', 'assd_mm'])}")  # fmt: skip
    if not values:
        return "not checked (timed on slabs)"
    hd95 = f"{max_diff(surfels, values, 'hd95_mm'):.2g} (surfels), {max_diff(voxels, values, 'hd95_mm'):.2g} (voxels)"
    return f"max abs diff: Dice {max_diff(surfels, values, 'dice'):.2g}; own conventions, HD95 vs ours: {hd95}"


def check_staple(mine: dict, theirs: dict) -> str:
    """Probabilities compared in the union boxes: their margins hold the all-background pattern, the only
    pattern outside them."""
    probability, rates = {}, 0.0
    for sid in STRUCTURES:
        a, b = mine[sid], theirs[sid]
        probability[sid] = float(np.abs(np.load(a["probability"]) - np.load(b["probability"])).max())
        for key in ("sensitivity", "specificity"):
            rates = max(rates, float(np.abs(np.subtract(a[key], b[key])).max()))
    worst = max(probability, key=probability.get)
    steps = [(theirs[sid]["iterations"] + 1, mine[sid]["iterations"]) for sid in STRUCTURES]
    same = sum(itk == ours and mine[sid]["converged"] for sid, (itk, ours) in zip(STRUCTURES, steps, strict=True))
    return (f"max abs diff: probability {probability[worst]:.2g} ({worst}), sensitivities and specificities "
            f"{rates:.2g}; same number of iterations in {same} of {len(STRUCTURES)} structures "
            f"(up to {max(itk for itk, _ in steps)})")  # fmt: skip


def table(task: str, results: dict, repeats: int) -> str:
    reference = next(iter(results))
    rows = [
        "| method | seconds | peer / ours | CPU s user / sys | peak MiB | value check |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for method, r in results.items():
        seconds = f"{r['seconds']:.3f}" + (f" ({r['runs']} run)" if r["runs"] < repeats else "")
        if r["scale"] > 1:
            seconds = f"**{r['seconds']:,.0f} extrapolated**: ×{r['scale']:g} of {r['measured']:.1f} s ({r['note']})"
        cells = [TASKS[task][method], seconds, f"{r['seconds'] / results[reference]['seconds']:.1f}×", r["cpu"]]
        rows.append("| " + " | ".join([*cells, f"{r['mib']:.0f}", check(method, results)]) + " |")
    speedup = min(v["seconds"] for k, v in results.items() if k not in (reference, "consensus"))
    speedup /= results[reference]["seconds"]
    goal = "metrics: ≥ 5× faster than the fastest peer" if task == "metrics" else "STAPLE: ≥ 3× faster than SimpleITK"
    verdict = "**met**" if speedup >= GOALS[task] else "**not met**"
    return "\n".join(rows) + f"\n\nGoal — {goal}: {verdict} ({speedup:.1f}×, best of {repeats})."


def version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown CPU")
    dists = ("numpy", "scipy", "SimpleITK", "surface-distance", "seg-metrics", "edt")
    versions = ", ".join(f"{d} {version(d)}" for d in dists if version(d))
    git = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True)
    edt = "the `edt` package's transform" if version("edt") else "scipy.ndimage's transform"
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    return (f"- Machine: {cpu}, {os.cpu_count()} logical cores (`os.cpu_count()`), "
            f"{psutil.virtual_memory().total / 2**30:.1f} GiB RAM, Python {platform.python_version()}; our code at "
            f"`{git.stdout.strip() or 'unknown'}`.\n- Versions: {versions}.\n- Threads: library defaults. ITK "
            f"filters (SimpleITK, seg-metrics' distance maps) use {threads} threads; ours uses {edt} for distances "
            "(`edt` runs on `os.cpu_count()` threads), numpy and scipy otherwise (one thread); surface-distance is "
            "numpy/scipy (one thread).")  # fmt: skip


def dataset_line(meta: dict) -> str:
    size, spacing = meta["geometry"][0], meta["geometry"][1]
    return (f"- {meta['name']}: {' x '.join(map(str, size))} voxels (i x j x k; {int(np.prod(size)):,} per uint8 "
            f"labelmap), spacing {' x '.join(f'{s:.4g}' for s in spacing)} mm; voxels in the 10 structures, "
            f"readers 1-5: {', '.join(f'{v:,}' for v in meta['structure_voxels'])}.")  # fmt: skip


NOTES = """\
- Readers 1-2: TotalSegmentator's full and fast models of `example_ct_sm`; 3-5: reader 1 eroded by one voxel,
  dilated by one voxel, shifted one voxel along j with its middle slice missed. Structures: {structures}.
  Surface Dice at 2 mm, HD95 at 95 %. Every method starts from the uint8 labelmaps, in its own spawned process.
- Seconds: best of N (`time.perf_counter`), keeping values for the checks not counted; a run over {long:.0f} s
  is not repeated. Peak MiB: `VmHWM` (reset after loading) minus the RSS after loading.
- Checks: DeepMind against ours (surfels; ASD a→b, b→a: directed means); SimpleITK's overlap against ours, its
  Hausdorff and average Hausdorff distances against ours with `convention="voxels"`. seg-metrics' HD95 differs
  by design: `LabelContour` voxel centres, their distance to the other mask's border (`SignedMaurerDistanceMap`),
  both directions pooled unweighted, numpy's percentile; ours weighs surfels by area, per direction.
- seg-metrics: one call per pair and structure (all ten labels at once one-hot encode to 6 GB of float64 per
  reader on the 512 grid). Each call runs `np.sum(image > 0.5)` on two SimpleITK images, which numpy walks pixel
  by pixel through `Image.__iter__` (~5 µs a voxel: ~4 s of a call's ~4.4 s on the sample grid). Past {budget:.0f} s
  a pass is timed on its first pairs; above {slab_above:,} voxels on readers 1-2 over {slab} slices through each
  structure's middle; both extrapolated linearly (its work is whole-image, linear in voxels).
"""


def only_note(args, load_before: float) -> str:
    git = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True)
    return (
        f"Re-measured alone on {datetime.date.today():%Y-%m-%d} (`.venv/bin/python -m bench.consensus --only "
        f"{args.only}`), our code at `{git.stdout.strip() or 'unknown'}`. The machine's {os.cpu_count()} cores "
        f"were shared with other work (1-minute load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} "
        "after), so the seconds are noisy: where a method's CPU seconds fall short of its seconds, it waited for "
        "a core.\n\n"
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per method on the sample grid (best kept)")
    parser.add_argument("--big-repeats", type=int, default=1, help="runs per method on the 512x512x300 grid")
    parser.add_argument("--quick", action="store_true", help="the sample grid only")
    parser.add_argument("--segmetrics-budget", type=float, default=900.0, help="seconds before extrapolating")
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "benchmarks.md", help="markdown to update")
    parser.add_argument("--only", choices=list(TASKS), help="run this task only and rewrite only its tables")
    args = parser.parse_args(argv)
    if not (DATA / "example_seg.nii.gz").is_file():
        sys.exit(f"no sample data in {DATA} (set MEDANNOT_SHARED_DATA)")
    started, context = time.perf_counter(), mp.get_context("spawn")
    tasks = {args.only: TASKS[args.only]} if args.only else TASKS
    out = [f"## Consensus\n\nMeasured on {datetime.date.today():%Y-%m-%d} by `bench/consensus.py`.", machine()]
    with tempfile.TemporaryDirectory(prefix="medannot-bench-") as tmp:
        datasets = prepare(Path(tmp), args.quick)
        out.append("Datasets (5 readers, 10 structures, 10 reader pairs):\n" + "\n".join(map(dataset_line, datasets)))
        for index, meta in enumerate(datasets):
            repeats = args.repeats if index == 0 else args.big_repeats
            for task, methods in tasks.items():
                results, load_before = {}, os.getloadavg()[0]
                for method in methods:  # each in a fresh process, one at a time
                    print(f"[{time.perf_counter() - started:7.1f} s] {meta['name']}: {method}", flush=True)
                    receive, send = context.Pipe(duplex=False)
                    process = context.Process(target=child, args=(method, meta, repeats, args.segmetrics_budget, send))
                    process.start()
                    send.close()
                    results[method] = receive.recv()
                    process.join()
                title = "Pairwise metrics" if task == "metrics" else "STAPLE"
                alone = only_note(args, load_before) if args.only else ""
                out.append(f"### {title}, {meta['name']}\n\n{alone}{table(task, results, repeats)}")
                print(f"\n{out[-1]}\n", flush=True)
                if args.only:
                    replace_section(args.doc, out[-1], parent="## Consensus")
    if args.only:
        print(f"wrote {args.only} into {args.doc} ({time.perf_counter() - started:.0f} s)")
        return
    total = time.perf_counter() - started
    quick = " --quick" if args.quick else ""
    out.append(
        f"### Run and notes\n\nWhole run: {total / 60:.1f} min. Reproduce: `make bench` "
        f"(`.venv/bin/python -m bench.consensus{quick}`)."
    )
    out.append(NOTES.format(structures=", ".join(STRUCTURES), budget=args.segmetrics_budget,
                            slab_above=SLAB_ABOVE, slab=SLAB, long=LONG_RUN_S))  # fmt: skip
    replace_section(args.doc, "\n\n".join(out).rstrip() + "\n")
    print(f"wrote {args.doc} ({total:.0f} s)")


if __name__ == "__main__":
    main()
