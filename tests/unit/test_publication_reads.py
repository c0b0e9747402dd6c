"""A reader takes no lock: a publication that lands while it reads is not tampering, a
changed file is (resources.publication.Publications.read_published)."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from e2i_platform.resources.publication import Publications, PublishedValueChanged


def _publish(pubs: Publications, run_id: str, value: dict) -> dict:
    pubs.stage("release", run_id, "json", lambda p: p.write_text(json.dumps(value)))
    with pubs.lock("release"):
        return pubs.publish("release", run_id, "json", [])


def _read(path) -> dict:
    return json.loads(path.read_text())


def test_a_publication_landing_mid_read_is_waited_for_not_called_tampering(tmp_path):
    pubs = Publications(tmp_path / "warehouse")
    _publish(pubs, "run-1", {"v": 1})
    published = pubs.published_path("release", "json")
    halfway, done = threading.Event(), threading.Event()

    def publisher():
        # What `publish` does under the lock: the file first, the record a moment later.
        pubs.stage("release", "run-2", "json", lambda p: p.write_text(json.dumps({"v": 2})))
        with pubs.lock("release"):
            record = pubs.record("release")
            tmp = published.with_name(".swap")
            os.link(pubs.staged_path("release", "run-2", "json"), tmp)
            os.replace(tmp, published)
            halfway.set()
            time.sleep(0.5)
            from e2i_platform.lib.versions import sha256_file

            record.update(run_id="run-2", sha256=sha256_file(published))
            (pubs.record_path("release")).write_text(json.dumps(record))
        done.set()

    thread = threading.Thread(target=publisher)
    thread.start()
    assert halfway.wait(10)
    # The record still names run-1, the file is run-2's: a reader without the retry would
    # call this a changed file.
    assert not pubs.intact("release", "json", pubs.record("release"))
    record, value = pubs.read_published("release", "json", _read)
    thread.join()
    assert done.is_set()
    assert (record["run_id"], value) == ("run-2", {"v": 2})


def test_a_file_changed_by_hand_is_refused_naming_it(tmp_path):
    pubs = Publications(tmp_path / "warehouse")
    _publish(pubs, "run-1", {"v": 1})
    record, value = pubs.read_published("release", "json", _read)
    assert (record["run_id"], value) == ("run-1", {"v": 1})
    published = pubs.published_path("release", "json")
    published.write_text(json.dumps({"v": 99}))
    with pytest.raises(PublishedValueChanged, match=f"{published} was changed after"):
        pubs.read_published("release", "json", _read)
    published.unlink()
    with pytest.raises(FileNotFoundError, match="no published value"):
        pubs.read_published("release", "json", _read)


def test_a_publication_landing_during_the_read_is_read_again(tmp_path):
    """The file matched its record when the read began, and another run's value was
    published while it was read: the value returned is the new one, with its record."""
    pubs = Publications(tmp_path / "warehouse")
    _publish(pubs, "run-1", {"v": 1})
    calls = []

    def read_while_run_2_publishes(path):
        value = _read(path)
        if not calls:
            _publish(pubs, "run-2", {"v": 2})
        calls.append(value)
        return value

    record, value = pubs.read_published("release", "json", read_while_run_2_publishes)
    assert calls == [{"v": 1}, {"v": 2}]
    assert (record["run_id"], value) == ("run-2", {"v": 2})
