"""Benchmark: a reader's Next case, from the claim to the case in the scene (image, AI pre-segmentation, protocol),
through the real queue client and the workflow task model, against the real server on loopback.

Data: the real 20-slice 512 x 512 DICOM series of the sample (``example_ct_dicom``, uploaded zipped: the server
de-identifies it and stores one volume) with TotalSegmentator's labels of it (``example_seg_dicom``) as the case's
AI pre-segmentation; and the sample CT ``example_ct_sm`` resampled (linear, int16) to 512 x 512 x 300 with
TotalSegmentator's labels resampled (nearest neighbour) as its AI pre-segmentation. The AI files hold the 13
structures of the bundled ``abdominal-organs`` protocol in one gzip ``.seg.nrrd`` layer, as ``medannot presegment
--protocol`` writes them.

Run: one ``medannot serve`` (SQLite in a new data directory), a project per dataset (one reader per case, no
review), one reader's ``Workstation`` on a headless slicer-core scene, connected. Per run the reader presses Next
case (``task.next_task()``) and the script pumps (``Workstation.wait_until``, every 20 ms, as a front-end's timer
does) until the case is open (``task.session``: image and segments in the scene, the protocol and questions
panels bound, the first rule check made); then Release gives the task back and the next run claims it again. A
cold run empties the image cache first (the files are still in the operating system's page cache); a warm run
finds the image and AI file in it. One untimed run per dataset first (imports, Slicer's first-use set-up).

Phases, timed inside the real code by wrapping the functions that do them (time of each, without the phases it
calls): claim (``QueueClient.next_task`` and the case view), download (``QueueClient.fetch_case``: through the image
cache), load image (``task_loading.loadImage``), load AI (reading the AI file, its grid check, its provenance, the
proposal kept aside), apply protocol (segments matched and named, others dropped, the window preset), session (the
rest of ``TaskSession.open``: states), first rule check (``TaskSession.check``, run when the protocol panel binds),
other (the rest of the wall time: thread hand-over, pumping, the panels' states). CPU seconds: this process's
(all threads, ``time.process_time``) and the server's (``psutil``) during the run; the 1-minute load average at
the start of the run. Medians over the runs.

Run: ``.venv/bin/python -m bench.client [--repeats 5] [--note TEXT]``. Writes ``var/bench/client.json`` and the
"Claim to case in the scene (workstation)" section of docs/benchmarks.md.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import zipfile
from collections import defaultdict
from importlib import metadata
from pathlib import Path

import numpy as np
import psutil
import SimpleITK as sitk

from bench.benchdoc import claim_bench_main
from bench.presegment import resampled
from MedAnnotAssistLib.core import provenance as prov
from MedAnnotAssistLib.core.dicom.series import read_series
from MedAnnotAssistLib.core.image_cache import ImageCache
from MedAnnotAssistLib.core.labelio import Geometry, write_seg_nrrd, write_volume
from MedAnnotAssistLib.core.outbox import Outbox
from MedAnnotAssistLib.core.protocol import bundled_protocol
from MedAnnotAssistLib.core.queue_client import QueueClient
from MedAnnotAssistLib.mrml import task_loading
from MedAnnotAssistLib.mrml.scene import SceneContext
from MedAnnotAssistLib.mrml.task_session import TaskSession
from MedAnnotAssistLib.workflow.settings import WorkstationSettings
from MedAnnotAssistLib.workflow.workstation import Workstation
from Testing.readers import ABDOMEN_LABELS
from Testing.server.harness import Api, ServerProcess, create_site_admin

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("MEDANNOT_SHARED_DATA", REPO.parent / "shared" / "data" / "totalseg-example"))
SECTION = "## Claim to case in the scene (workstation)"
PROTOCOL_ID = "abdominal-organs"
PHASES = ("claim", "download", "load image", "load AI", "apply protocol", "session", "first rule check", "other")
AI_PROVENANCE = {"engine": "totalsegmentator", "version": "2.18.0", "parameters": {"task": "total"}}
TIMEOUT_S = 600.0


class PhaseClock:
    """Seconds per phase, each function's own time (what it calls that is timed too counts for that phase)."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self._stack = threading.local()
        self._restore: list = []

    def wrap(self, owner, name: str, phase: str) -> None:
        raw = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
        bound = raw.__func__ if isinstance(raw, classmethod) else raw

        def timed(*args, **kwargs):
            stack = self._stack.__dict__.setdefault("frames", [])
            stack.append(0.0)
            started = time.perf_counter()
            try:
                return bound(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - started
                inner = stack.pop()
                self.seconds[phase] += elapsed - inner
                if stack:
                    stack[-1] += elapsed

        setattr(owner, name, classmethod(timed) if isinstance(raw, classmethod) else timed)
        self._restore.append((owner, name, raw))

    def take(self) -> dict[str, float]:
        taken, self.seconds = dict(self.seconds), defaultdict(float)
        return taken

    def restore(self) -> None:
        for owner, name, raw in reversed(self._restore):
            setattr(owner, name, raw)
        self._restore.clear()


def instrument() -> PhaseClock:
    clock = PhaseClock()
    clock.wrap(QueueClient, "next_task", "claim")
    clock.wrap(QueueClient, "case", "claim")
    clock.wrap(QueueClient, "fetch_case", "download")
    clock.wrap(task_loading, "loadImage", "load image")
    for name in ("_startingNode", "aiSegments", "keepProposal"):
        clock.wrap(task_loading, name, "load AI")
    for name in ("applyProtocol", "keepProtocolSegments", "applyWindow"):
        clock.wrap(task_loading, name, "apply protocol")
    clock.wrap(TaskSession, "open", "session")
    clock.wrap(TaskSession, "check", "first rule check")
    return clock


# ---- data ------------------------------------------------------------------------------------------------------


def ai_file(path: Path, values: np.ndarray, geometry: Geometry) -> Path:
    """TotalSegmentator's label values as the protocol's 13 structures, with the engine's provenance."""
    protocol = bundled_protocol(PROTOCOL_ID)
    labels = np.zeros(values.shape, np.uint8)
    segments = []
    for index, (value, structure_id) in enumerate(ABDOMEN_LABELS.items(), start=1):
        labels[values == value] = index
        segments.append((index, protocol.structure(structure_id)))
    tags = {sid: prov.provenance_tags(AI_PROVENANCE, 0.9) for sid in ABDOMEN_LABELS.values()}
    return write_seg_nrrd(path, labels, geometry, segments, protocol, segment_tags=tags)


def prepare(work: Path, big_size: tuple[int, int, int]) -> dict[str, dict]:
    """The two datasets: what to upload, the AI file, and a description."""
    series = work / "series.zip"
    with zipfile.ZipFile(series, "w", zipfile.ZIP_STORED) as archive:
        for path in sorted((DATA / "example_ct_dicom").iterdir()):
            archive.write(path, path.name)
    image = read_series(DATA / "example_ct_dicom").image  # the labels' file is stored flipped along j: onto its grid
    labels = sitk.Resample(
        sitk.ReadImage(str(DATA / "example_seg_dicom.nii.gz")), image, sitk.Transform(), sitk.sitkNearestNeighbor
    )
    series_ai = ai_file(work / "series.ai.seg.nrrd", sitk.GetArrayFromImage(labels), Geometry.of(image))

    ct = resampled(sitk.ReadImage(str(DATA / "example_ct_sm.nii.gz")), tuple(big_size))
    geometry = Geometry.of(ct)
    big = write_volume(work / "big.nrrd", sitk.GetArrayFromImage(ct), geometry)
    nearest = sitk.Resample(
        sitk.ReadImage(str(DATA / "example_seg.nii.gz")), ct, sitk.Transform(), sitk.sitkNearestNeighbor
    )
    big_ai = ai_file(work / "big.ai.seg.nrrd", sitk.GetArrayFromImage(nearest), geometry)
    size = " x ".join(map(str, big_size))
    return {
        "series": {
            "title": "DICOM series (example_ct_dicom)",
            "voxels": f"{labels.GetSize()[0]} x {labels.GetSize()[1]} x {labels.GetSize()[2]}",
            "upload": series,
            "dicom": True,
            "ai": series_ai,
            "goal_s": 2.0,
        },
        "big": {
            "title": "example_ct_sm resampled (linear, int16)",
            "voxels": size,
            "upload": big,
            "dicom": False,
            "ai": big_ai,
            "goal_s": 5.0,
        },
    }


def mib(path: Path) -> float:
    return round(path.stat().st_size / 2**20, 1)


# ---- the run ---------------------------------------------------------------------------------------------------


def upload(admin: Api, project_id: int, dataset: dict) -> dict:
    path = dataset["upload"]
    with open(path, "rb") as handle:
        if dataset["dicom"]:
            files = {"series": (path.name, handle, "application/zip")}
            case = admin.ok(
                admin.post(f"/api/v1/projects/{project_id}/cases/dicom", files=files, data={"name": "c"}), 201
            )
        else:
            files = {"image": (path.name, handle, "application/octet-stream")}
            case = admin.ok(admin.post(f"/api/v1/projects/{project_id}/cases", files=files, data={"name": "c"}), 201)
    ai = dataset["ai"]
    with open(ai, "rb") as handle:
        files = {"segmentation": (ai.name, handle, "application/octet-stream")}
        url = f"/api/v1/projects/{project_id}/cases/{case['id']}/ai-segmentation"
        admin.ok(admin.put(url, files=files, data={"engine": "totalsegmentator"}))
    return admin.ok(admin.get(f"/api/v1/projects/{project_id}/cases/{case['id']}"))


def server_cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    total = times.user + times.system
    for child in process.children(recursive=True):
        try:
            child_times = child.cpu_times()
            total += child_times.user + child_times.system
        except psutil.NoSuchProcess:
            pass
    return total


def one_run(desk: Workstation, clock: PhaseClock, server: psutil.Process, cold: bool) -> dict:
    task = desk.task
    if cold:
        task.cache.clear()
    clock.take()
    load = os.getloadavg()[0]
    cpu, cpu_server = time.process_time(), server_cpu(server)
    started = time.perf_counter()
    assert task.next_task(), task.message
    desk.wait_until(lambda: task.session is not None, TIMEOUT_S)
    wall = time.perf_counter() - started
    cpu, cpu_server = time.process_time() - cpu, server_cpu(server) - cpu_server
    phases = clock.take()
    phases["other"] = wall - sum(phases.values())
    assert task.release(), task.message
    desk.wait_until(lambda: task.current is None and desk.idle(), TIMEOUT_S)
    return {"wall_s": wall, "cpu_s": cpu, "server_cpu_s": cpu_server, "load": load, "phases": phases}


def run(datasets: dict, repeats: int, work: Path) -> dict:
    data_dir = work / "server"
    token = create_site_admin(data_dir, None)
    server = ServerProcess(data_dir, None, None, "--log-level", "warning").start()
    results: dict[str, dict[str, list]] = {}
    clock = instrument()
    try:
        admin = Api(server.url, token, "admin")
        reader = admin.new_user("reader")
        projects = {}
        for key, dataset in datasets.items():
            projects[key] = admin.new_project(f"bench-{key}", PROTOCOL_ID, readers=1, review=False)
            admin.set_roles(projects[key], "reader", "annotator")
            dataset["case"] = upload(admin, projects[key], dataset)
        desk = Workstation(
            SceneContext.headless(),
            WorkstationSettings(server_url=server.url),
            work_dir=work / "desk",
            outbox=Outbox(work / "outbox"),
            cache=ImageCache(work / "cache"),
        )
        assert desk.task.connect(reader.token)
        desk.wait_until(lambda: desk.task.projects, TIMEOUT_S)
        process = psutil.Process(server.process.pid)
        for key in datasets:
            assert desk.task.select_project(projects[key])
            desk.wait_until(lambda key=key: desk.task.project and desk.task.project["id"] == projects[key], TIMEOUT_S)
            one_run(desk, clock, process, cold=True)  # untimed: imports and first-use set-up
            case = datasets[key]["case"]
            datasets[key]["image_mib"] = mib(desk.task.cache.path(case["image_sha256"]))
            datasets[key]["ai_mib"] = mib(desk.task.cache.path(case["ai_segmentation"]))
            results[key] = {"cold": [], "warm": []}
            for repeat in range(repeats):
                for cache in ("cold", "warm"):
                    row = one_run(desk, clock, process, cold=cache == "cold")
                    results[key][cache].append(row)
                    print(
                        f"{key} {cache} {repeat + 1}/{repeats}: {row['wall_s']:.2f} s (CPU {row['cpu_s']:.2f} s, "
                        f"server {row['server_cpu_s']:.2f} s, load {row['load']:.1f}) "
                        + ", ".join(f"{p} {row['phases'].get(p, 0):.2f}" for p in PHASES),
                        flush=True,
                    )
        desk.close()
        admin.close()
    finally:
        clock.restore()
        server.stop()
    return results


# ---- the report ------------------------------------------------------------------------------------------------


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "-"


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True).stdout.strip()


def _median(rows: list[dict], key: str) -> float:
    return statistics.median(row[key] for row in rows)


def section(datasets: dict, results: dict, args, minutes: float) -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown CPU")
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    header = " | ".join(PHASES)
    table = [
        f"| case | cache | claim → case in the scene, s: median (min–max) | {header} | CPU s: client / server | load (1 min) | goal |",  # noqa: E501
        "|---|---|---:|" + "---:|" * len(PHASES) + "---:|---:|---|",
    ]
    for key, runs in results.items():
        dataset = datasets[key]
        for cache, rows in runs.items():
            walls = [row["wall_s"] for row in rows]
            wall = statistics.median(walls)
            phases = " | ".join(f"{statistics.median(row['phases'].get(p, 0.0) for row in rows):.2f}" for p in PHASES)
            verdict = f"≤ {dataset['goal_s']:g} s: {'**met**' if wall <= dataset['goal_s'] else '**not met**'}"
            table.append(
                f"| {dataset['voxels']} | {cache} | {wall:.2f} ({min(walls):.2f}–{max(walls):.2f}) | {phases} | "
                f"{_median(rows, 'cpu_s'):.2f} / {_median(rows, 'server_cpu_s'):.2f} | "
                f"{min(r['load'] for r in rows):.1f}–{max(r['load'] for r in rows):.1f} | {verdict} |"
            )
    described = "\n".join(
        f"- {d['voxels']}: {d['title']}; image {d['image_mib']} MiB as the server stores it (gzip NRRD, int16), "
        f"AI pre-segmentation {d['ai_mib']} MiB (gzip `.seg.nrrd`, 13 structures in one layer)."
        for d in datasets.values()
    )
    note = f"\n- **{args.note}**" if args.note else ""
    versions = ", ".join(
        f"{name} {_version(name)}" for name in ("slicer-core", "vtk", "SimpleITK", "requests", "uvicorn")
    )
    return f"""{SECTION}

Measured on {datetime.date.today().isoformat()} by `bench/client.py`
(`.venv/bin/python -m bench.client --repeats {args.repeats}`): a reader's Next case, from the claim to the case in the
scene, through the real queue client and the workflow task model against `medannot serve` on loopback. Median of
{args.repeats} runs per row.

- Machine: {cpu}, {os.cpu_count()} logical cores, {memory:.1f} GiB RAM, Linux, Python {platform.python_version()}.
  The load column is the 1-minute load average at the start of the runs (min–max): the wall times grow with it,
  the CPU seconds (this process's threads; the server's) hardly do.{note}
- Versions: our code at `{_git("describe", "--always", "--dirty") or "unknown"}`; {versions}.
{described}
- Protocol `{PROTOCOL_ID}` (14 structures, 13 proposed by the AI file). Server: SQLite, one process.

{chr(10).join(table)}

Notes:
- Cold: the client's image cache emptied before the claim, so the image and the AI file are downloaded (their
  SHA-256 checked) before loading; the files stay in the operating system's page cache. Warm: both found in
  the image cache, as for a case reopened or prefetched while the previous one was read.
- Phases are the real functions' own times: claim (`POST …/tasks/claim`, `GET` the case), download
  (`fetch_case` through the image cache), load image (Slicer's reader into a volume node), load AI (the AI file
  read into a segmentation node, its grid checked, its provenance, the proposal kept aside in a hidden node),
  apply protocol (segments matched, named and coloured, others dropped, the window preset), session (the
  structures' states), first rule check (`TaskSession.check`, run when the protocol panel binds: the table's
  rule results), other (thread hand-over, the 20 ms pump, the panels' states).
- Whole run: {minutes:.1f} min. Raw figures: `var/bench/client.json`.
"""


def main(argv=None) -> None:
    claim_bench_main("client", __doc__.splitlines()[0], "runs per case and cache state", prepare, run, section, argv)


if __name__ == "__main__":
    sys.exit(main())
