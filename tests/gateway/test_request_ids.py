"""Request ids: unique within a process and across forked ones, in the `req_` + 32 hex shape."""

from __future__ import annotations

import os
import re

from gateway.app import new_request_id


def test_ids_are_unique_and_shaped_like_before():
    ids = [new_request_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"req_[0-9a-f]{32}", i) for i in ids)


def test_a_forked_child_draws_its_own_prefix():
    parent = new_request_id()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id and leave at once
        os.write(write, new_request_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 100).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert re.fullmatch(r"req_[0-9a-f]{32}", child)
    assert child[:20] != parent[:20]  # another 64-bit prefix: the counters can't collide
