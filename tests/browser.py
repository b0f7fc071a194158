"""Headless Chromium (Debian's `chromium`) for tests, driven over its DevTools protocol.

The browser presents a client certificate the way a person's would: the certificate and
key (PKCS#12) and the cluster CA go into an NSS database in the browser's own $HOME
(`~/.pki/nssdb`, where Chromium on Linux looks; `pk12util`/`certutil` from libnss3-tools),
and the profile's preferences name the page's origin under `auto_select_certificate`, so
the browser sends that certificate without asking (headless Chromium has nobody to ask: a
site that requests a certificate otherwise never loads). Nothing outside the test's own
directory is touched: no system policy, no --ignore-certificate-errors.

The protocol is spoken with aiohttp's websocket client, one short connection per command:
each call is synchronous and the browser keeps its pages between calls.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
from cryptography import x509
from cryptography.x509.oid import NameOID

from picluster_agent.etcd.localcluster import wait_for

CHROMIUM = "chromium"


def chromium_missing() -> str | None:
    """Why the browser test cannot run here, or None."""
    for tool in (CHROMIUM, "pk12util", "certutil", "openssl"):
        if shutil.which(tool) is None:
            return f"{tool} not found: run scripts/bootstrap test (apt: chromium, libnss3-tools)"
    return None


def nss_database(home: Path, *, cacert: str, cert: str, key: str, name: str) -> None:
    """`home/.pki/nssdb` trusting `cacert`, holding `cert` and `key` as `name`."""
    db = home / ".pki" / "nssdb"
    db.mkdir(parents=True, exist_ok=True)
    p12 = home / f"{name}.p12"
    run = lambda *a: subprocess.run(a, check=True, capture_output=True, timeout=60)  # noqa: E731
    run("openssl", "pkcs12", "-export", "-in", cert, "-inkey", key, "-out", str(p12),
        "-passout", "pass:", "-name", name)  # fmt: skip
    run("certutil", "-N", "-d", f"sql:{db}", "--empty-password")
    run("pk12util", "-i", str(p12), "-d", f"sql:{db}", "-W", "")
    run("certutil", "-A", "-d", f"sql:{db}", "-n", "cluster CA", "-t", "C,,", "-i", cacert)


def common_name(pem_file: str) -> str:
    cert = x509.load_pem_x509_certificate(Path(pem_file).read_bytes())
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def auto_select_preferences(profile: Path, origins: list[str], issuer_cn: str) -> None:
    """A profile that sends the certificate issued by `issuer_cn` to `origins` unasked."""
    rules = {
        f"{origin},*": {"setting": {"filters": [{"ISSUER": {"CN": issuer_cn}}]}}
        for origin in origins
    }
    prefs = {"profile": {"content_settings": {"exceptions": {"auto_select_certificate": rules}}}}
    (profile / "Default").mkdir(parents=True, exist_ok=True)
    (profile / "Default" / "Preferences").write_text(json.dumps(prefs))


class Chromium:
    def __init__(self, workdir: Path, *, width: int = 1280, height: int = 1000) -> None:
        self.dir = workdir
        self.home = workdir / "home"
        self.profile = workdir / "profile"
        self.size = (width, height)
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def trust(self, *, cacert: str, cert: str, key: str, origins: list[str]) -> None:
        """Trust `cacert` and send `cert` (issued by it) to `origins` without asking."""
        nss_database(self.home, cacert=cacert, cert=cert, key=key, name="picluster reader")
        auto_select_preferences(self.profile, origins, common_name(cacert))

    def start(self) -> Chromium:
        self.profile.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "HOME": str(self.home)}
        log = open(self.dir / "chromium.log", "ab")  # noqa: SIM115 (owned by the child)
        self.proc = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",  # root in CI; the pages are our own, on loopback
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-port=0",  # a free port, written to DevToolsActivePort
                f"--user-data-dir={self.profile}",
                f"--window-size={self.size[0]},{self.size[1]}",
                "about:blank",
            ],
            env=env,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        port_file = self.profile / "DevToolsActivePort"
        wait_for(lambda: port_file.exists() and port_file.read_text().strip(), 30,
                 what="Chromium's DevTools port")  # fmt: skip
        self.port = int(port_file.read_text().split()[0])
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, 9)  # its own session: the renderers and the zygote too
            self.proc.wait(10)

    def log_text(self) -> str:
        with contextlib.suppress(FileNotFoundError):
            return (self.dir / "chromium.log").read_text(errors="replace")
        return ""

    # ---------------------------------------------------------------- pages

    def open(self, url: str) -> Page:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/json/new?{url}", method="PUT"
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            target = json.load(reply)
        return Page(target["webSocketDebuggerUrl"], self.size)


class Page:
    def __init__(self, ws_url: str, size: tuple[int, int]) -> None:
        self.ws_url = ws_url
        self.size = size

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        return asyncio.run(self._call(method, params))

    async def _call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(
                self.ws_url, max_msg_size=0, timeout=aiohttp.ClientWSTimeout(ws_close=30)
            ) as ws,
        ):
            await ws.send_json({"id": 1, "method": method, "params": params})
            async for message in ws:
                reply = json.loads(message.data)
                if reply.get("id") != 1:
                    continue  # an event
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]  # type: ignore[no-any-return]
        raise RuntimeError(f"{method}: the browser closed the connection")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-able values)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def wait(self, expression: str, timeout: float, what: str) -> None:
        """Poll `expression` until it is truthy (in JavaScript's sense: an element is)."""
        wait_for(lambda: self.evaluate(f"!!({expression})"), timeout, interval=0.1, what=what)

    def screenshot(self, path: Path) -> None:
        """The whole page, as tall as its content, as PNG."""
        height = int(self.evaluate("document.documentElement.scrollHeight"))
        clip = {"x": 0, "y": 0, "width": self.size[0], "height": height, "scale": 1}
        data = self.call(
            "Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True
        )["data"]
        path.write_bytes(base64.b64decode(data))
