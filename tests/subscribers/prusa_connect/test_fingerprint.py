"""Fingerprints are made once, survive restarts, and a damaged state file is never papered over."""

from __future__ import annotations

import os
import stat

import pytest

from camfabric.subscribers.prusa_connect.fingerprint import FingerprintError, FingerprintStore


def test_a_fingerprint_is_made_once_and_kept(tmp_path):
    store = FingerprintStore(tmp_path / "state")
    first = store.get(0)
    assert 16 <= len(first) <= 64 and first.isascii() and " " not in first
    assert store.get(0) == first
    assert FingerprintStore(tmp_path / "state").get(0) == first  # a new process reads the same
    assert store.get(1) != first
    mode = stat.S_IMODE(os.stat(store.path).st_mode)
    assert mode == 0o600


def test_a_damaged_state_file_is_an_error_not_a_new_fingerprint(tmp_path):
    store = FingerprintStore(tmp_path)
    store.get(0)
    store.path.write_text("{not json")
    with pytest.raises(FingerprintError, match="re-add the cameras"):
        store.get(0)
    store.path.write_text('{"0": "short"}')
    with pytest.raises(FingerprintError, match="16-64"):
        store.get(0)
    assert store.path.read_text() == '{"0": "short"}'  # left for the user to restore


def test_an_unwritable_state_dir_names_the_setting(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(FingerprintError, match="prusa_connect.state_dir"):
        FingerprintStore(blocker / "state").get(0)
