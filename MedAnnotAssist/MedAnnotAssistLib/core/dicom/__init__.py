"""DICOM in and out: series import, de-identification, DICOM SEG and RTSTRUCT, DICOMweb.

Pure Python on pydicom, highdicom, SimpleITK and dicomweb-client; no Slicer imports.
"""


class DicomError(ValueError):
    """Bad DICOM input; the message names the file (or series) and what was expected."""
