"""Unit tests of the flash role's filters and of the target checks on a fake sysfs.

The fake sysfs has the shapes that cannot be made on a test machine without hardware: a USB
card reader with a mounted partition, LVM on a card, a card used as swap, a root filesystem
on device-mapper over a partitioned disk.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import yaml

ROLE = Path(__file__).resolve().parents[2] / "roles" / "flash"


def load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


filters = load("flash_filters", ROLE / "filter_plugins" / "flash_filters.py")
target = load("flash_target", ROLE / "library" / "flash_target.py")
bootfs = load("flash_bootfs", ROLE / "library" / "flash_bootfs.py")


# --- Filters -----------------------------------------------------------------------------


def test_wpa_psk_matches_the_ieee_802_11i_test_vector():
    # IEEE 802.11i-2004, annex H.4: passphrase "password", SSID "IEEE".
    assert filters.wpa_psk("password", "IEEE") == (
        "f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e"
    )


def test_wpa_psk_passes_a_psk_through_and_refuses_bad_input():
    psk = "AB" * 32
    assert filters.wpa_psk(psk, "x") == psk.lower()
    for passphrase, ssid in (("short", "lab"), ("x" * 64, "lab"), ("long enough", "")):
        with pytest.raises(filters.AnsibleFilterError):
            filters.wpa_psk(passphrase, ssid)


@pytest.mark.parametrize(
    ("text", "name", "expected"),
    [
        ("a" * 64, "x.img.xz", "a" * 64),
        (f"{'B' * 64}  x.img.xz\n", "x.img.xz", "b" * 64),
        (f"{'c' * 64} *x.img.xz\n", "x.img.xz", "c" * 64),
        (f"{'d' * 64}  other.img\n{'e' * 64}  dir/x.img.xz\n", "x.img.xz", "e" * 64),
        (f"SHA256 (x.img.xz) = {'f' * 64}\n", "x.img.xz", "f" * 64),
        (f"# comment\n{'1' * 64}  other.img\n", "x.img.xz", ""),
        (f"{'2' * 64}  a.img\n{'3' * 64}  b.img\n", "x.img", ""),
        ("not a digest", "x.img", ""),
    ],
)
def test_sha256_from_text(text, name, expected):
    assert filters.sha256_from_text(text, name) == expected


def test_cmdline_appends_firstrun_once():
    base = "console=tty1 root=PARTUUID=abcd-02 rootwait\n"
    once = filters.cmdline_with_firstrun(base, "/boot/firmware/firstrun.sh")
    assert once == (
        "console=tty1 root=PARTUUID=abcd-02 rootwait systemd.run=/boot/firmware/firstrun.sh "
        "systemd.run_success_action=reboot systemd.unit=kernel-command-line.target\n"
    )
    assert filters.cmdline_with_firstrun(once, "/boot/firmware/firstrun.sh") == once
    # An Imager-customised card (older path) is taken over, not stacked.
    imager = base.strip() + " systemd.run=/boot/firstrun.sh systemd.run_success_action=reboot\n"
    assert filters.cmdline_with_firstrun(imager, "/boot/firmware/firstrun.sh") == once
    with pytest.raises(filters.AnsibleFilterError):
        filters.cmdline_with_firstrun("  \n", "/x")


def test_cmdline_puts_the_regulatory_domain_before_the_firstrun_words():
    """As Raspberry Pi Imager does: firstrun.sh's clean-up then leaves it in place."""
    base = "console=tty1 root=PARTUUID=abcd-02 rootwait cfg80211.ieee80211_regdom=US\n"
    with_gb = filters.cmdline_with_firstrun(base, "/boot/firmware/firstrun.sh", "GB")
    assert with_gb.split() == [
        "console=tty1",
        "root=PARTUUID=abcd-02",
        "rootwait",
        "cfg80211.ieee80211_regdom=GB",
        "systemd.run=/boot/firmware/firstrun.sh",
        "systemd.run_success_action=reboot",
        "systemd.unit=kernel-command-line.target",
    ]
    assert filters.cmdline_with_firstrun(with_gb, "/boot/firmware/firstrun.sh", "GB") == with_gb
    # No country: the image's own regulatory domain, if any, is left as it is.
    assert "cfg80211.ieee80211_regdom=US" in filters.cmdline_with_firstrun(base, "/x", "")


def _yaml_load(text: str):
    """With libyaml, as netplan and cloud-init's C loader read the files."""
    return yaml.load(text, Loader=yaml.CSafeLoader)


@pytest.mark.parametrize(
    "value",
    [
        "lab \U0001f600 net",  # outside the BMP: to_json's surrogate pair breaks libyaml
        "caf\u00e9",
        'quote " and back\\slash',
        "new\nline\ttab\r",
        "\x00\x07\x1b\x7f\x85\u2028\u2029\ufeff",
        "",
    ],
)
def test_yaml_quote_reads_back_with_libyaml(value):
    assert _yaml_load("k: " + filters.yaml_quote(value))["k"] == value
    assert _yaml_load("k: " + filters.yaml_list([value, "x"]))["k"] == [value, "x"]


def test_yaml_quote_reads_back_every_code_point():
    every = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)
    assert _yaml_load("k: " + filters.yaml_quote(every))["k"] == every
    with pytest.raises(filters.AnsibleFilterError):
        filters.yaml_quote("\ud83d")


@pytest.mark.parametrize(
    ("ssid", "written"),
    [
        ("lab net", "lab net"),
        ("my-wifi_5G", "my-wifi_5G"),
        ("caf\u00e9", "99;97;102;195;169;"),
        ("\U0001f600", "240;159;152;128;"),
        ("123", "49;50;51;"),  # digits alone read as a byte list
        ("a;b", "97;59;98;"),  # ';' is NetworkManager's list separator
        (" lead", "32;108;101;97;100;"),  # key files drop leading blanks
        ("back\\s", "98;97;99;107;92;115;"),  # key files read \s as a blank
    ],
)
def test_nm_keyfile_ssid(ssid, written):
    assert filters.nm_keyfile_ssid(ssid) == written
    if written != ssid:
        assert bytes(int(b) for b in written.rstrip(";").split(";")).decode() == ssid


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        ({"flash_keyboard_layout": "us,de", "flash_keyboard_model": "pc105"}, ""),
        ({"flash_locale": "en_GB.UTF-8", "flash_timezone": "America/Argentina/Buenos_Aires"}, ""),
        ({"flash_timezone": "Etc/GMT+5", "flash_wifi_country": ""}, ""),
        ({"flash_password_hash": "$y$j9T$abc/def$ghi.jkl"}, ""),
        ({"flash_wifi_ssid": "\U0001f600" * 8}, ""),  # 32 bytes
        ({"flash_keyboard_layout": 'gb"; reboot; "'}, "flash_keyboard_layout"),
        ({"flash_keyboard_layout": "GB"}, "is not an XKB layout"),
        ({"flash_keyboard_model": "pc 105"}, "is not an XKB model"),
        ({"flash_locale": "en_US"}, "is not a UTF-8 locale"),
        ({"flash_timezone": "Europe/../../etc"}, "is not a time zone"),
        ({"flash_interface": "eth0 "}, "is not an interface name"),
        ({"flash_wifi_country": "GBR"}, "is not two capital letters"),
        ({"flash_firstrun_path": "/boot/first run.sh"}, "is not an absolute path"),
        ({"flash_password_hash": "$6$salt$a:b"}, "is not a crypt(3) hash"),
        ({"flash_password_hash": "$6$salt$ab\n"}, "is not a crypt(3) hash"),
        ({"flash_password_hash": "plaintext"}, "is not a crypt(3) hash"),
        ({"flash_user_groups": ["sudo", "$(id)"]}, "is not a group name"),
        ({"flash_wifi_ssid": "\U0001f600" * 8 + "x"}, "is 33 bytes in UTF-8"),
        ({"flash_wifi_ssid": "lab\x7f"}, "holds a control character"),
        ({"flash_wifi_ssid": "lab\u0085"}, "holds a control character"),
    ],
)
def test_settings_error(settings, error):
    found = filters.settings_error(settings)
    assert (found == "") if not error else (error in found and "\n" not in found), found


def test_network_settings():
    assert filters.network_settings("", "pi1.lan")["mode"] == "dhcp"
    assert filters.network_settings("", "")["mode"] == "dhcp"
    static = filters.network_settings("", "192.168.1.20")
    assert static == {
        "mode": "static",
        "error": "",
        "address": "192.168.1.20",
        "prefix": 24,
        "cidr": "192.168.1.20/24",
        "gateway": "192.168.1.1",
        "dns": ["192.168.1.1"],
    }
    explicit = filters.network_settings(
        "10.0.5.9/16", "192.168.1.20", 24, "10.0.0.254", ["1.1.1.1"]
    )
    assert (explicit["cidr"], explicit["gateway"], explicit["dns"]) == (
        "10.0.5.9/16",
        "10.0.0.254",
        ["1.1.1.1"],
    )
    assert "not a usable host" in filters.network_settings("10.0.0.0/24")["error"]
    assert (
        "not another host" in filters.network_settings("10.0.0.5/24", gateway="10.1.0.1")["error"]
    )
    assert "not valid" in filters.network_settings("300.1.1.1")["error"]
    bad_dns = filters.network_settings("10.0.0.5/24", dns=["1.1.1.1", "8.8.8.8\nmethod=auto"])
    assert "is not an IP address" in bad_dns["error"]


def test_etcd_members():
    hosts = [f"pi{i}" for i in range(1, 8)]
    assert filters.etcd_members(hosts) == hosts[:5]
    assert filters.etcd_members(hosts[:4]) == hosts[:3]
    assert filters.etcd_members(hosts[:2]) == hosts[:1]
    assert filters.etcd_members(hosts, ["pi7", "pi2", "pi4"]) == ["pi7", "pi2", "pi4"]
    with pytest.raises(filters.AnsibleFilterError):
        filters.etcd_members(hosts, ["pi1", "pi2"])
    with pytest.raises(filters.AnsibleFilterError):
        filters.etcd_members(hosts, ["pi9"])


def test_shell_quote_always_quotes():
    assert filters.shell_quote("admin") == "'admin'"
    assert filters.shell_quote("it's $HOME") == "'it'\"'\"'s $HOME'"


# --- Boot partition lookup ---------------------------------------------------------------


def test_boot_partition_is_the_first_fat_one():
    table = {
        "partitiontable": {
            "sectorsize": 512,
            "partitions": [
                {"start": 2048, "size": 100, "type": "83"},
                {"start": 8192, "size": 1000, "type": "c"},
            ],
        }
    }
    assert bootfs.boot_partition(table) == {"number": 2, "offset": 8192 * 512, "size": 1000 * 512}
    gpt = {
        "partitiontable": {
            "sectorsize": 4096,
            "partitions": [
                {"start": 256, "size": 10, "type": "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"},
            ],
        }
    }
    assert bootfs.boot_partition(gpt)["offset"] == 256 * 4096
    with pytest.raises(bootfs.BootfsError):
        bootfs.boot_partition(
            {"partitiontable": {"partitions": [{"start": 1, "size": 1, "type": "83"}]}}
        )


# --- Target checks on a fake sysfs -----------------------------------------------------


class FakeSys:
    """A /sys tree: block devices with dev numbers, partitions, holders and slaves."""

    def __init__(self, root: Path):
        self.root = root
        self.devices = root / "devices"
        (root / "dev" / "block").mkdir(parents=True)
        (root / "class" / "block").mkdir(parents=True)

    def add(self, name: str, majmin: str, parent: str | None = None, size: int = 1 << 20):
        base = self.node(parent) if parent else self.devices / "virtual" / "block"
        node = base / name
        node.mkdir(parents=True)
        (node / "dev").write_text(majmin + "\n")
        (node / "size").write_text(f"{size}\n")
        (node / "holders").mkdir()
        (node / "slaves").mkdir()
        if parent:
            (node / "partition").write_text("1\n")
        (self.root / "dev" / "block" / majmin).symlink_to(node)
        (self.root / "class" / "block" / name).symlink_to(node)
        return node

    def node(self, name: str) -> Path:
        return (self.root / "class" / "block" / name).resolve()

    def stack(self, holder: str, on: str) -> None:
        (self.node(on) / "holders" / holder).mkdir()
        (self.node(holder) / "slaves" / on).mkdir()


@pytest.fixture
def fake_sys(tmp_path) -> FakeSys:
    fs = FakeSys(tmp_path / "sys")
    fs.add("nvme0n1", "259:0")
    fs.add("nvme0n1p1", "259:1", parent="nvme0n1")
    fs.add("nvme0n1p2", "259:2", parent="nvme0n1")
    fs.add("dm-0", "253:0")  # root LV on nvme0n1p2
    fs.stack("dm-0", "nvme0n1p2")
    fs.add("sdb", "8:16")  # a card reader
    fs.add("sdb1", "8:17", parent="sdb")
    fs.add("sdb2", "8:18", parent="sdb")
    fs.add("sdc", "8:32")  # a card with LVM on it
    fs.add("sdc1", "8:33", parent="sdc")
    fs.add("dm-1", "253:1")
    fs.stack("dm-1", "sdc1")
    fs.add("sdd", "8:48")  # a clean card
    fs.add("sdd1", "8:49", parent="sdd")
    fs.add("sde", "8:64", size=0)  # an empty reader
    return fs


ROOT_MOUNTS = [
    {"majmin": "253:0", "mountpoint": "/", "source": "/dev/mapper/vg-root"},
    {"majmin": "259:1", "mountpoint": "/boot/firmware", "source": "/dev/nvme0n1p1"},
    {"majmin": "0:22", "mountpoint": "/proc", "source": "proc"},
]


def assess(fake_sys, majmin, mounts=(), swaps=(), confirmed=True):
    tree = target.BlockTree(str(fake_sys.root))
    return target.assess_block(
        "/dev/X",
        majmin,
        tree,
        [*ROOT_MOUNTS, *mounts],
        list(swaps),
        confirmed,
        realpath=lambda p: p,
    )[0]


@pytest.mark.parametrize("majmin", ["259:0", "259:1", "259:2", "253:0"])
def test_root_disk_and_everything_on_it_is_refused(fake_sys, majmin):
    assert "is the system disk (it holds /)" in assess(fake_sys, majmin)


def test_mounted_partition_refuses_the_card(fake_sys):
    mounts = [{"majmin": "8:17", "mountpoint": "/media/me/bootfs", "source": "/dev/sdb1"}]
    assert assess(fake_sys, "8:16", mounts) == (
        "/dev/X is mounted (at /media/me/bootfs): unmount it first"
    )


def test_mounted_logical_volume_on_the_card_is_seen(fake_sys):
    mounts = [{"majmin": "253:1", "mountpoint": "/srv/data", "source": "/dev/mapper/x"}]
    assert "is mounted (at /srv/data)" in assess(fake_sys, "8:32", mounts)


def test_btrfs_style_mount_found_by_source(fake_sys):
    mounts = [{"majmin": "0:45", "mountpoint": "/mnt", "source": "/dev/sdb2"}]
    assert "is mounted (at /mnt)" in assess(fake_sys, "8:16", mounts)


def test_swap_on_the_card(fake_sys):
    assert "in use as swap (/dev/sdb2)" in assess(fake_sys, "8:16", swaps=["/dev/sdb2"])


def test_partition_instead_of_disk(fake_sys):
    assert "is a partition: give the whole card (e.g. /dev/sdd)" in assess(fake_sys, "8:49")


def test_confirmation_and_medium(fake_sys):
    assert "Re-run with -e flash_confirm=yes" in assess(fake_sys, "8:48", confirmed=False)
    assert assess(fake_sys, "8:64") == "/dev/X has no medium (size 0): insert the card"
    assert assess(fake_sys, "8:48") == ""


def test_mountinfo_and_swaps_parsing():
    info = (
        "29 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
        "40 29 8:17 / /media/my\\040card rw - vfat /dev/sdb1 rw\n"
    )
    assert target.parse_mountinfo(info) == [
        {"majmin": "254:0", "mountpoint": "/", "source": "/dev/vda"},
        {"majmin": "8:17", "mountpoint": "/media/my card", "source": "/dev/sdb1"},
    ]
    swaps = "Filename Type Size Used Priority\n/dev/zram0 partition 100 0 100\n"
    assert target.parse_swaps(swaps) == ["/dev/zram0"]


def test_image_file_checks(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("x")
    assert "not an image path" in target.assess({"path": str(text)}, str(tmp_path))["refusal"]
    missing = target.assess({"path": str(tmp_path / "new" / "a.img")}, str(tmp_path))
    assert missing["kind"] == "missing" and "does not exist" in missing["refusal"]
    allowed = target.assess(
        {"path": str(tmp_path / "new" / "a.img"), "allow_missing_parent": True}, str(tmp_path)
    )
    assert allowed["refusal"] == ""
    same = target.assess({"path": str(text), "source": str(text)}, str(tmp_path))
    assert same["refusal"].endswith("is the source image itself")
