#!/usr/bin/python
"""Read and write files on the FAT boot partition of an image file or a card, with mtools.

No mount, no loop device: the partition is found in the partition table (sfdisk --json) and
mtools works on it at its byte offset (IMAGE@@OFFSET), so image files need no root and block
devices take the same path.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: flash_bootfs
short_description: Read or write files on the FAT boot partition of a disk image or card
description:
  - Finds the first FAT partition (MBR types 0x01/0x04/0x06/0x0b/0x0c/0x0e/0xef, GPT EFI
    system or basic data) with C(sfdisk --json) and uses mtools at its byte offset.
  - C(state=info) reads the volume label, the top-level file names and the files named in
    I(read). C(state=files) brings the files in I(files) to their wanted state, writing a
    file only when its content differs.
options:
  path:
    description: Image file or block device.
    type: path
    required: true
  state:
    description: What to do.
    type: str
    choices: [info, files]
    default: info
  read:
    description: Files whose content C(state=info) returns (those that exist).
    type: list
    elements: str
    default: []
  files:
    description: Files in the root directory of the boot partition (C(state=files)).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: File name.
        type: str
        required: true
      content:
        description: Wanted content (UTF-8 text); required unless I(state=absent).
        type: str
      state:
        description: present or absent.
        type: str
        choices: [present, absent]
        default: present
      validate:
        description: Command run on a temporary copy of I(content) before anything is
          written; C(%s) is its path.
        type: str
      yaml:
        description: Refuse I(content) that is not valid YAML (read with libyaml when PyYAML
          has it).
        type: bool
        default: false
author: picluster
"""

RETURN = r"""
offset:
  description: Byte offset of the boot partition.
  type: int
  returned: always
label:
  description: FAT volume label (state=info).
  type: str
  returned: when state is info
files:
  description: Top-level file names, lower case (state=info).
  type: list
  returned: when state is info
contents:
  description: Name to text of the files asked for in I(read) that exist (state=info).
  type: dict
  returned: when state is info
changed_files:
  description: Names of the files written or deleted (state=files).
  type: list
  returned: when state is files
"""

FAT_MBR_TYPES = {"1", "4", "6", "b", "c", "e", "ef"}
FAT_GPT_TYPES = {
    "c12a7328-f81f-11d2-ba4b-00a0c93ec93b",  # EFI system partition
    "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7",  # Microsoft basic data
}


class BootfsError(Exception):
    pass


def boot_partition(table: dict) -> dict:
    """The first FAT partition of an `sfdisk --json` table, with its byte offset and size."""
    pt = table.get("partitiontable", {})
    sector = int(pt.get("sectorsize", 512))
    for index, part in enumerate(pt.get("partitions", []), start=1):
        ptype = str(part.get("type", "")).lower().removeprefix("0x")
        if ptype in FAT_MBR_TYPES or ptype in FAT_GPT_TYPES:
            return {
                "number": index,
                "offset": int(part["start"]) * sector,
                "size": int(part["size"]) * sector,
            }
    raise BootfsError("no FAT boot partition in the partition table")


class Bootfs:
    """mtools on one FAT filesystem at a byte offset inside an image or device."""

    def __init__(self, path: str):
        self.path = path
        self.env = dict(os.environ, MTOOLS_SKIP_CHECK="1", MTOOLS_LOWER_CASE="1")
        out = self._run(["sfdisk", "--json", path], "read the partition table")
        try:
            self.partition = boot_partition(json.loads(out))
        except ValueError as exc:
            raise BootfsError(f"unreadable partition table: {exc}") from exc
        self.image = f"{path}@@{self.partition['offset']}"
        self._files: list[str] | None = None

    def _run(self, argv: list[str], what: str, ok=(0,)) -> str:
        try:
            proc = subprocess.run(
                argv, capture_output=True, env=getattr(self, "env", None), check=False
            )
        except OSError as exc:
            raise BootfsError(f"cannot {what}: {exc} (install mtools and fdisk)") from exc
        if proc.returncode not in ok:
            err = proc.stderr.decode(errors="replace").strip()
            raise BootfsError(f"cannot {what} on {self.path}: {err}")
        return proc.stdout.decode(errors="replace")

    def label(self) -> str:
        out = self._run(["mlabel", "-s", "-i", self.image, "::"], "read the volume label")
        text = out.strip()
        prefix = "Volume label is "
        return text[len(prefix) :].strip() if text.startswith(prefix) else ""

    def files(self) -> list[str]:
        if self._files is None:
            out = self._run(["mdir", "-b", "-i", self.image, "::/"], "list the boot partition")
            self._files = sorted(
                line.strip().removeprefix("::/").lower()
                for line in out.splitlines()
                if line.strip()
            )
        return self._files

    def read(self, name: str) -> bytes | None:
        if name.lower() not in self.files():
            return None
        proc = subprocess.run(
            ["mcopy", "-n", "-i", self.image, f"::/{name}", "-"],
            capture_output=True,
            env=self.env,
            check=False,
        )
        if proc.returncode != 0:
            raise BootfsError(
                f"cannot read {name} on {self.path}: {proc.stderr.decode(errors='replace')}"
            )
        return proc.stdout

    def write(self, name: str, data: bytes) -> None:
        with tempfile.NamedTemporaryFile(prefix="flash-bootfs-") as tmp:
            tmp.write(data)
            tmp.flush()
            self._run(["mcopy", "-o", "-i", self.image, tmp.name, f"::/{name}"], f"write {name}")
        self._files = None

    def delete(self, name: str) -> None:
        self._run(["mdel", "-i", self.image, f"::/{name}"], f"delete {name}")
        self._files = None


def validate_content(module: AnsibleModule, spec: dict, data: bytes) -> str:
    """Error text, '' when the content passes the checks the file asks for."""
    if spec.get("yaml"):
        import yaml

        # libyaml where PyYAML has it: netplan and cloud-init's C loader read these files with
        # libyaml, which refuses what the pure-Python loader lets through (JSON surrogates).
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        try:
            yaml.load(data, Loader=loader)
        except yaml.YAMLError as exc:
            return f"{spec['name']} is not valid YAML: {exc}"
    command = spec.get("validate")
    if command:
        with tempfile.NamedTemporaryFile(prefix="flash-validate-") as tmp:
            tmp.write(data)
            tmp.flush()
            rc, out, err = module.run_command(command.replace("%s", tmp.name))
            if rc != 0:
                return f"{spec['name']} failed validation ({command}): {err or out}"
    return ""


def sync_files(module: AnsibleModule, fs: Bootfs, specs: list[dict]) -> dict:
    """Plan every change, validate every new content, then write: all or nothing checked."""
    plan = []
    for spec in specs:
        name = spec["name"]
        current = fs.read(name)
        if spec.get("state", "present") == "absent":
            if current is not None:
                plan.append((name, None, current))
            continue
        if spec.get("content") is None:
            raise BootfsError(f"{name}: content is required")
        wanted = spec["content"].encode()
        if current != wanted:
            error = validate_content(module, spec, wanted)
            if error:
                raise BootfsError(error)
            plan.append((name, wanted, current))
    result: dict = {"changed": bool(plan), "changed_files": [name for name, _, _ in plan]}
    if module._diff and plan:
        result["diff"] = [
            {
                "before": (old or b"").decode(errors="replace"),
                "after": (new or b"").decode(errors="replace"),
                "before_header": f"{fs.path}:/{name}",
                "after_header": f"{fs.path}:/{name}",
            }
            for name, new, old in plan
        ]
    if not module.check_mode:
        for name, new, _ in plan:
            if new is None:
                fs.delete(name)
            else:
                fs.write(name, new)
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "state": {"type": "str", "choices": ["info", "files"], "default": "info"},
            "read": {"type": "list", "elements": "str", "default": []},
            "files": {
                "type": "list",
                "elements": "dict",
                "default": [],
                "options": {
                    "name": {"type": "str", "required": True},
                    "content": {"type": "str"},
                    "state": {
                        "type": "str",
                        "choices": ["present", "absent"],
                        "default": "present",
                    },
                    "validate": {"type": "str"},
                    "yaml": {"type": "bool", "default": False},
                },
            },
        },
        supports_check_mode=True,
    )
    params = module.params
    try:
        fs = Bootfs(params["path"])
        result: dict = {"changed": False, "offset": fs.partition["offset"]}
        if params["state"] == "info":
            contents = {}
            for name in params["read"]:
                data = fs.read(name)
                if data is not None:
                    contents[name] = data.decode(errors="replace")
            result.update(label=fs.label(), files=fs.files(), contents=contents)
        else:
            result.update(sync_files(module, fs, params["files"]))
        module.exit_json(**result)
    except BootfsError as exc:
        module.fail_json(msg=str(exc))


if __name__ == "__main__":
    main()
