"""The launcher's own pages: sign in, too many sessions, and why an app session could not start."""

from __future__ import annotations

from html import escape

from aiohttp import web

PREFIX = "/_launcher"  # the launcher's own paths; every other path belongs to the user's app
SIGN_IN = f"{PREFIX}/sign-in"
SIGN_OUT = f"{PREFIX}/sign-out"

_STYLE = """
body { font-family: system-ui, sans-serif; background: #1e1f22; color: #e8e8e8; display: flex;
       justify-content: center; margin-top: 12vh; }
main { width: 26rem; }
h1 { font-size: 1.4rem; font-weight: 600; }
label { display: block; margin: 1rem 0 .3rem; }
input { width: 100%; box-sizing: border-box; padding: .5rem; font-size: 1rem; }
button { margin-top: 1rem; padding: .5rem 1.2rem; font-size: 1rem; }
.error { color: #ffb4a8; border-left: 3px solid #ff6a55; padding-left: .6rem; }
.note { color: #b8c4d0; }
small { color: #9aa0a6; }
"""


def _page(title: str, body: str, status: int) -> web.Response:
    html = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f'<meta name="viewport" content="width=device-width"><style>{_STYLE}</style></head>'
        f"<body><main>{body}</main></body></html>"
    )
    headers = {"Cache-Control": "no-store", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"}
    return web.Response(text=html, content_type="text/html", status=status, headers=headers)


def sign_in_page(server_url: str, error: str = "", note: str = "", status: int = 200) -> web.Response:
    """The token form; ``error`` says why the last sign-in failed, ``note`` why the user is here again."""
    error_html = f'<p class="error" role="alert" id="error">{escape(error)}</p>' if error else ""
    note_html = f'<p class="note" id="note">{escape(note)}</p>' if note else ""
    body = f"""
<h1>MedAnnotAssist annotator</h1>
{note_html}{error_html}
<form method="post" action="{SIGN_IN}">
  <label for="token">Your access token</label>
  <input id="token" name="token" type="password" autocomplete="off" required autofocus>
  <button type="submit" id="sign-in">Sign in</button>
</form>
<p><small>The token is checked with the task-queue server at {escape(server_url)}; your coordinator gives it
to you. Each person who signs in gets an annotator session of their own.</small></p>"""
    return _page("Sign in: MedAnnotAssist", body, status)


def too_many_sessions_page(server_url: str, limit: int) -> web.Response:
    body = f"""
<h1>All annotator sessions are in use</h1>
<p class="error" role="alert" id="error">Too many sessions: {limit} of {limit} are open on this machine, so no
new one can start now. Try again in a few minutes (an unused session closes by itself), or ask whoever runs
this server to raise <code>--max-sessions</code>.</p>
<p><a href="/">Back to sign-in</a></p>"""
    return _page("Too many sessions: MedAnnotAssist", body, 503)


def start_failed_page(detail: str) -> web.Response:
    body = f"""
<h1>Your annotator session could not start</h1>
<p class="error" role="alert" id="error">{escape(detail)}</p>
<p><a href="/">Back to sign-in</a></p>"""
    return _page("Session failed: MedAnnotAssist", body, 502)


def refused_page(reason: str) -> web.Response:
    body = f'<h1>Refused</h1><p class="error" role="alert" id="error">{escape(reason)}</p>'
    return _page("Refused: MedAnnotAssist", body, 403)
