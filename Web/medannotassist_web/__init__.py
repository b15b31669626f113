"""The browser annotator: one trame-slicer app process per signed-in user, bound to the workflow models.

``app`` starts it (``python -m medannotassist_web.app``); ``views`` holds trame-slicer's scene, views and
segment editor; ``binding`` hands the workflow models' states to the browser and pumps the workstation;
``ui`` and ``sections`` lay the page out. No behaviour here that the Slicer panels lack: it is in ``workflow``.
"""
