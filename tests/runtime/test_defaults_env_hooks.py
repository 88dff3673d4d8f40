"""Module default cache, use_cache, the environment switches, observers and threads."""

import os
import subprocess
import sys
import threading

import pytest
import torch

import allocaudit.runtime as runtime
from allocaudit.runtime import CacheEvent, WorkspaceCache, default_cache, get_empty, use_cache


@pytest.fixture
def restore_env(monkeypatch):
    yield monkeypatch
    monkeypatch.delenv("ALLOCAUDIT_RUNTIME", raising=False)
    monkeypatch.delenv("ALLOCAUDIT_RUNTIME_DEBUG", raising=False)
    runtime.reload_env()


def test_without_cache_argument_the_module_default_serves(restore_env):
    default_cache().clear()
    get_empty(8, torch.float32, device="cpu", cache_name="tests.default")
    assert ("tests.default", "cpu") in default_cache().stats()


def test_use_cache_sets_the_default_for_a_scope_and_nests():
    outer, inner = WorkspaceCache("outer"), WorkspaceCache("inner")
    before = default_cache()
    with use_cache(outer):
        assert default_cache() is outer
        get_empty(8, torch.float32, device="cpu", cache_name="ws")
        with use_cache(inner) as entered:
            assert entered is inner
            get_empty(8, torch.float32, device="cpu", cache_name="ws")
        assert default_cache() is outer
    assert default_cache() is before
    assert outer.stats()[("ws", "cpu")].misses == 1
    assert inner.stats()[("ws", "cpu")].misses == 1
    with pytest.raises(TypeError):
        with use_cache("not a cache"):
            pass


def test_use_cache_is_per_thread():
    mine = WorkspaceCache("mine")
    seen = []
    with use_cache(mine):
        t = threading.Thread(target=lambda: seen.append(default_cache()))
        t.start()
        t.join()
    assert seen[0] is not mine


def test_caches_side_by_side_do_not_share_memory():
    a, b = WorkspaceCache("a"), WorkspaceCache("b")
    x = get_empty(64, torch.float32, device="cpu", cache_name="ws", cache=a)
    y = get_empty(64, torch.float32, device="cpu", cache_name="ws", cache=b)
    assert x.data_ptr() != y.data_ptr()


def test_kill_switch_makes_get_empty_plain_allocations(restore_env):
    restore_env.setenv("ALLOCAUDIT_RUNTIME", "off")
    runtime.reload_env()
    cache = WorkspaceCache("off")
    a = get_empty((4, 4), torch.float32, device="cpu", cache_name="ws", cache=cache)
    b = get_empty((4, 4), torch.float32, device="cpu", cache_name="ws", cache=cache)
    z = get_empty((4, 4), torch.int32, device="cpu", cache_name="ws", zero=True, cache=cache)
    assert a.data_ptr() != b.data_ptr()
    assert z.eq(0).all() and z.dtype == torch.int32
    assert cache.stats() == {}
    restore_env.setenv("ALLOCAUDIT_RUNTIME", "on")
    runtime.reload_env()
    get_empty((4, 4), torch.float32, device="cpu", cache_name="ws", cache=cache)
    assert ("ws", "cpu") in cache.stats()


def test_kill_switch_is_read_at_import():
    code = (
        "import torch\n"
        "from allocaudit.runtime import get_empty, default_cache\n"
        "a = get_empty(16, torch.float32, device='cpu', cache_name='ws')\n"
        "b = get_empty(16, torch.float32, device='cpu', cache_name='ws')\n"
        "z = get_empty(16, torch.float32, device='cpu', cache_name='ws', zero=True)\n"
        "assert a.data_ptr() != b.data_ptr() and bool(z.eq(0).all())\n"
        "assert default_cache().stats() == {}\n"
        "print('plain')\n"
    )
    env = dict(os.environ, ALLOCAUDIT_RUNTIME="off", PYTHONWARNINGS="ignore")
    env.pop("ALLOCAUDIT_RUNTIME_DEBUG", None)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "plain"


def test_debug_environment_variable_sets_modes(restore_env):
    restore_env.setenv("ALLOCAUDIT_RUNTIME_DEBUG", "poison, strict")
    cache = WorkspaceCache("env")
    assert cache.poison and cache.strict
    assert not WorkspaceCache("explicit", poison=False, strict=False).poison
    runtime.reload_env()
    assert default_cache().poison and default_cache().strict
    restore_env.setenv("ALLOCAUDIT_RUNTIME_DEBUG", "strict,verbose")
    with pytest.warns(RuntimeWarning, match="verbose"):
        cache = WorkspaceCache("typo")
    assert cache.strict and not cache.poison


def test_observers_see_each_request_kind():
    cache = WorkspaceCache("observed", max_bytes=4096)
    events = []
    runtime.add_observer(events.append)
    runtime.add_observer(events.append)  # added once only
    try:
        get_empty(100, torch.uint8, device="cpu", cache_name="ws", cache=cache)
        get_empty(50, torch.uint8, device="cpu", cache_name="ws", cache=cache)
        get_empty(1000, torch.uint8, device="cpu", cache_name="ws", cache=cache)
        with pytest.warns(ResourceWarning):
            get_empty(10_000, torch.uint8, device="cpu", cache_name="ws", cache=cache)
    finally:
        runtime.remove_observer(events.append)
    assert [e.kind for e in events] == ["miss", "hit", "growth", "fallback"]
    cpu = torch.device("cpu")
    # held/busy: the buffers on the device just after the request, its hand-out alive.
    assert events[0] == CacheEvent("observed", "ws", cpu, "miss", 100, 128, 128, False)
    assert events[2] == CacheEvent("observed", "ws", cpu, "growth", 1000, 1024, 1024, False)
    get_empty(10, torch.uint8, device="cpu", cache_name="ws", cache=cache)
    assert len(events) == 4
    runtime.remove_observer(events.append)  # removing twice is harmless


def test_an_observer_may_itself_request_workspaces():
    cache = WorkspaceCache("reentrant")
    inner = []

    def observer(event):
        if event.name == "outer":
            inner.append(get_empty(4, torch.float32, device="cpu", cache_name="inner", cache=cache))

    runtime.add_observer(observer)
    try:
        get_empty(4, torch.float32, device="cpu", cache_name="outer", cache=cache)
    finally:
        runtime.remove_observer(observer)
    assert len(inner) == 1


def test_concurrent_requests_from_threads_keep_every_result_exact():
    cache = WorkspaceCache("threads")
    errors = []
    per_thread = 300

    def work(index):
        try:
            for i in range(per_thread):
                n = (i * 37 + index * 11) % 500
                dtype = (torch.float32, torch.int16, torch.uint8)[i % 3]
                name = f"ws{i % 4}.{index}"
                out = get_empty((n, 2), dtype, device="cpu", cache_name=name, zero=True, cache=cache)
                if out.shape != (n, 2) or out.dtype != dtype or out.count_nonzero() != 0:
                    errors.append((index, i))
                out.fill_(index + 1)
                # A shared slot, which several threads grow at the same time.
                get_empty(n + index, torch.uint8, device="cpu", cache_name="shared", cache=cache)
        except Exception as e:  # reported below with the thread that raised
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    stats = cache.stats()
    total = sum(s.hits + s.misses + s.growths + s.fallbacks for s in stats.values())
    assert total == 8 * per_thread * 2


def test_observers_see_busy_bytes_of_live_hand_outs():
    cache = WorkspaceCache("busy")
    events = []
    runtime.add_observer(events.append)
    try:
        a = get_empty(100, torch.uint8, device="cpu", cache_name="a", cache=cache)
        b = get_empty(1000, torch.uint8, device="cpu", cache_name="b", cache=cache)
        del a
        get_empty(10, torch.uint8, device="cpu", cache_name="c", cache=cache)
    finally:
        runtime.remove_observer(events.append)
    assert [(e.held_bytes, e.busy_bytes) for e in events] == [(128, 128), (1152, 1152), (1152, 1152)]
    del b


def test_under_fake_tensor_tracing_requests_are_plain_and_leave_the_cache_alone():
    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

    cache = WorkspaceCache("fake")
    with FakeTensorMode():
        out = get_empty((4, 4), torch.float32, device="cpu", cache_name="ws", cache=cache, zero=True)
    assert isinstance(out, FakeTensor)
    assert cache.bytes_held() == 0 and cache.stats() == {}
    real = get_empty((4, 4), torch.float32, device="cpu", cache_name="ws", cache=cache)
    assert type(real) is torch.Tensor


def test_an_observing_dispatch_mode_keeps_the_cache_serving():
    from torch.utils._python_dispatch import TorchDispatchMode

    class Watch(TorchDispatchMode):
        allocaudit_observer = True

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    cache = WorkspaceCache("watched")
    with Watch():
        get_empty(16, torch.float32, device="cpu", cache_name="ws", cache=cache)
        get_empty(16, torch.float32, device="cpu", cache_name="ws", cache=cache)
    s = cache.stats()[("ws", "cpu")]
    assert (s.misses, s.hits) == (1, 1)
