"""The sandbox against hostile programs: each is contained, reported clearly, and this process (the server) keeps
serving. Where a test switches a layer off (skip_layers), it proves that the remaining layers hold on their own;
such variants are skipped on machines that lack the layer they rely on."""

import os
import resource
import shutil
import socket
import sys
import tempfile
import textwrap
import threading
import time

import pytest

from qwen2_lab.sandbox import SKIPPABLE_LAYERS, run_python
from tests.helpers import live_processes, require_layer

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the sandbox needs a POSIX system")


def run(code: str, **kwargs):
    """Run dedented code with a small default timeout."""
    return run_python(textwrap.dedent(code), **{"timeout": 2.0, **kwargs})


def assert_server_alive() -> None:
    """This process still runs sandboxes normally after a hostile one."""
    result = run_python("print('alive')", timeout=5)
    assert result.ok and result.stdout == "alive\n", result.summary


@pytest.fixture
def world_readable_dir():
    """A directory every user may enter, holding a world-readable secret: only the sandbox's layers protect it."""
    path = tempfile.mkdtemp(prefix="qwen2-lab-test-secret-")
    os.chmod(path, 0o777)
    secret = os.path.join(path, "secret.txt")
    with open(secret, "w") as f:
        f.write("SECRET-FILE-CONTENT-71c3")
    os.chmod(secret, 0o666)
    yield path
    shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------------
# Normal programs still work
# ---------------------------------------------------------------------------------------------------------------


def test_prints_stdin_files_and_stdlib_imports_work():
    result = run(
        """
        import bisect, collections, fractions, json, math, sys
        data = json.load(open("data.json"))
        print(sum(data), sys.stdin.read().upper(), fractions.Fraction(1, 3) * 3, bisect.bisect_left([1, 3], 2))
        """,
        stdin="hello",
        files={"data.json": "[1, 2, 3]"},
    )
    assert result.ok, result.summary + result.stderr
    assert result.stdout == "6 HELLO 1 1\n"
    assert result.summary.startswith("ok: exit 0")
    assert {"process", "env", "workdir", "deadline", "output-cap", "rlimits", "audit"} <= set(result.layers)


def test_exception_traceback_shows_only_the_programs_frames():
    result = run(
        """
        def f(x):
            return 1 / x
        f(0)
        """
    )
    assert result.returncode == 1 and not result.ok and result.killed_reason is None
    assert 'File "main.py", line 4, in <module>' in result.stderr
    assert 'File "main.py", line 3, in f' in result.stderr
    assert "ZeroDivisionError: division by zero" in result.stderr
    assert "sandbox.py" not in result.stderr
    assert result.summary.startswith("failed: exit 1") and result.summary.endswith(
        "ZeroDivisionError: division by zero"
    )


def test_syntax_error_and_exit_codes():
    bad = run("def f(:\n    pass\n")
    assert bad.returncode == 1 and "SyntaxError" in bad.stderr and 'File "main.py", line 1' in bad.stderr
    assert "Traceback" not in bad.stderr and "sandbox" not in bad.stderr  # only the user's error, no internals
    exited = run("import sys\nprint('bye')\nsys.exit(3)")
    assert exited.returncode == 3 and exited.stdout == "bye\n" and exited.killed_reason is None
    assert run("exit(0)").ok  # site's exit() exists even under -S


def test_rlimits_are_set_in_the_child():
    result = run(
        """
        import resource as r
        for name in ("RLIMIT_CPU", "RLIMIT_AS", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_CORE"):
            print(name, *r.getrlimit(getattr(r, name)))
        """,
        timeout=2.5,
        memory_mb=300,
        disk_mb=10,
    )
    limits = {name: tuple(map(int, rest)) for name, *rest in (line.split() for line in result.stdout.splitlines())}
    assert limits == {
        "RLIMIT_CPU": (4, 5),  # ceil(2.5) + 1 s, SIGKILL one second later
        "RLIMIT_AS": (300 << 20,) * 2,
        "RLIMIT_FSIZE": (10 << 20,) * 2,
        "RLIMIT_NOFILE": (64, 64),
        "RLIMIT_CORE": (0, 0),
    }


def test_work_dir_is_fresh_and_removed_afterwards():
    first = run("import os\nopen('note.txt', 'w').write('x')\nprint(os.getcwd())\nprint(os.listdir('.'))")
    assert first.ok, first.stderr
    workdir = first.stdout.splitlines()[0]
    assert sorted(eval(first.stdout.splitlines()[1])) == ["main.py", "note.txt"]
    assert not os.path.exists(workdir)
    second = run("import os\nprint(os.listdir('.'))")
    assert eval(second.stdout) == ["main.py"]


def test_concurrent_runs_from_threads():
    """The demo may check two replies at once: Popen without preexec_fn is thread-safe."""
    results = [None] * 4

    def work(i):
        results[i] = run_python(f"print({i} * {i})", timeout=10)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.stdout for r in results] == [f"{i * i}\n" for i in range(4)], [r.summary for r in results]


def test_invalid_arguments_are_named():
    with pytest.raises(ValueError, match="timeout"):
        run_python("pass", timeout=0)
    with pytest.raises(ValueError, match="memory_mb"):
        run_python("pass", memory_mb=1)
    with pytest.raises(ValueError, match="relative path"):
        run_python("pass", files={"../escape.py": ""})
    with pytest.raises(ValueError, match="unknown layers"):
        run_python("pass", skip_layers=("seatbelt",))
    with pytest.raises(TypeError, match="str"):
        run_python(b"print(1)")
    assert set(SKIPPABLE_LAYERS) == {"audit", "landlock", "netns", "seccomp", "uid"}


# ---------------------------------------------------------------------------------------------------------------
# Hostile programs
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    ["while True: pass", "import time\ntime.sleep(60)", "while True:\n    try: pass\n    except BaseException: pass"],
)
def test_infinite_loop_is_killed_at_the_deadline(code):
    start = time.monotonic()
    result = run(code, timeout=1.0)
    assert result.timed_out and not result.ok
    assert result.killed_reason == "wall-clock timeout after 1 s"
    assert result.summary.startswith("stopped: wall-clock timeout after 1 s")
    assert time.monotonic() - start < 2.0
    assert_server_alive()


@pytest.mark.parametrize(
    "code", ["x = bytearray(8 * 1024**3)", "chunks = []\nwhile True:\n    chunks.append(bytearray(10**6))"]
)
def test_memory_bomb_gets_memory_error(code):
    result = run(code, memory_mb=128)
    assert not result.ok and not result.timed_out
    assert result.killed_reason == "memory limit (128 MB)"
    assert "MemoryError" in result.stderr
    assert_server_alive()


@pytest.mark.parametrize(
    "code, blocked",
    [
        ("import os\nwhile True:\n    os.fork()", "os.fork"),
        ("import subprocess\nsubprocess.run(['id'])", "subprocess.Popen"),
        ("import os\nos.system('id')", "os.system"),
        ("import os\nos.posix_spawn('/bin/sh', ['sh'], {})", "os.posix_spawn"),
        ("import os\nos.execv('/bin/sh', ['sh', '-c', 'id'])", "os.exec"),
        ("import os\nos.forkpty()", "os.forkpty"),
        ("import multiprocessing\nmultiprocessing.Process(target=print).start()", ""),
    ],
)
def test_fork_bomb_and_process_spawning_are_blocked(code, blocked):
    result = run(code)
    assert not result.ok and not result.timed_out
    assert "PermissionError: sandbox:" in result.stderr
    assert result.blocked and result.blocked[0].startswith(blocked)
    assert "[blocked:" in result.summary
    assert "uid=" not in result.stdout  # `id` never ran
    assert_server_alive()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_fork_bomb_without_the_audit_hook_leaves_no_survivors(sandbox_layers):
    """With the audit hook and seccomp off, os.fork works: RLIMIT_NPROC caps the bomb and the pid namespace (or the
    process group kill) takes every process down with it, even children that called setsid() to leave the group."""
    require_layer(sandbox_layers, "pidns")
    result = run(
        """
        import os, time
        print(os.getcwd(), flush=True)
        for _ in range(3):
            if os.fork() == 0:
                os.setsid()
                time.sleep(60)
                os._exit(0)
        while True:
            try:
                os.fork()
            except OSError:
                time.sleep(0.01)
        """,
        timeout=1.0,
        max_processes=8,
        skip_layers=("audit", "seccomp"),
    )
    assert result.timed_out, result.summary
    workdir = result.stdout.splitlines()[0]
    deadline = time.monotonic() + 3
    while live_processes(workdir) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert live_processes(workdir) == []
    assert_server_alive()


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_output_flood_is_capped_and_stopped(stream):
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = run(f"import sys\nfor _ in range(500):\n    sys.{stream}.write('x' * 1_000_000)", max_output=50_000)
    assert result.truncated and not result.ok
    assert result.killed_reason == "output over 50,000 bytes"
    assert len(getattr(result, stream)) == 50_000
    assert result.duration < 1.5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before < 50_000  # KiB: never buffered 500 MB
    assert_server_alive()


def test_environment_variables_of_the_server_are_invisible(monkeypatch):
    monkeypatch.setenv("QWEN2_LAB_TEST_SECRET", "ENV-SECRET-5e1f")
    result = run(
        f"""
        import os
        print(sorted(os.environ))
        for path in ("/proc/self/environ", "/proc/{os.getpid()}/environ", f"/proc/{{os.getppid()}}/environ", "/proc/1/environ"):
            try:
                print(open(path, "rb").read())
            except OSError as exc:
                print("denied", path, type(exc).__name__)
        """
    )
    assert "ENV-SECRET-5e1f" not in result.stdout + result.stderr
    assert result.stdout.splitlines()[0] == "['HOME', 'LANG', 'PATH', 'TMPDIR']"
    assert result.stdout.count("denied") == 4
    assert_server_alive()


READ_ATTEMPTS = """
import os
for path in {paths!r}:
    try:
        print("LEAK", path, open(path).read())
    except OSError as exc:
        print("denied", path, type(exc).__name__)
for path in {dirs!r}:
    try:
        print("LEAK", path, os.listdir(path))
    except OSError as exc:
        print("denied", path, type(exc).__name__)
"""


@pytest.mark.parametrize("skip", [(), ("audit",), ("landlock",)], ids=["all-layers", "no-audit", "no-landlock"])
def test_files_outside_the_work_dir_cannot_be_read(skip, sandbox_layers, world_readable_dir):
    if "audit" in skip:
        require_layer(sandbox_layers, "landlock-v1")
    repo_file = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pyproject.toml")
    paths = [os.path.join(world_readable_dir, "secret.txt"), repo_file, "/etc/shadow", "/etc/passwd", __file__]
    result = run(READ_ATTEMPTS.format(paths=paths, dirs=[world_readable_dir, "/", "/root", "/home"]), skip_layers=skip)
    output = result.stdout + result.stderr
    assert "LEAK" not in output, output
    assert output.count("denied") == len(paths) + 4
    assert "SECRET-FILE-CONTENT-71c3" not in output and "[build-system]" not in output and "root:" not in output
    if not skip:
        assert "open" in " ".join(result.blocked)
    assert_server_alive()


@pytest.mark.parametrize("skip", [(), ("audit",), ("landlock",)], ids=["all-layers", "no-audit", "no-landlock"])
def test_files_outside_the_work_dir_cannot_be_changed_or_deleted(skip, sandbox_layers, world_readable_dir):
    if "audit" in skip:
        require_layer(sandbox_layers, "landlock-v1")
    secret = os.path.join(world_readable_dir, "secret.txt")
    result = run(
        f"""
        import os, shutil
        attempts = [
            lambda: os.remove({secret!r}),
            lambda: os.rename({secret!r}, "stolen.txt"),
            lambda: open({secret!r}, "w").write("overwritten"),
            lambda: shutil.rmtree({world_readable_dir!r}),
            lambda: os.mkdir({world_readable_dir!r} + "/planted"),
            lambda: os.symlink("/etc/passwd", {world_readable_dir!r} + "/link"),
        ]
        for attempt in attempts:
            try:
                attempt()
                print("DONE")
            except OSError as exc:
                print("denied", type(exc).__name__)
        """,
        skip_layers=skip,
    )
    assert "DONE" not in result.stdout, result.stdout + result.stderr
    assert sorted(os.listdir(world_readable_dir)) == ["secret.txt"]
    with open(secret) as f:
        assert f.read() == "SECRET-FILE-CONTENT-71c3"
    assert_server_alive()


@pytest.fixture
def listening_server():
    """Real servers like the demo's own port: TCP and UDP on 127.0.0.1, and a world-writable UNIX socket file."""
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    folder = tempfile.mkdtemp(prefix="qwen2-lab-test-socket-")
    os.chmod(folder, 0o777)
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(os.path.join(folder, "server.sock"))
    os.chmod(unix.getsockname(), 0o777)
    unix.listen()
    for s in (tcp, udp, unix):
        s.settimeout(0.2)
    yield tcp, udp, unix
    for s in (tcp, udp, unix):
        s.close()
    shutil.rmtree(folder, ignore_errors=True)


NETWORK_ATTEMPTS = """
import socket
attempts = {{
    "tcp-connect": lambda: socket.create_connection(("127.0.0.1", {tcp_port}), timeout=1),
    "tcp-connect-raw": lambda: socket.socket().connect(("127.0.0.1", {tcp_port})),
    "udp-send": lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"hi", ("127.0.0.1", {udp_port})),
    "unix-connect": lambda: socket.socket(socket.AF_UNIX).connect({unix_path!r}),
    "dns": lambda: socket.getaddrinfo("example.com", 80),
    "tcp-bind": lambda: socket.socket().bind(("0.0.0.0", 8765)),
}}
for label, attempt in attempts.items():
    try:
        attempt()
        print(label, "ok")
    except OSError as exc:
        print(label, "denied", type(exc).__name__)
"""

# variant: (layers switched off, layers of which one must be present, attempts that may succeed harmlessly)
NETWORK_VARIANTS = {
    "all-layers": ((), (), set()),
    "no-audit": (("audit",), ("seccomp", "netns", "landlock-v4"), set()),
    "seccomp-only": (("audit", "netns", "landlock"), ("seccomp",), set()),
    "netns-only": (("audit", "landlock", "seccomp"), ("netns",), {"tcp-bind", "unix-connect"}),  # bind: inside
    "landlock-only": (("audit", "netns", "seccomp"), ("landlock-v4",), {"udp-send", "unix-connect"}),  # an empty netns
}


@pytest.mark.parametrize("variant", NETWORK_VARIANTS)
def test_no_network_not_even_the_servers_own_port(variant, sandbox_layers, listening_server):
    """Every variant keeps the server's ports silent; the documented gaps of single layers are the exceptions:
    Landlock alone lets UDP out, and neither Landlock nor the network namespace stops a UNIX socket file."""
    skip, needs, may_succeed = NETWORK_VARIANTS[variant]
    if needs:
        require_layer(sandbox_layers, *needs)
    tcp, udp, unix = listening_server
    ports = dict(tcp_port=tcp.getsockname()[1], udp_port=udp.getsockname()[1], unix_path=unix.getsockname())
    result = run(NETWORK_ATTEMPTS.format(**ports), skip_layers=skip)
    outcome = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()}
    assert set(outcome) == {"tcp-connect", "tcp-connect-raw", "udp-send", "unix-connect", "dns", "tcp-bind"}
    assert {label for label, verdict in outcome.items() if verdict != "denied"} <= may_succeed, result.stdout
    with pytest.raises(socket.timeout):
        tcp.accept()  # the server never sees a connection
    if "udp-send" not in may_succeed:
        with pytest.raises(socket.timeout):
            udp.recvfrom(16)
    if "unix-connect" not in may_succeed:
        with pytest.raises(socket.timeout):
            unix.accept()
    if not skip:
        assert result.blocked and all(b.startswith("socket.") for b in result.blocked)
    assert_server_alive()


@pytest.mark.parametrize(
    "skip, needs",
    [((), ()), (("audit",), ("pidns", "uid", "landlock-v6")), (("audit", "landlock"), ("pidns", "uid"))],
    ids=["all-layers", "no-audit", "no-audit-no-landlock"],
)
def test_killing_the_parent_and_the_server_fails(skip, needs, sandbox_layers):
    if needs:
        require_layer(sandbox_layers, *needs)
    server = os.getpid()
    kill_all = (
        "" if skip and "pidns" not in sandbox_layers else "lambda: os.kill(-1, signal.SIGKILL),"
    )  # only where contained
    result = run(
        f"""
        import os, signal
        for attempt in [
            lambda: os.kill(os.getppid(), signal.SIGKILL),
            lambda: os.kill({server}, signal.SIGKILL),
            lambda: os.killpg({os.getpgid(server)}, signal.SIGKILL),
            lambda: os.kill({server}, signal.SIGSTOP),
            {kill_all}
        ]:
            try:
                attempt()
                print("sent")
            except OSError as exc:
                print("denied", type(exc).__name__)
        print("program still running")
        """,
        skip_layers=skip,
    )
    os.kill(server, 0)  # we are alive (had SIGKILL arrived, pytest would be gone)
    assert "program still running" in result.stdout
    assert result.stdout.count("denied") >= 3, result.stdout
    if not skip:
        assert all(b.startswith("os.kill") for b in result.blocked)
    assert_server_alive()


def test_huge_file_and_disk_filling_are_bounded(sandbox_layers):
    result = run(
        """
        import os
        print(os.getcwd(), flush=True)
        with open("huge.bin", "wb") as f:
            while True:
                f.write(b"x" * 1_000_000)
        """,
        disk_mb=8,
    )
    assert not result.ok and not result.timed_out
    assert "File too large" in result.stderr or "No space left on device" in result.stderr
    assert not os.path.exists(result.stdout.splitlines()[0])
    if "tmpfs" in sandbox_layers:  # many files each below the size limit: only the tmpfs bounds the total
        many = run("i = 0\nwhile True:\n    open(f'part{i}', 'wb').write(b'x' * 1_000_000)\n    i += 1", disk_mb=8)
        assert "No space left on device" in many.stderr and not many.timed_out
    assert_server_alive()


def test_escape_routes_of_the_audit_hook_are_closed():
    result = run(
        """
        import sys, asyncio, subprocess  # importable; starting a process is not
        import _posixsubprocess
        try:
            _posixsubprocess.fork_exec(*[None] * 23)
            print("IMPORTED fork_exec ran")
        except PermissionError as exc:
            print("denied fork_exec", exc)
        del sys.modules["_posixsubprocess"]
        for name in ("ctypes", "_ctypes", "_posixsubprocess", "_xxsubinterpreters", "_testcapi"):
            try:
                __import__(name)
                print("IMPORTED", name)
            except (PermissionError, ImportError) as exc:
                print("denied", name)
        print("loaded:", [m for m in ("ctypes", "_ctypes", "_posixsubprocess", "subprocess") if m in sys.modules])
        import gc
        try:
            gc.get_objects()
            print("IMPORTED gc.get_objects")
        except PermissionError:
            print("denied gc")
        """
    )
    assert "IMPORTED" not in result.stdout, result.stdout + result.stderr
    assert "denied fork_exec sandbox: starting processes is not allowed here" in result.stdout
    assert "loaded: ['subprocess']" in result.stdout


def test_nothing_can_be_executed_even_without_the_audit_hook(sandbox_layers):
    require_layer(sandbox_layers, "landlock-v1")
    result = run("import os\nos.execv('/bin/sh', ['sh', '-c', 'echo EXECUTED'])", skip_layers=("audit",))
    assert "EXECUTED" not in result.stdout and "PermissionError" in result.stderr
