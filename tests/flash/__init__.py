"""Tests of playbooks/flash.yml and roles/flash (a package, so its conftest stays its own)."""
