"""The embedded mode's Celery transport (console/broker.py): a consumer never reads a message
that is still being written, and an unreadable message doesn't stop it."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from queue import Empty

import pytest
from kombu import Connection, Queue
from kombu.exceptions import ChannelError
from kombu.transport import virtual
from kombu.utils.json import loads

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
    # Named as from an earlier millisecond: in the same one, the uuid would decide the order.
    empty = out / f"0{broker.message_name('tasks')}"
    empty.write_bytes(b"")
    garbage = out / f"0{broker.message_name('tasks')}"
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
        "from console.celery import app; connection = app.connection_for_write(); connection.connect(); connection.info(); "
        "print(type(connection.transport).__module__); connection.release()"
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
    assert "No hostname was supplied" not in result.stderr  # folders, not a host: no warning at start
    production = _settings(
        tmp_path,
        {"REDIS_URL": "redis://127.0.0.1:6379/0", "SECRET_KEY": "x" * 50},
        "CELERY_BROKER_TRANSPORT",
    )
    assert production == {"CELERY_BROKER_TRANSPORT": None}


# --- What a killed process leaves behind ----------------------------------------------------


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", ""])
    process.wait()
    return process.pid


def _claim(folders: dict, queue: str, body: dict, suffix: str) -> Path:
    """A message of `queue` as a consumer leaves it once it has claimed it (renamed it to the
    message's name + `suffix`) and was killed before it removed it."""
    with _connection(folders) as connection:
        connection.SimpleQueue(queue).put(body)
    out = Path(folders["data_folder_in"])
    [path] = [p for p in out.iterdir() if p.name.endswith(f".{queue}.msg")]
    claimed = path.with_name(path.name + suffix)
    path.rename(claimed)
    return claimed


def _drain(folders: dict, queue: str) -> list:
    got = []
    with _connection(folders) as connection:
        inbox = connection.SimpleQueue(queue)
        while True:
            try:
                message = inbox.get(timeout=0.5)
            except Empty:
                return got
            got.append(message.payload)
            message.ack()


def test_a_message_claimed_by_a_process_that_died_is_delivered_again(folders, monkeypatch, caplog):
    dead = _dead_pid()
    orphaned = _claim(folders, "a", {"n": "orphaned"}, f".{dead}.claimed")
    older_version = _claim(folders, "b", {"n": "claimed before pids were kept"}, ".claimed")
    mine = _claim(folders, "c", {"n": "being read"}, f".{os.getpid()}.claimed")
    # Younger than CLAIM_STALE_S, a claim stays: its pid may be another host's or container's.
    assert _drain(folders, "a") == [] and orphaned.exists()

    monkeypatch.setattr(broker, "CLAIM_STALE_S", 0, raising=False)  # as if a minute went by
    with caplog.at_level(logging.WARNING, logger="console.broker"):
        assert _drain(folders, "a") == [{"n": "orphaned"}]
        assert _drain(folders, "b") == [{"n": "claimed before pids were kept"}]
        # Its claimer (this process) is alive: never taken from it.
        assert _drain(folders, "c") == []
    assert not orphaned.exists() and not older_version.exists() and mine.exists()
    assert f"the process that claimed it ({dead}) is gone" in caplog.text


def test_a_message_file_its_writer_never_finished_is_removed_at_the_next_sweep(
    folders, monkeypatch
):
    out = Path(folders["data_folder_out"])
    stale = out / (broker.message_name("tasks") + broker.WRITING_SUFFIX)
    stale.write_bytes(b'{"half": "writ')
    long_ago = time.time() - 120
    os.utime(stale, (long_ago, long_ago))
    fresh = out / (broker.message_name("tasks") + broker.WRITING_SUFFIX)
    fresh.write_bytes(b'{"being": "writ')  # a writer at work right now
    table = Path(folders["control_folder"]) / f"celery.exchange.{'0' * 32}{broker.WRITING_SUFFIX}"
    table.write_bytes(b"[")
    os.utime(table, (long_ago, long_ago))

    with _connection(folders) as connection:
        channel = connection.default_channel
        with pytest.raises(Empty):
            channel._get("tasks")
        assert not stale.exists() and not table.exists() and fresh.exists()

        # At most one sweep every SWEEP_EVERY_S: polling stays a listing of the folder.
        os.utime(fresh, (long_ago, long_ago))
        with pytest.raises(Empty):
            channel._get("tasks")
        assert fresh.exists()
        monkeypatch.setattr(broker, "monotonic", lambda: time.monotonic() + broker.SWEEP_EVERY_S)
        with pytest.raises(Empty):
            channel._get("tasks")
        assert not fresh.exists()


# --- The exchange table ------------------------------------------------------------------------


def test_the_exchange_table_is_replaced_whole_never_seen_empty(folders, monkeypatch):
    """Readers look at the table at the instant its new content is complete but not yet in
    place: they see no table or the previous one, never an empty or partial file."""
    seen: list = []
    real_replace = os.replace

    with _connection(folders) as writer, _connection(folders) as reader:

        def replace_after_a_read(src, dst):
            if str(dst).endswith(".exchange"):
                seen.append([q.queue for q in reader.default_channel.get_table("jobs")])
            return real_replace(src, dst)

        monkeypatch.setattr(broker.os, "replace", replace_after_a_read)
        writer.default_channel._queue_bind("jobs", "one", None, "one")
        writer.default_channel._queue_bind("jobs", "two", None, "two")
        monkeypatch.setattr(broker.os, "replace", real_replace)
        assert seen == [[], ["one"]]
        assert [q.queue for q in reader.default_channel.get_table("jobs")] == ["two", "one"]


def test_a_publisher_reading_a_table_being_created_gets_it_whole(folders):
    """kombu's own writer creates the file, then writes it: a reader in between saw "" and the
    publish failed with a JSONDecodeError. It now reads again until the table is there."""
    table = Path(folders["control_folder"]) / "jobs.exchange"
    table.write_bytes(b"")

    def finish_writing() -> None:
        time.sleep(0.1)
        table.write_bytes(b'[["one", "", "one"]]')

    writer = threading.Thread(target=finish_writing)
    writer.start()
    with _connection(folders) as connection:
        assert [q.queue for q in connection.default_channel.get_table("jobs")] == ["one"]
    writer.join()


def test_a_table_that_stays_unreadable_fails_the_publish_and_the_next_bind_rewrites_it(
    folders, monkeypatch
):
    monkeypatch.setattr(broker, "TABLE_READ_PAUSE_S", 0.001, raising=False)
    table = Path(folders["control_folder"]) / "jobs.exchange"
    table.write_bytes(b'[["one", "", "o')  # a writer killed half way
    with _connection(folders) as connection:
        channel = connection.default_channel
        with pytest.raises(ChannelError):  # the sender learns it (a push is left waiting)
            channel.get_table("jobs")
        channel._queue_bind("jobs", "two", None, "two")
        assert [q.queue for q in channel.get_table("jobs")] == ["two"]
        assert loads(table.read_text()) == [["two", "", "two"]]


def _bind_all_at_once(folders: dict, exchange: str, count: int) -> list:
    """`count` threads, each with its own connection, bind a queue each to `exchange` at once."""
    barrier = threading.Barrier(count)
    errors: list = []

    def bind(n: int) -> None:
        try:
            with _connection(folders) as connection:
                channel = connection.default_channel
                barrier.wait()
                channel._queue_bind(exchange, f"q{n}", None, f"q{n}")
        except Exception as exc:  # reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=bind, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_workers_binding_at_the_first_start_keep_every_binding(folders):
    """Eight processes bind their queues to a table that doesn't exist yet, all at once."""
    for round_ in range(10):
        exchange = f"first-start-{round_}"
        assert _bind_all_at_once(folders, exchange, 8) == []
        with _connection(folders) as connection:
            bound = {q.queue for q in connection.default_channel.get_table(exchange)}
        assert bound == {f"q{n}" for n in range(8)}


def test_a_consumer_waiting_for_messages_returns_once_the_worker_is_asked_to_stop(folders, monkeypatch):
    """Celery's loop for this transport calls drain_events(timeout=2.0) and looks at its shutdown
    flag in between: the wait ends as soon as the flag is up, not when the timeout is over (a
    wait with no timeout would never end here without it)."""

    from celery.worker import state as worker_state

    with _connection(folders) as connection:
        consumer = connection.Consumer(Queue("tasks"), callbacks=[lambda body, message: None])
        consumer.consume()  # declared and consumed, nothing in it
        outcome: list = []

        def drain() -> None:
            try:
                connection.drain_events(timeout=None)
                outcome.append("delivered")
            except TimeoutError:
                outcome.append("stopped")

        waiter = threading.Thread(target=drain, daemon=True)
        waiter.start()
        waiter.join(0.3)
        assert waiter.is_alive() and outcome == []  # nothing to deliver: still waiting
        monkeypatch.setattr(worker_state, "should_stop", 0)  # Celery's warm-shutdown handler
        waiter.join(10)
        assert outcome == ["stopped"]
