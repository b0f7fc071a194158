"""Who the API admits, against what etcd holds now rather than what its watch has
delivered so far: a person added a moment ago can call at once (the CI failure of session 9:
a reader refused right after `allow`, on a loaded machine)."""

from __future__ import annotations

from pathlib import Path

import pytest
from apiserver import served_api

from picluster_agent.errors import PermissionDenied
from picluster_agent.etcd.localcluster import EtcdCluster


def test_a_user_added_after_the_last_watched_change_is_admitted_with_their_role(
    etcd1: EtcdCluster, tmp_path: Path
) -> None:
    with served_api(etcd1, tmp_path) as api:
        api.users.stop()  # its copy follows etcd no more: a watch as late as it can be
        ada = api.caller("ada", "picluster-reader")
        assert api.users.role_of("ada") is None  # the copy lacks her
        assert api.client(ada).jobs() == []
        with pytest.raises(PermissionDenied, match="ada is a reader; this needs a submitter"):
            api.client(ada).submit(["true"])
        stranger = api.pki.issue("nobody")  # of the CA, but no user in etcd either
        with pytest.raises(PermissionDenied, match="nobody is not a user of this cluster"):
            api.client(stranger).jobs()
