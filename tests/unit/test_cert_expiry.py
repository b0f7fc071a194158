"""node/certs.py reads when certificate files expire (the check `picluster doctor` runs),
against certificates made by the `cryptography` library, as Ansible's crypto modules make
them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from picluster_agent.doctor.certs import expiry_check, not_after_of_file
from picluster_agent.doctor.result import Level
from picluster_agent.node.certs import file_expiries, node_cert_files, read_certificates

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def pem(cn: str, not_after: datetime, *, extra_rdn: bool = False) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "picluster")] if extra_rdn else []
    name = x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(min(NOW, not_after) - timedelta(days=1)).not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize(
    "not_after",
    [
        datetime(2027, 11, 27, 12, 0, 5, tzinfo=UTC),  # UTCTime
        datetime(2046, 11, 22, 0, 0, tzinfo=UTC),  # the CA's 20 years, UTCTime
        datetime(2051, 3, 1, 8, 30, tzinfo=UTC),  # GeneralizedTime (from 2050 on)
    ],
)
def test_reads_the_cn_and_the_end_of_validity(not_after: datetime) -> None:
    assert read_certificates(pem("picluster-agent-pi1", not_after, extra_rdn=True)) == [
        ("picluster-agent-pi1", not_after)
    ]


def test_a_file_is_as_good_as_its_first_certificate_to_expire(tmp_path: Path) -> None:
    # A trust bundle during a CA rotation: the new CA and the old one.
    bundle = tmp_path / "ca.crt"
    bundle.write_bytes(
        pem("new CA", NOW + timedelta(days=7300)) + pem("old CA", NOW + timedelta(days=20))
    )
    (f,) = file_expiries([bundle])
    assert (f.subject, f.not_after, f.error) == ("old CA", NOW + timedelta(days=20), None)
    assert f.days_left(NOW) == pytest.approx(20)


@pytest.mark.parametrize(
    ("days", "warned", "words"),
    [(365, False, "365 days left"), (29.5, True, "30 days left"), (-2, True, "expired 2 days ago")],
)
def test_warns_within_thirty_days(tmp_path: Path, days: float, warned: bool, words: str) -> None:
    path = tmp_path / "client.crt"
    path.write_bytes(pem("picluster-agent-pi1", NOW + timedelta(days=days)))
    (f,) = file_expiries([path])
    assert f.expires_within(30, NOW) is warned
    assert words in f.describe(NOW) and "picluster-agent-pi1" in f.describe(NOW)


def test_unreadable_files_carry_their_reason(tmp_path: Path) -> None:
    (tmp_path / "junk.crt").write_text("not a certificate\n")
    (tmp_path / "broken.crt").write_text(
        "-----BEGIN CERTIFICATE-----\nMIIBkTCB+wIJ\n-----END CERTIFICATE-----\n"
    )
    missing = tmp_path / "missing.crt"
    found = file_expiries([tmp_path / "junk.crt", tmp_path / "broken.crt", missing])
    assert [f.error is not None for f in found] == [True, True, True]
    assert "no PEM certificate" in (found[0].error or "")
    assert not any(f.expires_within(30, NOW) for f in found)
    assert "No such file" in found[2].describe(NOW)


def test_node_cert_files_lists_the_crt_files_of_existing_directories(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    for name in ("ca.crt", "client.crt", "client.key"):
        (tmp_path / "a" / name).write_text("x")
    assert node_cert_files([tmp_path / "a", tmp_path / "absent"]) == [
        tmp_path / "a" / "ca.crt", tmp_path / "a" / "client.crt"
    ]  # fmt: skip


def test_doctor_counts_a_bundles_first_certificate_to_expire(tmp_path: Path) -> None:
    """`picluster doctor` reads files through node/certs.py too: the old CA of a trust
    bundle, listed second, is the one it warns about (it once read only the first)."""
    bundle = tmp_path / "ca.crt"
    bundle.write_bytes(
        pem("new CA", NOW + timedelta(days=7300)) + pem("old CA", NOW + timedelta(days=20))
    )
    end = not_after_of_file(str(bundle))
    assert end == (NOW + timedelta(days=20)).timestamp()
    check = expiry_check({"CA": end}, [], now=NOW.timestamp())
    assert check.level is Level.WARN and "CA in 20 days" in check.summary
    (tmp_path / "junk.crt").write_text("not a certificate\n")
    assert not_after_of_file(str(tmp_path / "junk.crt")) is None
