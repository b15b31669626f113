"""``python -m medannotassist_server [options]``: the same server as ``medannot serve``."""

from __future__ import annotations

import argparse
import sys

from .app import serve
from .audit_keys import AuditKeyError
from .settings import RemoteHostRefusedError, Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medannotassist_server", description="the task-queue server")
    parser.add_argument("--data-dir", help="data directory: SQLite database and blobs")
    parser.add_argument("--database-url", help="postgresql://user@host:port/db instead of SQLite")
    parser.add_argument("--host", help="address to bind (default 127.0.0.1; any other needs --allow-remote)")
    parser.add_argument("--allow-remote", action="store_true", default=None, help="TLS terminated in front")
    parser.add_argument("--port", type=int, help="port (default 8000)")
    parser.add_argument("--lease-seconds", type=float, help="default lease length (default 300)")
    parser.add_argument("--max-upload-bytes", type=int, help="largest request body (default 512 MiB)")
    parser.add_argument("--max-voxels", type=int, help="largest image or segmentation in voxels")
    parser.add_argument("--max-image-bytes", type=int, help="largest image or segmentation decompressed (1 GiB)")
    parser.add_argument("--workers", type=int, help="uvicorn worker processes (default 1)")
    parser.add_argument("--audit-key-file", help="the audit chain's key (default DATA_DIR/audit.key)")
    parser.add_argument(
        "--audit-checkpoint-file", help="signed audit checkpoints (default DATA_DIR/audit-checkpoints.jsonl)"
    )
    parser.add_argument("--job-threads", type=int, help="consensus job threads per process (default 1)")
    parser.add_argument("--dask-scheduler", help="compute consensus on this Dask cluster")
    parser.add_argument("--durability", choices=["full", "relaxed"], help="fsync every commit (full, the default)")
    parser.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"])
    try:
        serve(Settings.from_args(parser.parse_args(argv)))
    except (RemoteHostRefusedError, AuditKeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
