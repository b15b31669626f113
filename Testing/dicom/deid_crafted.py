"""A CT instance with identifiers planted everywhere a de-identifier can miss them, and a search for survivors.

Every planted text value starts with its own marker (``Qz`` and two digits), so a value cut short still shows;
UIDs, dates and bytes are searched as they are. The search looks at the raw bytes of the written file (preamble,
file meta, sequences, private blocks, UN values, overlay data: everything) and at every decoded value.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag

UID_ROOT = "1.2.826.0.1.3680043.9.7433.51."  # planted instance UIDs: each must be remapped


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _implicit_item_bytes(item: Dataset) -> bytes:
    """One sequence item encoded as UN values are: implicit VR little endian, undefined length."""
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, True
    write_dataset(body, item)
    start = b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
    end = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"
    return start + body.getvalue() + end


class Planter:
    """Collects what was planted: label -> the string (or bytes) that must not survive."""

    def __init__(self):
        self.planted: dict[str, str | bytes] = {}

    def text(self, label: str, words: str) -> str:
        value = f"Qz{len(self.planted):02d} {words}"
        self.planted[label] = value
        return value

    def short(self, label: str, words: str, limit: int = 16) -> str:
        """For SH, AE and CS: marker and as much of the words as the VR allows."""
        return self.text(label, words)[:limit].rstrip()

    def raw(self, label: str, words: str, size: int = 0) -> bytes:
        """Bytes (private OB, UN, overlay data, padding): marker and words, zero-padded to ``size`` and even."""
        value = f"Qz{len(self.planted):02d} {words}".encode()
        self.planted[label] = value
        value = value.ljust(max(size, len(value) + len(value) % 2), b"\0")
        return value

    def exact(self, label: str, value):
        self.planted[label] = value
        return value

    def uid(self, label: str) -> str:
        return self.exact(label, f"{UID_ROOT}{len(self.planted)}")


def write_crafted(path: Path) -> dict[str, str | bytes]:
    """Write the crafted file to ``path``; returns what was planted (at least 60 identifiers)."""
    p = Planter()
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    ds.SpecificCharacterSet = "ISO_IR 192"

    # -- standard attributes of Table E.1-1, at the top level
    ds.PatientName = p.text("PatientName", "Müller^Annegret")
    ds.PatientID = p.short("PatientID", "MRN-4471123", 64)
    ds.PatientBirthDate = p.exact("PatientBirthDate", "19530817")
    ds.OtherPatientNames = p.text("OtherPatientNames", "Meier^Annegret")
    ds.OtherPatientIDs = p.text("OtherPatientIDs", "AHV 756.1234.5678.97")
    ds.PatientAddress = p.text("PatientAddress", "Spitalstrasse 21, 4031 Basel")
    ds.PatientTelephoneNumbers = p.short("PatientTelephoneNumbers", "0612652525")
    ds.PatientMotherBirthName = p.text("PatientMotherBirthName", "Brunner^Vreni")
    ds.MedicalRecordLocator = p.text("MedicalRecordLocator", "Archive B3 shelf 12")
    ds.RegionOfResidence = p.text("RegionOfResidence", "Kleinbasel")
    ds.IssuerOfPatientID = p.text("IssuerOfPatientID", "USB PATIENT REGISTRY")
    ds.AdditionalPatientHistory = p.text("AdditionalPatientHistory", "brother Hans Müller also treated")
    ds.PatientComments = p.text("PatientComments", "call daughter Eva on 079 555 12 12")
    ds.InstitutionName = p.text("InstitutionName", "Universitätsspital Basel")
    ds.InstitutionAddress = p.text("InstitutionAddress", "Petersgraben 4, Basel")
    ds.ReferringPhysicianName = p.text("ReferringPhysicianName", "Keller^Thomas^Dr")
    ds.PerformingPhysicianName = p.text("PerformingPhysicianName", "Graf^Lena")
    ds.OperatorsName = p.text("OperatorsName", "Frei^Jonas")
    ds.RequestingPhysician = p.text("RequestingPhysician", "Roth^Sabine")
    ds.ContentCreatorName = p.text("ContentCreatorName", "Huber^Marco")
    ds.StationName = p.short("StationName", "PETCT2-BASEL")
    ds.AccessionNumber = p.short("AccessionNumber", "ACC99812")
    ds.StudyID = p.short("StudyID", "ST-30543134")
    ds.StudyDescription = p.text("StudyDescription", "PET/CT for Annegret Müller")
    ds.SeriesDescription = p.text("SeriesDescription", "CT Müller followup")
    ds.ProtocolName = p.text("ProtocolName", "FDG_TK_KM Dr Keller")
    ds.ImageComments = p.text("ImageComments", "patient moved, see Keller")
    ds.DerivationDescription = p.text("DerivationDescription", "recon by Frei")
    ds.DeviceSerialNumber = p.short("DeviceSerialNumber", "SN60064", 64)
    ds.RequestedProcedureDescription = p.text("RequestedProcedureDescription", "Onko Müller")
    ds.PerformedProcedureStepID = p.short("PerformedProcedureStepID", "NM2022120814")
    ds.PerformedProcedureStepDescription = p.text("PerformedProcedureStepDescription", "Onko/Infekt Müller")
    ds.StudyInstanceUID = p.uid("StudyInstanceUID")
    ds.SeriesInstanceUID = p.uid("SeriesInstanceUID")
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = p.uid("SOPInstanceUID")
    ds.FrameOfReferenceUID = p.uid("FrameOfReferenceUID")
    ds.StudyDate = ds.SeriesDate = p.exact("StudyDate", "20031127")
    ds.AcquisitionDate = ds.ContentDate = p.exact("AcquisitionDate", "20031128")
    ds.AcquisitionDateTime = p.exact("AcquisitionDateTime", "20031126091530")

    # -- coded descriptors: the institution's own schemes name the institution
    ds.RequestedProcedureCodeSequence = [_code("NPONKINF", p.exact("local scheme", "USB.PROCEDURES"),
                                               p.text("local code meaning", "PET/CT Onko Basel"))]  # fmt: skip
    ds.ProcedureCodeSequence = [_code(p.short("SECTRA code", "NPONK"), "SECTRA", "PET/CT Onko")]
    ds.PerformedProtocolCodeSequence = [_code("pacs.rib.100", "99CT_VIA", p.text("private code meaning", "Ribs Basel"))]
    ds.AdmittingDiagnosesCodeSequence = [
        _code("C34.1", "I10", "Malignant neoplasm of upper lobe, bronchus or lung"),
        _code(p.short("local diagnosis code", "DX77123"), "KSBDIAG", p.text("local diagnosis", "Müller lung")),
        _code("x1", "99USB", p.text("private diagnosis", "seen by Keller")),
    ]

    # -- nested: items of sequences the table keeps, and deeper
    ref = Dataset()
    ref.ReferencedSOPClassUID = ds.SOPClassUID
    ref.ReferencedSOPInstanceUID = p.uid("nested ReferencedSOPInstanceUID")
    ref.PatientName = p.text("nested PatientName", "Müller^Eva")
    ref.InstitutionName = p.text("nested InstitutionName", "Kantonsspital Liestal")
    ref.add_new(0x00100018, "PN", p.text("nested non-dictionary (0010,0018)", "Müller^Annegret^Nested"))
    ref.add_new(0x00110010, "LO", p.text("nested private creator", "USB NESTED CREATOR"))
    ref.add_new(0x00111001, "LO", p.text("nested private value", "Annegret Nested Private"))
    ds.ReferencedImageSequence = [ref]
    instance = Dataset()
    instance.ReferencedSOPClassUID = ds.SOPClassUID
    instance.ReferencedSOPInstanceUID = p.uid("deep ReferencedSOPInstanceUID")
    instance.PatientAddress = p.text("deep PatientAddress", "Rheinweg 3, Basel")
    instance.add_new(0x00087777, "LO", p.text("deep non-dictionary (0008,7777)", "deep Müller"))
    series = Dataset()
    series.SeriesInstanceUID = p.uid("deep SeriesInstanceUID")
    series.ReferencedInstanceSequence = [instance]
    series.add_new(0x00400253, "SH", p.short("deep PerformedProcedureStepID", "PPS77"))
    ds.ReferencedSeriesSequence = [series]
    request = Dataset()
    request.RequestedProcedureID = p.short("nested RequestedProcedureID", "RP30543134")
    request.ScheduledProcedureStepDescription = p.text("nested ScheduledProcedureStepDescription", "Onko Müller")
    request.ScheduledProcedureStepID = p.short("nested ScheduledProcedureStepID", "SPS30543")
    request.RequestedProcedureCodeSequence = [_code("X", "USB.PROCEDURES", p.text("nested local code", "Onko"))]
    request.ReasonForRequestedProcedureCodeSequence = [_code("R1", "L", p.text("nested L-scheme code", "Basel"))]
    ds.RequestAttributesSequence = [request]
    other = Dataset()
    other.PatientID = p.text("OtherPatientIDsSequence PatientID", "KSBL-0099881")
    other.IssuerOfPatientID = p.text("OtherPatientIDsSequence issuer", "Kantonsspital Baselland")
    ds.OtherPatientIDsSequence = [other]
    content = Dataset()
    content.ValueType, content.TextValue = "TEXT", p.text("ContentSequence TextValue", "Annegret Müller, Bed 4")
    ds.ContentSequence = [content]

    # -- private blocks: the creator itself can name the site
    ds.add_new(0x00090010, "LO", p.text("private creator", "USB RADIOLOGY"))
    ds.add_new(0x00091001, "LO", p.text("private value", "Annegret Müller private"))
    private_item = Dataset()
    private_item.PatientName = p.text("private sequence PatientName", "Müller^Private")
    ds.add_new(0x00091002, "SQ", Sequence([private_item]))
    ds.add_new(0x00191077, "LO", p.text("private without creator", "orphan Müller"))
    ds.add_new(0x00290010, "LO", "SIEMENS CSA HEADER")
    ds.add_new(0x00291010, "OB", p.raw("private OB bytes", "CSA Annegret Mueller header"))

    # -- UN: a table attribute, a public attribute no dictionary knows, a private one, and a UN sequence
    ds.add_new(0x00081048, "UN", p.raw("UN PhysiciansOfRecord", "Vogel^Peter").replace(b"\0", b" "))
    ds.add_new(0x00187777, "UN", p.raw("UN non-dictionary", "Muller UN 77"))
    ds.add_new(0x00130010, "LO", p.text("UN private creator", "USB UN CREATOR"))
    ds.add_new(0x00131010, "UN", p.raw("UN private value", "Annegret UN"))
    source = Dataset()
    source.ReferencedSOPClassUID = ds.SOPClassUID
    source.ReferencedSOPInstanceUID = p.uid("UN sequence ReferencedSOPInstanceUID")
    source.PatientAddress = p.text("UN sequence PatientAddress", "UN Allee 9, Basel")
    source.add_new(0x00107777, "LO", p.text("UN sequence non-dictionary", "UN deep Müller"))

    # -- overlays: the data bits can spell a name, descriptions and labels are free text
    ds.add_new(0x60000010, "US", 16)
    ds.add_new(0x60000011, "US", 16)
    ds.add_new(0x60000022, "LO", p.text("OverlayDescription", "Müller overlay"))
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60001500, "LO", p.text("OverlayLabel", "Annegret label"))
    ds.add_new(0x60003000, "OW", p.raw("OverlayData bytes", "Annegret overlay bits", 32))  # 32 bytes: 16 x 16 bits
    ds.add_new(0x60020022, "LO", p.text("OverlayDescription without data", "second overlay Müller"))
    ds.add_new(0x60021500, "LO", p.text("OverlayLabel without data", "second label Müller"))
    ds.add_new(0x60024000, "LT", p.text("OverlayComments", "Müller comments"))

    # -- public attributes no dictionary knows
    ds.add_new(0x00087777, "LO", p.text("non-dictionary (0008,7777)", "Annegret Müller"))
    ds.add_new(0x00100018, "PN", p.text("non-dictionary (0010,0018)", "Müller^Annegret^Hidden"))
    ds.add_new(0x7FE07777, "LO", p.text("non-dictionary (7FE0,7777)", "pixel group Müller"))
    ds.add_new(0xFFFCFFFC, "OB", p.raw("trailing padding", "Mueller padding"))

    # -- Original Attributes Sequence: the values a previous edit replaced
    old = Dataset()
    old.PatientName = p.text("OAS PatientName", "Müller-Brunner^Annegret")
    old.PatientID = p.text("OAS PatientID", "MRN-OLD-1177")
    old.PatientBirthDate = p.exact("OAS PatientBirthDate", "19530718")
    original = Dataset()
    original.ModifiedAttributesSequence = [old]
    original.SourceOfPreviousValues = p.text("OAS SourceOfPreviousValues", "USB PACS Basel")
    original.ModifyingSystem = p.text("OAS ModifyingSystem", "USB RIS merge")
    original.ReasonForTheAttributeModification = "COERCE"
    original.AttributeModificationDateTime = p.exact("OAS AttributeModificationDateTime", "20040102030405")
    ds.OriginalAttributesSequence = [original]

    # -- file meta and preamble
    meta = FileMetaDataset(ds.file_meta)
    meta.SourceApplicationEntityTitle = p.short("SourceApplicationEntityTitle", "USBPACS01")
    meta.SendingApplicationEntityTitle = p.short("SendingApplicationEntityTitle", "USBSEND01")
    meta.ReceivingApplicationEntityTitle = p.short("ReceivingApplicationEntityTitle", "USBRECV01")
    meta.PrivateInformationCreatorUID = p.uid("PrivateInformationCreatorUID")
    meta.PrivateInformation = p.raw("PrivateInformation bytes", "Annegret meta")
    ds.file_meta = meta
    ds.preamble = p.raw("preamble", "Annegret Mueller preamble", 128)

    ds.save_as(path, enforce_file_format=True)
    # pydicom writes a raw element as it is only when nothing forces a re-encoding: a second pass adds it
    ds = pydicom.dcmread(path)
    value = _implicit_item_bytes(source)
    ds[0x00082112] = RawDataElement(Tag(0x00082112), "UN", len(value), value, 0, False, True)  # Source Image Sequence
    ds.save_as(path, enforce_file_format=True)
    return p.planted


def _values(ds):
    """Every value of a data set, its file meta and its sequences, as text."""
    for elem in [*getattr(ds, "file_meta", []), *ds]:
        if elem.VR == "SQ":
            for item in elem.value or []:
                yield from _values(item)
        elif isinstance(elem.value, bytes):
            yield elem.value.decode("latin-1")
        else:
            yield str(elem.value)


def survivors(path: Path, planted: dict[str, str | bytes]) -> list[str]:
    """The planted identifiers found in the file at ``path``, by label (empty: none survives)."""
    raw = path.read_bytes()
    with pydicom.config.disable_value_validation():
        text = "\n".join(_values(pydicom.dcmread(path, force=True)))
    found = []
    for label, value in planted.items():
        as_text = value.decode("latin-1") if isinstance(value, bytes) else value
        needles = {as_text, as_text[:4]} if as_text.startswith("Qz") else {as_text}  # a value cut short
        encoded = {n.encode("utf-8") for n in needles} | {n.encode("latin-1", "replace") for n in needles}
        if any(n in raw for n in encoded) or any(n in text for n in needles):
            found.append(label)
    return found
