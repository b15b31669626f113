"""What a user does on the browser annotator's page, through its ``data-testid`` elements, and what the page
holds (trame's client state: everything the server ever sent to that browser)."""

from __future__ import annotations

import json
import time

from .conftest import VIEWPORT

WAIT_MS = 90_000


def open_page(browser, app):
    """A new browser context (its own cookies and storage: a user of their own) on the app's page."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    received = []  # every websocket message the app sent to this page (state, images)
    page.on("websocket", lambda socket: socket.on("framereceived", lambda message: received.append(message)))
    page.received = received
    page.goto(app.url)
    page.get_by_test_id("task-connection").wait_for(timeout=WAIT_MS)
    return page


def client_state(page) -> dict:
    """trame's state in the browser: every value the app sent to this page."""
    return page.evaluate("() => JSON.parse(JSON.stringify(window.trame.state.state))")


def model(page, name: str) -> dict:
    return client_state(page).get(name) or {}


def wait_for(page, condition, what: str, timeout_s: float = WAIT_MS / 1000):
    """Poll the page's state until ``condition(state)`` holds."""
    deadline = time.monotonic() + timeout_s
    state = {}
    while time.monotonic() < deadline:
        state = client_state(page)
        if condition(state):
            return state
        time.sleep(0.2)
    told = {name: (state.get(name) or {}).get("message") for name in ("task", "protocol", "review")}
    raise AssertionError(f"timed out waiting for {what}; the panels say {told}")


def signed_in(page) -> dict:
    return wait_for(page, lambda s: s["task"]["connection"] == "connected" and s["task"]["protocol"], "sign-in")


def claim(page) -> dict:
    """Next case, until its case is open and editable (the editor's toolbar is on screen)."""
    signed_in(page)
    page.get_by_test_id("task-next-task").click()
    page.get_by_test_id("editor-toolbar").wait_for(timeout=WAIT_MS)
    page.get_by_test_id("protocol-table").wait_for(timeout=WAIT_MS)
    return wait_for(page, lambda s: s["task"]["task"] and s["protocol"]["rows"], "the case")


def claim_review(page) -> dict:
    """Next case until the review is on the page (the review task opens once the consensus job is done)."""

    def review_ready(state) -> bool:
        if state["task"]["task"] is None and state["task"]["actions"]["next_task"]["enabled"]:
            page.get_by_test_id("task-next-task").click()
        return state["review"]["stage"] == "ready"

    return wait_for(page, review_ready, "the review")


def axial_view(page):
    """The box of the axial slice view (the big one on the left of the "Axial Primary" layout)."""
    views = page.locator("[data-testid=views] img")
    views.first.wait_for(timeout=WAIT_MS)
    boxes = [views.nth(i).bounding_box() for i in range(views.count())]
    return max((b for b in boxes if b), key=lambda b: b["width"] * b["height"])


def paint_stroke(page, structure_id: str, start=(0.35, 0.62), end=(0.55, 0.68)) -> None:
    """Select the structure's row, take Paint, drag the mouse across the axial view."""
    page.get_by_test_id(f"row-{structure_id}").click()
    wait_for(page, lambda s: s["protocol"]["selected"] == structure_id, f"{structure_id} selected")
    drag_on_axial(page, "paint", start, end)


def drag_on_axial(page, effect: str, start=(0.35, 0.62), end=(0.55, 0.68)) -> None:
    """Take the effect, drag the mouse across the axial view (``start``, ``end``: fractions of its box)."""
    page.get_by_test_id(f"effect-{effect}").click()
    box = axial_view(page)
    x0, y0 = box["x"] + box["width"] * start[0], box["y"] + box["height"] * start[1]
    x1, y1 = box["x"] + box["width"] * end[0], box["y"] + box["height"] * end[1]
    page.mouse.move(x0, y0)
    page.mouse.down()
    for step in range(1, 16):
        page.mouse.move(x0 + (x1 - x0) * step / 15, y0 + (y1 - y0) * step / 15)
        time.sleep(0.03)
    page.mouse.up()


def row(state: dict, structure_id: str) -> dict:
    return next(r for r in state["protocol"]["rows"] if r["structure_id"] == structure_id)


def answer(page, question_id: str, value: str) -> None:
    page.get_by_test_id(f"question-{question_id}").click()
    page.locator(".v-overlay--active .v-list-item", has_text=value).first.click()
    wait_for(
        page,
        lambda s: any(q["question_id"] == question_id and q["answer"] == value for q in s["questions"]["rows"]),
        f"the answer to {question_id}",
    )


def keep_blocking(page, reason: str) -> None:
    """A reason for every structure a rule blocks, typed in the protocol section (Keep), once the rules ran."""
    while True:
        state = wait_for(page, lambda s: not s["protocol"]["checking"], "the rules checked")
        blocked = [r["structure_id"] for r in state["protocol"]["rows"] if r["blocking"]]
        if not blocked:
            return
        structure_id = blocked[0]
        page.get_by_test_id(f"row-{structure_id}").click()
        wait_for(page, lambda s, sid=structure_id: s["protocol"]["selected"] == sid, f"{structure_id} selected")
        page.get_by_test_id("override-reason").locator("input").fill(reason)
        page.get_by_test_id("override-keep").click()
        wait_for(page, lambda s, sid=structure_id: not row(s, sid)["blocking"], f"{structure_id} kept")


def make_ready(page, reason: str = "kept as it is for this test") -> None:
    answer(page, "lung_rads", "1")
    keep_blocking(page, reason)
    state = client_state(page)
    wait_for(page, lambda s: s["task"]["actions"]["submit"]["enabled"], f"Submit on ({state['task']['actions']})")


def submit(page) -> dict:
    page.get_by_test_id("task-submit").click()
    return wait_for(page, lambda s: s["task"]["task"] is None, "the case submitted")


def was_sent(page, text: str) -> bool:
    """Whether a message the app sent to the page holds ``text`` (the recording sees what the app says)."""
    return any(text in m if isinstance(m, str) else text.encode() in m for m in page.received)


def never_shows(page, *secrets: str) -> None:
    """Neither the page's text, nor its state, nor any message the app ever sent it holds any of ``secrets``."""
    seen = page.content() + json.dumps(client_state(page))
    assert page.received, "no websocket message was recorded"
    for secret in secrets:
        assert secret not in seen, f"the page shows {secret!r}"
        assert not was_sent(page, secret), f"the app sent {secret!r} to the page"
