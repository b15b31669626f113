"""Qt-free panel models (task, protocol, questions, AI, review, export): state, actions and change events,
bound by the Qt widgets in Slicer and by trame in the browser. Imports core and mrml, never Qt or the
application (docs/architecture.md, "The workflow models")."""
