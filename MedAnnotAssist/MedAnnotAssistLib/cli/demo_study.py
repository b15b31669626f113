"""The demo study of ``medannot run``: accounts, a project on a bundled protocol, and the sample CTs as cases, each
pre-segmented by the built-in CT engine. Made on the first run and found again on the next (nothing duplicated,
nothing segmented twice); the tokens are kept in a private file so that they stay the same."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

PROJECT = "demo-lung-nodule"
PROTOCOL = "lung-nodule"  # the CT engine proposes its lungs on the sample CTs (the nodule is the reader's)
ADMIN = "demo-admin"
# name -> project role ("" for the site admin, who makes the project and its cases)
USERS = {ADMIN: "", "annotator1": "annotator", "annotator2": "annotator", "reviewer1": "reviewer"}
# case name -> sample file
CASES = {"chest-small": "example_ct_sm.nii.gz", "chest-abdomen-pelvis": "example_ct.nii.gz"}
TIMEOUT_S = 120


@dataclass
class Study:
    project_id: int
    tokens: dict[str, str]
    renewed: list[str]  # users whose token is new this run
    made: list[str]  # what this run created (empty on a rerun)


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


def accounts(server_dir: Path, tokens_file: Path) -> tuple[dict[str, str], list[str]]:
    """The demo users' tokens (made or renewed on the database directly, before the server starts)."""
    from medannotassist_server.admin import keep_tokens
    from medannotassist_server.settings import Settings

    known = {}
    if tokens_file.is_file():
        try:
            known = {str(k): str(v) for k, v in json.loads(tokens_file.read_text()).items()}
        except (ValueError, AttributeError):
            known = {}  # unreadable: new tokens are issued and the file rewritten
    settings = Settings(data_dir=Path(server_dir), database_url="")
    tokens, renewed = keep_tokens(settings, {name: role == "" for name, role in USERS.items()}, known)
    if renewed or tokens != known:
        _write_private(tokens_file, json.dumps(tokens, indent=1))
    return tokens, renewed


def presegmentation(image: Path, out: Path, log) -> Path:
    """The CT engine's proposal for ``image`` (``out``, a .seg.nrrd), restricted to the demo protocol; computed
    once: its summary (``.presegment.json``), written last, says it is complete."""
    summary = Path(str(out).removesuffix(".seg.nrrd") + ".presegment.json")
    if out.is_file() and summary.is_file():
        return out
    from ..core.presegment_files import presegment
    from ..core.protocol import bundled_protocol

    log(f"pre-segmenting {image.name} with the CT engine ...")
    summary.unlink(missing_ok=True)
    presegment(image, "ct", out, bundled_protocol(PROTOCOL), None, {})
    return out


def seed(server_url: str, tokens: dict[str, str], renewed: list[str], samples: dict[str, Path], ai_dir: Path, log):
    """The demo project, its members and its cases on the running server; made only where missing."""
    import requests

    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {tokens[ADMIN]}"

    def call(method: str, path: str, expected=(200,), **kwargs):
        answer = http.request(method, server_url + path, timeout=TIMEOUT_S, **kwargs)
        if answer.status_code not in expected:
            raise RuntimeError(f"{method} {path}: the queue server answered {answer.status_code}: {answer.text[:300]}")
        return answer

    made = []
    projects = {p["name"]: p["id"] for p in call("GET", "/api/v1/projects").json()}
    project_id = projects.get(PROJECT)
    if project_id is None:
        body = {"name": PROJECT, "protocol_id": PROTOCOL, "readers_per_case": 2, "review": True}
        project_id = call("POST", "/api/v1/projects", (201,), json=body).json()["id"]
        made.append(f"project {PROJECT}")
    base = f"/api/v1/projects/{project_id}"
    members = {m["user"]: sorted(m["roles"]) for m in call("GET", f"{base}/members").json()}
    for name, role in USERS.items():
        if role and members.get(name) != [role]:
            call("PUT", f"{base}/members/{name}", json={"roles": [role]})
            made.append(f"{name} as {role}")
    cases = {c["name"]: c["id"] for c in _all_cases(call, base)}
    for name, file in CASES.items():
        if name not in cases:
            with open(samples[file], "rb") as handle:
                files = {"image": (file, handle, "application/octet-stream")}
                cases[name] = call("POST", f"{base}/cases", (201,), files=files, data={"name": name}).json()["id"]
            made.append(f"case {name}")
        path = f"{base}/cases/{cases[name]}/ai-segmentation"
        if call("GET", path, (200, 404)).status_code == 404:
            ai = presegmentation(samples[file], ai_dir / f"{name}.seg.nrrd", log)
            with open(ai, "rb") as handle:
                files = {"segmentation": (ai.name, handle, "application/octet-stream")}
                call("PUT", path, files=files, data={"engine": "ct"})
            made.append(f"AI pre-segmentation of {name}")
    return Study(project_id, tokens, renewed, made)


def _all_cases(call, base: str) -> list[dict]:
    cases, after = [], None
    while True:
        params = {"limit": 500} | ({"after": after} if after is not None else {})
        page = call("GET", f"{base}/cases", params=params).json()
        rows = page["cases"] if isinstance(page, dict) else page
        cases += rows
        if len(rows) < 500:
            return cases
        after = rows[-1]["id"]
