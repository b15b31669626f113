"""MONAI Label engine: a model on a running MONAI Label server, through its REST API.

``MonaiLabelEngine(server="http://host:8000", model=None, token=None, timeout=600)`` uses the API that
MONAI Label (0.8) serves and its own Slicer client uses:

- ``GET /info/``: the app's name and version and its ``models``: per model ``type`` ("segmentation",
  "deepedit", ...), ``labels`` (a name -> value mapping, or a list of names for values 1, 2, ...),
  ``dimension`` and ``description``. Read once, then cached.
- ``POST /infer/{model}?image=ID&output=all``, a multipart form with the image uploaded as ``file`` (a
  NIfTI written from the SimpleITK image) and a ``params`` field (JSON). The answer is a multipart form
  with ``params`` (JSON, with ``label_names``) and the labelmap file (NIfTI, on the uploaded image's
  grid); a server that answers with the bare file or bare JSON is understood too.

``token`` is sent as ``Authorization: Bearer TOKEN`` (servers started with MONAI_LABEL_AUTH_ENABLE).
The model is the one named, else the server's only segmentation model. MONAI label names become coded
structures through the same table as the TotalSegmentator engine (``Left Kidney`` -> ``kidney_left``
with the bundled protocols' codes); unknown names get the generic "Anatomical structure" code.

Errors: an unreachable server -> ``EngineUnavailable`` naming the URL; an HTTP error -> ``EngineError``
with the server's message (FastAPI's ``detail``, else the body); a labelmap with values that the label
list does not name -> ``EngineError``. Only the Python standard library is needed (urllib, email).
Cancel is honoured before the upload and when the answer arrives (the answer is then discarded): a
request in flight cannot be interrupted without a thread. The server gives no probabilities:
structures carry no confidence and the case uncertainty is ``fragmentation()`` (see totalsegmentator).
"""

from __future__ import annotations

import http.client
import json
import tempfile
import time
import uuid
from email.parser import BytesParser
from pathlib import Path
from urllib import error as urlerror
from urllib import parse, request

import numpy as np

from ..jobs import check_cancel
from ..structure_names import canonical_name
from .base import Engine, EngineError, EngineInfo, EngineResult, EngineUnavailable, check_image, provenance
from .totalsegmentator import fragmentation, structure_for

ADAPTER_VERSION = "1.0.0"
START_HINT = "start one with: monailabel start_server --app APP_DIR --studies STUDIES_DIR"
_UNSUPPORTED_TYPES = {"deepgrow", "scribbles", "classification", "detection"}


def label_values(labels) -> dict[int, str]:
    """MONAI Label's ``labels`` (name -> value, or a list of names for 1, 2, ...) as value -> name, no background."""
    if isinstance(labels, dict):
        pairs = [(int(v), str(k)) for k, v in labels.items() if isinstance(v, int | float) and not isinstance(v, bool)]
    elif isinstance(labels, list | tuple):
        names = [str(n) for n in labels]
        start = 0 if names and names[0].casefold() == "background" else 1
        pairs = list(enumerate(names, start=start))
    else:
        pairs = []
    return {value: name for value, name in pairs if value != 0 and name.casefold() != "background"}


def _parse_multipart(content_type: str, body: bytes) -> tuple[dict, bytes | None, str]:
    """(form fields as text, first file's bytes, its file name) of a multipart answer."""
    message = BytesParser().parsebytes(f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode() + body)
    fields, data, filename = {}, None, ""
    for part in message.get_payload() if message.is_multipart() else []:
        payload = part.get_payload(decode=True) or b""
        if part.get_filename() and data is None:
            data, filename = payload, part.get_filename()
        elif not part.get_filename():
            fields[part.get_param("name", header="content-disposition")] = payload.decode("utf-8", "replace")
    return fields, data, filename


def _encode_multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[str, bytes]:
    boundary = uuid.uuid4().hex
    body = bytearray()
    for name, value in fields.items():
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    for name, (filename, data) in files.items():
        body += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        body += data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", bytes(body)


class MonaiLabelEngine(Engine):
    """Segmentation by a model served by MONAI Label (Project MONAI)."""

    name = "monai-label"

    def __init__(
        self,
        server: str,
        model: str | None = None,
        token: str | None = None,
        timeout: float = 600.0,
        params: dict | None = None,
    ):
        parts = parse.urlsplit(str(server).strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise EngineError(f"server: expected a MONAI Label server URL like http://127.0.0.1:8000, got '{server}'")
        self.server = str(server).strip().rstrip("/")
        self.model = model
        self.token = token
        self.timeout = float(timeout)
        self.params = dict(params or {})
        self._server_info: dict | None = None

    @classmethod
    def probe(cls) -> tuple[bool, str]:
        return True, f"built in (Python's urllib); needs a --server URL of a running MONAI Label server ({START_HINT})"

    # -- HTTP ------------------------------------------------------------------------------------------
    def _call(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None):
        """(content type, body) of a successful answer; raises EngineUnavailable / EngineError otherwise."""
        headers = {"Accept": "application/json, multipart/form-data, application/octet-stream"}
        if content_type:
            headers["Content-Type"] = content_type
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        url = self.server + path
        try:
            with request.urlopen(request.Request(url, body, headers, method=method), timeout=self.timeout) as answer:
                return answer.headers.get("Content-Type", ""), answer.read()
        except urlerror.HTTPError as failure:
            raise EngineError(self._http_message(method, path, failure)) from None
        except urlerror.URLError as failure:
            if isinstance(failure.reason, TimeoutError):
                raise EngineError(
                    f"MONAI Label server {self.server} did not answer within {self.timeout:g} s"
                ) from None
            raise EngineUnavailable(
                f"MONAI Label server {self.server} is not reachable ({failure.reason}); {START_HINT}"
            ) from None
        except TimeoutError:
            raise EngineError(f"MONAI Label server {self.server} did not answer within {self.timeout:g} s") from None
        except OSError as failure:  # reset or refused after the request started
            raise EngineUnavailable(
                f"MONAI Label server {self.server} is not reachable ({failure}); {START_HINT}"
            ) from None
        except http.client.HTTPException as failure:  # a broken answer
            raise EngineError(f"MONAI Label server {self.server}: {method} {path.split('?')[0]}: {failure!r}") from None

    def _http_message(self, method: str, path: str, failure: urlerror.HTTPError) -> str:
        text = failure.read().decode("utf-8", "replace").strip()
        try:
            detail = json.loads(text).get("detail", text)
        except (ValueError, AttributeError):
            detail = text
        if isinstance(detail, list):  # FastAPI's validation errors
            detail = "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg', d)}" for d in detail)
        hint = " (the server needs a token: pass token=...)" if failure.code == 401 else ""
        return (
            f"MONAI Label server {self.server}: {method} {path.split('?')[0]} failed with HTTP {failure.code} "
            f"{failure.reason}: {str(detail)[:500] or '(no message)'}{hint}"
        )

    def server_info(self) -> dict:
        """The server's ``/info/`` answer (cached)."""
        if self._server_info is None:
            _, body = self._call("GET", "/info/")
            try:
                data = json.loads(body)
            except ValueError:
                raise EngineError(f"MONAI Label server {self.server}: /info/ did not answer JSON") from None
            if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
                raise EngineError(f"MONAI Label server {self.server}: /info/ lists no models")
            self._server_info = data
        return self._server_info

    def model_name(self) -> str:
        models = self.server_info()["models"]
        if self.model is not None:
            if self.model not in models:
                raise EngineError(
                    f"model: MONAI Label server {self.server} has no model '{self.model}' "
                    f"(it has {', '.join(models) or 'none'})"
                )
            return self.model
        segmentation = [name for name, m in models.items() if isinstance(m, dict) and m.get("type") == "segmentation"]
        if len(segmentation) == 1:
            return segmentation[0]
        if len(models) == 1:
            return next(iter(models))
        raise EngineError(
            f"model: MONAI Label server {self.server} has several models ({', '.join(models)}): choose one with model="
        )

    def _model_labels(self) -> dict[int, str]:
        model = self.model_name()
        entry = self.server_info()["models"][model]
        if entry.get("type") in _UNSUPPORTED_TYPES:
            raise EngineError(f"model: '{model}' is a {entry['type']} model; this engine runs segmentation models")
        if entry.get("dimension", 3) != 3:
            raise EngineError(f"model: '{model}' is a {entry.get('dimension')}-D model; this engine needs a 3-D one")
        return label_values(entry.get("labels"))

    @staticmethod
    def _ids(names: dict[int, str]) -> dict[int, str]:
        """Label value -> engine structure id (canonical name; _2, _3 ... where two names collide)."""
        ids, used = {}, set()
        for value, name in sorted(names.items()):
            base = canonical_name(name)
            ident, n = base, 1
            while ident in used:
                n += 1
                ident = f"{base}_{n}"
            used.add(ident)
            ids[value] = ident
        return ids

    def info(self) -> EngineInfo:
        data = self.server_info()
        model = self.model_name()
        names = self._model_labels()
        ids = self._ids(names)
        structures = tuple(structure_for(names[v], ids[v]) for v in sorted(names))
        description = data["models"][model].get("description") or ""
        return EngineInfo(
            self.name,
            str(data.get("version", "")),
            f"MONAI Label app '{data.get('name', '')}' model '{model}' on {self.server}: {description}".rstrip(": "),
            "any",
            structures,
        )

    # -- inference -------------------------------------------------------------------------------------
    def run(self, image, structures=None, prompts=None, progress=None, cancel=None) -> EngineResult:
        import SimpleITK as sitk

        started = time.time()
        check_image(image, "any", self.name)
        wanted = set(self.wanted(structures)) if structures else None
        model = self.model_name()
        declared = self._model_labels()
        check_cancel(cancel, "MONAI Label inference")
        with tempfile.TemporaryDirectory(prefix="medannot-monailabel-") as folder:
            source = Path(folder, "image.nii.gz")
            sitk.WriteImage(image, str(source))
            if progress:
                progress(0.1, f"uploading to {self.server} and running '{model}'")
            params = {"client_id": "medannotassist", **self.params}
            content_type, body = _encode_multipart(
                {"params": json.dumps(params)}, {"file": (source.name, source.read_bytes())}
            )
            query = parse.urlencode({"image": f"medannot-{uuid.uuid4().hex[:12]}", "output": "all"})
            answer_type, answer = self._call(
                "POST", f"/infer/{parse.quote(model, safe='')}?{query}", body, content_type
            )
            check_cancel(cancel, "MONAI Label inference")
            if progress:
                progress(0.9, "reading the labelmap")
            result_params, data, filename = self._unpack(answer_type, answer)
            target = Path(folder, "labels" + ("".join(Path(filename).suffixes) or ".nii.gz"))
            target.write_bytes(data)
            try:
                result = sitk.ReadImage(str(target))
            except RuntimeError as failure:
                raise EngineError(f"MONAI Label server {self.server}: cannot read the labelmap: {failure}") from None
        labels = self._on_image_grid(result, image)
        names = label_values(result_params.get("label_names")) or declared
        present = [int(v) for v in np.unique(labels) if v != 0]
        unnamed = [v for v in present if v not in names]
        if unnamed:
            raise EngineError(
                f"MONAI Label model '{model}' returned label values {unnamed} that its label list does not name "
                f"({', '.join(f'{v}: {n}' for v, n in sorted(names.items()))}): the server's label list does not "
                "match its output"
            )
        ids = self._ids(names)
        keep = {v: ids[v] for v in present if wanted is None or ids[v] in wanted}
        labels = np.where(np.isin(labels, list(keep)), labels, 0)
        labels = labels.astype(np.uint8 if labels.max(initial=0) < 256 else np.uint16)
        if progress:
            progress(1.0, "done")
        parameters = {
            "server": self.server,
            "model": model,
            "params": params,
            "labels": {str(v): n for v, n in names.items()},
        }
        parameters["app"] = self.server_info().get("name", "")
        parameters["uncertainty"] = "fragmentation"
        return EngineResult(labels, keep, {}, fragmentation(labels), provenance(self.info(), parameters, started))

    def _unpack(self, content_type: str, body: bytes) -> tuple[dict, bytes, str]:
        """(result params, labelmap bytes, file name) from the infer answer."""
        params, data, filename = {}, None, ""
        if content_type.startswith("multipart/"):
            fields, data, filename = _parse_multipart(content_type, body)
            try:
                params = json.loads(fields.get("params") or "{}")
            except ValueError:
                params = {}
        elif content_type.startswith("application/json"):
            text = body.decode("utf-8", "replace")[:300]
            raise EngineError(f"MONAI Label server {self.server}: the model returned no labelmap, only {text}")
        else:
            data = body
        if not data:
            raise EngineError(f"MONAI Label server {self.server}: the answer holds no labelmap file")
        return params if isinstance(params, dict) else {}, data, filename

    def _on_image_grid(self, result, image) -> np.ndarray:
        import SimpleITK as sitk

        if result.GetDimension() != 3 or result.GetNumberOfComponentsPerPixel() != 1:
            raise EngineError(
                f"MONAI Label server {self.server}: expected a 3-D labelmap, got {result.GetDimension()}-D "
                f"with {result.GetNumberOfComponentsPerPixel()} components"
            )
        same = (
            result.GetSize() == image.GetSize()
            and np.allclose(result.GetOrigin(), image.GetOrigin(), atol=1e-3)
            and np.allclose(result.GetSpacing(), image.GetSpacing(), rtol=1e-4)
            and np.allclose(result.GetDirection(), image.GetDirection(), atol=1e-4)
        )
        if not same:  # e.g. a server that answers on another grid: bring it back in physical space
            result = sitk.Resample(result, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
        return sitk.GetArrayFromImage(result).astype(np.int64)
