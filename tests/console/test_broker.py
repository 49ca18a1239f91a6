"""The embedded mode's Celery transport (console/broker.py): a consumer never reads a message
that is still being written, and an unreadable message doesn't stop it."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from queue import Empty

import pytest
from kombu import Connection
from kombu.transport import virtual

from console import broker
from tests.console.test_security_settings import ROOT, _settings


@pytest.fixture
def folders(tmp_path, monkeypatch) -> dict:
    # kombu keeps declared bindings per transport class, for the life of the process; each test
    # has its own folders, so its own bindings.
    monkeypatch.setattr(broker.Transport, "global_state", virtual.BrokerState())
    for sub in ("out", "processed", "control"):
        (tmp_path / sub).mkdir()
    # As console/settings.py sets them: web, worker and beat share one folder.
    return {
        "data_folder_in": str(tmp_path / "out"),
        "data_folder_out": str(tmp_path / "out"),
        "processed_folder": str(tmp_path / "processed"),
        "control_folder": str(tmp_path / "control"),
        "store_processed": False,
        "polling_interval": 0.01,
    }


def _connection(folders: dict) -> Connection:
    return Connection("filesystem://", transport=broker.Transport, transport_options=folders)


def test_a_message_being_written_is_invisible_until_it_is_whole(folders, monkeypatch):
    """The moment of the audit's crash, made to happen every time: the writer has written the
    file but not yet renamed it, and the consumer polls right then."""
    seen_while_writing: list = []
    real_replace = os.replace

    with _connection(folders) as writer, _connection(folders) as reader:
        queue = reader.SimpleQueue("tasks")

        def replace_after_a_poll(src, dst):
            on_disk = sorted(os.listdir(folders["data_folder_out"]))
            try:
                got = reader.default_channel._get("tasks")
            except Empty:
                got = None
            seen_while_writing.append((on_disk, got, reader.default_channel._size("tasks")))
            return real_replace(src, dst)

        monkeypatch.setattr(broker.os, "replace", replace_after_a_poll)
        writer.SimpleQueue("tasks").put({"big": "x" * 100_000})
        monkeypatch.setattr(broker.os, "replace", real_replace)

        (on_disk, got, size) = seen_while_writing[0]
        assert len(on_disk) == 1 and on_disk[0].endswith(".tasks.msg" + broker.WRITING_SUFFIX)
        assert got is None and size == 0  # the whole file was there, but not yet a message
        message = queue.get(timeout=2)
        assert message.payload == {"big": "x" * 100_000}
        message.ack()
        assert os.listdir(folders["data_folder_in"]) == []


def test_large_messages_written_while_a_consumer_drains_all_arrive_whole(folders):
    count, size = 200, 256 * 1024
    received: list = []
    errors: list = []

    with _connection(folders) as consumer_connection:
        queue = consumer_connection.SimpleQueue("tasks")

        def produce() -> None:
            try:
                with _connection(folders) as producer_connection:
                    out = producer_connection.SimpleQueue("tasks")
                    for n in range(count):
                        out.put({"n": n, "body": str(n % 10) * size})
            except Exception as exc:  # reported by the assertion below
                errors.append(exc)

        writer = threading.Thread(target=produce)
        writer.start()
        while len(received) < count:
            message = queue.get(timeout=20)
            body = message.payload
            assert body["body"] == str(body["n"] % 10) * size
            received.append(body["n"])
            message.ack()
        writer.join()
    assert errors == []
    assert sorted(received) == list(range(count))


def test_an_unreadable_message_is_set_aside_and_the_next_one_delivered(folders, caplog):
    out = Path(folders["data_folder_in"])
    # What kombu's own writer leaves visible for a moment (an empty file), and plain garbage.
    empty = out / f"{broker.message_name('tasks')}"
    empty.write_bytes(b"")
    garbage = out / f"{broker.message_name('tasks')}"
    garbage.write_bytes(b'{"half": "writ')
    with _connection(folders) as connection:
        queue = connection.SimpleQueue("tasks")
        queue.put({"ok": True})
        with caplog.at_level(logging.ERROR, logger="console.broker"):
            message = queue.get(timeout=2)
        assert message.payload == {"ok": True}
        message.ack()
    left = sorted(p.name for p in out.iterdir())
    assert left == sorted(
        [empty.name + broker.UNREADABLE_SUFFIX, garbage.name + broker.UNREADABLE_SUFFIX]
    )
    assert [r.message for r in caplog.records].count(
        f"Dropped an unreadable message of 0 bytes from queue tasks; the file is kept as {empty}{broker.UNREADABLE_SUFFIX}"
    ) == 1
    assert len(caplog.records) == 2


def test_two_consumers_never_get_the_same_message(folders):
    with _connection(folders) as producer:
        out = producer.SimpleQueue("tasks")
        for _ in range(300):
            out.put({"x": 1})
    tags: list[list[str]] = [[], []]

    def consume(mine: list[str]) -> None:
        with _connection(folders) as connection:
            channel = connection.default_channel
            while True:
                try:
                    mine.append(channel._get("tasks")["properties"]["delivery_tag"])
                except Empty:
                    return

    threads = [threading.Thread(target=consume, args=(mine,)) for mine in tags]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(tags[0]) + len(tags[1]) == 300
    assert len(set(tags[0]) | set(tags[1])) == 300


def test_the_embedded_mode_s_celery_app_uses_this_transport(tmp_path):
    code = (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'console.settings'; django.setup(); "
        "from console.celery import app; print(type(app.connection_for_write().transport).__module__)"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "MODELDECK_DATA_DIR": str(tmp_path / "var"),
    }
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "console.broker"
    production = _settings(
        tmp_path,
        {"REDIS_URL": "redis://127.0.0.1:6379/0", "SECRET_KEY": "x" * 50},
        "CELERY_BROKER_TRANSPORT",
    )
    assert production == {"CELERY_BROKER_TRANSPORT": None}
