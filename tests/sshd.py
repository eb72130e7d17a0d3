"""A real OpenSSH server on 127.0.0.1 with its own host key, for the remote-device tests (the
`server` fixture in conftest.py skips a test where OpenSSH is not installed)."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from edge_distill.targets.remote import RemoteTarget

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)
INSTALLED = SSHD is not None and shutil.which("ssh") is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


class SshServer:
    """sshd -D on a free loopback port with its own host key and one authorized client key."""

    def __init__(self, root: Path):
        self.root, self.port = root, free_port()
        keygen(root / "host_key")
        keygen(root / "client_key")
        (root / "authorized_keys").write_text((root / "client_key.pub").read_text())
        (root / "sshd_config").write_text(
            f"ListenAddress 127.0.0.1\nPort {self.port}\nHostKey {root / 'host_key'}\n"
            f"AuthorizedKeysFile {root / 'authorized_keys'}\nUsePAM no\nPasswordAuthentication no\n"
            f"StrictModes no\nPidFile {root / 'sshd.pid'}\n"
        )
        host_key = " ".join((root / "host_key.pub").read_text().split()[:2])
        self.trust(host_key)
        (root / "ssh_config").write_text(
            f"Host device\n  HostName 127.0.0.1\n  Port {self.port}\n  User {os.environ.get('USER', 'root')}\n"
            f"  IdentityFile {root / 'client_key'}\n  IdentitiesOnly yes\n  UserKnownHostsFile {root / 'known_hosts'}\n"
        )
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege-separation folder; Debian's package lacks it here
        self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(root / "sshd_config")], start_new_session=True,
                                        stderr=open(root / "sshd.log", "w"))
        deadline = time.time() + 10
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.02)
        raise RuntimeError((root / "sshd.log").read_text())

    def trust(self, host_key: str) -> None:
        (self.root / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {host_key}\n")

    def target(self, **kwargs) -> RemoteTarget:
        return RemoteTarget("device", self.root / "ssh_config", kwargs.pop("python", sys.executable), **kwargs)

    def stop(self) -> None:
        """End the server and every session it serves, as a power cut would: sshd starts each
        session in a new process session, so they are found as its descendants."""
        for pid in [*descendants(self.process.pid), self.process.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait()


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found
