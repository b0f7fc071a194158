"""Filters for the flash role: pure functions, unit-tested in tests/flash/test_filters.py.

Each filter either returns a value or raises AnsibleFilterError with a message a person can
act on; the role turns those into one-line refusals.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import unicodedata

try:  # the filters are also imported by the unit tests without Ansible's plugin loader
    from ansible.errors import AnsibleFilterError
except ImportError:  # pragma: no cover
    AnsibleFilterError = ValueError  # type: ignore[misc,assignment]

HEX64 = re.compile(r"[0-9a-fA-F]{64}")

# Kernel command line arguments that belong to a first-boot script. Removed before ours is
# appended, so that re-running never stacks them and an Imager-customised card is taken over.
FIRSTRUN_ARGS = ("systemd.run=", "systemd.run_success_action=", "systemd.unit=")
# The Wi-Fi regulatory domain as the kernel reads it at boot (raspi-config writes the same).
REGDOM_ARG = "cfg80211.ieee80211_regdom="

# What may reach a root shell or a config file on the card. Strict on purpose: each of these
# lands in a file that is parsed: sh sources /etc/default/keyboard at every boot, the
# interface name goes into NetworkManager keyfiles, the path onto the kernel command line.
SETTING_PATTERNS = {
    "flash_keyboard_layout": (
        r"[a-z][a-z0-9_]{0,15}(,[a-z][a-z0-9_]{0,15}){0,3}",
        "an XKB layout (us, gb, de, or us,de)",
    ),
    "flash_keyboard_model": (r"[a-z0-9][a-z0-9_-]{0,31}", "an XKB model (pc105, pc104, ...)"),
    "flash_locale": (r"([a-z]{2,3}_[A-Z]{2}|C)\.UTF-8", "a UTF-8 locale (en_GB.UTF-8, C.UTF-8)"),
    "flash_timezone": (
        r"[A-Za-z][A-Za-z0-9_+-]{0,30}(/[A-Za-z][A-Za-z0-9_+-]{0,30}){0,2}",
        "a time zone (Etc/UTC, Europe/London)",
    ),
    "flash_interface": (r"[a-z][a-z0-9]{0,14}", "an interface name (eth0, wlan0, end0)"),
    "flash_wifi_country": (r"([A-Z]{2})?", "two capital letters (GB, DE, US)"),
    "flash_firstrun_path": (r"/[A-Za-z0-9_./-]{1,200}", "an absolute path"),
}
GROUP_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
# A crypt(3) string ($id$salt$hash, e.g. $6$ or $y$): userconf.txt splits on ':' and takes
# one line, so neither may appear; whitespace has no place in a hash either.
CRYPT_HASH = re.compile(r"\$[A-Za-z0-9]{1,8}\$[^:\s]{1,512}")


def wpa_psk(passphrase: str, ssid: str) -> str:
    """The 256-bit WPA-PSK (64 hex digits) for a passphrase, as `wpa_passphrase` derives it.

    IEEE 802.11i: PBKDF2-HMAC-SHA1(passphrase, ssid, 4096 rounds, 32 bytes). A value that
    already is 64 hex digits is taken as the PSK itself.
    """
    passphrase = str(passphrase)
    ssid = str(ssid)
    if HEX64.fullmatch(passphrase):
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
        if HEX64.fullmatch(parts[0]):
            name = parts[1].lstrip("*").strip() if len(parts) > 1 else ""
            found.append((parts[0].lower(), name.rsplit("/", 1)[-1]))
    for digest, name in found:
        if base and name == base:
            return digest
    if len(found) == 1 and (not found[0][1] or not base):
        return found[0][0]
    return ""


def cmdline_with_firstrun(cmdline: str, script: str, wifi_country: str = "") -> str:
    """`cmdline.txt` with the systemd.run first-boot arguments for `script`, on one line.

    A Wi-Fi country becomes `cfg80211.ieee80211_regdom=XX` in place, before the first-boot
    words, as Raspberry Pi Imager writes it: firstrun.sh removes only its own words after the
    first boot, so the regulatory domain stays.
    """
    words = [w for w in str(cmdline).split() if not w.startswith(FIRSTRUN_ARGS)]
    if not words:
        raise AnsibleFilterError("cmdline.txt on the boot partition is empty: not a Pi OS image?")
    if wifi_country:
        words = [w for w in words if not w.startswith(REGDOM_ARG)]
        words.append(REGDOM_ARG + str(wifi_country))
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
    servers = [str(s).strip() for s in (dns or [])] or [str(gw_ip)]
    for server in servers:
        try:
            ipaddress.ip_address(server)
        except ValueError:
            return {"mode": "static", "error": f"DNS server {server!r} is not an IP address"}
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


def yaml_quote(value) -> str:
    """`value` as a YAML double-quoted scalar that libyaml (netplan, PyYAML's C loader) reads back.

    Printable characters are written as they are (the file is UTF-8); the others use YAML's own
    escapes, \\xXX, \\uXXXX and \\UXXXXXXXX. JSON's escapes are not YAML's: to_json writes
    an emoji as a surrogate pair (\\ud83d\\ude00), which libyaml refuses, so netplan would
    configure no interface at all.
    """
    out = []
    for char in str(value):
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif _yaml_literal(code):
            out.append(char)
        elif 0xD800 <= code <= 0xDFFF:
            raise AnsibleFilterError(f"{value!r} is not valid Unicode (a lone surrogate)")
        elif code <= 0xFF:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


def _yaml_literal(code: int) -> bool:
    """YAML's printable set, less line breaks (U+0085, U+2028, U+2029) and the byte order mark."""
    if code in (0x85, 0x2028, 0x2029, 0xFEFF):
        return False
    return (
        0x20 <= code <= 0x7E
        or 0xA0 <= code <= 0xD7FF
        or 0xE000 <= code <= 0xFFFD
        or 0x10000 <= code <= 0x10FFFF
    )


def yaml_list(values) -> str:
    """A YAML flow sequence of double-quoted scalars."""
    return "[" + ", ".join(yaml_quote(v) for v in values) + "]"


# NetworkManager reads a keyfile `ssid=` either as text (GLib key-file escapes applied) or, when
# it looks like one, as a list of byte values "108;97;98;". Plain text is kept for names that
# cannot be misread either way; every other SSID is written as its UTF-8 bytes.
NM_PLAIN_SSID = re.compile(r"[A-Za-z0-9_.@+-]([A-Za-z0-9 _.@+-]*[A-Za-z0-9_.@+-])?")


def nm_keyfile_ssid(ssid: str) -> str:
    """The SSID as a NetworkManager keyfile value that reads back byte for byte."""
    ssid = str(ssid)
    if NM_PLAIN_SSID.fullmatch(ssid) and re.search(r"[^0-9 ]", ssid):
        return ssid
    return "".join(f"{byte};" for byte in ssid.encode())


def ssid_error(ssid: str) -> str:
    """What is wrong with an SSID for the card ('' when nothing): 1 to 32 bytes of UTF-8."""
    ssid = str(ssid)
    try:
        size = len(ssid.encode())
    except UnicodeEncodeError:
        return f"flash_wifi_ssid {ssid!r} is not valid Unicode"
    if not 1 <= size <= 32:
        return f"flash_wifi_ssid {ssid!r} is {size} bytes in UTF-8; an SSID holds 1 to 32"
    if any(unicodedata.category(char) == "Cc" for char in ssid):
        return f"flash_wifi_ssid {ssid!r} holds a control character (newline, tab, ...)"
    return ""


def settings_error(settings: dict) -> str:
    """The first first-boot value that is not safe to write to the card, as one line; '' if none.

    `settings` maps the role's variable names to their values. Checked: the names in
    SETTING_PATTERNS against their pattern, the password hash (a crypt string without ':' or
    whitespace), the group names, and the SSID (1 to 32 bytes, no control character).
    """
    for name, (pattern, what) in SETTING_PATTERNS.items():
        if name not in settings:
            continue
        value = settings[name]
        if not isinstance(value, str) or not re.fullmatch(pattern, value):
            return f"{name} {value!r} is not {what}"
    password_hash = settings.get("flash_password_hash", "")
    if password_hash and not (
        isinstance(password_hash, str) and CRYPT_HASH.fullmatch(password_hash)
    ):
        return (
            f"flash_password_hash {password_hash!r} is not a crypt(3) hash ($6$... or $y$..., "
            "from mkpasswd) without ':' or whitespace"
        )
    for group in settings.get("flash_user_groups", []):
        if not isinstance(group, str) or not GROUP_NAME.fullmatch(group):
            return f"flash_user_groups holds {group!r}, which is not a group name"
    ssid = settings.get("flash_wifi_ssid", "")
    if ssid:
        return ssid_error(ssid)
    return ""


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
            "flash_yaml_quote": yaml_quote,
            "flash_yaml_list": yaml_list,
            "flash_nm_ssid": nm_keyfile_ssid,
            "flash_settings_error": settings_error,
        }
