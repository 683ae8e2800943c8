"""A sandbox's view of the data directory and the access handed to the replicas' user: the
arguments bwrap gets and the modes on disk (the sandbox itself: test_data_isolation.py)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ember.backends.sandbox import View, grant


def test_the_view_hides_the_data_directory_and_binds_back_only_what_was_given() -> None:
    home = Path("/srv/ember")
    view = View(
        hidden=(home,),
        read=(home / "apps/a/v1",),
        write=((home / "volumes/v", home / "volumes/v"),),
        links=(("/proc/self/fd/1000/abc", home / "mnt/data"),),
    )
    args = view.arguments()
    assert args[:2] == ["--tmpfs", str(home)]
    made = [args[i + 1] for i, arg in enumerate(args) if arg == "--dir"]
    assert made == [f"{home}/apps", f"{home}/apps/a", f"{home}/mnt", f"{home}/volumes"]
    assert all(args[i - 2 : i] == ["--perms", "0755"] for i, a in enumerate(args) if a == "--dir")
    assert ["--ro-bind", f"{home}/apps/a/v1", f"{home}/apps/a/v1"] == args[-9:-6]
    assert ["--bind", f"{home}/volumes/v", f"{home}/volumes/v"] == args[-6:-3]
    assert ["--symlink", "/proc/self/fd/1000/abc", f"{home}/mnt/data"] == args[-3:]


def test_a_writable_tree_passes_access_on_to_files_made_in_it_later(tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    (volume / "snapshots").mkdir(parents=True)
    (volume / "HEAD").write_text("s1")
    os.chmod(volume / "HEAD", 0o600)
    gid = os.getgid()
    grant(volume, gid, write=True)
    assert stat.S_IMODE((volume / "HEAD").stat().st_mode) & 0o060 == 0o060
    assert stat.S_IMODE((volume / "snapshots").stat().st_mode) & 0o070 == 0o070
    old = os.umask(0o077)
    try:
        (volume / "snapshots" / "later").write_text("written by the server after the start")
    finally:
        os.umask(old)
    # Needs ACL support on tmp_path's filesystem (ext4, xfs, tmpfs with POSIX ACLs).
    assert stat.S_IMODE((volume / "snapshots" / "later").stat().st_mode) & 0o060 == 0o060


def test_a_read_only_tree_is_readable_not_writable(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir(mode=0o700)
    (source / "app.py").write_text("x = 1\n")
    os.chmod(source / "app.py", 0o600)
    grant(source, os.getgid(), write=False)
    assert stat.S_IMODE((source / "app.py").stat().st_mode) == 0o640
    assert stat.S_IMODE(source.stat().st_mode) == 0o750
