"""DICOMweb client: QIDO-RS search, WADO-RS retrieve and STOW-RS store, on dicomweb-client and requests.

``DicomWebSource``: where the server is and how to authenticate (basic auth or a bearer token; TLS always
verified, optionally against a CA bundle). ``DicomWebClient(source)`` searches studies and series, retrieves
a series as a ``DicomSeries`` (instances kept in the server's transfer syntax, JPEG 2000 included, decoded
here) and stores datasets or files (our SEG and RTSTRUCT), reporting the SOP instance UIDs confirmed.
Server and network failures are ``DicomWebError`` (URL, HTTP status, what was expected); the caller's bad
input is ``DicomError``. Calls block: run them in a ``jobs.JobRunner`` worker, one client per job.
See docs/dicomweb.md.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from ..http_session import reason, verified_session
from ..jobs import CancelCallback, check_cancel
from . import DicomError

ANY_TRANSFER_SYNTAX = "*"  # WADO-RS: "send the instances as stored", no transcoding on the server
JPEG2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
# instances per STOW-RS request: progress and cancel between requests, bounded request size
STOW_BATCH_SIZE = 16
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")

# DICOM JSON tags (PS3.18 F.2) of the attributes the records use
STUDY_UID, SERIES_UID, SOP_INSTANCE_UID, PATIENT_ID = "0020000D", "0020000E", "00080018", "00100020"
PATIENT_NAME, STUDY_DATE, ACCESSION, STUDY_DESCRIPTION = "00100010", "00080020", "00080050", "00081030"
MODALITIES_IN_STUDY, STUDY_SERIES_COUNT, STUDY_INSTANCE_COUNT = "00080061", "00201206", "00201208"
MODALITY, SERIES_DESCRIPTION, SERIES_NUMBER, SERIES_INSTANCE_COUNT = "00080060", "0008103E", "00200011", "00201209"
STUDY_FIELDS = ("StudyDescription", "ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances")
SERIES_FIELDS = ("SeriesDescription", "SeriesNumber", "Modality", "NumberOfSeriesRelatedInstances")

# STOW-RS failure reasons (PS3.18 table I.2-1 / PS3.7 status codes)
FAILURE_REASONS = {0x0110: "processing failure", 0x0122: "SOP class not supported", 0x0124: "not authorised"}
FAILURE_REASONS |= {0xA700: "out of resources", 0xA900: "data set does not match SOP class"}
FAILURE_REASONS |= {0xC000: "cannot understand", 0xC122: "transfer syntax not supported"}
STATUS_HINTS = {
    401: "the server wants valid credentials: check the user name and password (or the token) of this source",
    403: "the server refused access with these credentials or this token",
    406: "the server cannot send the requested media type or transfer syntax",
}
ProgressCallback = Callable[[float, str], None]  # progress(fraction, message), as in core/jobs.py


class DicomWebError(RuntimeError):
    """The DICOMweb server or the network failed a request (not the caller's DICOM input).

    ``url`` is the request's URL and ``status`` its HTTP status (None when no answer came)."""

    def __init__(self, message: str, url: str = "", status: int | None = None):
        super().__init__(message)
        self.url = url
        self.status = status


@dataclass(frozen=True)
class DicomWebSource:
    """Where a DICOMweb service is and how to authenticate to it.

    ``url`` is the service root (e.g. ``https://pacs.example.org/dicom-web``); ``user``/``password`` for
    HTTP basic auth or ``token`` for ``Authorization: Bearer``; ``ca_bundle`` a PEM file of the
    certificate authorities to trust instead of the system's. ``verify_tls=False`` turns certificate
    checks off, with a warning each time a client is made: for a test server only."""

    url: str
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    verify_tls: bool = True
    ca_bundle: str | None = None
    timeout: float = 60.0

    def __post_init__(self):
        url = str(self.url).strip().rstrip("/")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DicomError(
                f"DICOMweb URL: expected the service root like https://pacs.example.org/dicom-web, got '{self.url}'"
            )
        object.__setattr__(self, "url", url)
        if self.token and (self.user or self.password):
            raise DicomError(f"{url}: give either a user and password (basic auth) or a bearer token, not both")
        if (self.user is None) != (self.password is None):
            raise DicomError(f"{url}: basic auth needs both a user and a password")
        if self.ca_bundle is not None:
            if not self.verify_tls:
                raise DicomError(f"{url}: a CA bundle was given but TLS verification is off; keep it on")
            if not Path(self.ca_bundle).is_file():
                raise DicomError(f"{url}: CA bundle {self.ca_bundle}: no such file")
        if not self.timeout or self.timeout <= 0:
            raise DicomError(f"{url}: timeout must be a positive number of seconds, got {self.timeout}")

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    def session(self):
        """A requests session carrying this source's authentication and TLS settings."""
        session = verified_session(self.ca_bundle, self.verify_tls, self.token)
        if self.user is not None:
            session.auth = (self.user, self.password)
        return session


@dataclass(frozen=True)
class StudyRecord:
    """One study as QIDO-RS describes it."""

    study_uid: str
    patient_id: str = ""
    patient_name: str = ""
    study_date: str = ""
    description: str = ""
    accession_number: str = ""
    modalities: tuple[str, ...] = ()
    series_count: int | None = None
    instance_count: int | None = None


@dataclass(frozen=True)
class SeriesRecord:
    """One series as QIDO-RS describes it."""

    study_uid: str
    series_uid: str
    modality: str = ""
    description: str = ""
    series_number: int | None = None
    instance_count: int | None = None


class DicomWebClient:
    """QIDO-RS, WADO-RS and STOW-RS against one ``DicomWebSource`` (or a URL without authentication)."""

    def __init__(self, source: DicomWebSource | str):
        from dicomweb_client import DICOMwebClient

        self.source = source if isinstance(source, DicomWebSource) else DicomWebSource(source)
        if not self.source.verify_tls:
            warnings.warn(
                f"TLS certificate verification is OFF for {self.source.url}: anyone on the network path can "
                "read and change the images; use ca_bundle instead",
                stacklevel=2,
            )
        has_credentials = self.source.user is not None or bool(self.source.token)
        if urlsplit(self.source.url).scheme == "http" and has_credentials and self.source.host not in LOOPBACK_HOSTS:
            warnings.warn(f"{self.source.url}: credentials are sent unencrypted over plain http", stacklevel=2)
        self._session = self.source.session()
        self._session.hooks["response"].append(self._check_media_type)
        self._client = DICOMwebClient(self.source.url, session=self._session, timeout=self.source.timeout)
        # dicomweb-client retries every exception (connection refused included) with exponential waits
        self._client.set_http_retry_params(retry=False)

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> DicomWebClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- QIDO-RS ---------------------------------------------------------------------------------------
    def search_studies(
        self,
        *,
        patient_id: str | None = None,
        study_uid: str | None = None,
        modality: str | None = None,
        limit: int | None = None,
        **filters: str,
    ) -> list[StudyRecord]:
        """Studies matching the filters (other DICOM keywords as ``filters``, e.g. ``StudyDate="20221208"``)."""
        search = _filters(PatientID=patient_id, StudyInstanceUID=study_uid, ModalitiesInStudy=modality, **filters)
        url = f"{self.source.url}/studies"
        answer = self._call(
            "QIDO-RS search for studies",
            url,
            lambda: self._client.search_for_studies(fields=STUDY_FIELDS, search_filters=search, limit=limit),
        )
        return [
            StudyRecord(
                study_uid=_text(item, STUDY_UID),
                patient_id=_text(item, PATIENT_ID),
                patient_name=_text(item, PATIENT_NAME),
                study_date=_text(item, STUDY_DATE),
                description=_text(item, STUDY_DESCRIPTION),
                accession_number=_text(item, ACCESSION),
                modalities=tuple(_values(item, MODALITIES_IN_STUDY)),
                series_count=_integer(item, STUDY_SERIES_COUNT),
                instance_count=_integer(item, STUDY_INSTANCE_COUNT),
            )
            for item in self._dicom_json(answer, url, "QIDO-RS search for studies", STUDY_UID)
        ]

    def search_series(
        self,
        *,
        study_uid: str | None = None,
        series_uid: str | None = None,
        modality: str | None = None,
        patient_id: str | None = None,
        limit: int | None = None,
        **filters: str,
    ) -> list[SeriesRecord]:
        """Series matching the filters, within one study when ``study_uid`` is given."""
        if study_uid is not None:
            _check_uid(study_uid, "StudyInstanceUID")
        search = _filters(SeriesInstanceUID=series_uid, Modality=modality, PatientID=patient_id, **filters)
        url = f"{self.source.url}{f'/studies/{study_uid}' if study_uid else ''}/series"
        answer = self._call(
            "QIDO-RS search for series",
            url,
            lambda: self._client.search_for_series(
                study_instance_uid=study_uid, fields=SERIES_FIELDS, search_filters=search, limit=limit
            ),
        )
        return [
            SeriesRecord(
                study_uid=_text(item, STUDY_UID) or (study_uid or ""),
                series_uid=_text(item, SERIES_UID),
                modality=_text(item, MODALITY),
                description=_text(item, SERIES_DESCRIPTION),
                series_number=_integer(item, SERIES_NUMBER),
                instance_count=_integer(item, SERIES_INSTANCE_COUNT),
            )
            for item in self._dicom_json(answer, url, "QIDO-RS search for series", SERIES_UID)
        ]

    # -- WADO-RS ---------------------------------------------------------------------------------------
    def retrieve_datasets(
        self,
        study_uid: str,
        series_uid: str,
        *,
        progress: ProgressCallback | None = None,
        cancel: CancelCallback | None = None,
        transfer_syntaxes: tuple[str, ...] = (ANY_TRANSFER_SYNTAX,),
    ) -> list:
        """Every instance of a series as pydicom datasets, in the transfer syntax the server stores them
        (``"*"``) unless ``transfer_syntaxes`` asks for others. ``progress(fraction, message)`` after each
        instance; ``cancel()`` is asked between instances (then ``CancelledError``)."""
        _check_uid(study_uid, "StudyInstanceUID")
        _check_uid(series_uid, "SeriesInstanceUID")
        url = f"{self.source.url}/studies/{study_uid}/series/{series_uid}"
        # the instance count for progress; an unknown series gives [] here and HTTP 404 from WADO-RS below
        listed = self._call(
            f"QIDO-RS search for the instances of series {series_uid}",
            f"{url}/instances",
            lambda: self._client.search_for_instances(study_uid, series_uid, fields=("SOPInstanceUID",)),
        )
        items = self._dicom_json(listed, f"{url}/instances", "QIDO-RS", SOP_INSTANCE_UID)
        expected = {_text(item, SOP_INSTANCE_UID) for item in items}
        what = f"WADO-RS retrieve of series {series_uid} in study {study_uid}"
        if tuple(transfer_syntaxes) != (ANY_TRANSFER_SYNTAX,):
            what += f" as {' or '.join(transfer_syntaxes)} (the server transcodes when it stores another)"
        media_types = tuple(("application/dicom", syntax) for syntax in transfer_syntaxes)
        instances = self._call(
            what, url, lambda: self._client.iter_series(study_uid, series_uid, media_types=media_types)
        )
        datasets: list = []
        try:
            while True:
                check_cancel(cancel, f"retrieving series {series_uid} from {self.source.url}")
                dataset = self._call(what, url, lambda: next(instances, None))
                if dataset is None:
                    break
                datasets.append(dataset)
                if progress is not None:
                    total = max(len(expected), len(datasets))
                    progress(len(datasets) / total, f"{len(datasets)}/{total} instances retrieved")
        finally:
            getattr(instances, "close", lambda: None)()  # on cancel: drop the rest of the stream
        self._check_retrieved(datasets, expected, series_uid, url)
        return datasets

    def retrieve_series(
        self,
        study_uid: str,
        series_uid: str,
        *,
        progress: ProgressCallback | None = None,
        cancel: CancelCallback | None = None,
        transfer_syntaxes: tuple[str, ...] = (ANY_TRANSFER_SYNTAX,),
    ):
        """A series as a ``DicomSeries`` (SimpleITK image in LPS), its pixel data decoded here."""
        from .series import series_from_datasets

        datasets = self.retrieve_datasets(
            study_uid, series_uid, progress=progress, cancel=cancel, transfer_syntaxes=transfer_syntaxes
        )
        return series_from_datasets(datasets, source=f"{self.source.url}/studies/{study_uid}/series/{series_uid}")

    @staticmethod
    def _check_retrieved(datasets: list, expected: set[str], series_uid: str, url: str) -> None:
        if not datasets:
            raise DicomWebError(f"{url}: WADO-RS answered no instances; expected those of series {series_uid}", url)
        others = {str(ds.get("SeriesInstanceUID", "")) for ds in datasets} - {series_uid}
        if others:
            raise DicomWebError(f"{url}: WADO-RS sent instances of other series ({', '.join(sorted(others))})", url)
        missing = expected - {str(ds.get("SOPInstanceUID", "")) for ds in datasets}
        if missing:
            raise DicomWebError(
                f"{url}: WADO-RS sent {len(datasets)} instances but QIDO-RS lists {len(expected)}; "
                f"missing {_some(sorted(missing))} (was the series changed meanwhile?)",
                url,
            )

    # -- STOW-RS ---------------------------------------------------------------------------------------
    def store(
        self,
        instances: Iterable,
        *,
        study_uid: str | None = None,
        progress: ProgressCallback | None = None,
        cancel: CancelCallback | None = None,
        batch_size: int = STOW_BATCH_SIZE,
    ) -> list[str]:
        """Store datasets or DICOM files; the SOP instance UIDs the server confirmed, in the given order.

        With ``study_uid`` they are posted to that study (the server rejects instances of other studies).
        Sent in batches of ``batch_size``: ``progress(fraction, message)`` and ``cancel()`` between batches;
        batches already stored stay on the server."""
        items = [_load(instance, index) for index, instance in enumerate(instances)]
        if not items:
            raise DicomError("nothing to store: no datasets given")
        if study_uid is not None:
            _check_uid(study_uid, "StudyInstanceUID")
        url = f"{self.source.url}/studies{f'/{study_uid}' if study_uid else ''}"
        stored: list[str] = []
        for start in range(0, len(items), max(1, batch_size)):
            check_cancel(cancel, f"storing to {self.source.url}")
            batch = items[start : start + max(1, batch_size)]
            answer = self._call(
                f"STOW-RS store of {len(batch)} instances", url, lambda b=batch: self._post(url, b, study_uid)
            )
            stored.extend(_confirmed(answer, batch, url))
            if progress is not None:
                progress(len(stored) / len(items), f"{len(stored)}/{len(items)} instances stored")
        return stored

    def _post(self, url: str, batch: list[tuple[str, object]], study_uid: str | None):
        import requests

        try:
            return self._client.store_instances([dataset for _, dataset in batch], study_instance_uid=study_uid)
        except requests.HTTPError as error:
            rejected = _rejections(_stow_answer(error.response), batch, study_uid)
            if rejected:
                status = f"HTTP {error.response.status_code} {error.response.reason}"
                raise DicomWebError(
                    f"{url}: STOW-RS answered {status}: the server rejected {rejected}", url, error.response.status_code
                ) from None
            raise

    # -- errors ----------------------------------------------------------------------------------------
    def _call(self, what: str, url: str, function: Callable):
        """``function()``, with every requests / parsing failure turned into a ``DicomWebError``."""
        import requests
        from pydicom.errors import InvalidDicomError

        try:
            return function()
        except DicomWebError:
            raise
        except requests.exceptions.SSLError as error:
            gist = reason(error)
            if gist == "certificate verify failed":
                raise DicomWebError(
                    f"{url}: {what}: the TLS certificate of {self.source.host} could not be verified ({gist}); "
                    "give the CA bundle that signed it (ca_bundle) rather than turning verification off",
                    url,
                ) from None
            raise DicomWebError(f"{url}: {what}: TLS with {self.source.host} failed ({gist})", url) from None
        except requests.exceptions.Timeout:
            wait = f"no answer within {self.source.timeout:g} s"
            raise DicomWebError(f"{url}: {what}: {wait} (is the server overloaded or the URL wrong?)", url) from None
        except requests.exceptions.ConnectionError as error:
            refused = f"cannot connect to {self.source.host} ({reason(error)})"
            raise DicomWebError(f"{url}: {what}: {refused}; is the server running and the URL right?", url) from None
        except requests.HTTPError as error:
            raise self._http_error(what, error.response) from None
        except requests.RequestException as error:  # a broken stream, too many redirects, ...
            raise DicomWebError(f"{url}: {what} failed: {reason(error)}", url) from None
        except (ValueError, KeyError, IndexError, InvalidDicomError) as error:
            invalid = f"the answer is not valid DICOM ({type(error).__name__}: {str(error)[:200]})"
            raise DicomWebError(f"{url}: {what}: {invalid}; {self._root_hint}", url) from None

    @property
    def _root_hint(self) -> str:
        return f"is {self.source.url} the DICOMweb root of the server (e.g. .../dicom-web)?"

    def _http_error(self, what: str, answer) -> DicomWebError:
        status = answer.status_code
        if status == 404:
            hint = f"the server has no such resource, or {self.source.url} is not its DICOMweb root"
        elif status >= 500:
            hint = "the server failed; its log says why"
        else:
            hint = STATUS_HINTS.get(status, "the server refused the request")
        body = _text_body(answer)
        detail = f" (server says: {body})" if body else ""
        message = f"{answer.url.split('?')[0]}: {what} got HTTP {status} {answer.reason}: {hint}{detail}"
        return DicomWebError(message, answer.url, status)

    def _check_media_type(self, answer, *args, **kwargs):
        """Response hook: a successful answer must be DICOM (JSON, multipart) as the request asked."""
        if not 200 <= answer.status_code < 300 or answer.status_code == 204:
            return answer
        accept = answer.request.headers.get("Accept", "")
        got = answer.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if "application/dicom+json" in accept:
            expected = ("application/dicom+json", "application/json")
        elif accept.startswith("multipart/related"):
            expected = ("multipart/related", "application/dicom")
        elif answer.request.method == "POST" and answer.headers.get("Content-Length") != "0":
            expected = ("application/dicom+json", "application/json", "application/dicom+xml", "application/xml")
        else:
            return answer
        if got not in expected:
            wrong = f"HTTP {answer.status_code} answered '{got or 'no content type'}', expected {expected[0]} (DICOM)"
            raise DicomWebError(f"{answer.url}: {wrong}; {self._root_hint}", answer.url, answer.status_code)
        return answer

    def _dicom_json(self, answer, url: str, what: str, required_tag: str) -> list[dict]:
        """The QIDO-RS answer's items, checked to be DICOM JSON datasets that carry ``required_tag``."""
        items = answer if isinstance(answer, list) else [answer]
        for item in items:
            if not isinstance(item, dict) or not all(_is_tag(key) for key in item) or not _text(item, required_tag):
                tag = f"({required_tag[:4]},{required_tag[4:]})"
                not_dicom = f"the answer is not DICOM JSON with {tag} (got {str(item)[:120]})"
                raise DicomWebError(f"{url}: {what}: {not_dicom}; {self._root_hint}", url, 200)
        return items


# -- helpers ------------------------------------------------------------------------------------------
def _filters(**pairs) -> dict[str, str]:
    return {keyword: str(value) for keyword, value in pairs.items() if value is not None and value != ""}


def _check_uid(uid: str, keyword: str) -> None:
    from pydicom.uid import UID

    if not isinstance(uid, str) or not UID(uid).is_valid:
        raise DicomError(f"{keyword}: '{uid}' is not a DICOM UID (digits and dots, at most 64 characters)")


def _is_tag(key) -> bool:
    return isinstance(key, str) and len(key) == 8 and all(c in "0123456789abcdefABCDEF" for c in key)


def _values(item: dict, tag: str) -> list:
    values = item.get(tag, {}).get("Value", []) if isinstance(item.get(tag), dict) else []
    return [value.get("Alphabetic", "") if isinstance(value, dict) else value for value in values]


def _text(item: dict, tag: str) -> str:
    values = _values(item, tag)
    return str(values[0]) if values else ""


def _integer(item: dict, tag: str) -> int | None:
    return int(text) if (text := _text(item, tag).strip()).lstrip("-").isdigit() else None


def _some(names: list[str], limit: int = 3) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _text_body(answer) -> str:
    content_type = answer.headers.get("Content-Type", "")
    if not any(kind in content_type for kind in ("json", "text", "xml")):
        return ""
    return " ".join(answer.text.split())[:300]


def _load(instance, index: int) -> tuple[str, object]:
    """(name, dataset) of a dataset or file to store, checked for the UIDs a server needs."""
    import pydicom

    if isinstance(instance, str | Path):
        name = str(instance)
        try:
            dataset = pydicom.dcmread(name)
        except Exception as error:  # pydicom raises many types on damaged files
            raise DicomError(f"{name}: cannot read this DICOM file ({type(error).__name__}: {error})") from None
    else:
        dataset = instance
        name = f"dataset #{index} ({dataset.get('Modality', '?')})"
    missing = [
        keyword
        for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
        if not str(dataset.get(keyword, "") or "").strip()
    ]
    if missing:
        raise DicomError(f"{name}: {', '.join(missing)} empty or missing; a DICOMweb server cannot store it")
    if not getattr(dataset, "file_meta", None) or "TransferSyntaxUID" not in dataset.file_meta:
        raise DicomError(f"{name}: no file meta information (TransferSyntaxUID); write it as a DICOM file first")
    return name, dataset


def _stow_answer(answer):
    """The STOW-RS answer dataset in an HTTP error answer, or None when it holds none (e.g. an empty 401)."""
    import pydicom

    try:
        return pydicom.Dataset.from_json(answer.json())
    except Exception:  # not DICOM JSON: the HTTP status will say why
        return None


def _rejections(response, batch: list[tuple[str, object]], study_uid: str | None) -> str:
    """The instances a STOW-RS answer lists as failed, with reasons; '' when it lists none."""
    names = {str(dataset.SOPInstanceUID): (name, dataset) for name, dataset in batch}
    described = []
    for item in response.get("FailedSOPSequence", []) if response is not None else []:
        uid = str(item.get("ReferencedSOPInstanceUID", "?"))
        code = int(item.get("FailureReason", 0) or 0)
        name, dataset = names.get(uid, (uid, None))
        text = f"instance {uid} ({name}): {FAILURE_REASONS.get(code, 'failure')} (0x{code:04X})"
        if dataset is not None and study_uid and str(dataset.StudyInstanceUID) != study_uid:
            text += f", its StudyInstanceUID {dataset.StudyInstanceUID} is not the study {study_uid} it was posted to"
        described.append(text)
    return "; ".join(described)


def _confirmed(answer, batch: list[tuple[str, object]], url: str) -> list[str]:
    """The SOP instance UIDs of ``batch`` the STOW-RS answer confirms; an error for any it does not."""
    rejected = _rejections(answer, batch, None)
    if rejected:
        raise DicomWebError(f"{url}: STOW-RS: the server rejected {rejected}", url)
    referenced = {str(item.get("ReferencedSOPInstanceUID", "")) for item in answer.get("ReferencedSOPSequence", [])}
    unconfirmed = [name for name, dataset in batch if str(dataset.SOPInstanceUID) not in referenced]
    if unconfirmed:
        raise DicomWebError(
            f"{url}: STOW-RS answered without confirming {len(unconfirmed)} of {len(batch)} instances "
            f"({_some(unconfirmed)}); expected each in its ReferencedSOPSequence, so the server did not store them "
            "(its log says why)",
            url,
        )
    return [str(dataset.SOPInstanceUID) for _, dataset in batch]
