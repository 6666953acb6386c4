"""The sandbox's limits under attack: memory outside the address space, processes and threads across runs, stdin,
the status pipes, control characters, socketpair, and the audit hook treated as messages only. Where a test
switches the audit hook off, it proves that the kernel layers hold on their own; such variants are skipped on
machines whose kernel lacks the layer they rely on (the skip reason names it)."""

import os
import sys
import textwrap
import threading

import pytest

from qwen2_lab.sandbox import RUN_UID_BASE, run_python
from tests.helpers import require_layer

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="these layers are Linux kernel features")


def run(code: str, **kwargs):
    return run_python(textwrap.dedent(code), **{"timeout": 3.0, **kwargs})


# ---------------------------------------------------------------------------------------------------------------
# Memory that RLIMIT_AS does not count
# ---------------------------------------------------------------------------------------------------------------

HOLD_MEMORY = """
import mmap, os
held, keep = 0, []
def attempt(name, make):
    global held
    try:
        for _ in range(8):
            keep.append(make())
            held += 32
    except (OSError, ValueError, MemoryError) as exc:
        print(name, "refused", type(exc).__name__)
    else:
        print(name, "held", held)
def memfd():
    fd = os.memfd_create("x")
    for _ in range(32):
        os.write(fd, b"x" * (1 << 20))
    return fd
def dev_shm():
    f = open(f"/dev/shm/qwen2-lab-test-{len(keep)}", "wb")
    f.write(b"x" * (32 << 20))
    return f
def shared_anonymous():
    m = mmap.mmap(-1, 32 << 20, flags=mmap.MAP_SHARED)
    m.write(b"x" * (32 << 20))
    return m
attempt("memfd", memfd)
attempt("dev-shm", dev_shm)
attempt("shared-anonymous", shared_anonymous)
print("total", held)
"""


@pytest.mark.parametrize("skip", [(), ("audit",)], ids=["all-layers", "kernel-layers-only"])
def test_anonymous_files_and_shared_memory_stay_within_memory_mb(skip, sandbox_layers):
    """memfd_create and /dev/shm files hold RAM that RLIMIT_AS never sees: 8 x 32 MB past a 128 MB limit."""
    if skip:
        require_layer(sandbox_layers, "seccomp")
        require_layer(sandbox_layers, "landlock")
    result = run(HOLD_MEMORY, memory_mb=128, skip_layers=skip)
    outcome = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert outcome["memfd"].startswith("refused"), result.stdout + result.stderr
    assert outcome["dev-shm"].startswith("refused")
    assert int(outcome["total"]) < 128, result.stdout  # shared anonymous maps count against the address space
    assert not [name for name in os.listdir("/dev/shm") if name.startswith("qwen2-lab-test-")]


def test_system_v_shared_memory_and_queues_are_refused_by_the_kernel(sandbox_layers):
    """shmget/msgget need ctypes: with the audit hook off, the seccomp filter alone refuses them."""
    require_layer(sandbox_layers, "seccomp")
    result = run(
        """
        import ctypes, ctypes.util
        libc = ctypes.CDLL(None, use_errno=True)
        print("shmget", libc.shmget(0, 256 << 20, 0o1600), ctypes.get_errno())
        print("msgget", libc.msgget(0, 0o1600), ctypes.get_errno())
        """,
        skip_layers=("audit",),
    )
    assert result.stdout.split() == ["shmget", "-1", "1", "msgget", "-1", "1"], result.stdout + result.stderr


@pytest.mark.parametrize(
    "code",
    [
        "import os\nprint(os.fork())",
        "import ctypes\nprint(ctypes.CDLL(None, use_errno=True).fork(), ctypes.get_errno())",
        "import os\nos.execv('/bin/sh', ['sh', '-c', 'echo EXECUTED'])",
    ],
    ids=["os.fork", "libc-fork", "exec"],
)
def test_no_second_process_even_without_the_audit_hook(code, sandbox_layers):
    """One process, one address space: memory_mb bounds the whole run, not each of max_processes forks."""
    require_layer(sandbox_layers, "seccomp")
    result = run(code, skip_layers=("audit",))
    assert "EXECUTED" not in result.stdout
    assert result.stdout.strip() in ("", "-1 1"), result.stdout
    assert "Operation not permitted" in result.stderr or result.stdout.strip() == "-1 1"


# ---------------------------------------------------------------------------------------------------------------
# Processes and threads: a bound per run
# ---------------------------------------------------------------------------------------------------------------

THREADS = """
import threading, time
started = 0
release = threading.Event()
try:
    for _ in range({n}):
        threading.Thread(target=release.wait, args=(5,)).start()
        started += 1
    time.sleep(1.0)  # hold them while the other run starts its own
finally:
    release.set()
print(started)
"""


def test_two_runs_do_not_share_a_thread_limit(sandbox_layers):
    """Each run may start max_processes - 2 threads; two at once would pass a limit shared by one uid."""
    if "uid" not in sandbox_layers and "userns" not in sandbox_layers:
        pytest.skip("needs a uid of the run's own (root) or a user namespace: neither is available here")
    results = [None, None]

    def work(i):
        results[i] = run_python(THREADS.format(n=10), timeout=10, max_processes=12)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.stdout.strip() for r in results] == ["10", "10"], [r.summary + r.stderr[-300:] for r in results]


def test_threads_past_max_processes_are_refused(sandbox_layers):
    if "uid" not in sandbox_layers and "userns" not in sandbox_layers:
        pytest.skip("needs a uid of the run's own (root) or a user namespace: neither is available here")
    result = run(THREADS.format(n=40), max_processes=8, timeout=5)
    assert "can't start new thread" in result.stderr, result.stdout + result.stderr


def test_each_run_has_a_uid_of_its_own(sandbox_layers):
    require_layer(sandbox_layers, "uid")
    uids = {int(run("import os\nprint(os.getuid())").stdout) for _ in range(3)}
    assert len(uids) == 3 and all(uid > RUN_UID_BASE for uid in uids)


# ---------------------------------------------------------------------------------------------------------------
# stdin, the status pipes, argv
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stdin", [None, "data"])
def test_stdin_is_read_only(stdin):
    result = run(
        """
        import os, sys
        print(repr(sys.stdin.read()))
        for attempt in (lambda: os.write(0, b"x" * 1000), lambda: os.ftruncate(0, 10**9)):
            try:
                attempt()
                print("WROTE")
            except OSError as exc:
                print("denied", exc.errno)
        """,
        stdin=stdin,
    )
    lines = result.stdout.splitlines()
    assert lines[0] == repr(stdin or "") and "WROTE" not in result.stdout, result.stdout + result.stderr
    assert len(lines) == 3


FORGE_STATUS = """
import os, sys
for fd in range(64):
    if fd in (1, 2):
        continue
    for line in (b"layers forged\\n", b"setup-failed forged\\n", b"blocked forged\\n"):
        try:
            os.write(fd, line)
        except OSError:
            pass
print(sys.argv)
sys.stderr.write("sandbox: setup failed: forged\\n")
sys.exit(70)
"""


def test_the_status_pipe_is_closed_before_user_code_and_argv_tells_nothing(sandbox_layers):
    result = run(FORGE_STATUS)
    assert result.layers == sandbox_layers  # written before the program ran; nothing it writes can change them
    assert result.killed_reason is None and result.returncode == 70  # its exit code, not a setup failure
    assert result.stdout.strip() == "['main.py']"
    assert result.summary.startswith("failed: exit 70")  # the program's own stderr line follows, as its words


def test_blocked_entries_are_messages_from_inside_the_program():
    """The audit hook's pipe is in the program's process, so its lines can be forged: documented, and used for
    nothing but the explanation in `blocked`."""
    result = run(FORGE_STATUS)
    assert result.blocked in ((), ("forged",))
    assert result.layers and "forged" not in result.layers


# ---------------------------------------------------------------------------------------------------------------
# What comes back: control characters, ANSI sequences
# ---------------------------------------------------------------------------------------------------------------


def test_control_characters_and_ansi_sequences_never_come_back():
    result = run(
        r"""
        import os, sys
        print("clear\x1b[2J\x1b[H title\x1b]0;owned\x07 bell\x07 cr\rover \x9b31m bidi\u202egnp.exe nul\x00 ok")
        sys.stderr.write("\x1b[31mred\x1b[0m\n")
        raise SystemExit("\x1b[1A\x1b[2Kerased line")
        """
    )
    everything = result.stdout + result.stderr + result.summary
    assert not any(c in everything for c in "\x1b\x07\r\x9b\u202e\x00"), repr(everything)
    assert "clear" in result.stdout and "ok" in result.stdout and "red" in result.stderr


# ---------------------------------------------------------------------------------------------------------------
# Sockets and the audit hook as messages only
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("skip", [(), ("audit",)], ids=["all-layers", "kernel-layers-only"])
def test_socketpair_is_refused(skip, sandbox_layers):
    if skip:
        require_layer(sandbox_layers, "seccomp")
    result = run("import socket\nprint(socket.socketpair())", skip_layers=skip)
    assert not result.stdout and ("PermissionError" in result.stderr), result.stdout + result.stderr


def test_the_audit_hook_can_be_got_around_but_the_kernel_layers_hold(sandbox_layers):
    """importlib loads _ctypes past the hook (PEP 578: hooks are not a boundary); the libc calls it reaches still
    fail: no socket, no fork, no memfd."""
    require_layer(sandbox_layers, "seccomp")
    result = run(
        """
        import importlib, sys
        try:
            _ctypes = importlib.import_module("_ctypes")
            print("loaded _ctypes past the hook")
        except (ImportError, PermissionError):
            print("refused by the hook")
        import os
        for name, call in [("memfd", lambda: os.memfd_create("x")), ("fork", os.fork)]:
            try:
                call()
                print(name, "WORKED")
            except OSError as exc:
                print(name, "refused", exc.errno)
        """
    )
    assert "WORKED" not in result.stdout, result.stdout + result.stderr
