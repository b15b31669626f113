"""Test doubles of the queue client's tests, named as such.

``TlsProxy`` stands in for the TLS-terminating reverse proxy (nginx, Caddy) a deployment puts in front of
the queue server, which itself speaks plain http on loopback: a loopback https server on Python's ``ssl``
with a self-signed certificate for 127.0.0.1, forwarding every request to the real server. It can also
misbehave on purpose, as proxies and networks do: answer 503 a few times, or pass a request on and drop
the answer (the server acted, the client never hears of it).
"""

from __future__ import annotations

import http.client
import http.server
import json
import shutil
import ssl
import subprocess
import threading
from pathlib import Path
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """(certificate, key) for 127.0.0.1, made with the openssl command."""
    openssl = shutil.which("openssl")
    assert openssl, "openssl command not found (apt-get install openssl)"
    certificate, key = folder / "certificate.pem", folder / "key.pem"
    options = "req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1"
    subprocess.run([openssl, *options.split(), "-keyout", key, "-out", certificate], check=True, capture_output=True)
    return certificate, key


class TlsProxy:
    """``https://127.0.0.1:PORT`` → ``upstream`` (the real server). ``unavailable``: how many of the next
    requests get 503 ``database_unavailable`` (``Retry-After: 1``) without reaching the server;
    ``drop_answers``: how many of the next requests are forwarded and their answer dropped (the connection
    closed). ``requests`` counts what arrived (method, path)."""

    def __init__(self, upstream: str, folder: Path):
        self.upstream = urlsplit(upstream)
        self.certificate, key = self_signed_certificate(folder)
        self.unavailable = 0
        self.drop_answers = 0
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        proxy = self

        class Forward(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with proxy._lock:
                    proxy.requests.append((self.command, self.path))
                    refuse = proxy.unavailable > 0
                    drop = not refuse and proxy.drop_answers > 0
                    proxy.unavailable -= refuse
                    proxy.drop_answers -= drop
                if refuse:
                    answer = json.dumps({"code": "database_unavailable", "message": "busy (test proxy)"}).encode()
                    self.send_response(503)
                    for name, value in (("Content-Type", "application/json"), ("Retry-After", "1")):
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                    return
                status, headers, answer = proxy._forward(self.command, self.path, self.headers, body)
                if drop:
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = do_POST = do_PUT = do_DELETE = _any

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Forward)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.certificate, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.server_address[1]}"

    def _forward(self, method: str, path: str, headers, body: bytes):
        connection = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=120)
        try:
            sent = {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP and k.lower() != "host"}
            connection.request(method, path, body=body, headers=sent)
            answer = connection.getresponse()
            return answer.status, answer.getheaders(), answer.read()
        finally:
            connection.close()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
