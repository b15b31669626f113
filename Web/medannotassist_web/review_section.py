"""The Review section in the browser, as in Slicer: the readers (on/off, time, overrides), the agreement table
with a decision per structure, the consensus and the disagreement map, the final's rule check, Approve and
Return with a comment. Binds ``workflow.review.ReviewModel``'s state (``review`` in trame's state)."""

from __future__ import annotations

from trame.widgets import html
from trame.widgets import vuetify3 as v3

from .sections import action_button, message, reason_wrapper, text_field, tid

STAGES = (
    "({none: 'No review in hand.', "
    "waiting: review.case_name + ': the readers are still working; the consensus is awaited.', "
    "loading: review.case_name + ': loading the readers and the consensus...', "
    "ready: review.case_name + ', consensus round ' + review.round + ': ' + review.readers.length + ' reader(s)', "
    "blinded: review.case_name + ': hidden until the case is approved.', "
    "decided: review.case_name + ': decided.'})[review.stage] || review.stage"
)
CELL = "padding: 0 4px"  # narrow cells: the five columns fit the panel, the decision's words whole
DECISIONS = (
    "[{title: 'Consensus', value: 'consensus'}].concat(review.readers.map(r => ({title: r.label, "
    "value: 'reader:' + r.label}))).concat([{title: 'Your edit', value: 'edited'}])"
)


def review_section(page) -> None:
    with v3.VCard(variant="flat", classes="mb-2", v_if=("review.stage !== 'none'",), **tid("review-section")):
        v3.VCardTitle("Review", classes="text-subtitle-1")
        with v3.VCardText():
            html.Div("{{ " + STAGES + " }}", classes="text-body-2", **tid("review-stage"))
            html.Div("{{ review.blinded_text }}", v_if=("review.blinded_text",), classes="text-caption")
            with html.Div(classes="d-flex flex-wrap", **tid("review-readers")):
                v3.VCheckbox(
                    v_for="r in review.readers",
                    key="r.name",
                    label=(
                        "r.label + ' (' + (r.time_spent_s == null ? '-' : Math.round(r.time_spent_s / 60) + ' min') "
                        "+ ')'",
                    ),
                    title=("r.overrides.join('\\n') || 'no override'",),
                    model_value=("r.visible",),
                    update_modelValue=(page.show_reader, "[r.label, $event]"),
                    density="compact",
                    hide_details=True,
                    **tid("'reader-' + r.label", dynamic=True),
                )
                v3.VCheckbox(
                    label="Consensus",
                    model_value=("review.consensus_visible",),
                    update_modelValue=(page.show_consensus, "[$event]"),
                    density="compact",
                    hide_details=True,
                    **tid("review-consensus"),
                )
                v3.VCheckbox(
                    label="Disagreement map",
                    model_value=("review.disagreement_in_slices",),
                    update_modelValue=(page.show_disagreement, "[$event]"),
                    disabled=("!review.actions.show_disagreement.enabled",),
                    density="compact",
                    hide_details=True,
                    **tid("review-disagreement"),
                )
            with v3.VTable(density="compact", v_if=("review.rows.length",), **tid("agreement-table")):
                with html.Thead(), html.Tr():
                    for header in ("", "Structure", "Agreement", "Dice / HD95", "Decision"):
                        html.Th(header, style=CELL)
                with (
                    html.Tbody(),
                    html.Tr(
                        v_for="row in review.rows",
                        key="row.structure_id",
                        click="review_selected = row.structure_id",  # in the browser: Keep goes to the row clicked
                        classes=("row.structure_id === review_selected ? 'bg-surface-light' : ''",),
                        **tid("'agreement-' + row.structure_id", dynamic=True),
                    ),
                ):
                    with html.Td(style=CELL):
                        html.Span(style=("'display:inline-block;width:12px;height:12px;background:' + row.color",))
                    html.Td(
                        "{{ row.name }}",
                        style=CELL,
                        title=("row.failures.concat(row.override ? ['kept: ' + row.override] : []).join('\\n')",),
                        classes=("row.failures.length && !row.override ? 'text-error' : ''",),
                    )
                    html.Td(
                        "{{ row.verdict }}",
                        style=CELL,
                        title=("row.reason",),
                        classes=("row.verdict === 'agreed' ? 'text-success verdict' : 'text-warning verdict'",),
                    )
                    with html.Td(
                        title="the readers' mean pairwise Dice and HD95 (mm)", style=CELL + "; white-space: nowrap"
                    ):
                        html.Span("{{ row.dice == null ? '-' : row.dice.toFixed(2) }}", classes="dice")
                        html.Span("{{ row.hd95_mm == null ? '' : ' / ' + row.hd95_mm.toFixed(1) }}", classes="hd95")
                    with html.Td(style=CELL + "; min-width: 150px"):  # the decision stays readable, not "C..."
                        v3.VSelect(
                            items=(DECISIONS,),
                            model_value=("row.decision === 'reader' ? 'reader:' + row.reader : row.decision",),
                            update_modelValue=(page.decide, "[row.structure_id, $event]"),
                            disabled=("!review.actions.edit.enabled",),
                            density="compact",
                            hide_details=True,
                            variant="plain",
                            **tid("'decision-' + row.structure_id", dynamic=True),
                        )
            with html.Div(v_if=("review_selected",), classes="d-flex align-center"):
                text_field("review_reason", "Reason to keep the selected structure as it is", "review-reason")
                v3.VBtn(
                    "Keep",
                    click=(page.review_keep, "[review_selected, review_reason]"),
                    size="x-small",
                    classes="ma-1",
                    **tid("review-keep"),
                )
            html.Div("Checking the final against the protocol...", v_if=("review.checking",), classes="text-caption")
            with html.Div(v_if=("review.final_problems.length",), classes="text-caption text-error"):
                html.Div("Before Approve:")
                html.Div("\u2022 {{ p }}", v_for="p in review.final_problems", key="p")
            with html.Div(classes="d-flex flex-wrap"):
                with reason_wrapper("review", "approve"):
                    action_button("Approve", "review", "approve", page.approve, "review-approve")
                with reason_wrapper("review", "return"):
                    action_button("Return to a reader", "review", "return", "ask = 'return'", "review-return")
            with html.Div(v_if=("ask === 'return'",), **tid("return-dialog")):
                v3.VSelect(
                    label="Which reader?",
                    items=("review.readers.map(r => r.label)",),
                    v_model=("return_reader", None),
                    density="compact",
                    hide_details=True,
                    **tid("return-reader"),
                )
                text_field("return_comment", "What should the reader change?", "return-comment")
                v3.VBtn(
                    "Return",
                    click=(page.return_to_reader, "[return_reader, return_comment]"),
                    size="small",
                    classes="ma-1",
                    **tid("return-confirm"),
                )
                v3.VBtn("Cancel", click="ask = ''", size="small", variant="text", classes="ma-1")
            message("review", "review-message")
