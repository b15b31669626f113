"""`medannot consensus`: agreement, fusion and a report from several readers' segmentations."""

from __future__ import annotations

from pathlib import Path

from .common import ProgressBar, label_names, resolve_protocol


def cmd_consensus(args) -> int:
    from ..core.consensus import ADJUDICATE
    from ..core.consensus_files import run_consensus

    protocol = resolve_protocol(args.protocol)
    names = [n.strip() for n in args.readers_names.split(",")] if args.readers_names else None
    result, written = run_consensus(
        args.readers,
        protocol,
        args.out,
        label_names(args, protocol),
        names,
        args.image,
        fusion_method=args.fusion,
        convention=args.convention,
        empty=args.empty,
        default_tolerance_mm=args.tolerance_mm,
        progress=None if args.quiet else ProgressBar("consensus"),
    )
    print(f"{protocol.label}: {len(result.readers)} readers, fusion {result.fusion}, {result.seconds:.2f} s")
    for item in result.structures:
        mark = "!" if item.verdict == ADJUDICATE else " "
        print(f"  {mark} {item.structure.name:<28} {item.verdict:<19} {item.reason}")
    for path in written.values():
        print(f"wrote {path}")
    return 0


def add_commands(commands) -> None:
    """Register ``consensus`` on the ``medannot`` sub-parsers."""
    consensus = commands.add_parser("consensus", help="agreement, STAPLE consensus and a report from N readers")
    consensus.add_argument("readers", nargs="+", type=Path, metavar="READER", help=".seg.nrrd files or labelmaps")
    consensus.add_argument("--protocol", required=True, help="bundled protocol id or protocol file")
    consensus.add_argument("--out", required=True, type=Path, help="output folder")
    consensus.add_argument("--labels-json", type=Path, help="JSON mapping label values to structure names")
    consensus.add_argument("--readers-names", help="comma-separated reader names, in the order of the files")
    consensus.add_argument("--image", type=Path, help="the case image, drawn under the report's pictures")
    consensus.add_argument("--fusion", default="staple", choices=["staple", "majority", "multilabel-staple"])
    consensus.add_argument("--convention", default="surfels", choices=["surfels", "voxels"], help="see docs")
    consensus.add_argument("--empty", default="defined", choices=["defined", "deepmind"], help="empty-mask values")
    consensus.add_argument(
        "--tolerance-mm", type=float, default=2.0, help="surface Dice tolerance when the protocol sets none"
    )
    consensus.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    consensus.set_defaults(func=cmd_consensus)
