"""The embedded mode's Celery transport: kombu's filesystem transport, with messages that appear whole.

kombu's own `_put` opens the final `<time>_<uuid>.<queue>.msg` name and then writes to it, and
its `_get` lists the folder and reads whatever matches without taking the writer's lock, so a
consumer can read a message that is still empty or half written: a JSONDecodeError that stops
the Celery worker (celery/kombu#1551; the QA audit's worker crash). Here a message is written
under a name `_get` never matches and renamed to its `.msg` name when complete; a message is
claimed by renaming it, so two consumers can't take the same one; and a message that still can't
be read (a file from an older writer, a full disk) is set aside and logged instead of stopping
the worker.

What a killed process leaves behind is swept by the consumers' poll (at most every
SWEEP_EVERY_S): a message claimed by a process that is gone is put back in its queue, a message
file never finished by its writer is removed (its sender saw no success: a deployment's push
stays marked waiting and is sent again). The exchange table, which kombu rewrites in place, is
replaced whole, so a publisher starting beside a worker never reads it empty.

Selected in console/settings.py with CELERY_BROKER_TRANSPORT: kombu refuses an import path in
the broker URL's scheme, so the URL stays `filesystem://`.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from queue import Empty
from time import monotonic

from celery.worker import state as worker_state
from kombu.exceptions import ChannelError
from kombu.transport import filesystem, virtual
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

logger = logging.getLogger(__name__)

# kombu matches a file to a queue by everything after the name's first dot being exactly
# "<queue>.msg" (filesystem.Channel._get, _size, _purge), so these suffixes are never matched.
WRITING_SUFFIX = ".writing"
CLAIMED_SUFFIX = ".claimed"
UNREADABLE_SUFFIX = ".unreadable"

# A consumer holds a claimed file for the few milliseconds between the rename and the remove, a
# writer its `.writing` file for the time of one write: older than this, its process is gone.
# The claimer's pid is checked too; the age alone covers a pid from another host or container.
CLAIM_STALE_S = 60.0
WRITING_STALE_S = 60.0
SWEEP_EVERY_S = 30.0

# A table that reads empty or half written (only kombu's own writer, in another process, leaves
# one) is read again for this long before the publish fails.
TABLE_READ_TRIES = 20
TABLE_READ_PAUSE_S = 0.025


def message_name(queue: str) -> str:
    """kombu's naming: milliseconds first, so a sorted listing is oldest first."""
    return f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"


def claimed_name(path: str, pid: int) -> str:
    """`path` as claimed by process `pid`: the sweep puts it back once that process is gone."""
    return f"{path}.{pid}{CLAIMED_SUFFIX}"


def _claim_of(name: str) -> tuple[str, int | None] | None:
    """(the message's own name, its claimer's pid or None if not recorded) of a claimed file."""
    if not name.endswith(CLAIMED_SUFFIX):
        return None
    base = name.removesuffix(CLAIMED_SUFFIX)
    if base.endswith(".msg"):
        return base, None  # claimed by an older version of this module, which kept no pid
    base, _, pid = base.rpartition(".")
    if not (base.endswith(".msg") and pid.isdigit()):
        return None
    return base, int(pid)


def _process_gone(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: it exists, as another user
        return False
    return False


class Channel(filesystem.Channel):
    _swept_at: float | None = None

    def _put(self, queue, payload, **kwargs) -> None:
        """Write the message under a name no reader matches, then rename it into place: the
        rename is atomic within the folder, so a reader sees no file or the whole file."""
        final = os.path.join(self.data_folder_out, message_name(queue))
        writing = final + WRITING_SUFFIX
        try:
            with open(writing, "wb") as file:
                file.write(str_to_bytes(dumps(payload)))
            os.replace(writing, final)
        except OSError as exc:
            try:
                os.unlink(writing)
            except OSError:
                pass
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc

    def _get(self, queue):
        """The oldest whole message of `queue`, claimed by renaming it within the folder (one
        consumer wins the rename); an unreadable one is renamed aside and skipped."""
        if self._swept_at is None or monotonic() - self._swept_at >= SWEEP_EVERY_S:
            self._swept_at = monotonic()
            self._sweep()
        wanted = f"{queue}.msg"
        for name in sorted(os.listdir(self.data_folder_in)):
            if name.partition(".")[2] != wanted:
                continue
            path = os.path.join(self.data_folder_in, name)
            claimed = claimed_name(path, os.getpid())
            try:
                os.rename(path, claimed)
            except FileNotFoundError:
                continue  # another consumer took it
            except OSError as exc:
                raise ChannelError(f"Cannot claim file {path!r} from queue.") from exc
            try:
                with open(claimed, "rb") as file:
                    raw = file.read()
            except OSError as exc:
                raise ChannelError(f"Cannot read file {claimed!r} from queue.") from exc
            try:
                message = loads(bytes_to_str(raw))
            except ValueError:  # JSONDecodeError and UnicodeDecodeError both are
                message = None
            if not isinstance(message, dict):
                self._set_aside(claimed, path, queue, len(raw))
                continue
            self._done(claimed, name)
            return message
        raise Empty()

    def _sweep(self) -> None:
        """Put back the messages claimed by processes that are gone, and remove message and
        table files their writers never finished. Each step is one rename or unlink, so two
        processes sweeping at once do each thing once."""
        now = time.time()
        folder = self.data_folder_in
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            if claim := _claim_of(name):
                base, pid = claim
                try:
                    # A rename sets ctime (Linux): the claim's age, not the message's.
                    if now - os.stat(path).st_ctime < CLAIM_STALE_S:
                        continue
                    if pid is not None and not _process_gone(pid):
                        continue
                    os.rename(path, os.path.join(folder, base))
                except FileNotFoundError:
                    continue  # consumed, or put back by another sweep
                except OSError as exc:
                    logger.warning("Could not put back the claimed message file %s: %s", path, exc)
                    continue
                logger.warning(
                    "Put back message %s: the process that claimed it (%s) is gone", base, pid or "unknown"
                )  # fmt: skip
        for folder in {self.data_folder_in, self.data_folder_out, str(self.control_folder)}:
            try:
                names = os.listdir(folder)
            except FileNotFoundError:
                continue
            for name in names:
                if not name.endswith(WRITING_SUFFIX):
                    continue
                path = os.path.join(folder, name)
                try:
                    if now - os.stat(path).st_mtime < WRITING_STALE_S:
                        continue
                    os.unlink(path)
                except OSError:
                    continue  # renamed into place or removed meanwhile
                logger.warning("Removed %s: its writer never finished it", path)

    def _set_aside(self, claimed: str, path: str, queue: str, size: int) -> None:
        aside = path + UNREADABLE_SUFFIX
        try:
            os.replace(claimed, aside)
        except OSError:
            aside = claimed
        logger.error(
            "Dropped an unreadable message of %d bytes from queue %s; the file is kept as %s",
            size, queue, aside,
        )  # fmt: skip

    def _done(self, claimed: str, name: str) -> None:
        try:
            if self.store_processed:
                shutil.move(claimed, os.path.join(self.processed_folder, name))
            else:
                os.remove(claimed)
        except OSError:
            # The message was read; a file left behind is never matched again (its suffix).
            logger.warning("Could not remove the consumed message file %s", claimed)

    # --- The exchange table: replaced whole, read without waiting on a writer -------------------

    def get_table(self, exchange):
        table = self._read_table(self._exchange_file(exchange))
        return [filesystem.exchange_queue_t(*q) for q in table]

    def _queue_bind(self, exchange, routing_key, pattern, queue) -> None:
        file = self._exchange_file(exchange)
        binding = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        with self._table_lock(file):
            queues = [filesystem.exchange_queue_t(*q) for q in self._read_table(file, repair=True)]
            if binding not in queues:
                self._write_table(file, [binding, *queues])

    def _delete(self, queue, exchange, routing_key, pattern, *args, **kwargs) -> None:
        # The virtual channel's delete (a purge), without kombu's in-place rewrite of the table.
        virtual.Channel._delete(self, queue, exchange, routing_key, pattern, *args, **kwargs)
        file = self._exchange_file(exchange)
        binding = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        with self._table_lock(file):
            queues = [filesystem.exchange_queue_t(*q) for q in self._read_table(file, repair=True)]
            if binding in queues:
                queues.remove(binding)
                self._write_table(file, queues)

    @contextmanager
    def _table_lock(self, file: Path) -> Iterator[None]:
        """Writers of one table take turns (a read-modify-write each); readers never wait: the
        table file is only ever replaced, and this lock is a file of its own."""
        self.control_folder.mkdir(exist_ok=True)
        try:
            handle = open(file.with_name(file.name + ".lock"), "ab")
        except OSError as exc:
            raise ChannelError(f"Cannot open {file}") from exc
        with handle:
            filesystem.lock(handle, filesystem.LOCK_EX)
            try:
                yield
            finally:
                filesystem.unlock(handle)

    def _read_table(self, file: Path, *, repair: bool = False) -> list:
        """The bindings in `file`, [] when there is none yet. An empty or half-written file is
        read again for a moment; if it stays so, a publish fails (ChannelError: its sender
        retries) rather than route to no queue, and a writer (``repair``) starts it afresh."""
        for attempt in range(TABLE_READ_TRIES):
            if attempt:
                time.sleep(TABLE_READ_PAUSE_S)
            try:
                raw = file.read_bytes()
            except FileNotFoundError:
                return []
            except OSError as exc:
                raise ChannelError(f"Cannot open {file}") from exc
            try:
                table = loads(bytes_to_str(raw))
            except ValueError:  # JSONDecodeError and UnicodeDecodeError both are
                continue
            if isinstance(table, list):
                return table
        if repair:
            logger.error("The exchange table %s was unreadable; it is written afresh", file)
            return []
        raise ChannelError(f"The exchange table {file} is unreadable")

    def _write_table(self, file: Path, queues: list) -> None:
        writing = file.with_name(f"{file.name}.{uuid.uuid4().hex}{WRITING_SUFFIX}")
        try:
            writing.write_bytes(str_to_bytes(dumps(queues)))
            os.replace(writing, file)
        except OSError as exc:
            writing.unlink(missing_ok=True)
            raise ChannelError(f"Cannot write {file}") from exc


class Transport(filesystem.Transport):
    Channel = Channel
    # How often an idle consumer lists its folder (kombu: 1 s): a task sent from a page starts
    # within this, and a worker asked to stop sees it within this (drain_events below).
    polling_interval = 0.2

    def drain_events(self, connection, timeout=None):
        """kombu's loop, which also returns (as a timeout) once the worker was asked to stop.

        Celery's worker loop for a transport like this one calls drain_events(timeout=2.0) and
        looks at its shutdown flag in between; kombu's loop sleeps its polling interval until
        the 2 s are up, so Ctrl-C of `make run` waited up to 3 s here before the worker began
        to stop."""
        started = monotonic()
        get = self.cycle.get
        pause = min(self.polling_interval, timeout) if timeout else self.polling_interval
        while True:
            try:
                get(self._deliver, timeout=timeout)
                return
            except Empty:
                if worker_state.should_stop is not None or worker_state.should_terminate is not None:
                    raise TimeoutError() from None
                if timeout is not None and monotonic() - started >= timeout:
                    raise TimeoutError() from None
                time.sleep(pause)

    @property
    def default_connection_params(self) -> dict:
        # Folders, not a host: without this kombu logs "No hostname was supplied" at every start.
        return {}
