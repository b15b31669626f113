"""`medannot dicom-import`, `medannot deid` and `medannot export seg|rtstruct`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .common import ProgressBar, label_names, resolve_protocol

EXIT_FLAGGED = 3
KEY_ENV = "MEDANNOT_PROJECT_KEY"


def cmd_dicom_import(args) -> int:
    import SimpleITK as sitk

    from ..core.dicom.series import read_series

    progress = None if args.quiet else ProgressBar("dicom-import")
    series = read_series(args.series, series_uid=args.series_uid, progress=progress)
    image = series.image
    sitk.WriteImage(image, str(args.out), useCompression=True)
    size = " x ".join(map(str, image.GetSize()))
    spacing = " x ".join(f"{v:g}" for v in image.GetSpacing())
    print(f"{series.modality} series {series.series_uid}: {series.slice_count} slices, {size} voxels of {spacing} mm")
    for warning in series.warnings:
        print(f"warning: {warning}")
    for name, why in series.skipped:
        print(f"skipped {name}: {why}")
    print(f"wrote {args.out}")
    return 0


def default_key_file() -> Path:
    """Where ``medannot deid`` keeps the project key when none is given: the user's config folder."""
    from ..core.user_settings import settings_folder

    return settings_folder() / "deid-project.key"


def project_key(args) -> str:
    """The project key from the key file or MEDANNOT_PROJECT_KEY, never shown; --project-key still works, with a
    warning: every user of the machine sees a command line (``ps``) and the shell keeps it in its history."""
    from ..core.dicom.deid import read_or_create_project_key

    note = sys.stderr if args.json else sys.stdout  # stdout holds only the JSON then
    if args.project_key is not None:
        print(
            f"warning: --project-key shows the key to every user of this machine (ps) and in your shell history; "
            f"put it in a file (--key-file) or in the {KEY_ENV} environment variable instead",
            file=sys.stderr,
        )
        return args.project_key
    if args.key_file is None and KEY_ENV in os.environ:
        key = os.environ[KEY_ENV].strip()
        if not key:  # falling back to another key would silently break the links between exports
            raise ValueError(f"{KEY_ENV} is set but empty; set it to the project key or unset it")
        print(f"project key: from the {KEY_ENV} environment variable", file=note)
        return key
    key_file = args.key_file or default_key_file()
    created = not key_file.is_file()
    key = read_or_create_project_key(key_file)
    print(f"project key: {'created in' if created else 'read from'} {key_file} (keep it for this project)", file=note)
    return key


def cmd_deid(args) -> int:
    from ..core.dicom.deid import Deidentifier, deidentify_folder

    key = project_key(args)
    deidentifier = Deidentifier(
        key,
        retain_dates_shifted=args.keep_dates_shifted,
        clean_descriptors=args.clean_descriptors,
        retain_patient_characteristics=args.retain_patient_characteristics,
    )
    progress = None if args.quiet or args.json else ProgressBar("de-identifying")
    summary = deidentify_folder(args.input, args.output, deidentifier, progress=progress)
    print(summary.to_json() if args.json else summary.to_text())
    return EXIT_FLAGGED if summary.flagged else 0


def cmd_export(args) -> int:
    from ..core.dicom.rtstruct import export_rtstruct
    from ..core.dicom.seg import export_seg, labels_for_series
    from ..core.dicom.series import read_series

    protocol = resolve_protocol(args.protocol)
    series = read_series(args.dicom, series_uid=args.series_uid)
    labels, tags = labels_for_series(args.labels, series, protocol, label_names(args, protocol))
    if args.kind == "seg":
        report = export_seg(series, labels, protocol, args.out, segment_tags=tags, labelmap=args.labelmap)
    else:
        report = export_rtstruct(series, labels, protocol, args.out, segment_tags=tags)
    what = "DICOM SEG" if args.kind == "seg" else "RTSTRUCT"
    print(f"{what} of {series.modality} series {series.series_uid or '(no SeriesInstanceUID)'}, {protocol.label}:")
    print(f"  {len(report.structures)} structure(s): {', '.join(report.structures)}")
    by_reason: dict[str, list[str]] = {}
    for name, why in report.skipped:
        by_reason.setdefault(why, []).append(name)
    for why, names in by_reason.items():
        shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
        print(f"  skipped ({why}): {shown}")
    for warning in [*series.warnings, *report.warnings]:
        print(f"  warning: {warning}")
    print(f"wrote {report.path}")
    return 0


def add_commands(commands) -> None:
    """Register the DICOM commands on the ``medannot`` sub-parsers."""
    dicom_import = commands.add_parser(
        "dicom-import", help="a DICOM series (folder or zip) to a NRRD/NIfTI image, with geometry checks"
    )
    dicom_import.add_argument("series", type=Path, help="folder or zip archive of DICOM files")
    dicom_import.add_argument("out", type=Path, help="image file to write (.nrrd, .nii.gz)")
    dicom_import.add_argument("--series-uid", help="the series to take when the folder holds several")
    dicom_import.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    dicom_import.set_defaults(func=cmd_dicom_import)

    deid = commands.add_parser(
        "deid",
        help="de-identify every DICOM file under IN into OUT (PS3.15 Basic Profile); exit 3 when files are flagged",
    )
    deid.add_argument("input", type=Path, metavar="IN", help="folder of DICOM files (read only)")
    deid.add_argument("output", type=Path, metavar="OUT", help="new or empty folder for the de-identified files")
    deid.add_argument(
        "--key-file",
        type=Path,
        help=f"file holding the secret project key that makes UIDs, pseudonyms and the date shift per project; "
        f"without it: ${KEY_ENV}, else {default_key_file()} (created on first use)",
    )
    deid.add_argument("--project-key", help="the key itself: visible in ps and shell history, prefer --key-file")
    deid.add_argument(
        "--keep-dates-shifted",
        action="store_true",
        help="Retain Longitudinal Temporal Information with Modified Dates: shift dates by the project's offset",
    )
    deid.add_argument("--clean-descriptors", action="store_true", help="Clean Descriptors option (see the docs)")
    deid.add_argument(
        "--retain-patient-characteristics", action="store_true", help="keep sex, age, size, weight and the like"
    )
    deid.add_argument("--json", action="store_true", help="print the summary as JSON")
    deid.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    deid.set_defaults(func=cmd_deid)

    export = commands.add_parser("export", help="write a segmentation as DICOM SEG or RTSTRUCT for its DICOM series")
    kinds = export.add_subparsers(dest="kind", required=True, metavar="FORMAT")
    for kind, summary in (
        ("seg", "DICOM SEG: protocol codes, colours and algorithm type per segment"),
        ("rtstruct", "RT Structure Set: one ROI per structure, TG-263 names, contours per slice"),
    ):
        command = kinds.add_parser(kind, help=summary)
        command.add_argument("--dicom", required=True, type=Path, help="folder (or zip) of the source DICOM series")
        command.add_argument("--labels", required=True, type=Path, help=".seg.nrrd, or a NIfTI/NRRD labelmap")
        command.add_argument("--labels-json", type=Path, help="JSON mapping label values to structure names")
        command.add_argument("--protocol", required=True, help="bundled protocol id or protocol file")
        command.add_argument("--out", required=True, type=Path, help="DICOM file to write")
        command.add_argument("--series-uid", help="the series to take when the folder holds several")
        if kind == "seg":
            command.add_argument(
                "--labelmap",
                action="store_true",
                help="Label Map Segmentation (2024): a frame per slice, ~10x faster, ~100x smaller; newer viewers only",
            )
        command.set_defaults(func=cmd_export)
