"""Ctrl-C reaches the researcher's thread at once: the client's event loop runs in a thread
that blocks SIGINT, so the kernel cannot hand the signal to it (where it would wait, unseen,
until the query ended)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

from fedtally.client import loop_thread
from support import PROJECT_ROOT


def test_the_loop_thread_never_receives_ctrl_c() -> None:
    loop = asyncio.new_event_loop()
    thread = loop_thread(loop)
    try:
        async def mask() -> set[signal.Signals]:
            return signal.pthread_sigmask(signal.SIG_BLOCK, [])

        blocked = asyncio.run_coroutine_threadsafe(mask(), loop).result(10)
        assert signal.SIGINT in blocked and signal.SIGTERM in blocked
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])


WAITER = """
import asyncio, os, signal, threading, time
from fedtally.client import loop_thread
signal.signal(signal.SIGINT, signal.default_int_handler)  # see test_operations.CLIENT
loop = asyncio.new_event_loop()
loop_thread(loop)
never = asyncio.run_coroutine_threadsafe(asyncio.sleep(3600), loop)
def interrupt():
    time.sleep(0.3)
    os.kill(os.getpid(), signal.SIGINT)
killer = threading.Thread(target=interrupt, daemon=True)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
killer.start()  # created with SIGINT blocked: only the main thread can take it
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
start = time.monotonic()
try:
    never.result(60)
except KeyboardInterrupt:
    print(f"interrupted after {time.monotonic() - start:.2f} s")
"""


def test_ctrl_c_interrupts_a_waiting_researcher_at_once() -> None:
    out = subprocess.run([sys.executable, "-c", WAITER], capture_output=True, text=True,
                         timeout=60, cwd=PROJECT_ROOT, check=True).stdout
    assert out.startswith("interrupted after"), out
    assert float(out.split()[2]) < 5, out
