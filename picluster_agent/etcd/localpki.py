"""A throwaway CA for local clusters (the demo, the tests, the benchmarks), made with the
`openssl` command so that no Python crypto library is needed: server certificates for the
agents' HTTPS APIs on loopback and client certificates whose CN names an etcd user.

On real nodes the playbooks make these (roles/etcd, roles/picluster_agent); nothing here
is meant for them.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

DAYS = 30


@dataclass(frozen=True)
class CertFiles:
    cert: str
    key: str


class LocalPKI:
    """A CA in `directory` (ca.crt, ca.key); `issue(cn)` writes <cn>.crt and <cn>.key."""

    def __init__(self, directory: Path, name: str = "picluster local CA") -> None:
        if shutil.which("openssl") is None:
            raise ConfigError("the openssl command is needed for a local cluster's certificates")
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        self.cacert = str(self.dir / "ca.crt")
        self._cakey = str(self.dir / "ca.key")
        self._lock = threading.Lock()
        if not Path(self.cacert).exists():
            _openssl(
                "req", "-x509", *_NEW_KEY, "-nodes", "-days", str(DAYS),
                "-keyout", self._cakey, "-out", self.cacert, "-subj", f"/CN={name}",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            )  # fmt: skip

    def issue(self, cn: str, *, server: bool = False) -> CertFiles:
        """A certificate for `cn` (client; with `server`, also for localhost/127.0.0.1)."""
        files = CertFiles(str(self.dir / f"{cn}.crt"), str(self.dir / f"{cn}.key"))
        with self._lock:
            if Path(files.cert).exists():
                return files
            csr = self.dir / f"{cn}.csr"
            ext = self.dir / f"{cn}.ext"
            usage = "serverAuth,clientAuth" if server else "clientAuth"
            lines = [f"extendedKeyUsage={usage}"]
            if server:
                lines.append("subjectAltName=DNS:localhost,IP:127.0.0.1")
            ext.write_text("\n".join(lines) + "\n")
            _openssl(
                "req", *_NEW_KEY, "-nodes", "-keyout", files.key, "-out", str(csr),
                "-subj", f"/CN={cn}",
            )  # fmt: skip
            _openssl(
                "x509", "-req", "-in", str(csr), "-CA", self.cacert, "-CAkey", self._cakey,
                "-set_serial", f"0x{secrets.token_hex(16)}", "-days", str(DAYS),
                "-out", files.cert, "-extfile", str(ext),
            )  # fmt: skip
            Path(files.key).chmod(0o600)
            csr.unlink()
            ext.unlink()
        return files


_NEW_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        detail = " ".join(result.stderr.split())[:300]
        raise ConfigError(f"openssl {args[0]} failed: {detail}")
