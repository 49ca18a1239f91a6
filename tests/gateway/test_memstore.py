"""The embedded mode's in-memory store (gateway/memstore.py) answers gateway/load.py's commands as
Redis does: the same requests measured into both read back as the same Load, the published scale
and the wake key expire, and a held request's wake goes to this process's autoscaler."""

from __future__ import annotations

import time

import pytest

from gateway import load, memstore


def _traffic(run, now: float) -> None:
    """Five requests over three seconds on deployment 7, two still in flight; one on deployment 8."""
    for n, (start, latency, tokens) in enumerate([(0.1, 40, 12), (0.5, 900, 80), (1.2, 15, 3)]):
        run(load.admit_commands(7, f"r{n}", now - 3 + start))
        run(load.finish_commands(7, f"r{n}", now - 3 + start + latency / 1000, latency, tokens))
    run(load.admit_commands(7, "open-1", now - 1.5))
    run(load.admit_commands(7, "open-2", now - 0.2))
    run(load.admit_commands(8, "other", now - 0.5))
    run(load.finish_commands(8, "other", now - 0.4, 100, 5))


def _redis_run(client):
    def run(commands):
        pipe = client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return pipe.execute()

    return run


def test_the_same_traffic_reads_back_as_the_same_load_from_memory_and_from_redis(_clean_redis):
    store = memstore.MemoryStore()
    now = time.time()
    _traffic(store.execute, now)
    _traffic(_redis_run(_clean_redis), now)

    from_memory = load.read_loads(store, [7, 8, 9], window=10, now=now)
    from_redis = load.read_loads(_clean_redis, [7, 8, 9], window=10, now=now)

    assert from_memory == from_redis
    assert from_memory[7].in_flight == 2 and from_memory[7].requests == 5
    assert from_memory[7].output_tokens_per_second == pytest.approx(95 / 10)
    assert from_memory[9] == load.Load()  # never seen: no load, no last request


def test_a_published_scale_is_read_at_admit_and_expires_as_in_redis(_clean_redis):
    store = memstore.MemoryStore()
    for client in (store, _clean_redis):
        pipe = client.pipeline()
        load.publish_scale(pipe, 7, desired=2, ready=0)
        pipe.execute()
    admit = load.admit_commands(7, "r", time.time())
    assert load.parse_scale(store.execute(admit)[-1]) == load.parse_scale(_redis_run(_clean_redis)(admit)[-1])
    assert load.parse_scale(store.execute(admit)[-1]).at_zero

    store._expires[load.scale_key(7)] = time.monotonic() - 1  # its TTL (60 s) is over
    assert load.parse_scale(store.execute(admit)[-1]) == load.PublishedScale(None, None)
    pipe = store.pipeline()
    load.unpublish_scale(pipe, 8)
    assert pipe.execute() == [0]


def test_one_wake_per_deployment_until_the_wake_key_expires():
    view = memstore.AsyncView(memstore.MemoryStore())

    def set_nx() -> bool | None:
        # Driven by hand, not asyncio.run: in suite order a loop already runs in this thread
        # (the browser tests'); the view's calls never wait, so one step finishes them.
        step = view.set(load.wake_key(7), "1", nx=True, ex=5)
        try:
            step.send(None)
        except StopIteration as done:
            return done.value
        raise AssertionError("the in-memory view waited")

    assert set_nx() is True
    assert set_nx() is None  # another held request: no second wake
    view.store._expires[load.wake_key(7)] = time.monotonic() - 1
    assert set_nx() is True


def test_expired_keys_are_swept_so_idle_buckets_do_not_pile_up(monkeypatch):
    store = memstore.MemoryStore()
    now = time.time()
    for second in range(50):
        store.execute(load.admit_commands(7, f"r{second}", now - 400 + second))
        store.execute(load.finish_commands(7, f"r{second}", now - 400 + second, 5, 1))
    assert len(store._data) == 51  # 50 one-second buckets and the last request (the in-flight set is empty)
    for key in list(store._expires):
        if key != load.last_key(7):
            store._expires[key] = time.monotonic() - 1  # the buckets' 180 s are over, not the last's 2 h
    monkeypatch.setattr(memstore, "SWEEP_SECONDS", 0.0)
    store.execute([("GET", "x")])
    assert sorted(store._data) == [load.last_key(7)]


def test_without_redis_a_held_requests_wake_goes_to_this_processes_autoscaler(settings, monkeypatch):
    woken = []
    queued = []
    monkeypatch.setattr(load, "enqueue", lambda *args, **kwargs: queued.append(args))
    settings.REDIS_URL = None
    load.set_local_wake(woken.append)
    try:
        load.wake(7)
    finally:
        load.set_local_wake(None)
    assert woken == [7] and queued == []
    settings.REDIS_URL = "redis://127.0.0.1:6379/0"
    load.wake(8)  # with Redis: a task for a worker, whatever runs here
    assert queued and queued[0][1] == 8
