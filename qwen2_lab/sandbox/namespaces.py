"""Namespaces and mounts: unshare pid, network, IPC and mount namespaces (or a user namespace when not root), then
make the stdlib reachable for the run's uid and put the work dir on a tmpfs of `disk_mb`."""

from __future__ import annotations

import errno
import os
import stat
import sys

from .common import libc, write_files

_CLONE_NEWNS, _CLONE_NEWIPC, _CLONE_NEWUSER = 0x00020000, 0x08000000, 0x10000000
_CLONE_NEWPID, _CLONE_NEWNET = 0x20000000, 0x40000000
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_BIND, _MS_MOVE, _MS_REC, _MS_PRIVATE = 2, 4, 8, 4096, 8192, 16384, 1 << 18


def enter_namespaces(skip: list[str]) -> set[str]:
    """unshare() what the kernel allows: as root pid+net+ipc+mount; otherwise a user namespace first, then
    pid+net+ipc. The IPC namespace keeps the host's System V shared memory and queues out of reach."""
    if not sys.platform.startswith("linux"):
        return set()
    c = libc()
    wanted = {"pidns": _CLONE_NEWPID, "netns": _CLONE_NEWNET, "ipcns": _CLONE_NEWIPC}
    if "netns" in skip:
        del wanted["netns"]
    if os.geteuid() == 0:
        wanted["mountns"] = _CLONE_NEWNS
    elif c.unshare(_CLONE_NEWUSER) == 0:
        wanted["userns"] = 0  # entered already; gives the capabilities the other unshares need
    else:
        return set()
    if c.unshare(sum(wanted.values())) == 0:
        return set(wanted)
    return {name for name, flag in wanted.items() if flag == 0 or c.unshare(flag) == 0}


def _mount(source, target, fstype, flags, data=None) -> None:
    """mount(2) through libc, raising OSError with the kernel's reason."""
    enc = lambda s: None if s is None else os.fsencode(s)  # noqa: E731
    if libc().mount(enc(source), enc(target), enc(fstype), flags, enc(data)) != 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def private_mounts(workdir: str, read_roots: list[str], disk_mb: int, uid: int) -> bool:
    """In the new mount namespace: stdlib reachable for the run's uid, work dir on a tmpfs. False if the kernel refuses.

    Best effort: a container may grant the namespace but refuse mounts; the other layers then still apply (and
    if the stdlib sits under a directory the run's uid cannot enter, only modules imported already can be used).
    """
    try:
        _mount(None, "/", None, _MS_REC | _MS_PRIVATE)  # nothing below leaks back to the server's mount table
        _expose_to_others(read_roots, stage=workdir)
        _workdir_tmpfs(workdir, disk_mb, uid)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EACCES, errno.EINVAL, errno.ENOSYS):
            raise
        return False
    return True


def _hidden_ancestor(path: str) -> str | None:
    """The first directory on `path` that 'others' cannot enter (no o+x), e.g. /root for a pyenv python."""
    current = "/"
    for part in path.strip("/").split("/"):
        current = os.path.join(current, part)
        if not os.stat(current).st_mode & stat.S_IXOTH:
            return current
    return None


def _expose_to_others(roots: list[str], stage: str) -> None:
    """Make each read root reachable by any user: cover its hidden ancestor with a tmpfs holding only the root.

    The root is bind-mounted to a staging dir first (while still reachable), the ancestor is covered, the path is
    recreated inside the tmpfs, and the bind is moved into place. Everything else under the ancestor disappears.
    """
    covers: dict[str, list[str]] = {}
    for root in roots:
        if (hidden := _hidden_ancestor(root)) and hidden != root:
            covers.setdefault(hidden, []).append(root)
    for hidden, under in covers.items():
        staged = []
        for i, root in enumerate(under):
            os.mkdir(mount_point := os.path.join(stage, f".stdlib-{i}"))
            _mount(root, mount_point, None, _MS_BIND | _MS_REC)
            staged.append((mount_point, root))
        _mount("tmpfs", hidden, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=755,size=64k")
        for mount_point, root in staged:
            os.makedirs(root, exist_ok=True)
            _mount(mount_point, root, None, _MS_MOVE)
            os.rmdir(mount_point)


def _workdir_tmpfs(workdir: str, disk_mb: int, uid: int) -> None:
    """Replace the work dir by a tmpfs of `disk_mb` owned by `uid`, carrying over the files the server wrote."""
    saved = []
    for dirpath, _, filenames in os.walk(workdir):
        for name in filenames:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                saved.append((os.path.relpath(path, workdir), f.read()))
    options = f"size={disk_mb}m,nr_inodes=4096,mode=700,uid={uid},gid={uid}"
    _mount("tmpfs", workdir, "tmpfs", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, options)
    write_files(workdir, dict(saved))
    chown_tree(workdir, uid)


def chown_tree(top: str, uid: int) -> None:
    """Give the work dir and everything in it to `uid`."""
    for dirpath, dirnames, filenames in os.walk(top):
        for path in [dirpath] + [os.path.join(dirpath, n) for n in dirnames + filenames]:
            os.chown(path, uid, uid)
