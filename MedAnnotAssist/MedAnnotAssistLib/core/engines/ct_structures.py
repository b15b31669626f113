"""The CT engine's structures, their codes (Slicer's DICOM master list) and the internal label values."""

from __future__ import annotations

from ..protocol import Code
from .base import LEFT, RIGHT, TISSUE, anatomy

LUNG = Code("SCT", "39607008", "Lung")
STRUCTURES = (
    anatomy("body", "Body", "#f1d691", Code("SCT", "38266002", "Entire body")),
    anatomy("lung_left", "Left lung", "#d1b3a1", LUNG, LEFT),
    anatomy("lung_right", "Right lung", "#c5a591", LUNG, RIGHT),
    anatomy("airways", "Airways", "#b6daf2", Code("SCT", "110726009", "Trachea and bronchus")),
    anatomy("skeleton", "Skeleton", "#f1d6ab", Code("SCT", "272673000", "Bone"), category=TISSUE),
    # Slicer's DICOM tables have no "subcutaneous fat": tissue "Body fat", the subcutaneous part of it
    anatomy("subcutaneous_fat", "Subcutaneous fat", "#e6dc46", Code("SCT", "248300009", "Body fat"), category=TISSUE),
    # the contrast-filled blood of the vessels and heart chambers: tissue "Blood"; empty on a native CT
    anatomy(
        "blood_pool",
        "Contrast-enhanced vessels and heart chambers",
        "#c8413c",
        Code("SCT", "87612001", "Blood"),
        category=TISSUE,
    ),  # fmt: skip
)
BODY, LUNG_L, LUNG_R, AIRWAY, BONE, FAT, BLOOD = range(1, 8)  # internal labels, = position in STRUCTURES + 1
