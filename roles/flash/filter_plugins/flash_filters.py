"""Filters for the flash role: pure functions, unit-tested in tests/flash/test_filters.py.

Each filter either returns a value or raises AnsibleFilterError with a message a person can
act on; the role turns those into one-line refusals.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re

try:  # the filters are also imported by the unit tests without Ansible's plugin loader
    from ansible.errors import AnsibleFilterError
except ImportError:  # pragma: no cover
    AnsibleFilterError = ValueError  # type: ignore[misc,assignment]

HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")

# Kernel command line arguments that belong to a first-boot script. Removed before ours is
# appended, so that re-running never stacks them and an Imager-customised card is taken over.
FIRSTRUN_ARGS = ("systemd.run=", "systemd.run_success_action=", "systemd.unit=")


def wpa_psk(passphrase: str, ssid: str) -> str:
    """The 256-bit WPA-PSK (64 hex digits) for a passphrase, as `wpa_passphrase` derives it.

    IEEE 802.11i: PBKDF2-HMAC-SHA1(passphrase, ssid, 4096 rounds, 32 bytes). A value that
    already is 64 hex digits is taken as the PSK itself.
    """
    passphrase = str(passphrase)
    ssid = str(ssid)
    if HEX64.match(passphrase):
        return passphrase.lower()
    if not ssid or len(ssid.encode()) > 32:
        raise AnsibleFilterError(f"Wi-Fi SSID must be 1 to 32 bytes, got {len(ssid.encode())}")
    if not 8 <= len(passphrase) <= 63 or not passphrase.isascii():
        raise AnsibleFilterError(
            "Wi-Fi passphrase must be 8 to 63 printable ASCII characters (or a 64-hex-digit PSK)"
        )
    key = hashlib.pbkdf2_hmac("sha1", passphrase.encode(), ssid.encode(), 4096, 32)
    return key.hex()


def sha256_from_text(text: str, filename: str = "") -> str:
    """The sha256 for `filename` from the text of a `.sha256` or `SHA256SUMS` file, or a value.

    Accepts `HEX`, `HEX  NAME`, `HEX *NAME` (binary mode) and BSD style `SHA256 (NAME) = HEX`.
    A file with a single digest and no name (or one name) is taken as that image's digest.
    Returns '' when no line matches.
    """
    base = filename.rsplit("/", 1)[-1]
    found: list[tuple[str, str]] = []
    for raw in str(text).splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        bsd = re.match(r"^SHA256 \((.+)\) = ([0-9a-fA-F]{64})$", line)
        if bsd:
            found.append((bsd.group(2).lower(), bsd.group(1)))
            continue
        parts = line.split(None, 1)
        if HEX64.match(parts[0]):
            name = parts[1].lstrip("*").strip() if len(parts) > 1 else ""
            found.append((parts[0].lower(), name.rsplit("/", 1)[-1]))
    for digest, name in found:
        if base and name == base:
            return digest
    if len(found) == 1 and (not found[0][1] or not base):
        return found[0][0]
    return ""


def cmdline_with_firstrun(cmdline: str, script: str) -> str:
    """`cmdline.txt` with the systemd.run first-boot arguments for `script`, on one line."""
    words = [w for w in str(cmdline).split() if not w.startswith(FIRSTRUN_ARGS)]
    if not words:
        raise AnsibleFilterError("cmdline.txt on the boot partition is empty: not a Pi OS image?")
    words += [
        f"systemd.run={script}",
        "systemd.run_success_action=reboot",
        "systemd.unit=kernel-command-line.target",
    ]
    return " ".join(words) + "\n"


def network_settings(
    address: str = "",
    ansible_host: str = "",
    prefix: int | str = 24,
    gateway: str = "",
    dns: list[str] | None = None,
) -> dict:
    """Static or DHCP settings for one node.

    `address` (`A.B.C.D` or `A.B.C.D/NN`) wins; else an IPv4 `ansible_host` is taken as the
    node's static address; else DHCP. The gateway defaults to the subnet's first host and DNS
    to the gateway. Returns {'error': message} instead of raising, for a clean refusal.
    """
    candidate = str(address or "").strip()
    if not candidate:
        host = str(ansible_host or "").strip()
        try:
            ipaddress.IPv4Address(host)
            candidate = host
        except ValueError:
            return {"mode": "dhcp", "error": ""}
    if "/" not in candidate:
        candidate = f"{candidate}/{prefix}"
    try:
        iface = ipaddress.IPv4Interface(candidate)
    except ValueError as exc:
        return {"mode": "static", "error": f"static address {candidate!r} is not valid: {exc}"}
    net = iface.network
    if net.prefixlen >= 31 or iface.ip in (net.network_address, net.broadcast_address):
        return {"mode": "static", "error": f"{candidate} is not a usable host address"}
    gw = str(gateway or "").strip() or str(net.network_address + 1)
    try:
        gw_ip = ipaddress.IPv4Address(gw)
    except ValueError:
        return {"mode": "static", "error": f"gateway {gw!r} is not an IPv4 address"}
    if gw_ip not in net or gw_ip == iface.ip:
        return {"mode": "static", "error": f"gateway {gw} is not another host of {net}"}
    servers = [str(s) for s in (dns or [])] or [str(gw_ip)]
    return {
        "mode": "static",
        "error": "",
        "address": str(iface.ip),
        "prefix": net.prefixlen,
        "cidr": str(iface),
        "gateway": str(gw_ip),
        "dns": servers,
    }


def shell_quote(value) -> str:
    """Always single-quoted for sh, so that no value is read as a command or a glob."""
    return "'" + str(value).replace("'", "'\"'\"'") + "'"


def etcd_members(hosts: list[str], chosen: list[str] | None = None) -> list[str]:
    """The etcd members among `hosts`: `chosen` if given, else the first 5, 3 or 1 of them."""
    hosts = list(hosts)
    if chosen:
        unknown = [h for h in chosen if h not in hosts]
        if unknown:
            raise AnsibleFilterError(f"flash_etcd_hosts names hosts not flashed: {unknown}")
        if len(chosen) % 2 == 0:
            raise AnsibleFilterError(
                f"flash_etcd_hosts must hold an odd number of hosts, got {len(chosen)}"
            )
        return list(chosen)
    for size in (5, 3, 1):
        if len(hosts) >= size:
            return hosts[:size]
    return []


class FilterModule:
    """Filters of roles/flash."""

    def filters(self):
        return {
            "flash_wpa_psk": wpa_psk,
            "flash_sha256_from_text": sha256_from_text,
            "flash_cmdline": cmdline_with_firstrun,
            "flash_network": network_settings,
            "flash_etcd_members": etcd_members,
            "flash_shell_quote": shell_quote,
        }
