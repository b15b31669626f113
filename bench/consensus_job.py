"""Benchmark: the last reader's submit and the consensus job behind it, on the real task-queue server.

Data: the sample CT ``example_ct_sm`` resampled (linear, int16) to 512 x 512 x 300 over the same extent, and
five readers on that grid (nearest neighbour): TotalSegmentator's full and fast models of it (the 13
structures of ``abdominal-organs``), reader 1 shifted 2 voxels along j, reader 1 shifted 2 voxels along i,
reader 2 shifted 2 voxels along j (shifts keep every structure's volume and components). The sample is
cropped, so its pancreas is cut: every reader gives the reason, as readers of a cropped scan would. Each
reader is a gzip ``.seg.nrrd`` as Slicer writes it.

Run: one ``medannot serve`` (SQLite in a new data directory, its default job thread), a five-reader project
with review on, the image uploaded once. Per repeat a new case: four readers claim and submit, then the
fifth; the client times each submit (``perf_counter`` around the HTTP request: upload, validation, commit,
answer), then polls the case (every 0.1 s) until its review task is open. Reported per repeat and as the
median: the last reader's submit, the other readers' submits (the same upload and checks: the difference is
what the last one still does), the consensus job's own time (the job's ``started_at`` to ``finished_at``:
child process, reading five readers and the image, consensus, report, storing), and the last submit's
answer to the review task being open. ``--before REV`` also runs the server code of git revision REV (a
``git archive`` of it first on the server's import path), e.g. the code from before consensus became a job.

Run: ``.venv/bin/python -m bench.consensus_job [--repeats 5] [--before REV] [--note TEXT]``. Writes
``var/bench/consensus_job.json`` and the "Consensus job (task-queue server)" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from bench.benchdoc import replace_section
from bench.presegment import resampled
from MedAnnotAssistLib.core.labelio import Geometry, write_seg_nrrd, write_volume
from MedAnnotAssistLib.core.protocol import bundled_protocol
from Testing.readers import ABDOMEN_LABELS
from Testing.server.harness import SAMPLE_OVERRIDES, Api, ServerProcess, create_site_admin

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("MEDANNOT_SHARED_DATA", REPO.parent / "shared" / "data" / "totalseg-example"))
SECTION = "## Consensus job (task-queue server)"
READERS, SHIFT = 5, 2
GOAL_S = 1.0
# the sample CT is cropped: its pancreas is cut (the protocol's rules block it unless a reason is given)
METADATA = {"time_spent_s": 600.0, "overrides": SAMPLE_OVERRIDES}


def shifted(labels: np.ndarray, axis: int) -> np.ndarray:
    """``labels`` moved SHIFT voxels along an array axis (2: i, 1: j), the vacated border left empty."""
    out = np.zeros_like(labels)
    source = [slice(None)] * 3
    target = [slice(None)] * 3
    source[axis], target[axis] = slice(0, -SHIFT), slice(SHIFT, None)
    out[tuple(target)] = labels[tuple(source)]
    return out


def prepare(folder: Path, size: tuple[int, int, int]) -> tuple[Path, list[Path], dict]:
    """The image (``size``: i, j, k) and the five readers' .seg.nrrd files; returns them and a description."""
    protocol = bundled_protocol("abdominal-organs")
    ct = resampled(sitk.ReadImage(str(DATA / "example_ct_sm.nii.gz")), tuple(size))
    geometry = Geometry.of(ct)
    image = write_volume(folder / "case.nrrd", sitk.GetArrayFromImage(ct), geometry)
    labelmaps = []
    for name in ("example_seg", "example_seg_fast"):
        values = sitk.Resample(
            sitk.ReadImage(str(DATA / f"{name}.nii.gz")), ct, sitk.Transform(), sitk.sitkNearestNeighbor
        )
        values = sitk.GetArrayFromImage(values)
        labels = np.zeros(values.shape, np.uint8)
        for index, value in enumerate(ABDOMEN_LABELS, start=1):
            labels[values == value] = index
        labelmaps.append(labels)
    labelmaps += [shifted(labelmaps[0], 1), shifted(labelmaps[0], 2), shifted(labelmaps[1], 1)]
    segments = [(index, protocol.structure(sid)) for index, sid in enumerate(ABDOMEN_LABELS.values(), start=1)]
    readers = [
        write_seg_nrrd(folder / f"reader{n}.seg.nrrd", labels, geometry, segments, protocol)
        for n, labels in enumerate(labelmaps, start=1)
    ]
    meta = {
        "size": list(geometry.size),
        "spacing": [round(s, 4) for s in geometry.spacing],
        "image_mib": round(image.stat().st_size / 2**20, 1),
        "reader_mib": [round(path.stat().st_size / 2**20, 2) for path in readers],
        "structure_voxels": [int((labels > 0).sum()) for labels in labelmaps],
    }
    return image, readers, meta


def _code_at(revision: str, folder: Path) -> str:
    """A git archive of ``revision`` in ``folder``; returns the PYTHONPATH that puts its code first."""
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / "code.tar"
    subprocess.run(["git", "-C", str(REPO), "archive", "-o", str(archive), revision], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(folder / "code", filter="data")
    return f"{folder / 'code' / 'MedAnnotAssist'}:{folder / 'code' / 'Server'}"


def run_server(label: str, pythonpath: str | None, image: Path, readers: list[Path], repeats: int, work: Path):
    """Start a server (``pythonpath``: its code), run ``repeats`` cases, stop it; returns the per-case rows."""
    data_dir = work / f"data-{label}"
    previous = os.environ.get("PYTHONPATH")
    if pythonpath:
        os.environ["PYTHONPATH"] = pythonpath  # the server and its admin command import this code
    try:
        token = create_site_admin(data_dir, None)
        server = ServerProcess(data_dir, None, None, "--log-level", "warning").start()
    finally:
        if pythonpath:
            os.environ["PYTHONPATH"] = previous or ""
    rows = []
    try:
        admin = Api(server.url, token, "admin")
        names = [f"reader{n}" for n in range(1, READERS + 1)]
        users = [admin.new_user(name) for name in names]
        project = admin.new_project("bench", "abdominal-organs", readers=READERS, review=True)
        for name in names:
            admin.set_roles(project, name, "annotator")
        sha256 = admin.upload_image(project, image)["sha256"]
        base = f"/api/v1/projects/{project}"
        for repeat in range(repeats):
            cases = {"cases": [{"name": f"case-{repeat}", "image_sha256": sha256}]}
            case_id = admin.ok(admin.post(f"{base}/cases/bulk", json=cases), 201)["case_ids"][0]
            seconds = []
            for user, path in zip(users, readers, strict=True):
                task = user.claim(project)
                started = time.perf_counter()
                response = user.submit(project, task, path, METADATA, key=f"{user.name}-{case_id}")
                seconds.append(time.perf_counter() - started)
                assert response.status_code == 201, response.text
            answered = time.perf_counter()
            while (case := admin.ok(admin.get(f"{base}/cases/{case_id}")))["state"] == "annotating":
                job = case.get("consensus")
                assert not (job and job["state"] == "failed"), job
                time.sleep(0.1)
            review_open = time.perf_counter() - answered
            job = case.get("consensus") or {}
            row = {
                "last_submit_s": seconds[-1],
                "other_submits_s": seconds[:-1],
                "job_s": job.get("seconds"),
                "review_open_s": review_open,
            }
            rows.append(row)
            print(f"{label} case {repeat + 1}/{repeats}: last submit {row['last_submit_s']:.2f} s, others "
                  f"{statistics.median(row['other_submits_s']):.2f} s, job {row['job_s']} s, review open after "
                  f"{review_open:.1f} s", flush=True)  # fmt: skip
        admin.close()
    finally:
        server.stop()
    return rows


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "-"


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True).stdout.strip()


def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def section(results: dict, meta: dict, args, load: tuple, minutes: float) -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown CPU")
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    rows = [
        "| server code | last reader's submit, s: median (min–max) | other readers' submits, s: median | consensus job, s: median (min–max) | last submit answered → review open, s: median | goal ≤ 1 s |",  # noqa: E501
        "|---|---:|---:|---:|---:|---|",
    ]
    for label, cases in results.items():
        last = [c["last_submit_s"] for c in cases]
        jobs = [c["job_s"] for c in cases if c["job_s"] is not None]
        others = [s for c in cases for s in c["other_submits_s"]]
        job = f"{_fmt(_median(jobs))} ({_fmt(min(jobs))}–{_fmt(max(jobs))})" if jobs else "– (inside the submit)"
        verdict = "**met**" if _median(last) <= GOAL_S else "**not met**"
        rows.append(
            f"| {label} | {_fmt(_median(last))} ({_fmt(min(last))}–{_fmt(max(last))}) | {_fmt(_median(others))} | "
            f"{job} | {_fmt(_median(c['review_open_s'] for c in cases))} | {verdict} |"
        )
    size = " x ".join(map(str, meta["size"]))
    spacing = " x ".join(f"{s:g}" for s in meta["spacing"])
    note = f"\n- **{args.note}**" if args.note else ""
    return f"""{SECTION}

Measured on {datetime.date.today().isoformat()} by `bench/consensus_job.py` (`.venv/bin/python -m bench.consensus_job
--repeats {args.repeats}{f" --before {args.before}" if args.before else ""}`), {args.repeats} cases per server code.

- Machine: {cpu}, {os.cpu_count()} logical cores, {memory:.1f} GiB RAM, Linux, Python {platform.python_version()};
  load average (1 min) {load[0]:.1f} at the start, {load[1]:.1f} at the end.{note}
- Versions: our code at `{_git("describe", "--always", "--dirty") or "unknown"}`; numpy {_version("numpy")},
  SimpleITK {_version("SimpleITK")}, fastapi {_version("fastapi")}, uvicorn {_version("uvicorn")}, SQLAlchemy
  {_version("sqlalchemy")}.
- Server: `medannot serve`, SQLite in a new data directory, one process, its default consensus job thread (each
  job's compute in a new child process); client and server on this machine (loopback).
- Case: {size} voxels (i x j x k), spacing {spacing} mm; image {meta["image_mib"]} MiB (gzip NRRD, int16);
  {READERS} readers of 13 structures, gzip `.seg.nrrd` of {", ".join(f"{m:g}" for m in meta["reader_mib"])} MiB
  (labelled voxels {", ".join(f"{v:,}" for v in meta["structure_voxels"])}).

{chr(10).join(rows)}

Notes:
- Submit: `perf_counter` around one HTTP request by the client: upload, validation of header, geometry and
  segments, blob fsync, commit, answer. The other readers' submits carry the same file sizes and checks, so
  the last one's excess over them is what consensus still costs the request path.
- Consensus job: the job's `finished_at - started_at` (a new child process, reading five readers and the image,
  `compute_consensus`, `write_consensus` with the report over the CT, storing the outputs, recording);
  "review open" also counts the wait for the job thread (polled every 0.5 s) and the client's 0.1 s polling.
- Whole run: {minutes:.1f} min. Raw figures: `var/bench/consensus_job.json`.
"""


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="cases per server code (default 5)")
    parser.add_argument("--before", metavar="REV", help="also run the server code of this git revision")
    parser.add_argument("--note", help="a line for the doc (e.g. that the machine was shared)")
    parser.add_argument("--size", type=int, nargs=3, default=[512, 512, 300], metavar=("I", "J", "K"))
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)
    started, load_start = time.monotonic(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-consensus-job-") as tmp:
        work = Path(tmp)
        print(f"preparing the {' x '.join(map(str, args.size))} case and its five readers ...", flush=True)
        image, readers, meta = prepare(work, args.size)
        print(json.dumps(meta), flush=True)
        results = {}
        if args.before:
            path = _code_at(args.before, work / "before")
            label = f"before: `{_git('rev-parse', '--short', args.before)}` (consensus inside the submit)"
            results[label] = run_server("before", path, image, readers, args.repeats, work)
        label = "this code (consensus as a job)"
        results[label] = run_server("after", None, image, readers, args.repeats, work)
    minutes = (time.monotonic() - started) / 60
    out = REPO / "var" / "bench" / "consensus_job.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    text = section(results, meta, args, (load_start, os.getloadavg()[0]), minutes)
    replace_section(args.doc, text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
