"""What every HTTP client of MedAnnotAssist shares (the DICOMweb client and the queue client): a ``requests``
session whose TLS settings are its own, bearer-token auth that never shows the token, and the gist of a
network error in a few words."""

from __future__ import annotations

from functools import cache
from pathlib import Path

# text in a requests error -> what it means
KNOWN_REASONS = {
    "Connection refused": "Connection refused",
    "Name or service not known": "unknown host name",
    "certificate verify failed": "certificate verify failed",
    "WRONG_VERSION_NUMBER": "the server does not speak TLS on this port",
    "timed out": "timed out",
}


def verified_session(ca_bundle: str | Path | None = None, verify_tls: bool = True, token: str | None = None):
    """A requests session that verifies TLS against ``ca_bundle`` (a PEM file of the authorities to trust),
    else the system's (or REQUESTS_CA_BUNDLE's); ``ca_bundle`` wins over REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE.
    ``token``: sent as ``Authorization: Bearer``."""
    session = _session_class()()
    session.verify = str(ca_bundle) if ca_bundle else verify_tls
    if token:
        session.auth = BearerAuth(token)  # an auth object, so that a ~/.netrc cannot replace it
    return session


@cache
def _session_class():
    import requests

    class Session(requests.Session):
        """A session whose own CA bundle (or explicit no-verify) wins over REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE,
        which plain requests lets override ``session.verify`` (psf/requests#3829)."""

        def merge_environment_settings(self, url, proxies, stream, verify, cert):
            settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
            if verify is None and self.verify is not True:
                settings["verify"] = self.verify
            return settings

    return Session


class BearerAuth:
    """requests auth that sends ``Authorization: Bearer <token>``; its repr never shows the token."""

    def __init__(self, token: str):
        self.token = token

    def __call__(self, request):
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request

    def __repr__(self) -> str:
        return "BearerAuth(token=…)"


def reason(error: Exception) -> str:
    """The gist of a requests error (its text holds urllib3's whole chain), e.g. 'Connection refused'."""
    text = str(error)
    for known, gist in KNOWN_REASONS.items():
        if known in text:
            return gist
    return text.rsplit("Caused by ", 1)[-1][:200]
