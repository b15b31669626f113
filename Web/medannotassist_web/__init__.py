"""The browser annotator on trame-slicer (``app``) and the launcher that gives each signed-in user their own."""
