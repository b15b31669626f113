import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import *
from slicer.util import VTKObservationMixin

from MedAnnotAssistLib.mrml.scene import SceneContext
from MedAnnotAssistLib.widgets.ai_panel import AIPanel
from MedAnnotAssistLib.widgets.case_protocol_panel import CaseProtocolPanel
from MedAnnotAssistLib.widgets.export_panel import ExportPanel
from MedAnnotAssistLib.widgets.protocol_panel import ProtocolPanel
from MedAnnotAssistLib.widgets.pump import Pump
from MedAnnotAssistLib.widgets.questions_panel import QuestionsPanel
from MedAnnotAssistLib.widgets.review_panel import ReviewPanel
from MedAnnotAssistLib.widgets.segment_editor_panel import SegmentEditorPanel
from MedAnnotAssistLib.widgets.settings_store import SettingsStore
from MedAnnotAssistLib.widgets.shortcuts import Shortcuts
from MedAnnotAssistLib.widgets.task_panel import TaskPanel

if TYPE_CHECKING:
    from MedAnnotAssistLib.core.protocol import Protocol
    from MedAnnotAssistLib.core.protocol_check import ProtocolCheck
    from MedAnnotAssistLib.mrml.protocol_segments import AppliedProtocol
    from MedAnnotAssistLib.workflow.workstation import Workstation

RESOURCES_DIR = Path(__file__).resolve().parent / "Resources"
# The workstation's sections, top to bottom, each from Resources/UI/<name>.ui (the protocol tool follows them).
SECTIONS = ("Task", "CaseProtocol", "SegmentEditor", "AI", "Questions", "Review", "Export")


def ensureRequirements(fileName: str, probe: str, purpose: str, installInTesting: bool = False) -> None:
    """Install the packages of ``Resources/<fileName>`` on first use unless ``probe`` imports already (Slicer
    bundles the rest). In testing mode Slicer skips installations unless ``installInTesting``."""
    try:
        __import__(probe)
    except ImportError:
        pass
    else:
        return
    requirements = RESOURCES_DIR / fileName
    try:
        from slicer import packaging
    except ImportError:  # Slicer 5.10 has no slicer.packaging yet
        lines = [line.strip() for line in requirements.read_text(encoding="utf-8").splitlines()]
        specs = [line for line in lines if line and not line.startswith("#")]
        if not slicer.util.confirmOkCancelDisplay(
            _("MedAnnotAssist needs these Python packages to {purpose}:\n{packages}\n\nInstall them now?").format(
                purpose=purpose, packages="\n".join(specs)
            )
        ):
            message = _("MedAnnotAssist cannot {purpose} without: {packages}").format(
                purpose=purpose, packages=", ".join(specs)
            )
            raise RuntimeError(message) from None
        slicer.util.pip_install(specs)
    else:
        requirementList = packaging.load_requirements(requirements)
        packaging.pip_ensure(requirementList, requester="MedAnnotAssist", skip_in_testing=not installInTesting)
    __import__(probe)  # fails clearly if the installation was skipped, e.g. in testing mode


def ensureProtocolRequirements(installInTesting: bool = False) -> None:
    """jsonschema (protocol validation) and the other packages of requirements.txt."""
    ensureRequirements("requirements.txt", "jsonschema", _("read protocols"), installInTesting)


def ensureDicomRequirements() -> None:
    """highdicom and the JPEG 2000 decoders, for DICOM SEG and RTSTRUCT exports."""
    ensureRequirements("requirements-dicom.txt", "highdicom", _("export DICOM"))


class MedAnnotAssist(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MedAnnotAssist")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["Segmentations", "Terminologies"]
        self.parent.contributors = ["MedAnnotAssist developers"]
        self.parent.helpText = _("""
Protocol-driven annotation: choose an annotation protocol, apply it to a segmentation to get one segment
per structure (name, colour and DICOM codes from the protocol), draw them with the Segment Editor and
check completion and sanity rules (volume, connected components, laterality, containment) before submitting.
See <a href="https://github.com/medannotassist/MedAnnotAssist">the project page</a>.
""")
        self.parent.acknowledgementText = _("""
Built on 3D Slicer, its Segmentations and Terminologies modules and its scripted module template.
""")


@parameterNodeWrapper
class MedAnnotAssistParameterNode:
    """inputVolume: image to annotate; segmentation: its protocol segments; protocolPath: protocol JSON file."""

    inputVolume: vtkMRMLScalarVolumeNode
    segmentation: vtkMRMLSegmentationNode
    protocolPath: str = ""


class MedAnnotAssistWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.panel = None
        self.workstation = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        self.logic = MedAnnotAssistLogic()
        self.setupWorkstation()
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedAnnotAssist.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.panel = ProtocolPanel(self.ui, self.logic)
        self.layout.addStretch(1)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()

    def setupWorkstation(self) -> None:
        """The queue workstation's sections, one .ui and one binding each, on one Workstation and its pump."""
        self.sections, sectionWidgets = {}, []
        for name in SECTIONS:
            sectionWidget = slicer.util.loadUI(self.resourcePath(f"UI/{name}.ui"))
            sectionWidget.setMRMLScene(slicer.mrmlScene)
            self.layout.addWidget(sectionWidget)
            sectionWidgets.append(sectionWidget)
            self.sections[name] = slicer.util.childWidgetVariables(sectionWidget)
        self.store = SettingsStore()
        try:
            desk = self.logic.createWorkstation(self.store)
        except RuntimeError as error:  # its Python packages were not installed (declined, or no network)
            slicer.util.errorDisplay(
                _("The task queue's panels are off: {error}").format(error=error), windowTitle=_("MedAnnotAssist")
            )
            for sectionWidget in sectionWidgets:
                sectionWidget.setEnabled(False)
            return
        self.workstation = desk
        self.shortcuts = Shortcuts(self.parent, desk)
        sections = self.sections
        self.panels = {
            "Task": TaskPanel(sections["Task"], desk.task, self.store, self.shortcuts.showHelp),
            "CaseProtocol": CaseProtocolPanel(sections["CaseProtocol"], desk.protocol),
            "SegmentEditor": SegmentEditorPanel(sections["SegmentEditor"], desk.protocol, desk.review),
            "AI": AIPanel(sections["AI"], desk.ai),
            "Questions": QuestionsPanel(sections["Questions"], desk.questions),
            "Review": ReviewPanel(sections["Review"], desk.review),
            "Export": ExportPanel(sections["Export"], desk.export, desk.settings, ensureDicomRequirements),
        }
        self.pump = Pump(desk)

    def cleanup(self) -> None:
        self.removeObservers()
        if self.panel:
            self.panel.cleanup()
        if self.workstation is not None:
            self.pump.stop()
            for panel in self.panels.values():
                panel.cleanup()
            self.shortcuts.cleanup()
            self.workstation.close()  # the case leaves the scene; the lease and the outbox stay for next time
            self.workstation = None

    def enter(self) -> None:
        self.initializeParameterNode()
        if self.workstation is not None:
            self.shortcuts.setEnabled(True)
            self.panels["SegmentEditor"].enter()

    def exit(self) -> None:
        # Stop re-checking while the user paints in another module; entering again re-checks once.
        self.setParameterNode(None)
        if self.workstation is not None:
            self.shortcuts.setEnabled(False)
            self.panels["SegmentEditor"].exit()

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode: MedAnnotAssistParameterNode | None) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self._parameterNode = inputParameterNode
        self.panel.setParameterNode(inputParameterNode)
        if self._parameterNode:
            # Widgets with the SlicerParameterName property in the .ui are bound to the parameter of that name.
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)

    def onParameterNodeModified(self, caller=None, event=None) -> None:
        self.panel.updateFromParameterNode()


class MedAnnotAssistLogic(ScriptedLoadableModuleLogic):
    """Facade over MedAnnotAssistLib.mrml for the widget, the Python console and other modules."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return MedAnnotAssistParameterNode(super().getParameterNode())

    def context(self) -> SceneContext:
        return SceneContext.fromApplication(slicer.mrmlScene, slicer.app.applicationLogic())

    def createWorkstation(self, store: SettingsStore) -> "Workstation":
        """The panels' models on Slicer's scene: the settings from Slicer's, the outbox next to them, the image
        cache in Slicer's cache folder."""
        ensureProtocolRequirements()
        from MedAnnotAssistLib.core.image_cache import ImageCache
        from MedAnnotAssistLib.core.outbox import Outbox
        from MedAnnotAssistLib.workflow.workstation import Workstation

        cache = ImageCache(Path(slicer.app.cachePath) / "MedAnnotAssist" / "images")
        return Workstation(self.context(), store.load(), outbox=Outbox(store.folder() / "outbox"), cache=cache)

    def bundledProtocolChoices(self) -> list[tuple[str, str]]:
        """(label, path) of each bundled protocol, read without validation (that needs jsonschema)."""
        choices = []
        for path in sorted((RESOURCES_DIR / "Protocols").glob("*.json")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                label = protocolLabel(data["title"], data["id"], data["version"])
            except (OSError, ValueError, KeyError, TypeError):
                label = path.name  # loading it reports every problem
            choices.append((label, str(path)))
        return choices

    def loadProtocol(self, path: str | os.PathLike) -> "Protocol":
        """Load and validate a protocol file; raises ProtocolError listing every problem."""
        ensureProtocolRequirements()
        from MedAnnotAssistLib.core.protocol import load_protocol

        return load_protocol(path)

    def applyProtocol(
        self, protocol: "Protocol", segmentationNode=None, volumeNode=None
    ) -> tuple[vtkMRMLSegmentationNode, "AppliedProtocol"]:
        """One segment per structure; creates a segmentation on ``volumeNode`` if none is given."""
        from MedAnnotAssistLib.mrml import protocol_segments
        from MedAnnotAssistLib.mrml.segmentation import newSegmentation

        if segmentationNode is None:
            if volumeNode is None:
                raise ValueError(_("Select an input volume or a segmentation to apply the protocol to."))
            name = slicer.mrmlScene.GenerateUniqueName(f"{volumeNode.GetName()} {protocol.id}")
            segmentationNode = newSegmentation(self.context(), volumeNode, name)
        else:
            geometryName = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
            if volumeNode is not None and not segmentationNode.GetSegmentation().GetConversionParameter(geometryName):
                segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
            if segmentationNode.GetDisplayNode() is None:
                segmentationNode.CreateDefaultDisplayNodes()
        return segmentationNode, protocol_segments.applyProtocol(segmentationNode, protocol)

    def check(self, protocol: "Protocol", segmentationNode, updateStatus: bool = True) -> "ProtocolCheck":
        from MedAnnotAssistLib.mrml.protocol_segments import checkSegmentation

        return checkSegmentation(segmentationNode, protocol, updateStatus=updateStatus)

    def declareAbsent(self, protocol: "Protocol", segmentationNode, structureId: str, absent: bool = True) -> None:
        from MedAnnotAssistLib.mrml.protocol_segments import declareAbsent

        declareAbsent(segmentationNode, protocol, structureId, absent)

    def structureSegments(self, protocol: "Protocol", segmentationNode) -> dict[str, str]:
        from MedAnnotAssistLib.mrml.protocol_segments import structureSegments

        return structureSegments(segmentationNode, protocol)

    # AI pre-segmentation: the engine runs in a worker thread; poll job.progress / job.done() with a QTimer
    # and call finishPresegmentation on the main thread.

    def startPresegmentation(self, volumeNode, engineName: str = "ct", structures=None, **engineOptions):
        from MedAnnotAssistLib.core.engines import get_engine
        from MedAnnotAssistLib.core.jobs import JobRunner
        from MedAnnotAssistLib.mrml.presegment import imageFromVolume

        if not hasattr(self, "_jobs"):
            self._jobs = JobRunner()
        engine = get_engine(engineName, **engineOptions)
        image = imageFromVolume(volumeNode)  # voxels copied here, on the main thread
        return self._jobs.submit(f"{engineName}: {volumeNode.GetName()}", runEngine, engine, image, structures)

    def finishPresegmentation(self, job, volumeNode, segmentationNode=None, protocol: "Protocol | None" = None):
        from MedAnnotAssistLib.mrml.presegment import applyEngineResult

        engineInfo, result = job.result()
        return applyEngineResult(self.context(), volumeNode, engineInfo, result, segmentationNode, protocol)

    def reviewSession(self, protocol: "Protocol", readerNodes, imageNode=None):
        """Consensus of several readers' segmentation nodes: consensus node, disagreement map, metrics table."""
        from MedAnnotAssistLib.mrml.review import ReviewSession

        session = ReviewSession(self.context(), protocol, imageNode)
        for node in readerNodes:
            session.addReader(node)
        session.compute()
        return session


def runEngine(engine, image, structures=None, progress=None, cancel=None):
    """In a worker thread: the engine's description (a MONAI Label engine asks its server for it) and its result."""
    return engine.info(), engine.run(image, structures, progress=progress, cancel=cancel)


def protocolLabel(title: str, protocolId: str, version: str) -> str:
    return f"{title} ({protocolId} v{version})"


class MedAnnotAssistTest(ScriptedLoadableModuleTest):
    """In Slicer (ctest, --no-main-window). The workstation's click-through needs a running queue server:
    MEDANNOT_TEST_QUEUE (its URL), MEDANNOT_TEST_READER_TOKENS (the annotators' tokens, comma-separated, as many
    as the project's readers per case) and MEDANNOT_TEST_REVIEWER_TOKEN, of a project with review on and a free
    case; without them it is left out: the pytest harness (Testing/widgets/test_workstation_panels.py) runs the
    same flow on every commit."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_ProtocolSegmentsSurviveSaveAndLoad()
        queue = os.environ.get("MEDANNOT_TEST_QUEUE")
        if queue:
            widget = slicer.util.getModuleWidget("MedAnnotAssist")
            readers = os.environ["MEDANNOT_TEST_READER_TOKENS"].split(",")
            self.clickThrough(widget, queue, readers, os.environ["MEDANNOT_TEST_REVIEWER_TOKEN"])
        else:
            self.delayDisplay("MEDANNOT_TEST_QUEUE is not set: the workstation's click-through is left out")

    def waitFor(self, condition, what: str, timeout: float = 120.0) -> None:
        """Let Slicer's event loop run (the module's QTimer pumps the workstation) until ``condition()`` holds."""
        import time

        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout:g} s: {what}")
            slicer.app.processEvents()
            time.sleep(0.02)

    def click(self, button) -> None:
        self.assertTrue(button.isEnabled(), f"{button.property('objectName')} is off: {button.property('toolTip')}")
        button.click()

    def clickThrough(self, widget, url: str, readerTokens: list[str], reviewerToken: str) -> None:
        """Each reader: claim -> run AI -> accept -> answer -> keep with a reason -> submit; then the reviewer:
        review -> keep with a reason -> approve."""
        desk, sections = widget.workstation, widget.sections
        task, protocol = sections["Task"], sections["CaseProtocol"]
        reason = "kept by the in-Slicer test"
        for token, kind in [*((t, "annotate") for t in readerTokens), (reviewerToken, "review")]:
            task.serverUrlLineEdit.setText(url)
            task.tokenLineEdit.setText(token)
            self.click(task.connectButton)
            self.waitFor(lambda: desk.task.protocol is not None, "signed in to a project")

            def claimed(kind=kind) -> bool:
                if desk.task.current is None and task.nextTaskButton.isEnabled():
                    task.nextTaskButton.click()  # again while no task is free (the consensus is being made)
                return desk.task.session is not None if kind == "annotate" else desk.review.state.stage == "ready"

            self.waitFor(claimed, f"a task to {kind}")
            if kind == "annotate":
                self.waitFor(lambda: sections["AI"].runButton.isEnabled(), "an engine ready")
                self.click(sections["AI"].runButton)
                self.waitFor(lambda: desk.ai.state.progress is None, "the engine's proposal")
                for row in desk.protocol.state.rows:
                    desk.protocol.select(row.structure_id)  # what a click in the table does
                    if protocol.acceptButton.isEnabled():
                        self.click(protocol.acceptButton)
                for question in desk.questions.state.rows:
                    desk.questions.answer(question.question_id, question.options[0])  # the form's combo box
                desk.protocol.check_now()
                for row in desk.protocol.state.rows:
                    if row.blocking:
                        desk.protocol.select(row.structure_id)
                        protocol.overrideReasonLineEdit.setText(reason)
                        self.click(protocol.keepButton)
                self.click(task.submitButton)
                self.waitFor(lambda: desk.task.current is None, "the submission delivered")
                self.assertIn("submitted (submission", desk.task.message)
                self.click(task.disconnectButton)
            else:
                review = sections["Review"]
                self.waitFor(lambda: not desk.review.state.checking, "the final checked")
                for index, row in enumerate(desk.review.state.rows):
                    if row.failures:
                        widget.panels["Review"].onCellClicked(index, 1)  # what a click on its row does
                        review.reviewReasonLineEdit.setText(reason)
                        self.click(review.reviewKeepButton)
                self.click(review.approveButton)
                self.waitFor(lambda: desk.task.current is None, "the approval")
                self.assertEqual(desk.review.state.stage, "decided")
        self.delayDisplay("Workstation click-through passed")

    def assertSegmentsFollowProtocol(self, protocol, segmentationNode, segments):
        from MedAnnotAssistLib.core.terminology import TERMINOLOGY_TAG, to_slicer_string
        from MedAnnotAssistLib.mrml.segmentation import getTag

        segmentation = segmentationNode.GetSegmentation()
        for structure in protocol.structures:
            self.assertIn(structure.id, segments, f"no segment for {structure.id}")
            segment = segmentation.GetSegment(segments[structure.id])
            self.assertEqual(segment.GetName(), structure.name)
            np.testing.assert_allclose(segment.GetColor(), structure.color_rgb, atol=1e-3)
            self.assertEqual(getTag(segment, TERMINOLOGY_TAG), to_slicer_string(structure.terminology))

    def test_ProtocolSegmentsSurviveSaveAndLoad(self):
        self.delayDisplay("Starting the test")
        ensureProtocolRequirements(installInTesting=True)
        logic = MedAnnotAssistLogic()
        volume = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "MedAnnotAssistTestCT")
        volume.SetSpacing(4.0, 4.0, 4.0)  # 0.064 ml voxels
        slicer.util.updateVolumeFromArray(volume, np.full((48, 64, 64), -1000, dtype=np.int16))

        protocol = logic.loadProtocol(RESOURCES_DIR / "Protocols" / "abdominal-organs.json")
        segmentationNode, applied = logic.applyProtocol(protocol, volumeNode=volume)
        self.assertEqual(applied.created, [s.id for s in protocol.structures])
        segments = logic.structureSegments(protocol, segmentationNode)
        self.assertSegmentsFollowProtocol(protocol, segmentationNode, segments)
        self.assertEqual(logic.check(protocol, segmentationNode).structure("liver").state, "pending")
        self.delayDisplay("Protocol applied")

        k, j, i = np.ogrid[:48, :64, :64]
        sphere = ((k - 24) ** 2 + (j - 32) ** 2 + (i - 20) ** 2 <= 15**2).astype(np.uint8)  # about 900 ml
        slicer.util.updateSegmentBinaryLabelmapFromArray(sphere, segmentationNode, segments["liver"], volume)
        logic.declareAbsent(protocol, segmentationNode, "gallbladder")
        before = logic.check(protocol, segmentationNode)
        liver = before.structure("liver")
        self.assertNotEqual(liver.state, "pending")
        self.assertAlmostEqual(liver.volume_ml, int(sphere.sum()) * 0.064, places=3)
        self.assertEqual(liver.components, 1)
        self.assertEqual(before.structure("gallbladder").state, "absent")
        self.assertFalse(before.ready)  # the other required organs are still empty
        self.delayDisplay("Liver drawn and checked")

        from MedAnnotAssistLib.mrml.protocol_segments import structureStatus
        from MedAnnotAssistLib.mrml.segmentation import loadSegmentation, saveSegmentation

        with tempfile.TemporaryDirectory() as folder:
            path = saveSegmentation(segmentationNode, Path(folder) / "case.seg.nrrd")
            reloaded = loadSegmentation(logic.context(), path)
        reloadedSegments = logic.structureSegments(protocol, reloaded)
        self.assertSegmentsFollowProtocol(protocol, reloaded, reloadedSegments)
        self.assertEqual(structureStatus(reloaded, protocol), structureStatus(segmentationNode, protocol))
        after = logic.check(protocol, reloaded, updateStatus=False)
        self.assertEqual([s.state for s in after.structures], [s.state for s in before.structures])
        self.assertAlmostEqual(after.structure("liver").volume_ml, liver.volume_ml, places=3)
        self.delayDisplay("Test passed")
