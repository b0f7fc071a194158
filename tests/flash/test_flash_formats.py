"""playbooks/flash.yml on synthetic images, one per customisation format.

Each test writes output images, reads the boot partition back with mtools, validates what was
written (bash -n and shellcheck for firstrun.sh; every YAML file with libyaml, as netplan and
cloud-init's C loader read it; `cloud-init schema` for user-data, cloud-init's own netplan v2
parser for network-config), and re-runs the playbook to prove nothing changes.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from . import images
from .images import SSH_KEY

WIFI_SSID = "lab net"
# Outside the BMP and not ASCII: JSON-style escapes (\ud83d\ude00) are not YAML for libyaml.
EMOJI_SSID = "caf\u00e9 \U0001f600 lab"
WIFI_PASSPHRASE = "correct horse battery"
# The groups Raspberry Pi Imager gives the user it creates (src/customization_generator.cpp).
IMAGER_GROUPS = [
    "users",
    "adm",
    "dialout",
    "audio",
    "netdev",
    "video",
    "plugdev",
    "cdrom",
    "games",
    "input",
    "gpio",
    "spi",
    "i2c",
    "render",
    "sudo",
]
# userconf-pi's own check of a userconf.txt line (userconf-service): otherwise it asks on a tty.
USERCONF_LINE = re.compile(r"[a-z][a-z0-9-]{0,31}:[^:\n]+\n")
FIRSTRUN_ARGS = [
    "systemd.run=/boot/firmware/firstrun.sh",
    "systemd.run_success_action=reboot",
    "systemd.unit=kernel-command-line.target",
]


def wpa_psk(passphrase: str, ssid: str) -> str:
    return hashlib.pbkdf2_hmac("sha1", passphrase.encode(), ssid.encode(), 4096, 32).hex()


def all_boot_text(image: Path) -> str:
    return "\n".join(images.read_boot_file(image, name) or "" for name in images.boot_files(image))


def load_yaml(text: str):
    """Parse with libyaml (PyYAML's C loader), as netplan and cloud-init's C loader do."""
    assert hasattr(yaml, "CSafeLoader"), "PyYAML without libyaml: pip install PyYAML from a wheel"
    return yaml.load(text, Loader=yaml.CSafeLoader)


def cloud_init_python() -> str:
    """The interpreter of the cloud-init command (Debian's python3 with `cloudinit`)."""
    with open(shutil.which("cloud-init"), encoding="utf-8") as handle:
        first = handle.readline().strip()
    return first.removeprefix("#!").split()[0]


def validate_network_config(text: str) -> dict:
    """Parse network-config as cloud-init does; returns the YAML. Raises on invalid config.

    Debian 12's cloud-init 22.4 has no `cloud-init schema` for network-config (added in 23.x),
    so its netplan v2 parser (network_state) is run instead: it rejects bad addresses, routes
    and keys of ethernets. It ignores `wifis`, which are checked here as YAML.
    """
    config = load_yaml(text)
    assert config["network"]["version"] == 2
    code = (
        "import sys, yaml\n"
        "from cloudinit.net import network_state\n"
        "cfg = yaml.load(sys.stdin, Loader=yaml.CSafeLoader)['network']\n"
        "ns = network_state.parse_net_config_data(cfg, skip_broken=False)\n"
        "print(len(list(ns.iter_interfaces())))\n"
    )
    proc = subprocess.run(
        [cloud_init_python(), "-c", code], input=text, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) >= 1
    return config


def validate_user_data(tmp_path: Path, text: str) -> dict:
    path = tmp_path / "user-data.check"
    path.write_text(text)
    proc = subprocess.run(
        ["cloud-init", "schema", "-c", str(path)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Valid cloud-config" in proc.stdout
    assert text.startswith("#cloud-config\n")
    return load_yaml(text)


def test_bookworm_xz_four_hosts(source_images, flash, tmp_path, ssh_key_file):
    """bookworm .img.xz with a SHA256SUMS file; static + Wi-Fi on pi1, DHCP on the rest."""
    src = source_images["bookworm.xz"]
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"{'0' * 64}  other.img.xz\n{src.sha256}  {src.path.name}\n")
    out = tmp_path / "out"
    inventory = {
        "all": {
            "hosts": {
                "pi1": {
                    "ansible_host": "192.168.50.11",
                    "flash_wifi_ssid": WIFI_SSID,
                    "flash_wifi_passphrase": WIFI_PASSPHRASE,
                    "flash_wifi_country": "GB",
                },
                "pi2": {},
                "pi3": {"flash_address": "10.1.2.3/16", "flash_gateway": "10.1.0.254"},
                "pi4": {
                    "ansible_host": "pi4.lan",
                    "flash_wifi_ssid": EMOJI_SSID,
                    "flash_wifi_passphrase": WIFI_PASSPHRASE,
                    "flash_wifi_country": "DE",
                },
            },
            "vars": {"ansible_user": "pi"},
        }
    }
    extra = {
        "flash_image": str(src.path),
        "flash_image_sha256": str(sums),
        "flash_output_dir": str(out),
        "flash_ssh_public_key": str(ssh_key_file),
        "flash_user": "admin",
        "flash_timezone": "Europe/London",
        "flash_keyboard_layout": "gb",
        "flash_locale": "en_GB.UTF-8",
    }
    first = flash(inventory, **extra)
    assert first.rc == 0, first.output
    assert set(first.recap) == {"pi1", "pi2", "pi3", "pi4"}
    assert "status=progress" not in first.output  # dd's own progress shows, not the command
    assert "Progress: tail -f" in first.output

    raw = source_images["bookworm"].path
    # The regulatory domain is on cmdline.txt from the start, before the first-boot words, as
    # Raspberry Pi Imager writes it.
    regdom = {"pi1": ["cfg80211.ieee80211_regdom=GB"], "pi4": ["cfg80211.ieee80211_regdom=DE"]}
    for host in ("pi1", "pi2", "pi3", "pi4"):
        image = out / f"{host}.img"
        assert image.stat().st_size == raw.stat().st_size
        assert images.partitions(image) == images.partitions(raw)
        # The root filesystem is the image's, byte for byte: only the boot partition changed.
        assert images.root_partition_sha256(image) == images.root_partition_sha256(raw)
        # Original boot files are kept.
        assert images.read_boot_file(image, "config.txt") == images.read_boot_file(
            raw, "config.txt"
        )

        original = images.read_boot_file(raw, "cmdline.txt").split()
        cmdline = images.read_boot_file(image, "cmdline.txt")
        assert cmdline.count("\n") == 1 and cmdline.endswith("\n")
        assert cmdline.split() == original + regdom.get(host, []) + FIRSTRUN_ARGS

        assert images.read_boot_file(image, "ssh") == ""
        userconf = images.read_boot_file(image, "userconf.txt")
        assert userconf.startswith("admin:$6$") and USERCONF_LINE.fullmatch(userconf)

        script = images.read_boot_file(image, "firstrun.sh")
        path = tmp_path / f"firstrun-{host}.sh"
        path.write_text(script)
        syntax = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert syntax.returncode == 0, syntax.stderr
        lint = subprocess.run(["shellcheck", str(path)], capture_output=True, text=True)
        assert lint.returncode == 0, lint.stdout
        assert f"NEW_HOSTNAME='{host}'\n" in script
        assert "NEW_USER='admin'\n" in script
        assert f"SSH_KEY='{SSH_KEY}'" in script
        assert "SSH_PASSWORD_AUTH=no" in script
        assert "LOCK_PASSWORD=yes" in script
        assert "TIMEZONE='Europe/London'" in script
        assert "KEYBOARD_LAYOUT='gb'" in script
        assert "LOCALE='en_GB.UTF-8'" in script
        assert 'rm -f "$BOOT/firstrun.sh"' in script
        assert f"EXTRA_GROUPS='{' '.join(IMAGER_GROUPS)}'" in script
        assert_first_boot_keeps_the_regulatory_domain(script, cmdline, original, tmp_path)

    pi1 = images.read_boot_file(out / "pi1.img", "firstrun.sh")
    assert "address1=192.168.50.11/24,192.168.50.1\n" in pi1
    assert f"psk={wpa_psk(WIFI_PASSPHRASE, WIFI_SSID)}\n" in pi1
    assert f"ssid={WIFI_SSID}\n" in pi1
    assert "WIFI_COUNTRY='GB'" in pi1
    for host in ("pi1", "pi2", "pi3", "pi4"):
        assert WIFI_PASSPHRASE not in all_boot_text(out / f"{host}.img")
    pi2 = images.read_boot_file(out / "pi2.img", "firstrun.sh")
    assert "ETH_KEYFILE=''" in pi2 and "WIFI_KEYFILE=''" in pi2  # DHCP, no Wi-Fi
    pi3 = images.read_boot_file(out / "pi3.img", "firstrun.sh")
    assert "address1=10.1.2.3/16,10.1.0.254\n" in pi3
    # A non-ASCII SSID goes into the NetworkManager keyfile as its bytes, which NM reads back.
    pi4 = images.read_boot_file(out / "pi4.img", "firstrun.sh")
    ssid_bytes = "".join(f"{byte};" for byte in EMOJI_SSID.encode())
    assert f"ssid={ssid_bytes}\n" in pi4
    assert f"psk={wpa_psk(WIFI_PASSPHRASE, EMOJI_SSID)}\n" in pi4

    flashed = load_yaml((tmp_path / "flashed.yml").read_text())
    groups = flashed["all"]["children"]
    assert list(groups["etcd"]["hosts"]) == ["pi1", "pi2", "pi3"]
    assert groups["agents"]["hosts"] == {
        "pi1": {"ansible_host": "192.168.50.11", "ansible_user": "admin"},
        "pi2": {"ansible_host": "pi2.local", "ansible_user": "admin"},
        "pi3": {"ansible_host": "10.1.2.3", "ansible_user": "admin"},
        "pi4": {"ansible_host": "pi4.lan", "ansible_user": "admin"},
    }
    listed = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-inventory"),
            "-i",
            str(tmp_path / "flashed.yml"),
            "--list",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert '"etcd"' in listed.stdout and '"agents"' in listed.stdout

    stamps = {p: (p.stat().st_mtime_ns, images.sha256_file(p)) for p in out.glob("*.img")}
    second = flash(inventory, **extra)
    assert second.rc == 0, second.output
    assert second.changed() == 0, second.output
    assert all(host["changed"] == 0 for host in second.recap.values())
    assert {p: (p.stat().st_mtime_ns, images.sha256_file(p)) for p in out.glob("*.img")} == stamps


def assert_first_boot_keeps_the_regulatory_domain(
    script: str, cmdline: str, original: list[str], tmp_path: Path
) -> None:
    """Run firstrun.sh's own clean-up on the card's cmdline.txt as raspi-config leaves it.

    raspi-config's do_wifi_country drops any regdom word and appends its own at the end of the
    line, after the first-boot words; the clean-up must remove those words and nothing else.
    """
    boot = tmp_path / "boot"
    boot.mkdir(exist_ok=True)
    words = [w for w in cmdline.split() if not w.startswith("cfg80211.ieee80211_regdom=")]
    country = next((w for w in cmdline.split() if w.startswith("cfg80211.")), "")
    (boot / "cmdline.txt").write_text(" ".join([*words, country]).strip() + "\n")
    (boot / "firstrun.sh").write_text(script)
    done = script[script.index("# --- Done") :]
    proc = subprocess.run(
        ["bash", "-c", f"BOOT={boot}\n{done}"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert not (boot / "firstrun.sh").exists()
    after = (boot / "cmdline.txt").read_text()
    assert after.split() == original + ([country] if country else []), after
    assert after.endswith("\n") and after.count("\n") == 1


def test_trixie_detected_from_image_with_hex_checksum(source_images, flash, tmp_path, ssh_key_file):
    """Format auto-detected (cloud-init seed files on bootfs); static address and Wi-Fi."""
    src = source_images["trixie"]
    out = tmp_path / "out"
    inventory = {
        "all": {
            "hosts": {
                "node-a": {
                    "ansible_host": "192.168.7.20",
                    "flash_wifi_ssid": EMOJI_SSID,
                    "flash_wifi_passphrase": WIFI_PASSPHRASE,
                    "flash_wifi_country": "DE",
                }
            }
        }
    }
    extra = {
        "flash_image": str(src.path),
        "flash_image_sha256": src.sha256.upper(),
        "flash_output_dir": str(out),
        "flash_ssh_public_key": str(ssh_key_file),
    }
    first = flash(inventory, **extra)
    assert first.rc == 0, first.output
    image = out / "node-a.img"

    user_data = validate_user_data(tmp_path, images.read_boot_file(image, "user-data"))
    assert user_data["hostname"] == "node-a"
    assert user_data["ssh_pwauth"] is False
    (user,) = user_data["users"]
    assert user["name"] == "pi"  # ansible_user unset: the default
    assert user["lock_passwd"] is True
    assert user["ssh_authorized_keys"] == [SSH_KEY]
    # cloud-init's `users:` without `default`: the groups of the image's default user are ours.
    assert user["groups"] == IMAGER_GROUPS
    assert "packages" not in user_data  # Raspberry Pi OS has avahi-daemon already
    # A key-only user: userconf.txt names it, so userconfig.service runs userconf-pi's
    # `userconf` (which disables the wizard) instead of asking on a console nobody watches.
    userconf = images.read_boot_file(image, "userconf.txt")
    assert userconf == "pi:$6$picluster$no.password.login*\n"
    assert USERCONF_LINE.fullmatch(userconf)
    assert ["systemctl", "enable", "--now", "ssh"] in user_data["runcmd"]
    assert ["raspi-config", "nonint", "do_wifi_country", "DE"] in user_data["runcmd"]

    network = validate_network_config(images.read_boot_file(image, "network-config"))["network"]
    assert network["renderer"] == "NetworkManager"
    assert network["ethernets"]["eth0"]["addresses"] == ["192.168.7.20/24"]
    assert network["ethernets"]["eth0"]["routes"] == [{"to": "0.0.0.0/0", "via": "192.168.7.1"}]
    wifi = network["wifis"]["wlan0"]
    assert wifi["regulatory-domain"] == "DE"
    assert wifi["access-points"][EMOJI_SSID]["password"] == wpa_psk(WIFI_PASSPHRASE, EMOJI_SSID)
    assert WIFI_PASSPHRASE not in all_boot_text(image)

    meta = load_yaml(images.read_boot_file(image, "meta-data"))
    assert meta["local-hostname"] == "node-a"
    assert meta["instance-id"].startswith("picluster-node-a-")
    assert images.read_boot_file(image, "ssh") == ""
    # cloud-init formats leave cmdline.txt alone.
    assert images.read_boot_file(image, "cmdline.txt") == images.read_boot_file(
        src.path, "cmdline.txt"
    )
    assert images.read_boot_file(image, "firstrun.sh") is None

    before = (image.stat().st_mtime_ns, images.sha256_file(image))
    second = flash(inventory, **extra)
    assert second.rc == 0, second.output
    assert second.recap["node-a"]["changed"] == 0, second.output
    assert (image.stat().st_mtime_ns, images.sha256_file(image)) == before


def test_ubuntu_with_sha256_file_and_password(source_images, flash, tmp_path, ssh_key_file):
    """Ubuntu Server (`system-boot`), explicit format, .sha256 file, DHCP, a password hash."""
    src = source_images["ubuntu"]
    sum_file = tmp_path / "ubuntu.img.sha256"
    sum_file.write_text(f"{src.sha256} *{src.path.name}\n")
    out = tmp_path / "out"
    password_hash = "$6$saltsalt$" + "x" * 86
    inventory = {
        "all": {
            "hosts": {
                "u1": {},
                "u2": {},
                "u3": {
                    "ansible_host": "10.0.0.13",
                    "flash_wifi_ssid": EMOJI_SSID,
                    "flash_wifi_passphrase": WIFI_PASSPHRASE,
                    "flash_wifi_country": "GB",
                },
            }
        }
    }
    extra = {
        "flash_image": str(src.path),
        "flash_image_sha256": str(sum_file),
        "flash_format": "ubuntu",
        "flash_output_dir": str(out),
        "flash_ssh_public_key": SSH_KEY,  # the key itself, not a path
        "flash_user": "ubuntu",
        "flash_password_hash": password_hash,
        "flash_etcd_hosts": ["u2"],
    }
    run = flash(inventory, **extra)
    assert run.rc == 0, run.output
    for host in ("u1", "u2", "u3"):
        image = out / f"{host}.img"
        assert images.boot_label(image).lower() == "system-boot"
        user_data = validate_user_data(tmp_path, images.read_boot_file(image, "user-data"))
        assert user_data["hostname"] == host
        (user,) = user_data["users"]
        assert user["lock_passwd"] is False
        assert user["hashed_passwd"] == password_hash
        assert "runcmd" not in user_data  # Ubuntu enables sshd itself
        network = validate_network_config(images.read_boot_file(image, "network-config"))
        assert "renderer" not in network["network"]
        load_yaml(images.read_boot_file(image, "meta-data"))
        assert images.read_boot_file(image, "ssh") is None
        assert images.read_boot_file(image, "userconf.txt") is None
        if host == "u3":  # static: reached by its address
            assert "packages" not in user_data
            wifi = network["network"]["wifis"]["wlan0"]["access-points"]
            assert wifi == {EMOJI_SSID: {"password": wpa_psk(WIFI_PASSPHRASE, EMOJI_SSID)}}
            continue
        # Reached as <host>.local: Ubuntu Server answers mDNS only with avahi-daemon.
        assert user_data["packages"] == ["avahi-daemon"]
        assert 'Check-Date "false"' in user_data["apt"]["conf"]
        assert network["network"]["ethernets"]["eth0"]["dhcp4"] is True
        assert "wifis" not in network["network"]
    flashed = load_yaml((tmp_path / "flashed.yml").read_text())
    assert list(flashed["all"]["children"]["etcd"]["hosts"]) == ["u2"]
    assert flashed["all"]["children"]["agents"]["hosts"]["u1"]["ansible_host"] == "u1.local"
    assert flashed["all"]["children"]["agents"]["hosts"]["u3"]["ansible_host"] == "10.0.0.13"

    # A changed setting re-writes the boot files only: the image itself is not written again.
    before = {h: images.root_partition_sha256(out / f"{h}.img") for h in ("u1", "u2", "u3")}
    again = flash(inventory, **{**extra, "flash_timezone": "Europe/Berlin"})
    assert again.rc == 0, again.output
    changed = {h: c["changed"] for h, c in again.recap.items()}
    assert changed == {"u1": 1, "u2": 1, "u3": 1}, again.output
    for host in ("u1", "u2", "u3"):
        image = out / f"{host}.img"
        assert images.root_partition_sha256(image) == before[host]
        user_data = validate_user_data(tmp_path, images.read_boot_file(image, "user-data"))
        assert user_data["timezone"] == "Europe/Berlin"


def test_image_and_checksum_from_urls(source_images, flash, tmp_path, ssh_key_file):
    """Image and SHA256SUMS fetched over HTTP (a server on 127.0.0.1 started by the test)."""
    src = source_images["bookworm.xz"]
    served = tmp_path / "www"
    served.mkdir()
    shutil.copy(src.path, served / src.path.name)
    (served / "SHA256SUMS").write_text(f"{src.sha256}  {src.path.name}\n")
    server = subprocess.Popen(
        [
            sys.executable,
            "-u",
            "-m",
            "http.server",
            "0",
            "--bind",
            "127.0.0.1",
            "--directory",
            str(served),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = server.stdout.readline()  # "Serving HTTP on 127.0.0.1 port N ..."
        port = int(line.split(" port ")[1].split()[0])
        base = f"http://127.0.0.1:{port}"
        run = flash(
            {"all": {"hosts": {"pi9": {}}}},
            flash_image=f"{base}/{src.path.name}",
            flash_image_sha256=f"{base}/SHA256SUMS",
            flash_output_dir=str(tmp_path / "out"),
            flash_ssh_public_key=str(ssh_key_file),
        )
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert run.rc == 0, run.output
    assert (tmp_path / "cache" / src.path.name).exists()
    cmdline = images.read_boot_file(tmp_path / "out" / "pi9.img", "cmdline.txt")
    assert "systemd.run=/boot/firmware/firstrun.sh" in cmdline
