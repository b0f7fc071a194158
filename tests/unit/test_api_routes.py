"""The HTTPS API's routes, as the server registers them: each declares its least role, and
the OpenAPI description (picluster_agent/api/openapi.yaml) names exactly these."""

from __future__ import annotations

import pytest
from aiohttp import web

from picluster_agent.api.auth import Role, UserDirectory, declared_role, requires
from picluster_agent.api.context import ApiContext
from picluster_agent.api.describe import openapi
from picluster_agent.api.server import build_app
from picluster_agent.client import Client
from picluster_agent.config import AgentConfig, Connection
from picluster_agent.etcd.adapter import EtcdClient
from picluster_agent.jobs.spec import _FIELD_NAMES

METHODS = {"get", "post", "put", "delete", "patch"}


def make_app(modules=None) -> web.Application:
    # Nothing here speaks to etcd: the app is only built and looked at.
    etcd = EtcdClient(["http://127.0.0.1:9"])
    conn = Connection(endpoints=("http://127.0.0.1:9",))
    client = Client.from_connection(conn, etcd)
    ctx = ApiContext(
        cfg=AgentConfig(connection=conn, name="pi1"),
        etcd=etcd,
        client=client,
        users=UserDirectory(etcd, client.keys),
    )
    return build_app(ctx) if modules is None else build_app(ctx, modules)


def registered() -> set[tuple[str, str]]:
    out = set()
    for route in make_app().router.routes():
        if route.method == "HEAD" or isinstance(route.resource, web.StaticResource):
            continue
        out.add((route.method.lower(), route.resource.canonical))
    return out


def described() -> set[tuple[str, str]]:
    return {
        (method, path)
        for path, item in openapi()["paths"].items()
        for method in item
        if method in METHODS
    }


def test_the_openapi_description_names_exactly_the_registered_routes():
    missing = registered() - described()
    extra = described() - registered()
    assert not missing, f"routes not in openapi.yaml: {sorted(missing)}"
    assert not extra, f"openapi.yaml describes routes nobody serves: {sorted(extra)}"


def test_every_route_declares_its_role_and_public_ones_say_so_in_the_description():
    spec = openapi()
    for route in make_app().router.routes():
        if route.method == "HEAD" or isinstance(route.resource, web.StaticResource):
            continue
        role = declared_role(route.handler)
        assert role is not None, route
        item = spec["paths"][route.resource.canonical][route.method.lower()]
        assert (item.get("security") == []) == (role == "public"), route


def test_the_described_job_spec_has_exactly_the_spec_fields():
    described = set(openapi()["components"]["schemas"]["JobSpec"]["properties"])
    assert described == {*_FIELD_NAMES, "id"}


def test_a_route_without_a_role_stops_the_server_from_starting():
    class Module:
        @staticmethod
        def add_routes(app: web.Application, _ctx: object) -> None:
            async def open_door(_request: web.Request) -> web.Response:
                return web.Response()

            app.router.add_get("/v1/open", open_door)

    with pytest.raises(TypeError, match="/v1/open"):
        make_app([Module])


def test_roles_are_ordered_and_marked():
    assert Role.READER < Role.SUBMITTER < Role.OPERATOR < Role.AGENT

    @requires(Role.SUBMITTER)
    async def handler(_request: web.Request) -> web.Response:
        return web.Response()

    assert declared_role(handler) is Role.SUBMITTER
