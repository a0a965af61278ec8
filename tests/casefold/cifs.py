#!/usr/bin/env python3
"""A pass-through file system that ignores case and keeps it, as macOS and
Windows folders do by default, for testing the sync client on Linux.

Usage: cifs.py BACKING MOUNTPOINT   (runs in the foreground until unmounted)

Every name is looked up ignoring case (and Unicode normalization, as APFS
does): `X` finds an existing `x`, creating `X` opens `x`, and renaming onto
another spelling of an existing name replaces it, except that a rename that
changes only case renames the file itself.
"""
import errno
import os
import sys
import unicodedata

from fuse import FUSE, FuseOSError, Operations


def fold(name):
    return unicodedata.normalize("NFC", name).casefold()


class CaseInsensitive(Operations):
    def __init__(self, root):
        self.root = os.path.realpath(root)

    def _resolve(self, path):
        real = self.root
        for part in [p for p in path.split("/") if p]:
            cand = os.path.join(real, part)
            if not os.path.lexists(cand) and os.path.isdir(real):
                want = fold(part)
                match = next((n for n in sorted(os.listdir(real)) if fold(n) == want), None)
                if match is not None:
                    cand = os.path.join(real, match)
            real = cand
        return real

    def _call(self, fn, *args):
        try:
            return fn(*args)
        except OSError as e:
            raise FuseOSError(e.errno or errno.EIO)

    # --- metadata ---
    def getattr(self, path, fh=None):
        st = self._call(os.lstat, self._resolve(path))
        keys = ("st_mode", "st_ino", "st_nlink", "st_uid", "st_gid", "st_size",
                "st_atime", "st_mtime", "st_ctime")
        out = {k: getattr(st, k) for k in keys}
        # fusepy takes float seconds; keep what precision they can hold.
        out.update(st_atime=st.st_atime_ns / 1e9, st_mtime=st.st_mtime_ns / 1e9,
                   st_ctime=st.st_ctime_ns / 1e9)
        return out

    def access(self, path, mode):
        if not os.access(self._resolve(path), mode):
            raise FuseOSError(errno.EACCES)

    def chmod(self, path, mode):
        return self._call(os.chmod, self._resolve(path), mode)

    def chown(self, path, uid, gid):
        return self._call(os.chown, self._resolve(path), uid, gid)

    def utimens(self, path, times=None):
        return self._call(os.utime, self._resolve(path), times)

    def readdir(self, path, fh):
        return [".", ".."] + self._call(os.listdir, self._resolve(path))

    def readlink(self, path):
        return self._call(os.readlink, self._resolve(path))

    def statfs(self, path):
        sv = self._call(os.statvfs, self._resolve(path))
        keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree",
                "f_files", "f_flag", "f_frsize", "f_namemax")
        return {k: getattr(sv, k) for k in keys}

    # --- names ---
    def mkdir(self, path, mode):
        return self._call(os.mkdir, self._resolve(path), mode)

    def rmdir(self, path):
        return self._call(os.rmdir, self._resolve(path))

    def unlink(self, path):
        return self._call(os.unlink, self._resolve(path))

    def symlink(self, target, source):
        return self._call(os.symlink, source, self._resolve(target))

    def rename(self, old, new):
        src = self._resolve(old)
        dst = self._resolve(new)
        if os.path.lexists(dst) and os.path.samefile(src, dst):
            # Only the case changes: the file takes the new spelling.
            dst = os.path.join(os.path.dirname(dst), os.path.basename(new))
        return self._call(os.rename, src, dst)

    # --- contents ---
    def open(self, path, flags):
        return self._call(os.open, self._resolve(path), flags)

    def create(self, path, mode, fi=None):
        # Read and write: the kernel reads through this handle too (mmap).
        return self._call(os.open, self._resolve(path), os.O_RDWR | os.O_CREAT, mode)

    def read(self, path, size, offset, fh):
        return self._call(os.pread, fh, size, offset)

    def write(self, path, data, offset, fh):
        return self._call(os.pwrite, fh, data, offset)

    def truncate(self, path, length, fh=None):
        if fh is not None:
            return self._call(os.ftruncate, fh, length)
        return self._call(os.truncate, self._resolve(path), length)

    def flush(self, path, fh):
        return 0

    def release(self, path, fh):
        return self._call(os.close, fh)

    def fsync(self, path, datasync, fh):
        return self._call(os.fdatasync if datasync else os.fsync, fh)

    def fsyncdir(self, path, datasync, fh):
        return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    FUSE(CaseInsensitive(sys.argv[1]), sys.argv[2], foreground=True, nothreads=True,
         use_ino=True, entry_timeout=0, attr_timeout=0, negative_timeout=0)
