"""The page: the app bar (who is signed in, offline indicator, outbox count, shortcuts), the panel's sections
on the left, the segment editor's effects with undo/redo above trame-slicer's slice and 3-D views, and the
effect's settings on the right. ``Page`` holds the clicks: each calls one workflow model action, as the Slicer
widgets do, and the keyboard calls ``Workstation.shortcuts()`` with the Slicer module's keys."""

from __future__ import annotations

import json

from trame.ui.vuetify3 import VAppLayout
from trame.widgets import client, html
from trame.widgets import vuetify3 as v3
from trame_server.utils.typed_state import TypedState
from trame_slicer.app.ui import SegmentEditorUI
from trame_slicer.app.ui.segmentation.segment_editor_ui import SegmentEditorState
from trame_slicer.segmentation import (
    SegmentationEffectErase,
    SegmentationEffectIslands,
    SegmentationEffectNoTool,
    SegmentationEffectPaint,
    SegmentationEffectScissors,
    SegmentationEffectSmoothing,
    SegmentationEffectThreshold,
)

from MedAnnotAssistLib.workflow.workstation import SHORTCUT_KEYS

from .review_section import review_section
from .sections import ai_section, protocol_section, questions_section, task_section, tid
from .views import undo_redo

EFFECTS = {
    "none": ("No tool", "mdi-cursor-default", SegmentationEffectNoTool),
    "paint": ("Paint", "mdi-brush", SegmentationEffectPaint),
    "erase": ("Erase", "mdi-eraser", SegmentationEffectErase),
    "scissors": ("Scissors", "mdi-content-cut", SegmentationEffectScissors),
    "threshold": ("Threshold", "mdi-auto-fix", SegmentationEffectThreshold),
    "islands": ("Islands", "mdi-scatter-plot", SegmentationEffectIslands),
    "smoothing": ("Smoothing", "mdi-square-rounded-outline", SegmentationEffectSmoothing),
}
JS_KEYS = {"Down": "arrowdown", "Up": "arrowup", "Return": "enter"}


def key_test(sequence: str) -> str:
    """A JavaScript test of a keydown event ``e`` for a Qt key sequence ("Ctrl+Shift+A")."""
    *modifiers, key = sequence.split("+")
    key = json.dumps(JS_KEYS.get(key, key.lower()))
    tests = [f"e.{m.lower()}Key" for m in modifiers] + [f"e.key.toLowerCase() === {key}"]
    return " && ".join(tests)


def keyboard_script() -> str:
    """Keys to shortcuts (``medannot_key``), and the window's focus to the task's pause and resume."""
    cases = "".join(
        f"if ({key_test(sequence)}) {{ e.preventDefault(); "
        f"window.trame.trigger('medannot_key', [{json.dumps(name)}]); return; }}"
        for name, sequence in SHORTCUT_KEYS.items()
    )
    return (
        "window.addEventListener('keydown', (e) => { " + cases + " });"
        "window.addEventListener('blur', () => window.trame.trigger('medannot_focus', [false]));"
        "window.addEventListener('focus', () => window.trame.trigger('medannot_focus', [true]));"
    )


class Page:
    def __init__(self, server, workstation, views, pump):
        self.server, self.desk, self.views, self.pump = server, workstation, views, pump
        self.state = server.state
        self.state.update({"ask": "", "skip_reason": "", "override_reason": "", "review_selected": None, "status": ""})
        self.state.update({"review_reason": "", "return_reader": None, "return_comment": "", "effect": "none"})
        self.state.trame__title = "MedAnnotAssist"
        server.trigger("medannot_key")(self.key)
        server.trigger("medannot_focus")(self.focus)
        self.editor_state = TypedState(self.state, SegmentEditorState)
        self.layout = self._build()

    # ---- clicks: one model action each ------------------------------------------------------------------

    def _did(self, result=None):
        self.pump.push()
        return result

    def select_project(self, project_id):
        self._did(self.desk.task.select_project(int(project_id)))

    def next_task(self):
        self._did(self.desk.task.next_task())

    def submit(self):
        self._did(self.desk.task.submit())

    def ask_release(self):
        self.state.ask = "release"

    def release(self):
        self.state.ask = ""
        self._did(self.desk.task.release())

    def ask_skip(self):
        self.state.ask = "skip"

    def skip(self, reason):
        """``reason``: the field's text as the browser has it (a click can overtake the field's last update)."""
        if self.desk.task.skip(reason or ""):
            self.state.ask, self.state.skip_reason = "", ""
        self._did()

    def claim_again(self):
        self._did(self.desk.task.claim_again())

    def sync(self):
        self._did(self.desk.task.sync())

    def discard(self, entry_id):
        self._did(self.desk.task.discard(int(entry_id)))

    def select_structure(self, structure_id):
        self._did(self.desk.protocol.select(structure_id))

    def accept(self, structure_id):
        self._did(self.desk.protocol.accept(structure_id))

    def reject(self, structure_id):
        self._did(self.desk.protocol.reject(structure_id))

    def row_action(self, action):
        protocol = self.desk.protocol
        calls = {"done": protocol.mark_done, "absent": protocol.declare_absent, "revert": protocol.revert}
        self._did(calls[action]())

    def override(self, reason):
        protocol = self.desk.protocol
        selected = protocol.state.selected
        if selected and protocol.override(selected, None, reason or ""):
            self.state.override_reason = ""
        self._did()

    def show_in_3d(self, visible):
        if self.desk.protocol.show_volume_rendering(bool(visible)) and visible:
            self.views.fit_3d()
        self._did()

    def answer(self, question_id, value):
        self._did(self.desk.questions.answer(question_id, value))

    def choose_engine(self, name):
        self._did(self.desk.ai.choose_engine(name))

    def choose_target(self, structure_id, chosen):
        targets = {t.structure_id for t in self.desk.ai.state.targets if t.chosen}
        targets = targets | {structure_id} if chosen else targets - {structure_id}
        self._did(self.desk.ai.choose_structures(sorted(targets)))

    def run_ai(self):
        self._did(self.desk.ai.run())

    def run_ai_confirmed(self):
        self._did(self.desk.ai.run(confirmed=True))

    def cancel_ai(self):
        self._did(self.desk.ai.cancel())

    def show_reader(self, label, visible):
        self._did(self.desk.review.show_reader(label, bool(visible)))

    def show_consensus(self, visible):
        self._did(self.desk.review.show_consensus(bool(visible)))

    def show_disagreement(self, visible):
        self._did(self.desk.review.show_disagreement(bool(visible), bool(visible)))

    def decide(self, structure_id, choice):
        review = self.desk.review
        if choice == "consensus":
            self._did(review.take_consensus(structure_id))
        elif choice == "edited":
            self._did(review.edit(structure_id))  # the segment editor opens the edited copy on it
        elif isinstance(choice, str) and choice.startswith("reader:"):
            self._did(review.take_reader(structure_id, choice.removeprefix("reader:")))

    def review_keep(self, selected, reason):
        if selected and self.desk.review.override(selected, None, reason or ""):
            self.state.review_reason = ""
        self._did()

    def approve(self):
        self._did(self.desk.review.approve())

    def return_to_reader(self, reader, comment):
        if self.desk.review.return_to_readers({str(reader or ""): comment or ""}):
            self.state.ask, self.state.return_comment = "", ""
        self._did()

    def choose_effect(self, name):
        self.views.editor.set_active_effect_type(EFFECTS[name][2])
        self.state.effect = name
        self.desk.task.touch()

    def undo(self):
        undo_redo(self.editor_ui.undo_clicked, self.desk.protocol.session)
        self._did()

    def redo(self):
        undo_redo(self.editor_ui.redo_clicked, self.desk.protocol.session)
        self._did()

    def touch(self):
        self.desk.task.touch()

    def key(self, name):
        """A shortcut key: its action, or why it does nothing now (as Slicer's status bar says)."""
        shortcut = self.desk.shortcuts().get(name)
        if shortcut is None:
            return
        action = shortcut.action()
        if not action.enabled:
            self.state.status = f"{SHORTCUT_KEYS[name]}: {action.reason}"
            return
        self.state.status = ""
        self._did(shortcut.call())

    def focus(self, focused):
        (self.desk.task.resume if focused else self.desk.task.pause)()
        self._did()

    # ---- the page -----------------------------------------------------------------------------------------

    def _build(self):
        with VAppLayout(self.server, full_height=True) as layout:
            client.Script(keyboard_script())
            self._app_bar()
            with (
                v3.VNavigationDrawer(permanent=True, width=500, location="left", **tid("panel")),
                html.Div(classes="pa-2"),
            ):
                task_section(self)
                protocol_section(self)
                questions_section(self)
                ai_section(self)
                review_section(self)
            with v3.VNavigationDrawer(permanent=True, width=280, location="right", **tid("effect-panel")):
                self.editor_ui = SegmentEditorUI(v_if=("task.task || review.stage === 'ready'",))
                self.views.editor_logic.set_ui(self.editor_ui)
            with v3.VMain(), html.Div(classes="d-flex flex-column", style="height: 100%;"):
                self._editor_toolbar()
                with html.Div(
                    style="flex: 1 1 auto; position: relative; display: flex;",
                    mousedown=self.touch,
                    **tid("views"),
                ):
                    self.views.layout_manager.initialize_layout_grid(layout)
        return layout

    def _app_bar(self) -> None:
        with v3.VAppBar(density="compact"):
            v3.VToolbarTitle("MedAnnotAssist")
            v3.VSpacer()
            html.Span("{{ status }}", v_if=("status",), classes="text-caption text-warning mx-2", **tid("status"))
            v3.VChip(
                "{{ task.user }}",
                v_if=("task.user && task.connection === 'connected'",),
                size="small",
                prepend_icon="mdi-account",
                classes="mx-1",
                **tid("user"),
            )
            v3.VChip(
                "{{ task.offline_text }}",
                v_if=("task.offline",),
                color="error",
                size="small",
                prepend_icon="mdi-cloud-off-outline",
                classes="mx-1",
                **tid("offline-indicator"),
            )
            v3.VChip(
                "outbox {{ task.outbox.pending }}",
                size="small",
                prepend_icon="mdi-inbox-arrow-up",
                color=("task.outbox.pending ? 'warning' : ''",),
                title=("task.outbox.text",),
                classes="mx-1",
                **tid("outbox-count"),
            )
            with v3.VMenu():
                with v3.Template(v_slot_activator="{ props }"):
                    v3.VBtn(icon="mdi-keyboard", v_bind="props", size="small", **tid("shortcuts-button"))
                with v3.VCard(**tid("shortcuts-help")), v3.VCardText(), html.Table():
                    for name, shortcut in self.desk.shortcuts().items():
                        with html.Tr():
                            html.Td(SHORTCUT_KEYS[name], classes="font-weight-bold pr-3")
                            html.Td(shortcut.description)

    def _editor_toolbar(self) -> None:
        names = self.editor_state.name
        with html.Div(
            classes="d-flex flex-wrap align-center px-2",
            v_if=("task.task || review.stage === 'ready'",),
            **tid("editor-toolbar"),
        ):
            for name, (label, icon, _effect) in EFFECTS.items():
                v3.VBtn(
                    label,
                    prepend_icon=icon,
                    click=(self.choose_effect, f"['{name}']"),
                    active=(f"{names.active_effect_name} === '{_effect.get_effect_name()}'",),
                    size="small",
                    variant="text",
                    **tid(f"effect-{name}"),
                )
            v3.VDivider(vertical=True, classes="mx-1")
            v3.VBtn(icon="mdi-undo", click=self.undo, disabled=(f"!{names.can_undo}",), size="small", **tid("undo"))
            v3.VBtn(icon="mdi-redo", click=self.redo, disabled=(f"!{names.can_redo}",), size="small", **tid("redo"))
