"""The embedded mode's Celery transport: kombu's filesystem transport, with messages that appear whole.

kombu's own `_put` opens the final `<time>_<uuid>.<queue>.msg` name and then writes to it, and
its `_get` lists the folder and reads whatever matches without taking the writer's lock, so a
consumer can read a message that is still empty or half written: a JSONDecodeError that stops
the Celery worker (celery/kombu#1551; the QA audit's worker crash). Here a message is written
under a name `_get` never matches and renamed to its `.msg` name when complete; a message is
claimed by renaming it, so two consumers can't take the same one; and a message that still can't
be read (a file from an older writer, a full disk) is set aside and logged instead of stopping
the worker.

Selected in console/settings.py with CELERY_BROKER_TRANSPORT: kombu refuses an import path in
the broker URL's scheme, so the URL stays `filesystem://`.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from queue import Empty
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

logger = logging.getLogger(__name__)

# kombu matches a file to a queue by everything after the name's first dot being exactly
# "<queue>.msg" (filesystem.Channel._get, _size, _purge), so these suffixes are never matched.
WRITING_SUFFIX = ".writing"
CLAIMED_SUFFIX = ".claimed"
UNREADABLE_SUFFIX = ".unreadable"


def message_name(queue: str) -> str:
    """kombu's naming: milliseconds first, so a sorted listing is oldest first."""
    return f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"


class Channel(filesystem.Channel):
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
        wanted = f"{queue}.msg"
        for name in sorted(os.listdir(self.data_folder_in)):
            if name.partition(".")[2] != wanted:
                continue
            path = os.path.join(self.data_folder_in, name)
            claimed = path + CLAIMED_SUFFIX
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


class Transport(filesystem.Transport):
    Channel = Channel
