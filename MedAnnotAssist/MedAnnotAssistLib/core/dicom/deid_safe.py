"""What de-identification keeps that Table E.1-1 does not list: a short safe list, and the registered coding schemes.

Table E.1-1 lists the attributes known to identify; everything else was kept before, including public attributes
no dictionary knows (a vendor's ``(0010,0018)`` holding the patient's name). Now an attribute the table does not
list is removed unless it is on ``SAFE_UNLISTED``: attributes needed to read the image, place it in space and keep
the instance valid, none of which can hold a name (numbers, defined terms, UIDs that are remapped). A coded item
whose scheme is not registered in PS3.16 (an institution's own, ``99...`` private or ``L`` local) is dropped.
See docs/deidentification.md, "The safe list".
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset


@dataclass(frozen=True)
class SafeEntry:
    """Why an attribute the table does not list may stay: ``K`` keep (sequences: items cleaned), ``Z`` empty."""

    action: str
    group: str
    why: str


_GROUPS = {
    "instance": ("K", "what the instance is and where it sits in its series; defined terms and numbers",
                 "SpecificCharacterSet SOPClassUID ImageType Modality SeriesNumber InstanceNumber AcquisitionNumber"),
    "pixels": ("K", "the Image Pixel module and frames: without them the pixel data cannot be decoded",
               "SamplesPerPixel PhotometricInterpretation Rows Columns PlanarConfiguration PixelAspectRatio "
               "BitsAllocated BitsStored HighBit PixelRepresentation SmallestImagePixelValue LargestImagePixelValue "
               "PixelPaddingValue PixelPaddingRangeLimit RedPaletteColorLookupTableDescriptor "
               "GreenPaletteColorLookupTableDescriptor BluePaletteColorLookupTableDescriptor "
               "RedPaletteColorLookupTableData GreenPaletteColorLookupTableData BluePaletteColorLookupTableData "
               "NumberOfFrames FrameIncrementPointer PixelData FloatPixelData DoubleFloatPixelData "
               "ExtendedOffsetTable ExtendedOffsetTableLengths"),
    "lossy": ("K", "a reader must know the pixels were compressed with loss (PS3.3 C.7.6.1.1.5)",
              "LossyImageCompression LossyImageCompressionRatio LossyImageCompressionMethod"),
    "geometry": ("K", "the Image Plane module: where each pixel is in the patient; numbers and defined terms",
                 "ImagePositionPatient ImageOrientationPatient PixelSpacing ImagerPixelSpacing SliceThickness "
                 "SpacingBetweenSlices SliceLocation PatientPosition PatientOrientation Laterality GantryDetectorTilt"),
    "enhanced geometry": ("K", "the same geometry in multi-frame images: functional group sequences hold it",
                          "SharedFunctionalGroupsSequence PerFrameFunctionalGroupsSequence PixelMeasuresSequence "
                          "PlanePositionSequence PlaneOrientationSequence PixelValueTransformationSequence "
                          "FrameVOILUTSequence FrameContentSequence DimensionIndexValues"),
    "values": ("K", "how stored values become Hounsfield units and grey levels",
               "RescaleIntercept RescaleSlope WindowCenter WindowWidth VOILUTFunction PresentationLUTShape "
               "ModalityLUTSequence VOILUTSequence LUTDescriptor LUTData"),
    "acquisition": ("K", "Type 1 and 2 attributes of the CT and MR Image modules (numbers and defined terms)",
                    "KVP ScanningSequence SequenceVariant ScanOptions MRAcquisitionType RepetitionTime EchoTime "
                    "EchoTrainLength InversionTime"),
    "references": ("K", "the items that hold the references the table keeps (their instance UIDs are remapped)",
                   "ReferencedSOPClassUID ReferencedSeriesSequence ReferencedInstanceSequence"),
    "codes": ("K", "a code of a registered scheme is vocabulary; codes of local and private schemes are dropped",
              "CodeValue CodingSchemeDesignator CodingSchemeVersion CodeMeaning LongCodeValue"),
    "pixel risk": ("K", "tells the recipient whether the pixels may show text or a face (YES/NO)",
                   "BurnedInAnnotation RecognizableVisualFeatures"),
    "emptied": ("Z", "Type 2 attributes whose free text can name the site: present (the IOD needs them), empty",
                "Manufacturer PositionReferenceIndicator"),
}  # fmt: skip
SAFE_UNLISTED: dict[str, SafeEntry] = {
    keyword: SafeEntry(action, group, why)
    for group, (action, why, keywords) in _GROUPS.items()
    for keyword in keywords.split()
}
SAFE_UNLISTED_TAGS: dict[int, SafeEntry] = {tag_for_keyword(k): entry for k, entry in SAFE_UNLISTED.items()}

# PS3.16 Table 8-1 (Coding Schemes) designators; designators are case-sensitive. "99..." (private) and "L" (local)
# are left out on purpose, and so is 99SDM. A registered scheme missing here only drops a harmless code.
_SCHEMES = (
    "ACR ASTM-sigpurpose BARI BI C4 C5 caDSR CD2 CTV3 DC DCM DCMUID FMA GMDN HPC I10 I10C I10P I11 I9 I9C IBSI "
    "ICDO3 ISO3166_1 ISO639_1 ISO639_2 ISO_OID ITIS_TSN LN MA MAYOASRG MDC MDNS MGI MSH NCDR NCIt NDC "
    "NEU NICIP NYUMCCG PATHLEX POS PUBCHEM_CID RADELEMENT RADLEX RFC3066 RFC5646 RO RRID RXNORM SCT SNM3 SRT "
    "UBERON UCUM UMLS UNS UPC"
)
REGISTERED_CODING_SCHEMES = frozenset(_SCHEMES.split())
_CODE_VALUES = (0x00080100, 0x00080119, 0x00080120)  # Code Value, Long Code Value, URN Code Value
_SCHEME = 0x00080102


def is_local_code(item: Dataset) -> bool:
    """True for a coded item whose scheme is not registered: an institution's own, private (99...) or local (L);
    a URN code names its own scheme (often a hospital's server) and counts as local too. False for other items."""
    if not any(tag in item for tag in (*_CODE_VALUES, _SCHEME)):
        return False
    if 0x00080120 in item and not any(tag in item for tag in _CODE_VALUES[:2]):
        return True
    return str(item.get(_SCHEME).value if _SCHEME in item else "").strip() not in REGISTERED_CODING_SCHEMES
