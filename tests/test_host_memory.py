"""`rtmdet.host_memory`: the command line keeps freed blocks in the heap (glibc), the user's
glibc settings win, and importing the library changes nothing. Each check runs in a fresh
interpreter: the setting is process-wide."""
from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# where a 64 MiB block lives (glibc's mallinfo2): mapped apart (`hblkhd` grows by it) or in the
# heap, and whether its bytes stay there once freed (`fordblks`, the heap's free bytes)
PROBE = """
import ctypes, sys
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = (ctypes.c_void_p,)
{setup}
before = libc.mallinfo2().hblkhd
p = libc.malloc(64 << 20)
mapped = libc.mallinfo2().hblkhd - before
libc.free(p)
print(result, mapped >= 64 << 20, libc.mallinfo2().fordblks >= 64 << 20)
"""

def _has_glibc() -> bool:
    try:
        return hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")  # glibc 2.33 or later
    except OSError:
        return False


glibc = pytest.mark.skipif(not _has_glibc(), reason="needs glibc >= 2.33 (mallinfo2)")


def _probe(setup: str, **env) -> str:
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    run_env.update(env, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", PROBE.format(setup=setup)], capture_output=True, text=True,
                         env=run_env, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


@glibc
def test_a_large_block_stays_in_the_heap():
    setup = "from rtmdet.host_memory import keep_freed_memory; result = keep_freed_memory()"
    assert _probe(setup) == ["True", "False", "True"]  # done; not mapped apart; kept in the heap


@glibc
def test_without_it_glibc_maps_the_block_apart():
    """The baseline the test above differs from (and importing rtmdet does not change it)."""
    assert _probe("import rtmdet; result = None")[:2] == ["None", "True"]


@glibc
def test_the_users_glibc_settings_win():
    setup = "from rtmdet.host_memory import keep_freed_memory; result = keep_freed_memory()"
    assert _probe(setup, MALLOC_TRIM_THRESHOLD_="131072")[:2] == ["False", "True"]


def test_the_command_line_keeps_freed_memory(monkeypatch):
    import rtmdet.cli as cli
    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append(1) or True)
    assert cli.main(["models"]) == 0
    assert calls == [1]
