"""The Molecule test image: tagged by its recipe, used by that tag everywhere, and each
container made from it gets its own SSH host keys at boot (without Docker: the scripts
that tag and customise the image, run on copies and on a fake rootfs)."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"
TAG = re.compile(r"picluster-test:bookworm-[0-9a-f]{16}")
RECIPE = [
    "build-test-image",
    "test-image-tag",
    *(f"test-image/{p.name}" for p in sorted((SCRIPTS / "test-image").iterdir())),
]


def tag_of(scripts: Path) -> str:
    out = subprocess.run([scripts / "test-image-tag"], capture_output=True, text=True, check=True)
    assert TAG.fullmatch(out.stdout.strip()), out.stdout
    return out.stdout.strip()


@pytest.fixture
def recipe_copy(tmp_path: Path) -> Path:
    scripts = tmp_path / "scripts"
    (scripts / "test-image").mkdir(parents=True)
    for name in RECIPE:
        shutil.copy2(SCRIPTS / name, scripts / name)
    return scripts


def test_recipe_lists_what_goes_into_the_image():
    assert {
        "test-image/packages.txt",
        "test-image/customize",
        "test-image/ssh-host-keys.service",
    } <= set(RECIPE)
    assert tag_of(SCRIPTS)


@pytest.mark.parametrize("name", RECIPE)
def test_tag_changes_with_every_recipe_file(recipe_copy: Path, name: str):
    original = tag_of(recipe_copy)
    assert original == tag_of(SCRIPTS)  # the tag depends on content, not on where the checkout is
    path = recipe_copy / name
    text = path.read_text()
    path.write_text(text + "# changed\n")
    assert tag_of(recipe_copy) != original
    path.write_text(text)
    assert tag_of(recipe_copy) == original


def test_tag_changes_when_a_file_joins_the_recipe(recipe_copy: Path):
    original = tag_of(recipe_copy)
    (recipe_copy / "test-image" / "extra.conf").write_text("")
    assert tag_of(recipe_copy) != original


def test_every_scenario_runs_on_the_tagged_image():
    # Unset, the default names no image that exists, and says what to do.
    for path in sorted((REPO / "molecule").glob("*/molecule.yml")):
        # Molecule substitutes variables in the whole file, comments included.
        assert not re.search(r"\$(?!\{[A-Z_]+(:-[^}]+)?\})", path.read_text()), path
        for platform in yaml.safe_load(path.read_text())["platforms"]:
            image = platform["image"]
            assert image.startswith("${PICLUSTER_TEST_IMAGE:-"), (path, image)
            assert "unset" in image and "test-image-tag" in image, (path, image)


@pytest.mark.parametrize("script", ["molecule-all", "lab"])
def test_scripts_that_run_molecule_export_the_tag(script: str):
    text = (SCRIPTS / script).read_text()
    assert re.search(r'PICLUSTER_TEST_IMAGE="\$\(.*scripts/test-image-tag"?\)"', text)
    assert "export PICLUSTER_TEST_IMAGE" in text
    assert "build-test-image" in text


def test_no_fixed_tag_left():
    # A fixed tag outlives its recipe on every machine that has it (how CI stayed green).
    texts = [*SCRIPTS.iterdir(), *(REPO / "molecule").rglob("*.yml"), *(REPO / "docs").glob("*.md")]
    for path in [*texts, REPO / "README.md"]:
        if path.is_file():
            assert "picluster-test:bookworm}" not in path.read_text(), path
            assert "picluster-test:bookworm " not in path.read_text(), path


def test_image_makes_each_containers_host_keys_before_sshd(tmp_path: Path):
    root = tmp_path / "rootfs"
    for d in ("etc/ssh", "etc/systemd/system", "var/lib/apt/lists", "var/cache/apt/archives"):
        (root / d).mkdir(parents=True)
    (root / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    for key in ("ssh_host_ed25519_key", "ssh_host_ed25519_key.pub", "ssh_host_rsa_key"):
        (root / "etc/ssh" / key).write_text("debootstrap's key\n")
    (root / "etc/ssh/sshd_config").write_text("")

    subprocess.run([SCRIPTS / "test-image/customize", root], check=True)

    assert sorted(p.name for p in (root / "etc/ssh").iterdir()) == ["sshd_config"]
    assert (root / "etc/machine-id").read_text() == ""
    # Enabled the way `systemctl enable` would: pulled in by ssh.service, ordered before it.
    link = root / "etc/systemd/system/ssh.service.wants/ssh-host-keys.service"
    assert link.is_symlink() and not Path(link.readlink()).is_absolute()
    unit = configparser.ConfigParser(interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(link.resolve().read_text())
    assert link.resolve() == root / "etc/systemd/system/ssh-host-keys.service"
    assert unit["Unit"]["Before"] == "ssh.service"
    assert unit["Service"]["Type"] == "oneshot"
    assert unit["Service"]["ExecStart"] == "/usr/bin/ssh-keygen -A"
    assert unit["Install"]["WantedBy"] == "ssh.service"
