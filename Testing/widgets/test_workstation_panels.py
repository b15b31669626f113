"""The workstation's panels, built from their real .ui files on real Qt widgets, clicked through against the real
queue server on loopback: a reader signs in, claims the sample CT, runs the CT engine, accepts the lungs (by
mouse and by keyboard), refines the liver, declares the nodule absent, answers Lung-RADS, keeps the short
lungs with a reason and submits; with the second reader's submission in, the reviewer claims the review, sees
both readers and the agreement, takes the consensus for the lungs and B's liver, keeps the lungs with a reason
and approves. The models, the server and what the panels show are checked; the token shows nowhere. The same
run saves the user guide's pictures of each section (MEDANNOT_USER_GUIDE_PICTURES=1)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import SimpleITK as sitk
from PySide6 import QtCore, QtGui, QtWidgets
from scipy import ndimage

from MedAnnotAssistLib.core.dicom.seg import labels_for_series, read_seg
from MedAnnotAssistLib.core.dicom.series import read_series
from MedAnnotAssistLib.core.labelio import read_reader
from MedAnnotAssistLib.core.protocol import bundled_protocol
from MedAnnotAssistLib.mrml.segmentation import setSegmentMask
from MedAnnotAssistLib.mrml.task_session import TaskSession
from MedAnnotAssistLib.widgets.settings_store import SETTINGS_KEY, TOKEN_KEY
from Testing.qtstandin import user
from Testing.qtstandin.waiting import waitUntil
from Testing.readers import ABDOMEN_LABELS
from Testing.server.conftest import Queue
from Testing.server.harness import unique
from Testing.task_case import chest_protocol, write_ai_liver
from Testing.widgets.conftest import MODULE_FILE
from Testing.workflow.conftest import make_study
from Testing.workflow.test_end_to_end import annotate

pytestmark = pytest.mark.slow

NAMES = {"project": "Lung screening", "case": "chest-001", "a": "ada", "b": "ben", "reviewer": "carla"}
REASON = "30 slices: only the lung bases are in this scan"
TIMEOUT_S = 60.0
PANEL_SIZE = (480, 2600)  # tall enough for every section at its natural height (Slicer scrolls instead)


@pytest.fixture(scope="module")
def queue(tmp_path_factory):
    instance = Queue(tmp_path_factory.mktemp("queue"), None)
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def protocol():
    return chest_protocol()


@pytest.fixture(scope="module")
def ai_liver(tmp_path_factory, sample_dir, protocol):
    return write_ai_liver(tmp_path_factory.mktemp("ai") / "chest-1.ai.seg.nrrd", sample_dir, protocol)


@pytest.fixture
def study(queue, protocol, sample_dir, ai_liver, tmp_path):
    """The workflow tests' study (two readers and a reviewer, the sample CT with its AI liver), with the names a
    user guide shows: readers ada and ben, reviewer carla, case chest-001 (so one test per server uses it)."""
    made = make_study(queue, protocol, sample_dir, ai_liver, tmp_path / "study", names=NAMES)
    yield made
    made.close()


@pytest.fixture
def settings_folder(tmp_path):
    """Slicer's settings (and so the outbox and the image cache) in this test's own folder."""
    folder = tmp_path / "slicer-settings"
    QtCore.QSettings.setPath(QtCore.QSettings.IniFormat, QtCore.QSettings.UserScope, str(folder))
    yield folder
    QtCore.QSettings.setPath(QtCore.QSettings.IniFormat, QtCore.QSettings.UserScope, str(folder.parent / "after"))


@pytest.fixture
def workstation(slicer_app, settings_folder):
    """The module opened as Slicer opens it; its panels' ui namespaces, bindings and Workstation."""
    opened = slicer_app.openModule(MODULE_FILE, size=PANEL_SIZE)
    yield opened
    opened.close()


def wait(condition, timeout_s: float = TIMEOUT_S) -> None:
    """The Qt event loop runs meanwhile: the module's QTimer pumps the workstation, as in Slicer (and widgets
    just added to a layout are shown, which Qt does in a queued call)."""
    waitUntil(condition, timeout_s)
    QtWidgets.QApplication.processEvents()


def words(widget) -> str:
    return str(widget.property("text") or "")


def rows(table) -> dict[str, list[str]]:
    """Structure name -> the texts of its row, as shown."""
    found = {}
    for r in range(table.rowCount()):
        cells = [table.item(r, c).text() if table.item(r, c) else "" for c in range(table.columnCount())]
        found[cells[1]] = cells
    return found


def row_of(table, name: str) -> int:
    return next(r for r in range(table.rowCount()) if table.item(r, 1).text() == name)


def sign_in(task, url: str, token: str) -> None:
    user.typeText(task.serverUrlLineEdit, url)
    user.typeText(task.tokenLineEdit, token)
    user.click(task.connectButton)


def keep(table, name: str, line_edit, button, reason: str = REASON) -> None:
    user.clickCell(table, row_of(table, name), 1)
    user.typeText(line_edit, reason)
    user.click(button)


def save(pictures, section_widget, name: str):
    path = pictures.save(section_widget, name)
    image = QtGui.QImage(str(path))
    assert image.width() >= 400 and image.height() >= 100, name
    assert path.stat().st_size < 150_000, f"{name}: {path.stat().st_size} bytes"
    return path


def visible_texts(root: QtWidgets.QWidget) -> list[str]:
    """Every text and tooltip the panel shows (a line edit's text as displayed: masked for a password)."""
    found = []
    for widget in [root, *root.findChildren(QtWidgets.QWidget)]:
        for name in ("toolTip", "windowTitle", "title", "placeholderText"):
            found.append(str(widget.property(name) or ""))
        if isinstance(widget, QtWidgets.QLineEdit):
            found.append(widget.displayText())
        elif isinstance(widget, QtWidgets.QComboBox):
            found += [widget.itemText(i) for i in range(widget.count())]
        elif isinstance(widget, QtWidgets.QListWidget):
            found += [widget.item(i).text() + widget.item(i).toolTip() for i in range(widget.count())]
        elif isinstance(widget, QtWidgets.QTableWidget):
            items = [widget.item(r, c) for r in range(widget.rowCount()) for c in range(widget.columnCount())]
            found += [item.text() + item.toolTip() for item in items if item is not None]
        else:
            found.append(str(widget.property("text") or ""))
    return found


def test_a_reader_and_a_reviewer_click_through_the_panels(
    study, workstation, slicer_app, sample_dir, pictures, settings_folder, caplog
):
    caplog.set_level(logging.DEBUG)
    widget = workstation.widget
    desk, sections = widget.workstation, widget.sections
    task, table = sections["Task"], sections["CaseProtocol"].caseStructuresTable
    case_protocol, ai, questions, review = (sections[n] for n in ("CaseProtocol", "AI", "Questions", "Review"))
    editor = sections["SegmentEditor"].segmentEditorWidget

    # ---- reader A signs in: what is off says why ----
    assert not task.nextTaskButton.isEnabled() and "connect to the server first" in task.nextTaskButton.toolTip()
    assert task.tokenLineEdit.echoMode() == QtWidgets.QLineEdit.Password
    sign_in(task, study.queue.url, study.a.token)
    wait(lambda: desk.task.protocol is not None)
    assert words(task.connectionStatusLabel) == f"Signed in as {study.a.name} - protocol chest-screening-test@1.1.0"
    assert task.projectComboBox.currentText() == "Lung screening (annotator)" and not task.connectButton.isEnabled()
    assert study.a.token not in task.tokenLineEdit.displayText()

    # ---- a first claim given back: Skip asks why (cancelled: nothing happens), Release asks to confirm ----
    user.click(task.nextTaskButton)
    wait(lambda: desk.task.session is not None)
    slicer_app.dialogs.answer("")  # the reader cancels the reason
    user.click(task.skipButton)
    assert desk.task.session is not None and slicer_app.dialogs.opened[-1].startswith("QInputDialog.getText: Skip")
    slicer_app.dialogs.answer(True)
    user.click(task.releaseButton)
    wait(lambda: desk.task.current is None)
    assert words(task.taskMessageLabel).endswith(" released") and not slicer_app.dialogs.unanswered

    # ---- the next case: the sample CT with the AI's liver, the lease counting down ----
    user.click(task.nextTaskButton)
    wait(lambda: desk.task.session is not None)
    session = desk.task.session
    assert words(task.caseNameLabel).endswith("(annotate, round 1)")
    assert desk.task.state.lease.state == "held" and words(task.leaseStatusLabel).endswith(" left")
    shown = rows(table)
    assert list(shown) == ["Left lung", "Right lung", "Index nodule", "Liver"]
    assert shown["Liver"][3:6] == ["AI suggestion", "✓", "totalsegmentator 2.18.0, 93%"]
    assert shown["Left lung"][2:6] == ["*", "Empty", "✗ blocks", ""]
    assert not task.submitButton.isEnabled() and "question 'lung_rads' is not answered" in task.submitButton.toolTip()
    assert not case_protocol.acceptButton.isEnabled() and "select a structure" in case_protocol.acceptButton.toolTip()
    save(pictures, task.taskCollapsibleButton, "panel-task")

    # ---- AI: the CT engine from the registry proposes both lungs in a worker ----
    wait(lambda: ai.aiStructuresList.count() == 2 and ai.runButton.isEnabled())
    assert ai.engineComboBox.currentText().startswith("ct ")
    listed = [ai.aiStructuresList.item(i) for i in range(2)]
    assert [(i.text(), i.checkState()) for i in listed] == [
        ("Left lung", QtCore.Qt.Checked),
        ("Right lung", QtCore.Qt.Checked),
    ]
    user.click(ai.runButton)
    assert not ai.runButton.isEnabled() and ai.cancelRunButton.isEnabled()
    wait(lambda: desk.ai.state.progress is None)
    assert words(ai.lastRunLabel).startswith("ct ") and words(ai.lastRunLabel).endswith(
        "proposed Left lung, Right lung"
    )
    assert rows(table)["Left lung"][3] == "AI suggestion" and rows(table)["Left lung"][5].startswith("ct ")
    save(pictures, ai.aiCollapsibleButton, "panel-ai")

    # ---- the lungs: accepted by mouse, then by keyboard; the row selects its segment in the Segment Editor ----
    user.clickCell(table, row_of(table, "Left lung"), 1)
    assert editor.currentSegmentID() == session.segmentId("lung_left")
    assert editor.segmentationNode() is session.segmentationNode and editor.sourceVolumeNode() is session.volumeNode
    user.click(case_protocol.acceptButton)
    user.pressShortcut(workstation.panel, "Ctrl+Shift+Down")
    assert desk.protocol.state.selected == "lung_right" and editor.currentSegmentID() == session.segmentId("lung_right")
    user.pressShortcut(workstation.panel, "Ctrl+Shift+A")
    assert [rows(table)[n][3] for n in ("Left lung", "Right lung")] == ["Accepted", "Accepted"]
    widget.shortcuts.showHelp()
    help_text = widget.shortcuts.helpLabel.text()
    assert all(key in help_text for key in ("Ctrl+Shift+Down", "Ctrl+Shift+A", "Ctrl+Shift+Return", "Ctrl+Shift+N"))
    assert "not now: the protocol" not in help_text and "claim the next task" in help_text
    widget.shortcuts.help.hide()

    # ---- the liver: picked in the Segment Editor, refined there (a real edit of the segment) ----
    editor.setCurrentSegmentID(session.segmentId("liver"))  # the reader clicks the liver in the editor's list
    assert desk.protocol.state.selected == "liver"
    setSegmentMask(session.segmentationNode, session.segmentId("liver"), ndimage.binary_erosion(session.mask("liver")))
    wait(lambda: rows(table)["Liver"][3] == "Refined" and not desk.protocol.state.checking)
    user.clickCell(table, row_of(table, "Index nodule"), 1)
    user.click(case_protocol.absentButton)
    assert rows(table)["Index nodule"][3] == "Absent"

    # ---- the question; then the gate: the lung bases are below the protocol's lung volume ----
    lung_rads = questions.questionsHolder.findChild(QtWidgets.QComboBox, "question_lung_rads")
    assert "Lung-RADS" in questions.questionsGateLabel.text()
    user.choose(lung_rads, lung_rads.findText("2"))
    assert desk.questions.state.rows[0].answer == "2" and "answered" in questions.questionsGateLabel.text()
    save(pictures, questions.questionsCollapsibleButton, "panel-questions")
    wait(lambda: not desk.protocol.state.checking)
    submit_tip = task.submitButton.toolTip()
    assert (
        not task.submitButton.isEnabled() and "Left lung: volume" in submit_tip and "(no override reason)" in submit_tip
    )
    assert "Left lung: volume" in case_protocol.gateLabel.text()
    keep(table, "Left lung", case_protocol.overrideReasonLineEdit, case_protocol.keepButton)
    assert rows(table)["Left lung"][4] == "✓ kept" and rows(table)["Right lung"][4] == "✗ blocks"
    assert f"kept: {REASON}" in case_protocol.selectedStructureLabel.text()
    user.clickCell(table, row_of(table, "Right lung"), 1)
    assert case_protocol.keepButton.isEnabled() and "✗ " in case_protocol.selectedStructureLabel.text()
    case_protocol.volumeRenderingCheckBox.click()  # the case in 3-D with the protocol's preset
    assert case_protocol.volumeRenderingCheckBox.text() == "Show in 3-D (CT-Lung)" and desk.protocol.state.in_3d
    wait(lambda: not desk.protocol.state.checking)
    user.typeText(case_protocol.overrideReasonLineEdit, REASON)  # the reason typed, not yet kept
    save(pictures, case_protocol.caseProtocolCollapsibleButton, "panel-protocol")
    keep(table, "Right lung", case_protocol.overrideReasonLineEdit, case_protocol.keepButton)
    assert task.submitButton.isEnabled() and "ready to submit" in case_protocol.gateLabel.text()

    # ---- pause and resume the clock, then Submit by keyboard ----
    user.click(task.pauseButton)
    assert words(task.timeStatusLabel).endswith("paused") and desk.task.state.times.paused
    user.click(task.pauseButton)
    assert not desk.task.state.times.paused
    user.pressShortcut(workstation.panel, "Ctrl+Shift+Return")
    wait(lambda: desk.task.current is None)
    assert "submitted (submission" in words(task.taskMessageLabel) and words(task.outboxStatusLabel) == "Empty."
    assert table.rowCount() == 0 and words(task.caseNameLabel) == "No case in hand."
    assert words(case_protocol.caseProtocolTitleLabel) == "No case is open."

    # ---- reader B (headless, the same models) submits the other real reading ----
    fast = sitk.GetArrayFromImage(sitk.ReadImage(str(sample_dir / "example_seg_fast.nii.gz"))) == 5
    b_liver = annotate(study, study.b, lambda liver: fast, "3")

    # ---- the reviewer signs in on the same panel ----
    user.click(task.disconnectButton)
    assert words(task.connectionStatusLabel) == "Not connected."
    sign_in(task, study.queue.url, study.reviewer.token)
    wait(lambda: desk.task.protocol is not None)

    def claimed() -> bool:
        if desk.task.current is None and task.nextTaskButton.isEnabled():
            user.click(task.nextTaskButton)  # the review task appears once the server's consensus is done
        return desk.review.state.stage == "ready"

    wait(claimed)
    agreement = review.agreementTable
    assert words(review.reviewCaseLabel).endswith("consensus round 1: 2 reader(s)")
    readers = review.readersHolder.findChildren(QtWidgets.QCheckBox)
    assert sorted(box.text().split(" (")[0] for box in readers) == sorted([study.a.name, study.b.name])
    assert review.consensusCheckBox.isChecked() and review.disagreementSlicesCheckBox.isChecked()
    assert review.disagreement3DCheckBox.isChecked()
    shown = rows(agreement)
    assert shown["Left lung"][2:4] == ["agreed", "1.00"] and 0.5 < float(shown["Liver"][3]) < 1.0
    b_box = next(box for box in readers if box.text().startswith(study.b.name))
    user.click(b_box)
    assert b_box.isChecked() and next(r for r in desk.review.state.readers if r.name == study.b.name).visible

    # decisions: B's liver; the lungs stay the consensus, kept with the reason the final needs
    liver_choice = agreement.cellWidget(row_of(agreement, "Liver"), 5)
    user.choose(liver_choice, liver_choice.findText(study.b.name))
    wait(lambda: not desk.review.state.checking)
    assert desk.review.state.row("liver").reader == study.b.name
    assert not review.approveButton.isEnabled() and "Left lung: volume" in review.approveButton.toolTip()
    keep(agreement, "Left lung", review.reviewReasonLineEdit, review.reviewKeepButton)
    user.clickCell(agreement, row_of(agreement, "Right lung"), 1)
    save(pictures, review.reviewCollapsibleButton, "panel-review")
    keep(agreement, "Right lung", review.reviewReasonLineEdit, review.reviewKeepButton)
    assert review.approveButton.isEnabled()
    user.click(review.approveButton)
    wait(lambda: desk.task.current is None)
    assert desk.review.state.stage == "decided" and "approved" in words(task.taskMessageLabel)

    # ---- the server: A's submission as clicked, the final as decided ----
    admin, pid, cid = study.admin, study.project_id, study.case_id
    submissions = admin.ok(admin.get(f"/api/v1/projects/{pid}/cases/{cid}/submissions"))
    mine = next(s["metadata"] for s in submissions if s["reader"] == study.a.name)
    states = {sid: report["state"] for sid, report in mine["segments"].items()}
    assert states == {"lung_left": "accepted", "lung_right": "accepted", "nodule": "absent", "liver": "refined"}
    assert mine["answers"]["lung_rads"] == "2" and mine["time_spent_s"] >= 0
    assert {(o["structure"], o["reason"]) for o in mine["overrides"]} == {("lung_left", REASON), ("lung_right", REASON)}
    assert [e["event"] for e in mine["segments"]["lung_left"]["history"]][:2] == ["proposed", "accepted"]
    final_path, consensus_path = (
        settings_folder.parent / "final.seg.nrrd",
        settings_folder.parent / "consensus.seg.nrrd",
    )
    final_path.write_bytes(admin.get(f"/api/v1/projects/{pid}/cases/{cid}/final").content)
    consensus_path.write_bytes(admin.get(f"/api/v1/projects/{pid}/cases/{cid}/consensus/consensus").content)
    final, consensus = read_reader(final_path, chest_protocol()), read_reader(consensus_path, chest_protocol())
    assert np.array_equal(final.mask("liver"), b_liver)
    assert np.array_equal(final.mask("lung_left"), consensus.mask("lung_left"))

    # ---- the token shows nowhere: panel, dialogs, Slicer's messages and settings, the log ----
    panel_texts = visible_texts(workstation.panel) + visible_texts(widget.shortcuts.help)
    settings_text = "".join(p.read_text(errors="replace") for p in settings_folder.rglob("*.ini"))
    told = [m.text for m in slicer_app.app.messages] + [slicer_app.app.mainWindow().statusBar().currentMessage()]
    for token in (study.a.token, study.reviewer.token):
        assert not [t for t in panel_texts if token in t]
        assert token not in settings_text and token not in caplog.text and not [t for t in told if token in t]
    assert study.queue.url in settings_text  # the settings were stored, without the token
    assert any("POST /api/v1/projects" in record.getMessage() for record in caplog.records)  # the log was on


def test_the_export_section_writes_a_dicom_seg_of_the_case(workstation, slicer_app, sample_dir, pictures, tmp_path):
    """A case opened from the real 20-slice DICOM series, its liver drawn: the reader points at the series and
    exports a DICOM SEG that reads back voxel for voxel."""
    desk, ui = workstation.widget.workstation, workstation.widget.sections["Export"]
    protocol = bundled_protocol("abdominal-organs")
    folder = sample_dir / "example_ct_dicom"
    series = read_series(folder)
    truth, _ = labels_for_series(sample_dir / "example_seg_dicom.nii.gz", series, protocol, ABDOMEN_LABELS)
    session = TaskSession.open(slicer_app.context, protocol, folder, name="series-1")
    try:
        session.setMask("liver", truth.mask("liver"))
        assert not ui.exportButton.isEnabled() and "no case is open" in ui.exportButton.toolTip()
        desk.export.set_case(session.segmentationNode, protocol, session.name, "your segmentation")  # as on a claim
        assert words(ui.exportWhatLabel) == "series-1: your segmentation"
        assert not ui.exportButton.isEnabled() and "no DICOM series" in ui.exportButton.toolTip()

        user.choose(ui.exportFormatComboBox, ui.exportFormatComboBox.findData("rtstruct"))
        assert desk.export.state.format == desk.settings.export_format == "rtstruct"
        user.choose(ui.exportFormatComboBox, ui.exportFormatComboBox.findData("seg"))
        slicer_app.dialogs.answer(str(folder))  # the folder the reader picks
        user.click(ui.chooseSeriesButton)
        assert words(ui.dicomSourceLabel) == f"DICOM folder {folder}" and ui.exportButton.isEnabled()
        target = tmp_path / "series-1.seg.dcm"
        slicer_app.dialogs.answer(str(target))  # where the reader saves it
        user.click(ui.exportButton)
        assert slicer_app.dialogs.opened[-1].startswith("QFileDialog.getSaveFileName: Export the segmentation")
        wait(lambda: desk.export.state.last is not None or desk.export.state.message_is_error, 120)
        assert desk.export.state.last is not None, desk.export.state.message
        result = words(ui.exportResultLabel).splitlines()
        assert result[:2] == [
            f"{target}: liver",
            "left out (no voxels): " + ", ".join(s.id for s in protocol.structures if s.id != "liver"),
        ]
        assert not ui.exportProgressBar.isVisible()
        back = read_seg(str(target), series, protocol)
        assert np.array_equal(back.mask("liver"), truth.mask("liver"))
        save(pictures, ui.exportCollapsibleButton, "panel-export")
    finally:
        session.close()
        desk.export.set_case(None, None)


def test_the_token_is_kept_only_when_asked_and_never_with_the_settings(queue, workstation, slicer_app):
    dora = queue.admin.new_user(unique("dora"))  # in no project yet
    task = workstation.widget.sections["Task"]
    user.click(task.rememberTokenCheckBox)
    sign_in(task, queue.url, dora.token)
    wait(lambda: workstation.widget.workstation.task.state.connection == "connected")
    settings = QtCore.QSettings()
    assert settings.value(TOKEN_KEY) == dora.token
    stored = str(settings.value(SETTINGS_KEY))
    assert json.loads(stored)["server_url"] == queue.url and dora.token not in stored

    # Slicer starts again: the server and the token (masked) are there; unticking forgets the token at once
    workstation.close()
    again = slicer_app.openModule(MODULE_FILE, size=PANEL_SIZE)
    try:
        task = again.widget.sections["Task"]
        assert words(task.serverUrlLineEdit) == queue.url and task.rememberTokenCheckBox.isChecked()
        assert task.tokenLineEdit.text() == dora.token and dora.token not in task.tokenLineEdit.displayText()
        user.click(task.rememberTokenCheckBox)
        assert QtCore.QSettings().value(TOKEN_KEY) is None
    finally:
        again.close()


def test_the_in_slicer_test_class_clicks_through_the_same_flow(queue, protocol, sample_dir, ai_liver, workstation):
    """MedAnnotAssistTest.clickThrough, which maintainers run in Slicer against their own server, run here on
    the stand-in against the real server: it passes, and the case is approved."""
    study = make_study(queue, protocol, sample_dir, ai_liver, workstation.widget.workstation.work_dir)
    try:
        tester = workstation.module.MedAnnotAssistTest()
        tester.clickThrough(workstation.widget, queue.url, [study.a.token, study.b.token], study.reviewer.token)
        admin = study.admin
        case = admin.ok(admin.get(f"/api/v1/projects/{study.project_id}/cases/{study.case_id}"))
        assert case["state"] == "approved" and case["final_sha256"]
        submissions = admin.ok(admin.get(f"/api/v1/projects/{study.project_id}/cases/{study.case_id}/submissions"))
        assert sorted(s["reader"] for s in submissions) == sorted([study.a.name, study.b.name])
        for item in submissions:
            metadata = item["metadata"]
            assert metadata["segments"]["liver"]["state"] == "accepted" and metadata["answers"]["lung_rads"] == "1"
            assert {o["reason"] for o in metadata["overrides"]} == {"kept by the in-Slicer test"}
    finally:
        study.close()


def test_without_the_workstations_packages_the_queue_panels_are_off_and_the_protocol_tool_works(
    slicer_app, settings_folder, monkeypatch
):
    """The user declined installing what the workstation needs: the module still opens, says why the queue's
    sections are off, and the protocol tool without a server still works."""
    from MedAnnotAssistLib.workflow.workstation import Workstation

    words = "MedAnnotAssist cannot read protocols without: jsonschema>=4.18"

    def declined(*args, **kwargs):
        raise RuntimeError(words)

    monkeypatch.setattr(Workstation, "__init__", declined)
    opened = slicer_app.openModule(MODULE_FILE, size=PANEL_SIZE)
    try:
        [message] = slicer_app.app.takeMessages("error")
        assert message.text == f"The task queue's panels are off: {words}"
        task = opened.widget.sections["Task"]
        assert not task.TaskSection.isEnabled() and not task.connectButton.isEnabled()
        ui = opened.widget.ui
        user.expand(ui.protocolCollapsibleButton)
        index = next(
            i for i in range(ui.protocolComboBox.count()) if "lung-nodule" in str(ui.protocolComboBox.itemData(i))
        )
        user.choose(ui.protocolComboBox, index)
        assert "Lung" in ui.protocolInfoLabel.text()
    finally:
        opened.close()


def test_the_offline_indicator_follows_the_server(tmp_path, slicer_app, settings_folder):
    """Settings from Slicer's (a short sync interval); the server goes away and comes back: the task section
    says so, in red, and stops saying it."""
    own = Queue(tmp_path / "own-queue", None)
    opened = None
    try:
        dora = own.admin.new_user(unique("dora"))
        QtCore.QSettings().setValue(SETTINGS_KEY, json.dumps({"server_url": own.url, "sync_interval_s": 0.3}))
        opened = slicer_app.openModule(MODULE_FILE, size=PANEL_SIZE)
        desk, task = opened.widget.workstation, opened.widget.sections["Task"]
        assert words(task.serverUrlLineEdit) == own.url and desk.settings.sync_interval_s == 0.3
        user.typeText(task.tokenLineEdit, dora.token)
        user.click(task.connectButton)
        wait(lambda: desk.task.state.connection == "connected")
        assert not task.offlineLabel.isVisible()
        own.server.kill()
        wait(lambda: task.offlineLabel.isVisible())
        assert words(task.offlineLabel) == "offline: submissions wait in the outbox"
        assert task.offlineLabel.styleSheet() == "color: #c0392b"
        own.server.start()
        wait(lambda: not task.offlineLabel.isVisible())
    finally:
        if opened is not None:
            opened.close()
        own.stop()
