"""Safe defaults: a private data directory, loopback unless told otherwise, no token in the access log,
and documentation pages that need no network."""

from __future__ import annotations

import re
import stat
import subprocess
import time
from urllib.parse import urljoin, urlsplit

import httpx

from medannotassist_server.settings import is_loopback

from .harness import MEDANNOT, ServerProcess, create_site_admin, tiny_segmentation, unique
from .postgres import free_port


def test_data_dir_and_everything_in_it_are_private(start_queue, tiny_image_file, tmp_path):
    queue = start_queue("sqlite")
    admin = queue.admin
    reader = admin.new_user(unique("reader"))
    project = admin.new_project(unique("private"), readers=1, review=False)
    admin.set_roles(project, reader.name, "annotator")
    admin.upload_case(project, tiny_image_file, "c1")
    task = reader.claim(project)
    assert reader.submit(project, task, tiny_segmentation(tmp_path / "s.seg.nrrd")).status_code == 201
    assert admin.post(f"/api/v1/projects/{project}/exports", json={"format": "nnunet"}).status_code == 201
    data = queue.data_dir
    written = [data, *data.rglob("*")]
    names = {path.name for path in written}
    assert {"queue.sqlite3", "queue.sqlite3-wal", "blobs", "tmp"} <= names
    assert sum(1 for path in written if path.suffix == ".zip") == 1  # the export, in the blob store
    shared = [
        f"{path.relative_to(data.parent)} {stat.filemode(path.stat().st_mode)}"
        for path in written
        if path.stat().st_mode & 0o077
    ]
    assert shared == []
    assert stat.S_IMODE(data.stat().st_mode) == 0o700


def test_an_existing_open_data_dir_is_closed(tmp_path):
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    create_site_admin(data, None)
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "queue.sqlite3").stat().st_mode) == 0o600


def test_a_network_address_needs_allow_remote(tmp_path):
    data = tmp_path / "data"
    command = [MEDANNOT, "serve", "--data-dir", str(data), "--port", str(free_port()), "--host", "0.0.0.0"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "--allow-remote" in result.stderr and "TLS" in result.stderr
    assert not data.exists()  # refused before anything was created
    create_site_admin(data, None)
    server = ServerProcess(data, None, None, "--host", "0.0.0.0", "--allow-remote")
    try:
        server.start()  # answers on 127.0.0.1 too
        assert "TLS must be terminated in front of this server" in server.log_text()
    finally:
        server.stop()
    for host in ("127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "10.0.0.5", "queue.example.org"):
        assert not is_loopback(host), host


def test_tokens_in_query_strings_are_redacted_from_the_access_log(start_queue):
    queue = start_queue("sqlite")
    token = queue.admin_token
    for query in (f"token={token}", f"access_token={token}&x=1", f"api_key=s3cr3t-value&key={token}", "after=3"):
        assert httpx.get(f"{queue.url}/api/v1/me?{query}", headers={"Authorization": f"Bearer {token}"}).is_success
    httpx.get(f"{queue.url}/api/v1/nowhere/{token}")
    deadline = time.monotonic() + 10
    while "after=3" not in queue.server.log_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = queue.server.log_text()
    assert token not in log and token.removeprefix("mat_") not in log and "s3cr3t-value" not in log
    assert "GET /api/v1/me?token=[redacted] HTTP/1.1" in log
    assert "GET /api/v1/me?access_token=[redacted]&x=1 HTTP/1.1" in log
    assert "GET /api/v1/me?api_key=[redacted]&key=[redacted] HTTP/1.1" in log
    assert "GET /api/v1/nowhere/mat_[redacted] HTTP/1.1" in log
    assert "GET /api/v1/me?after=3 HTTP/1.1" in log


def test_documentation_pages_work_offline(start_queue):
    queue = start_queue("sqlite")
    for page in ("/docs", "/redoc"):
        html = httpx.get(queue.url + page)
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
        urls = re.findall(r'(?:src|href)="([^"]+)"', html.text) + re.findall(r"url: '([^']+)'", html.text)
        urls += re.findall(r'spec-url="([^"]+)"', html.text)
        assert len(urls) == (4 if page == "/docs" else 3), urls  # script, stylesheet, icon; the OpenAPI document
        for url in urls:
            absolute = urljoin(str(html.url), url)
            assert urlsplit(absolute).netloc == urlsplit(queue.url).netloc, f"{page} loads {url} from another host"
            asset = httpx.get(absolute)
            assert asset.status_code == 200 and len(asset.content) > 1000, url
        assert "cdn" not in html.text.lower() and "fonts.googleapis" not in html.text
    # the Swagger UI's validator badge would load an image from the validator's site
    assert '"validatorUrl": null' in httpx.get(queue.url + "/docs").text
