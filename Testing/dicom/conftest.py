"""Fixtures of the DICOM tests: a real Orthanc (see orthanc.py)."""

from Testing.dicom.orthanc import orthanc_bearer_server, orthanc_server  # noqa: F401
