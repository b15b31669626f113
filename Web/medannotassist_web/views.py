"""trame-slicer's scene, slice and 3-D views and segment editor, with the workflow's scene context on the same
scene: the case the task model opens is shown in the views and edited in the segment editor, and the segment
the protocol (or the review) selects is the editor's."""

from __future__ import annotations

import numpy as np
import slicer
from trame_slicer.app.logic import SegmentEditorLogic
from trame_slicer.core import LayoutManager, SlicerApp
from trame_slicer.rca_view import register_rca_factories

from MedAnnotAssistLib.mrml.scene import SceneContext

EFFECTS = ("paint", "erase", "scissors", "threshold", "islands", "smoothing")


class Views:
    """One user's scene, its views (axial, coronal, sagittal, 3-D) and its segment editor."""

    def __init__(self, server):
        self.app = SlicerApp()
        register_rca_factories(self.app.view_manager, server)
        self.context = SceneContext(
            scene=self.app.scene,
            applicationLogic=self.app.app_logic,
            segmentationsLogic=self.app.segmentations_logic,
            terminologiesLogic=self.app.terminologies_logic,
            volumesLogic=self.app.volumes_logic,
            colorLogic=self.app.color_logic,
            subjectHierarchyLogic=self.app.subject_hierarchy_logic,
            volumeRenderingLogic=self.app.volume_rendering._logic,  # noqa: SLF001 (the facade's logic)
        )
        self.layout_manager = LayoutManager(self.app.scene, self.app.view_manager, server)
        self.layout_manager.register_layout_dict(LayoutManager.default_grid_configuration())
        self.editor_logic = SegmentEditorLogic(server, self.app)
        self.editor = self.app.segmentation_editor
        self.volume = None
        self.segmentation = None

    def set_layout(self, layout_id: str = "Quad View") -> None:
        self.layout_manager.set_layout(layout_id)

    def show(self, segmentation_node, volume_node, segment_id: str | None = None) -> None:
        """Show ``volume_node`` in every view and edit ``segmentation_node`` on it."""
        if volume_node is not None and volume_node is not self.volume:
            # slices only: the 3-D volume rendering is the protocol section's "Show in 3-D", as in Slicer
            # (on the CPU it costs seconds per frame of a 512 x 512 x 300 case)
            display = self.app.display_manager
            display.show_volume_in_slice_background(volume_node)
            display.show_volume_in_slice_foreground(None)
            display.reset_views()
            self.volume = volume_node
        if segmentation_node is not None and segmentation_node is not self.segmentation:
            self.editor.set_active_segmentation(segmentation_node, volume_node or self.volume)
            self.segmentation = segmentation_node
        if segment_id and segmentation_node is not None:
            self.editor.set_active_segment_id(segment_id)

    def fit_3d(self) -> None:
        """The 3-D views' cameras on what they show (the volume rendering just turned on)."""
        for view in self.app.view_manager.get_threed_views():
            view.reset_view()

    def clear(self) -> None:
        """The case left the scene (its nodes are gone): nothing stays active on them."""
        self.editor.deactivate_effect()
        self.volume = self.segmentation = None

    def active_segment_id(self) -> str:
        return self.editor.get_active_segment_id()


def undo_redo(step, session) -> list[str]:
    """Undo or redo (``step``) on the open case, and tell its session which structures it changed.

    trame-slicer's undo restores a whole copy of the segmentation (``vtkSegmentation.DeepCopy``), which fires
    no ``SourceRepresentationModified``: the session would not see the change (its rules and volumes would
    stay those of the undone stroke). The structures whose masks differ are announced as Slicer's own undo
    announces them. The structures changed.
    """
    if session is None or session.closed:
        step()
        return []
    ids = [s.id for s in session.protocol.structures if s.kind == "segment"]
    before = {sid: session.mask(sid) for sid in ids}
    step()
    changed = [sid for sid in ids if not np.array_equal(before[sid], session.mask(sid))]
    segmentation = session.segmentationNode.GetSegmentation()
    for sid in changed:
        segmentation.InvokeEvent(slicer.vtkSegmentation.SourceRepresentationModified, session.segmentId(sid))
    return changed
