#!/usr/bin/env python3
"""crashfs: an in-memory FUSE filesystem that simulates power loss, for fleetgate's crash tests.

Everything the process writes is kept twice: as it is now, and as it would be after a power cut.
Only fsync moves data into the second copy, with the strictest POSIX reading (the spirit of ALICE
and SQLite's crash VFS):
  - fsync/fdatasync of a file makes its *content* durable, not its name;
  - fsync of a directory makes its *entries* durable (creates, renames, unlinks, mkdirs in it);
  - a file whose name is durable but whose content never was comes back empty.

Control, one command per line on the TCP port printed at start ("port N"):
  arm K      freeze durability after K more mutating operations (write, truncate, create, mkdir,
             rename, unlink, link, fsync, fsyncdir)
  arm-after PATTERN K
             the same, counting from the next operation whose description contains PATTERN
             (e.g. "samples/" for a sample file being written, "create /data/wal/" for a WAL
             rotation): K = 1, 2, ... walks the cut through that sequence op by op
  cut        freeze now
  status     "frozen OPS" or "running OPS"
  recent     the operations just before the freeze, one per line, then "end"
  restore    replace the live tree with the durable one (the power came back) and unfreeze
After the freeze every fsync fails with EIO and nothing more becomes durable, so nothing the
process acknowledges after the cut can depend on it.

Usage: crashfs.py MOUNTPOINT   (needs /dev/fuse, root, and fusepy)
"""

import errno
import os
import socket
import stat
import sys
import threading
import time
from collections import deque

from fuse import FUSE, FuseOSError, Operations

LOCK = threading.Lock()


class Node:
    __slots__ = ("ino", "is_dir", "data", "ddata", "entries", "dentries", "mtime")

    def __init__(self, ino, is_dir):
        self.ino = ino
        self.is_dir = is_dir
        self.data = bytearray()
        self.ddata = b""
        self.entries = {}
        self.dentries = {}
        self.mtime = time.time()


def locked(f):
    def g(*a, **k):
        with LOCK:
            return f(*a, **k)

    return g


class CrashFS(Operations):
    def __init__(self):
        self.next_ino = 1
        self.root = self.new(True)
        self.fhs = {}
        self.next_fh = 1
        self.ops = 0
        self.arm = None
        self.pattern = None
        self.frozen = False
        self.recent = deque(maxlen=64)

    def new(self, is_dir):
        n = Node(self.next_ino, is_dir)
        self.next_ino += 1
        return n

    # -- helpers -----------------------------------------------------------------------------
    def lookup(self, path):
        n = self.root
        for part in [p for p in path.split("/") if p]:
            if not n.is_dir or part not in n.entries:
                raise FuseOSError(errno.ENOENT)
            n = n.entries[part]
        return n

    def parent(self, path):
        head, _, name = path.rstrip("/").rpartition("/")
        p = self.lookup(head or "/")
        if not p.is_dir:
            raise FuseOSError(errno.ENOTDIR)
        return p, name

    def node(self, path, fh):
        if fh and fh in self.fhs:
            return self.fhs[fh]
        return self.lookup(path)

    def mutate(self, what):
        self.ops += 1
        if not self.frozen:
            self.recent.append(what)
            if self.pattern is not None:
                if self.pattern not in what:
                    return
                self.pattern = None
            if self.arm is not None:
                self.arm -= 1
                if self.arm <= 0:
                    self.frozen = True
                    self.arm = None

    # -- control -----------------------------------------------------------------------------
    def control(self, line):
        with LOCK:
            cmd, _, arg = line.strip().partition(" ")
            if cmd == "arm":
                self.arm = max(1, int(arg))
                return "ok"
            if cmd == "arm-after":
                pattern, _, k = arg.rpartition(" ")
                self.pattern = pattern
                self.arm = max(1, int(k))
                return "ok"
            if cmd == "cut":
                self.frozen = True
                return "ok"
            if cmd == "status":
                return ("frozen " if self.frozen else "running ") + str(self.ops)
            if cmd == "recent":
                return "\n".join(list(self.recent) + ["end"])
            if cmd == "restore":
                files, size = self.restore(self.root, set())
                self.frozen = False
                self.arm = None
                self.pattern = None
                self.recent.clear()
                self.fhs.clear()
                return "restored files=%d bytes=%d" % (files, size)
            return "unknown command"

    def restore(self, n, seen):
        if n.ino in seen:
            return 0, 0
        seen.add(n.ino)
        if not n.is_dir:
            n.data = bytearray(n.ddata)
            return 1, len(n.ddata)
        n.entries = dict(n.dentries)
        files = size = 0
        for c in n.entries.values():
            f, s = self.restore(c, seen)
            files += f
            size += s
        return files, size

    # -- FUSE operations ---------------------------------------------------------------------
    @locked
    def getattr(self, path, fh=None):
        n = self.node(path, fh)
        now = n.mtime
        if n.is_dir:
            return dict(st_mode=stat.S_IFDIR | 0o755, st_nlink=2, st_size=4096,
                        st_ctime=now, st_mtime=now, st_atime=now)
        return dict(st_mode=stat.S_IFREG | 0o644, st_nlink=1, st_size=len(n.data),
                    st_ctime=now, st_mtime=now, st_atime=now)

    @locked
    def readdir(self, path, fh):
        return [".", ".."] + list(self.lookup(path).entries)

    @locked
    def mkdir(self, path, mode):
        p, name = self.parent(path)
        if name in p.entries:
            raise FuseOSError(errno.EEXIST)
        p.entries[name] = self.new(True)
        self.mutate("mkdir " + path)

    @locked
    def rmdir(self, path):
        p, name = self.parent(path)
        n = p.entries.get(name)
        if n is None:
            raise FuseOSError(errno.ENOENT)
        if n.entries:
            raise FuseOSError(errno.ENOTEMPTY)
        del p.entries[name]
        self.mutate("rmdir " + path)

    def _open(self, n):
        fh = self.next_fh
        self.next_fh += 1
        self.fhs[fh] = n
        return fh

    @locked
    def create(self, path, mode, fi=None):
        p, name = self.parent(path)
        n = p.entries.get(name)
        if n is None:
            n = self.new(False)
            p.entries[name] = n
        else:
            n.data = bytearray()
        self.mutate("create " + path)
        return self._open(n)

    @locked
    def open(self, path, flags):
        n = self.lookup(path)
        if flags & os.O_TRUNC:
            n.data = bytearray()
            self.mutate("truncate " + path)
        return self._open(n)

    @locked
    def opendir(self, path):
        return self._open(self.lookup(path))

    @locked
    def release(self, path, fh):
        self.fhs.pop(fh, None)

    @locked
    def releasedir(self, path, fh):
        self.fhs.pop(fh, None)

    @locked
    def read(self, path, size, offset, fh):
        return bytes(self.node(path, fh).data[offset:offset + size])

    @locked
    def write(self, path, data, offset, fh):
        n = self.node(path, fh)
        if len(n.data) < offset:
            n.data.extend(b"\0" * (offset - len(n.data)))
        n.data[offset:offset + len(data)] = data
        n.mtime = time.time()
        self.mutate("write %s @%d +%d" % (path, offset, len(data)))
        return len(data)

    @locked
    def truncate(self, path, length, fh=None):
        n = self.node(path, fh)
        if length < len(n.data):
            del n.data[length:]
        else:
            n.data.extend(b"\0" * (length - len(n.data)))
        self.mutate("truncate %s %d" % (path, length))

    @locked
    def fsync(self, path, datasync, fh):
        n = self.node(path, fh)
        self.mutate("fsync " + path)
        if self.frozen:
            raise FuseOSError(errno.EIO)
        if n.is_dir:
            n.dentries = dict(n.entries)
        else:
            n.ddata = bytes(n.data)

    @locked
    def fsyncdir(self, path, datasync, fh):
        n = self.node(path, fh)
        self.mutate("fsyncdir " + path)
        if self.frozen:
            raise FuseOSError(errno.EIO)
        n.dentries = dict(n.entries)

    @locked
    def flush(self, path, fh):
        return 0

    @locked
    def unlink(self, path):
        p, name = self.parent(path)
        if name not in p.entries:
            raise FuseOSError(errno.ENOENT)
        del p.entries[name]
        self.mutate("unlink " + path)

    @locked
    def rename(self, old, new):
        op, oname = self.parent(old)
        np, nname = self.parent(new)
        n = op.entries.get(oname)
        if n is None:
            raise FuseOSError(errno.ENOENT)
        target = np.entries.get(nname)
        if target is not None and target.is_dir and target.entries:
            raise FuseOSError(errno.ENOTEMPTY)
        del op.entries[oname]
        np.entries[nname] = n
        self.mutate("rename %s %s" % (old, new))

    @locked
    def link(self, target, source):
        n = self.lookup(source)
        p, name = self.parent(target)
        if name in p.entries:
            raise FuseOSError(errno.EEXIST)
        p.entries[name] = n
        self.mutate("link %s %s" % (source, target))

    def chmod(self, path, mode):
        return 0

    def chown(self, path, uid, gid):
        return 0

    def utimens(self, path, times=None):
        return 0

    def statfs(self, path):
        return dict(f_bsize=4096, f_frsize=4096, f_blocks=1 << 22, f_bfree=1 << 21,
                    f_bavail=1 << 21, f_files=1 << 20, f_ffree=1 << 19, f_namemax=255)


def serve_control(fs, srv):
    while True:
        conn, _ = srv.accept()
        with conn, conn.makefile("rw") as f:
            for line in f:
                f.write(fs.control(line) + "\n")
                f.flush()


def main():
    mountpoint = sys.argv[1]
    fs = CrashFS()
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    threading.Thread(target=serve_control, args=(fs, srv), daemon=True).start()
    print("port %d" % srv.getsockname()[1], flush=True)
    FUSE(fs, mountpoint, foreground=True, nothreads=True, hard_remove=True, direct_io=True,
         attr_timeout=0, entry_timeout=0, negative_timeout=0, fsname="crashfs")


if __name__ == "__main__":
    main()
