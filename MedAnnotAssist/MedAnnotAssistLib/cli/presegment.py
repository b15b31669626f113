"""`medannot engines`, `medannot presegment` and `medannot presegment-batch`."""

from __future__ import annotations

import sys
from pathlib import Path

from .common import EXIT_INVALID, ProgressBar, resolve_protocol


def _engine_options(args) -> dict:
    options = {}
    if getattr(args, "model", None):
        options["model"] = args.model
    if getattr(args, "server", None):
        options["server"] = args.server
    if getattr(args, "server_model", None):
        options["model"] = args.server_model
    return options


def _protocol(args):
    return resolve_protocol(args.protocol) if args.protocol else None


def _structures(args) -> list[str] | None:
    return [s.strip() for s in args.structures.split(",") if s.strip()] if args.structures else None


def cmd_engines(args) -> int:
    from ..core.engines import list_engines

    for row in list_engines():
        print(f"{row['name']:<18} {'usable' if row['usable'] else 'not usable':<11} {row['detail']}")
    return 0


def cmd_presegment(args) -> int:
    from ..core.presegment_files import presegment

    summary = presegment(
        args.image, args.engine, args.out, _protocol(args), _structures(args), _engine_options(args),
        progress=ProgressBar(args.engine) if not args.quiet else None,
    )  # fmt: skip
    print(f"{'structure':<28} {'volume ml':>10} {'confidence':>10}")
    for name, row in summary["structures"].items():
        confidence = "" if row["confidence"] is None else f"{row['confidence']:.3f}"
        print(f"{name:<28} {row['volume_ml']:>10.1f} {confidence:>10}")
    if summary["dropped"]:
        print(f"dropped (not in {summary['protocol']}): {', '.join(summary['dropped'])}")
    if summary["empty"]:
        print(f"left empty (the engine does not produce them): {', '.join(summary['empty'])}")
    print(f"case uncertainty {summary['uncertainty']:.3f}; engine {summary['provenance']['engine']} "
          f"{summary['provenance']['version']}, {summary['provenance']['seconds']:.2f} s")  # fmt: skip
    if contrast := summary["provenance"].get("notes", {}).get("contrast"):  # the CT engine reads the phase
        print(f"contrast phase {contrast['phase']} (confidence {contrast['confidence']:.2f})")
    print(f"wrote {args.out}")
    return 0


def cmd_presegment_batch(args) -> int:
    from ..core.jobs import run_batch_on_dask
    from ..core.presegment_files import batch_inputs, case_name, presegment

    inputs = batch_inputs(args.input_dir)
    if not inputs:
        print(f"error: {args.input_dir}: no images (NIfTI, NRRD or DICOM series folders)", file=sys.stderr)
        return EXIT_INVALID
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    protocol, structures, options = _protocol(args), _structures(args), _engine_options(args)
    tasks = [
        (
            case_name(path),
            presegment,
            (path, args.engine, out / f"{case_name(path)}.seg.nrrd", protocol, structures, options),
        )
        for path in inputs
    ]
    where = args.scheduler or f"a local Dask cluster of {args.workers} workers"
    print(f"{len(tasks)} case(s) on {where}", file=sys.stderr)
    outcomes = run_batch_on_dask(tasks, args.scheduler, args.workers, ProgressBar("batch"))
    print(f"{'case':<30} {'status':<7} {'seconds':>8}  structures / error")
    for outcome in outcomes:
        if outcome.ok:
            detail = ", ".join(f"{n} {r['volume_ml']:.0f} ml" for n, r in outcome.result["structures"].items())
            print(f"{outcome.name:<30} {'ok':<7} {outcome.seconds:>8.2f}  {detail}")
        else:
            print(f"{outcome.name:<30} {'failed':<7} {'':>8}  {outcome.error}")
    failed = sum(not o.ok for o in outcomes)
    print(f"{len(outcomes) - failed} ok, {failed} failed; outputs in {out}")
    return 3 if failed else 0


def add_commands(commands) -> None:
    engines = commands.add_parser("engines", help="pre-segmentation engines and whether each is usable here")
    engines.set_defaults(func=cmd_engines)

    for name in ("presegment", "presegment-batch"):
        batch = name == "presegment-batch"
        parser = commands.add_parser(
            name, help="pre-segment a folder of scans on Dask" if batch else "pre-segment an image with an engine"
        )
        if batch:
            parser.add_argument("input_dir", type=Path, help="folder of images (and DICOM series folders)")
            parser.add_argument("--out", required=True, type=Path, help="output folder")
            parser.add_argument("--scheduler", help="address of an existing Dask scheduler (default: a local cluster)")
            parser.add_argument("--workers", type=int, default=2, help="workers of the local cluster")
        else:
            parser.add_argument("image", type=Path, help="image file (NIfTI, NRRD) or a DICOM series folder")
            parser.add_argument("--out", required=True, type=Path, help="output .seg.nrrd")
            parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
        parser.add_argument("--engine", default="ct", help="engine name (see `medannot engines`)")
        parser.add_argument("--protocol", help="bundled protocol id or file: name and code segments by it")
        parser.add_argument("--structures", help="comma-separated engine structure ids (default: all)")
        parser.add_argument("--model", type=Path, help="onnx engine: the model file (sidecar next to it)")
        parser.add_argument("--server", help="monai-label engine: server URL")
        parser.add_argument("--server-model", help="monai-label engine: model name on the server")
        parser.set_defaults(func=cmd_presegment_batch if batch else cmd_presegment)
