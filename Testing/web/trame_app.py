"""A test double of the browser annotator app that is a real trame-slicer server: trame-slicer 2.0's own
segmentation app (slicer-core, its slice and 3-D views, trame's websocket) under the app contract. The launcher's
proxy is tested on it in Chromium until ``medannotassist_web.app`` is there, and its memory is what a session
costs at least."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--server", required=True)
    parser.add_argument("--data-dir", required=True, type=Path)
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # trame reads the command line too: its own options only

    from trame_slicer.app.segmentation_app import SegmentationApp

    app = SegmentationApp()
    app.server.controller.on_server_ready.add(
        lambda **_: print(f"medannot-web ready http://{args.host}:{args.port}/", flush=True)
    )
    app.server.start(host=args.host, port=args.port, open_browser=False, show_connection_info=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
