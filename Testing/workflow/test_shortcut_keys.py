"""The keyboard's shortcuts have one key each, the same in Slicer and in the browser (``SHORTCUT_KEYS``)."""

from __future__ import annotations

from MedAnnotAssistLib.workflow.workstation import SHORTCUT_KEYS, Workstation


def test_every_shortcut_has_one_key_and_every_key_a_shortcut(context, tmp_path):
    desk = Workstation(context, work_dir=tmp_path)
    try:
        assert set(desk.shortcuts()) == set(SHORTCUT_KEYS)
        assert len(set(SHORTCUT_KEYS.values())) == len(SHORTCUT_KEYS)  # no key does two things
        assert all(key.startswith("Ctrl+Shift+") for key in SHORTCUT_KEYS.values())  # clear of the editor's keys
        assert not desk.shortcuts()["accept"].action().enabled  # nothing open: the keys say why
    finally:
        desk.close()
