"""`medannot protocol`, `sample-data`, `prepare`, `check` and `demo`: protocols and prepared cases."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..core.protocol import ProtocolError, bundled_protocols, load_protocol
from .common import DEFAULT_DATA_DIR, EXIT_INVALID, ProgressBar, label_names, print_check, resolve_protocol


def cmd_protocol_validate(args) -> int:
    failed = False
    for file in args.files:
        try:
            protocol = load_protocol(file)
        except ProtocolError as error:
            failed = True
            for problem in error.problems:
                print(problem)
        else:
            if not args.quiet:
                print(f"{file}: ok ({protocol.label}, {len(protocol.structures)} structures)", file=sys.stderr)
    return EXIT_INVALID if failed else 0


def cmd_protocol_list(args) -> int:
    protocols = bundled_protocols()
    if args.json:
        rows = [
            {
                "id": p.id,
                "version": p.version,
                "title": p.title,
                "modality": p.modality,
                "structures": len(p.structures),
            }
            for p in protocols
        ]
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'id':<20} {'version':<9} {'structures':>10}  title")
    for p in protocols:
        print(f"{p.id:<20} {p.version:<9} {len(p.structures):>10}  {p.title}")
    return 0


def cmd_sample_data(args) -> int:
    from ..core.sample_data import SampleDataError, fetch_sample_data

    try:
        paths = fetch_sample_data(args.dest, log=lambda message: print(message, file=sys.stderr))
    except SampleDataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for path in paths.values():
        print(path)
    return 0


def cmd_prepare(args) -> int:
    from ..mrml.prepared_case import prepareCase
    from ..mrml.scene import SceneContext

    protocol = resolve_protocol(args.protocol)
    names = label_names(args, protocol)
    if args.labels and names is None:
        raise ValueError(f"{args.labels}: a labelmap needs --labels-json, a JSON map of label values to names")
    case = prepareCase(
        SceneContext.headless(), args.image, protocol, args.out, args.labels, names, args.name,
        labelNamesFile=args.labels_json or "label names",
        progress=None if getattr(args, "quiet", False) else ProgressBar("prepare"),
    )  # fmt: skip
    print(case.applied.summary())
    if case.dropped:
        print(f"dropped (not in {protocol.label}): {', '.join(case.dropped)}")
    print_check(case.check)
    print(f"wrote {case.volumePath}\nwrote {case.segmentationPath}\nwrote {case.checkPath}")
    print(case.slicerInstructions())
    return 0


def cmd_check(args) -> int:
    from ..mrml.protocol_segments import checkSegmentation
    from ..mrml.scene import SceneContext
    from ..mrml.segmentation import loadSegmentation

    protocol = resolve_protocol(args.protocol)
    require_segmentation(args.segmentation)
    segmentation = loadSegmentation(SceneContext.headless(), args.segmentation)
    check = checkSegmentation(segmentation, protocol, updateStatus=False)
    if args.json:
        print(json.dumps(check.to_json(), indent=1))
    else:
        print_check(check)
    return 0 if check.ready else 3


def require_segmentation(path: Path) -> None:
    """A ValueError unless ``path`` is a Slicer segmentation: a NRRD whose header names segments."""
    import SimpleITK as sitk

    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    expected = "expected a Slicer segmentation (.seg.nrrd, with Segment0_Name in its NRRD header)"
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise ValueError(f"{path}: not an image file; {expected}") from None
    if "Segment0_Name" not in reader.GetMetaDataKeys():
        size = " x ".join(map(str, reader.GetSize()))
        raise ValueError(
            f"{path}: not a segmentation but a plain {size} image; {expected}. For a labelmap, run "
            "`medannot prepare IMAGE --labels LABELMAP --labels-json NAMES.json` first"
        )


def cmd_demo(args) -> int:
    from ..core.sample_data import SampleDataError, fetch_sample_data

    data_dir = Path(args.data_dir)
    try:
        paths = fetch_sample_data(data_dir / "sample-data", log=lambda message: print(message, file=sys.stderr))
    except SampleDataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    args.image = paths["example_ct_sm.nii.gz"]
    args.out = (data_dir / "cases" / "example_ct_sm").resolve()
    args.labels = args.labels_json = args.name = None
    print("== A new case: the protocol's segments, all empty, ready for a reader ==")
    status = cmd_prepare(args)
    # The same CT started from TotalSegmentator's labels shows the rules at work on real masks.
    args.labels, args.labels_json = paths["example_seg.nii.gz"], paths["labels_total.json"]
    args.name = "example_ct_sm_prefilled"
    print("\n== The same CT started from TotalSegmentator's labels: the protocol's rules on real masks ==")
    return status or cmd_prepare(args)


def add_commands(commands) -> None:
    """Register the protocol and case commands on the ``medannot`` sub-parsers."""
    protocol = commands.add_parser("protocol", help="validate and list annotation protocols")
    protocol_commands = protocol.add_subparsers(dest="protocol_command", required=True, metavar="ACTION")
    validate = protocol_commands.add_parser("validate", help="check protocol files; one line per problem")
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.add_argument("-q", "--quiet", action="store_true", help="print problems only")
    validate.set_defaults(func=cmd_protocol_validate)
    listing = protocol_commands.add_parser("list", help="the bundled protocols")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_protocol_list)

    sample = commands.add_parser("sample-data", help="fetch and cache the sample CT/MR scans")
    sample.add_argument("--dest", default=DEFAULT_DATA_DIR / "sample-data", type=Path)
    sample.set_defaults(func=cmd_sample_data)

    prepare = commands.add_parser("prepare", help="write an image and its protocol segmentation for Slicer")
    prepare.add_argument("image", type=Path, help="CT/MR image (NIfTI, NRRD, ...)")
    prepare.add_argument("--protocol", required=True, help="bundled protocol id or protocol file")
    prepare.add_argument("--out", required=True, type=Path, help="output folder")
    prepare.add_argument("--labels", type=Path, help="optional labelmap to start the segments from")
    prepare.add_argument("--labels-json", type=Path, help="JSON mapping label values to structure names")
    prepare.add_argument("--name", help="case name used for the file names (default: the image's)")
    prepare.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    prepare.set_defaults(func=cmd_prepare)

    check = commands.add_parser("check", help="check a .seg.nrrd against a protocol (exit 3 when not ready)")
    check.add_argument("segmentation", type=Path)
    check.add_argument("--protocol", required=True)
    check.add_argument("--json", action="store_true")
    check.set_defaults(func=cmd_check)

    demo = commands.add_parser("demo", help="fetch the sample CT and prepare it with a bundled protocol")
    demo.add_argument("--data-dir", default=DEFAULT_DATA_DIR, type=Path)
    demo.add_argument("--protocol", default="abdominal-organs")
    demo.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(func=cmd_demo)
