"""The panel's sections in the browser, as the Slicer module shows them: Task, Protocol, Questions, AI.

Each element the browser tests look for carries a ``data-testid``. Buttons are greyed out with the model's
reason as their tooltip (``actions[name].reason``), as in Slicer. The templates read the models' states
(``binding.state_json``); every click calls a model action through ``ui.Page``.
"""

from __future__ import annotations

from trame.widgets import html
from trame.widgets import vuetify3 as v3


def tid(name: str, dynamic: bool = False) -> dict:
    """The ``data-testid`` of an element (``dynamic``: a JavaScript expression, inside a ``v-for``)."""
    return {"raw_attrs": [f':data-testid="{name}"' if dynamic else f'data-testid="{name}"']}


def action_button(label: str, model: str, action: str, click, testid: str, **kwargs):
    """A button bound to ``model.actions[action]``: off with the reason in its title when the model says so."""
    button = v3.VBtn(
        label,
        click=click,
        disabled=(f"!({model}.actions && {model}.actions.{action} && {model}.actions.{action}.enabled)",),
        size=kwargs.pop("size", "small"),
        variant=kwargs.pop("variant", "tonal"),
        classes=kwargs.pop("classes", "ma-1"),
        **tid(testid),
        **kwargs,
    )
    # a disabled button gets no pointer events: the reason goes on a wrapper's title instead
    return button


def text_field(variable: str, label: str, testid: str):
    """A one-line compact text field bound to the page variable ``variable`` (a reason, a comment)."""
    return v3.VTextField(v_model=(variable, ""), label=label, density="compact", hide_details=True, **tid(testid))


def reason_wrapper(model: str, action: str):
    return html.Span(title=(f"{model}.actions && {model}.actions.{action} ? {model}.actions.{action}.reason : ''",))


def message(model: str, testid: str):
    html.Div(
        "{{ " + model + ".message }}",
        v_if=(f"{model}.message",),
        classes=(f"{model}.message_is_error ? 'text-error text-caption my-1' : 'text-caption my-1'",),
        **tid(testid),
    )


def task_section(page) -> None:
    with v3.VCard(variant="flat", classes="mb-2", **tid("task-section")):
        v3.VCardTitle("Task", classes="text-subtitle-1")
        with v3.VCardText():
            html.Div(
                "{{ task.connection === 'connected' ? 'Signed in as ' + task.user + "
                "(task.protocol ? ' - protocol ' + task.protocol : '') : "
                "(task.connection === 'connecting' ? 'Connecting to the queue server...' : 'Not connected.') }}",
                classes=("task.connection === 'connected' ? 'text-success' : ''",),
                **tid("task-connection"),
            )
            with html.Div(v_if=("task.projects && task.projects.length > 1",)):
                v3.VSelect(
                    label="Project",
                    items=("task.projects",),
                    item_title="name",
                    item_value="id",
                    model_value=("task.project_id",),
                    update_modelValue=(page.select_project, "[$event]"),
                    disabled=("!task.actions.select_project.enabled",),
                    density="compact",
                    hide_details=True,
                    **tid("task-project"),
                )
            html.Div(
                "{{ task.task ? task.task.case_name + ' (' + task.task.kind + ', round ' + task.task.round + ')' "
                ": 'No case in hand.' }}",
                classes="text-body-2 mt-1",
                **tid("task-case"),
            )
            html.Div(
                "Returned by the reviewer: {{ task.task.comment }}",
                v_if=("task.task && task.task.comment",),
                classes="text-caption text-warning",
                **tid("task-comment"),
            )
            html.Div(
                "{{ task.lease.text }}",
                v_if=("task.lease.text",),
                classes=(
                    "task.lease.state === 'lost' ? 'text-error' : "
                    "(task.lease.state === 'offline' ? 'text-warning' : 'text-caption')",
                ),
                **tid("task-lease"),
            )
            html.Div(
                "{{ Math.floor(task.times.case_s / 60) }}:{{ String(task.times.case_s % 60).padStart(2, '0') }} "
                "active{{ task.times.paused ? ' - paused' : '' }}",
                v_if=("task.task && task.task.kind === 'annotate'",),
                classes="text-caption",
                **tid("task-time"),
            )
            v3.VProgressLinear(
                v_if=("task.loading",),
                model_value=("task.loading ? task.loading.fraction * 100 : 0",),
                height=4,
                classes="my-1",
                **tid("task-loading"),
            )
            html.Div("{{ task.loading.message }}", v_if=("task.loading",), classes="text-caption")
            with html.Div(classes="d-flex flex-wrap"):
                for label, action, click in (
                    ("Next case", "next_task", page.next_task),
                    ("Submit", "submit", page.submit),
                    ("Release", "release", page.ask_release),
                    ("Skip", "skip", page.ask_skip),
                    ("Claim again", "claim_again", page.claim_again),
                    ("Sync", "sync", page.sync),
                ):
                    with reason_wrapper("task", action):
                        action_button(label, "task", action, click, f"task-{action.replace('_', '-')}")
            with html.Div(v_if=("ask === 'skip'",), classes="mt-1", **tid("skip-dialog")):
                text_field("skip_reason", "Why skip this case? (recorded with it)", "skip-reason")
                v3.VBtn("Skip", click=(page.skip, "[skip_reason]"), size="small", classes="ma-1", **tid("skip-confirm"))
                v3.VBtn("Cancel", click="ask = ''", size="small", variant="text", classes="ma-1")
            with html.Div(v_if=("ask === 'release'",), classes="mt-1", **tid("release-dialog")):
                html.Div("Give the case back to the queue? Your work on it is not sent.", classes="text-caption")
                v3.VBtn("Release", click=page.release, size="small", classes="ma-1", **tid("release-confirm"))
                v3.VBtn("Cancel", click="ask = ''", size="small", variant="text", classes="ma-1")
            html.Div(
                "{{ task.outbox.text || 'Outbox empty.' }}",
                classes=("task.outbox.failed.length ? 'text-warning text-caption' : 'text-caption'",),
                **tid("task-outbox"),
            )
            with html.Div(v_for="entry in task.outbox.failed", key="entry.id", classes="text-caption text-warning"):
                html.Span(
                    "case {{ entry.case_id }}: {{ entry.message || entry.code }}",
                    title=("entry.failures.join('\\n')",),
                    **tid("'refused-' + entry.id", dynamic=True),
                )
                v3.VBtn("Discard", click=(page.discard, "[entry.id]"), size="x-small", variant="text")
            message("task", "task-message")


def protocol_section(page) -> None:
    with v3.VCard(variant="flat", classes="mb-2", v_if=("protocol.rows.length",), **tid("protocol-section")):
        v3.VCardTitle("Protocol {{ protocol.title }}", classes="text-subtitle-1")
        with v3.VCardText():
            with (
                html.Div(**tid("protocol-table")),
                html.Div(
                    v_for="row in protocol.rows",
                    key="row.structure_id",
                    click=(page.select_structure, "[row.structure_id]"),
                    classes=("row.selected ? 'bg-surface-light selected-row pa-1 rounded' : 'pa-1 protocol-row'",),
                    style="cursor: pointer; border-bottom: 1px solid rgba(128,128,128,.2)",
                    **tid("'row-' + row.structure_id", dynamic=True),
                ),
            ):
                with html.Div(classes="d-flex align-center"):
                    html.Span(
                        style=("'display:inline-block;width:12px;height:12px;background:' + row.color",),
                        classes="mr-2",
                    )
                    html.Span(
                        "{{ row.name }}{{ row.required ? ' *' : '' }}",
                        title=("row.instructions",),
                        classes="text-body-2 font-weight-medium",
                    )
                    html.Span("{{ row.state }}", classes="text-caption mx-2 row-state")
                    v3.VChip("{{ row.ai }}", v_if=("row.ai",), size="x-small", color="info", classes="ai-badge")
                    v3.VSpacer()
                    for label, action in (("Accept", "accept"), ("Reject", "reject")):
                        with html.Span(title=(f"row.actions.{action}.reason",)):
                            v3.VBtn(
                                label,
                                click=(getattr(page, action), "[row.structure_id]"),
                                click_stop=True,
                                disabled=(f"!row.actions.{action}.enabled",),
                                size="x-small",
                                variant="tonal",
                                classes="ml-1",
                                **tid(f"'{action}-' + row.structure_id", dynamic=True),
                            )
                html.Div(
                    "{{ rule.passed === false ? '\u2717' : (rule.passed ? '\u2713' : '?') }} {{ rule.text }}"
                    "{{ rule.override ? ' (kept: ' + rule.override + ')' : '' }}",
                    v_for="rule in row.rules",
                    key="rule.rule",
                    classes=("rule.blocks && !rule.override ? 'text-error text-caption rule' : 'text-caption rule'",),
                )
            with html.Div(v_if=("protocol.selected",), classes="d-flex flex-wrap"):
                for label, action in (("Done", "done"), ("Absent", "absent"), ("Revert", "revert")):
                    v3.VBtn(
                        label,
                        click=(page.row_action, f"['{action}']"),
                        disabled=(f"!protocol.selected_row || !protocol.selected_row.actions.{action}.enabled",),
                        size="x-small",
                        variant="tonal",
                        classes="ma-1",
                        **tid(f"row-{action}"),
                    )
            with html.Div(
                v_if=("protocol.selected_row && protocol.selected_row.blocking.length",), classes="d-flex align-center"
            ):
                text_field("override_reason", "Reason to keep it anyway", "override-reason")
                v3.VBtn(
                    "Keep",
                    click=(page.override, "[override_reason]"),
                    size="x-small",
                    classes="ma-1",
                    **tid("override-keep"),
                )
            v3.VCheckbox(
                label=("protocol.preset ? 'Show in 3-D (' + protocol.preset + ')' : 'Show in 3-D'",),
                model_value=("protocol.in_3d",),
                update_modelValue=(page.show_in_3d, "[$event]"),
                disabled=("!protocol.actions.volume_rendering.enabled",),
                density="compact",
                hide_details=True,
                **tid("protocol-3d"),
            )
            html.Div(
                "Submit: {{ protocol.gate.enabled ? 'ready' : protocol.gate.reason }}",
                classes=("protocol.gate.enabled ? 'text-success text-caption' : 'text-caption text-warning'",),
                **tid("submit-gate"),
            )
            html.Div(
                "{{ problem }}", v_for="problem in protocol.problems", key="problem", classes="text-caption text-error"
            )
            message("protocol", "protocol-message")


def questions_section(page) -> None:
    with v3.VCard(variant="flat", classes="mb-2", v_if=("questions.rows.length",), **tid("questions-section")):
        v3.VCardTitle("Questions", classes="text-subtitle-1")
        with v3.VCardText(), html.Div(v_for="q in questions.rows", key="q.question_id"):
            v3.VSelect(
                label=("q.text + (q.required ? ' *' : '')",),
                items=("q.options",),
                model_value=("q.answer",),
                update_modelValue=(page.answer, "[q.question_id, $event]"),
                density="compact",
                hide_details=True,
                classes="my-1",
                **tid("'question-' + q.question_id", dynamic=True),
            )
        message("questions", "questions-message")


def ai_section(page) -> None:
    with v3.VCard(
        variant="flat", classes="mb-2", v_if=("task.task && task.task.kind === 'annotate'",), **tid("ai-section")
    ):
        v3.VCardTitle("AI", classes="text-subtitle-1")
        with v3.VCardText():
            v3.VSelect(
                label="Engine",
                items=(
                    "ai.engines.map(e => ({title: e.name + (e.usable ? '' : ' (' + e.detail + ')'), "
                    "value: e.name, props: {disabled: !e.usable}}))",
                ),
                model_value=("ai.engine",),
                update_modelValue=(page.choose_engine, "[$event]"),
                density="compact",
                hide_details=True,
                **tid("ai-engine"),
            )
            with html.Div(classes="d-flex flex-wrap"):
                v3.VCheckbox(
                    v_for="t in ai.targets",
                    key="t.structure_id",
                    label=("t.name + (t.reader_work ? ' (your work)' : '')",),
                    model_value=("t.chosen",),
                    update_modelValue=(page.choose_target, "[t.structure_id, $event]"),
                    density="compact",
                    hide_details=True,
                )
            with reason_wrapper("ai", "run"):
                action_button("Run", "ai", "run", page.run_ai, "ai-run")
            with reason_wrapper("ai", "cancel"):
                action_button("Cancel", "ai", "cancel", page.cancel_ai, "ai-cancel")
            with html.Div(v_if=("ai.confirm",), classes="text-caption text-warning", **tid("ai-confirm")):
                html.Span("{{ ai.confirm }}")
                v3.VBtn("Replace", click=page.run_ai_confirmed, size="x-small", classes="ma-1", **tid("ai-replace"))
            v3.VProgressLinear(
                v_if=("ai.progress",),
                model_value=("ai.progress ? ai.progress.fraction * 100 : 0",),
                height=4,
                **tid("ai-progress"),
            )
            html.Div("{{ ai.progress.message }}", v_if=("ai.progress",), classes="text-caption")
            html.Div("{{ ai.last_run }}", v_if=("ai.last_run",), classes="text-caption", **tid("ai-last-run"))
            message("ai", "ai-message")
