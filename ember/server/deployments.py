"""Deployments: the current version of every app, its source on disk, and the pools it feeds."""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from ember import wire
from ember.resources import Resources
from ember.server.errors import ApiError
from ember.server.home import write_private
from ember.server.pools import Pool, PoolKey, PoolRegistry
from ember.server.replicas.placement import Unplaceable
from ember.server.store.async_store import AsyncStore
from ember.server.store.base import AppRecord, Store
from ember.spec_checks import SpecError, check_deploy_request

log = logging.getLogger("ember.server")
ResolveResources = Callable[[wire.FunctionSpec], tuple[Resources, list[str]]]


@dataclass(frozen=True)
class Deployment:
    app: str
    version: int
    request: wire.DeployRequest
    source_dir: Path | None
    resources: dict[str, Resources] = field(default_factory=dict)  # what each function gets
    unplaceable: dict[str, str] = field(default_factory=dict)  # function -> why it cannot run
    notes: list[str] = field(default_factory=list)  # what the host could not honour

    def find(self, function: str) -> wire.FunctionSpec | None:
        return next((s for s in self.request.functions if s.name == function), None)

    def spec(self, function: str) -> wire.FunctionSpec:
        spec = self.find(function)
        if spec is not None:
            return spec
        names = ", ".join(s.name for s in self.request.functions)
        raise ApiError(
            404,
            "NotFoundError",
            f"app {self.app!r} has no function {function!r} (functions: {names})",
        )


class Deployments:
    def __init__(
        self,
        store: AsyncStore,
        apps_dir: Path,
        pools: PoolRegistry,
        put_secret: Callable[[str, dict[str, str]], Awaitable[None]],
        resolve: ResolveResources,
    ) -> None:
        self._store, self._apps_dir, self._pools = store, apps_dir, pools
        self._put_secret, self._resolve = put_secret, resolve
        self._current: dict[str, Deployment] = {}
        # Apps the store had, stopped or not, at the last look: a miss names the right cause
        # ("is stopped", "is not deployed") without asking the store on the request's path.
        self._known: set[str] = set()
        self._unbuildable: set[tuple[str, int]] = set()  # (app, version) whose images failed here

    async def forget_ephemeral(self) -> None:
        """At start: ephemeral apps of a dead run are dropped."""
        for record in await self._store.run(Store.list_apps):
            if record.ephemeral:
                await self._forget(record.name)

    async def follow(
        self, build: Callable[[wire.DeployRequest], Awaitable[None]]
    ) -> list[Deployment]:
        """Serve what the store says is deployed: at start, and then to catch up with deploys
        and stops made through other servers on the same database. `build` builds a version's
        images here before it serves. Returns the deployments it began to serve."""
        apps = await self._store.run(Store.list_apps)
        self._known = {r.name for r in apps}
        records = {r.name: r for r in apps if not r.ephemeral}
        for name, mine in list(self._current.items()):
            stored = records.get(name)
            if not mine.request.ephemeral and (stored is None or stored.state != "deployed"):
                log.info("app %s: stopped through another server", name)
                self._current.pop(name)
                self._pools.retire(name)
        adopted = []
        for record in records.values():
            if self._behind(record) and (record.name, record.version) not in self._unbuildable:
                deployment = await self._catch_up(record, build)
                adopted += [deployment] if deployment else []
        return adopted

    def _behind(self, record: AppRecord) -> bool:
        mine = self._current.get(record.name)
        return record.state == "deployed" and (mine is None or mine.version < record.version)

    async def _catch_up(
        self, record: AppRecord, build: Callable[[wire.DeployRequest], Awaitable[None]]
    ) -> Deployment | None:
        request = await self._store.run(Store.app_version, record.name, record.version)
        try:
            await build(request)
        except ApiError as exc:
            log.error("app %s v%d: %s", record.name, record.version, exc.message)
            self._unbuildable.add((record.name, record.version))
            return None
        # While the images built, a deploy or stop here may have overtaken this version.
        now = await self._store.run(Store.get_app, record.name)
        if now is None or now.version != record.version or not self._behind(now):
            return None
        log.info("app %s: serving v%d", record.name, record.version)
        return self._adopt(now, request)

    def _adopt(self, record: AppRecord, request: wire.DeployRequest) -> Deployment:
        """Serve the version the store records: one deployed before this process started, or by
        another server on the same database (its sources are then written into this home)."""
        source_dir = None
        if request.files:
            source_dir = self._apps_dir / record.name / f"v{record.version}"
            if not source_dir.exists():
                source_dir.mkdir(parents=True, mode=0o700)
                _write_sources(source_dir, request.files)
        deployment = self._placed(record.name, record.version, request, source_dir)
        for reason in deployment.unplaceable.values():
            log.error("app %s: %s", record.name, reason)
        self._current[record.name] = deployment
        self._pools.retire(record.name, keep_version=record.version)
        self._warm(deployment)
        return deployment

    async def validate(self, request: wire.DeployRequest) -> None:
        """Everything that can be refused cheaply, before any image is built: the SDK's own
        rules again (ember/spec_checks.py), image hashes included, then names and secrets."""
        try:
            check_deploy_request(request)
        except SpecError as exc:
            raise ApiError(400, "InvalidError", f"invalid deploy request: {exc}") from None
        _validate(request)
        apps = await self._store.run(Store.list_apps)
        check_names_ignoring_case(request, [app.name for app in apps])
        await self._check_secrets(request)
        for spec in request.functions:
            try:
                self._resolve(spec)
            except Unplaceable as exc:
                raise ApiError(400, "InvalidError", str(exc)) from None

    def _placed(
        self, app: str, version: int, request: wire.DeployRequest, source_dir: Path | None
    ) -> Deployment:
        """The deployment with what this host gives each function."""
        deployment = Deployment(app, version, request, source_dir)
        for spec in request.functions:
            try:
                resources, notes = self._resolve(spec)
            except Unplaceable as exc:
                deployment.unplaceable[spec.name] = str(exc)
                continue
            deployment.resources[spec.name] = resources
            deployment.notes.extend(notes)
        return deployment

    async def deploy(self, request: wire.DeployRequest) -> Deployment:
        """Write the source, then record the version: a failure leaves the previous one current.
        The request must have passed `validate`."""
        for name, values in request.inline_secrets.items():
            await self._put_secret(name, values)
        request = request.model_copy(update={"inline_secrets": {}})
        staging = None
        if request.files:
            self._apps_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            staging = Path(tempfile.mkdtemp(prefix=".deploy-", dir=self._apps_dir))
            try:
                _write_sources(staging, request.files)
            except BaseException:
                shutil.rmtree(staging)
                raise
        try:
            version = await self._store.run(Store.deploy, request)
        except BaseException:
            if staging is not None:
                shutil.rmtree(staging)
            raise
        self._known.add(request.app_name)
        source_dir = None
        if staging is not None:
            source_dir = self._apps_dir / request.app_name / f"v{version}"
            source_dir.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if source_dir.exists():
                shutil.rmtree(source_dir)
            staging.rename(source_dir)
        deployment = self._placed(request.app_name, version, request, source_dir)
        if self._newer(deployment):  # a deploy that got a later version may be done first
            self._current[request.app_name] = deployment
            self._pools.retire(request.app_name, keep_version=version)
            self._warm(deployment)
        return deployment

    def _newer(self, deployment: Deployment) -> bool:
        """Whether `deployment` is newer than the one served."""
        mine = self._current.get(deployment.app)
        return mine is None or mine.version < deployment.version

    async def _check_secrets(self, request: wire.DeployRequest) -> None:
        secrets = await self._store.run(Store.list_secrets)
        known = {s.name for s in secrets} | set(request.inline_secrets)
        for spec in request.functions:
            for name in spec.secrets:
                if name not in known:
                    raise ApiError(
                        400,
                        "NotFoundError",
                        f"{spec.name} uses secret {name!r}, which does not exist; "
                        f"create it with `ember secret create {name} KEY=VALUE`",
                    )

    def _warm(self, deployment: Deployment) -> None:
        """Create the pools that must run without traffic (min_containers, buffer)."""
        for spec in deployment.request.functions:
            if spec.min_containers > 0 and spec.name not in deployment.unplaceable:
                self.pool(deployment, spec.name, "")

    def find(self, app: str) -> Deployment | None:
        """The app's current deployment, or None if it is stopped or unknown."""
        return self._current.get(app)

    def current(self, app: str) -> Deployment:
        deployment = self._current.get(app)
        if deployment is None:
            state = "is stopped" if app in self._known else "is not deployed"
            raise ApiError(
                404, "NotFoundError", f"app {app!r} {state}; deploy it with `ember deploy`"
            )
        return deployment

    def pool(self, deployment: Deployment, function: str, params: str) -> Pool:
        spec = deployment.spec(function)
        if function in deployment.unplaceable:
            raise ApiError(503, "NoCapacity", deployment.unplaceable[function])
        key = PoolKey(deployment.app, deployment.version, function, params)
        return self._pools.get_or_create(
            key, spec, deployment.request, deployment.source_dir, deployment.resources[function]
        )

    async def stop(self, app: str) -> None:
        deployment = self.current(app)
        self._current.pop(app, None)
        self._pools.retire(app)
        if deployment.request.ephemeral:
            await self._forget(app)
        else:
            await self._store.run(Store.set_app_state, app, "stopped")

    async def _forget(self, app: str) -> None:
        self._known.discard(app)
        await self._store.run(Store.delete_app, app)
        shutil.rmtree(self._apps_dir / app, ignore_errors=True)

    def all(self) -> list[Deployment]:
        return list(self._current.values())


def _write_sources(folder: Path, files: dict[str, str]) -> None:
    """Write an app's sources under `folder`, private to the server's user (they may hold
    Secret.from_dict values); a path leading out of it, or one that cannot be written, is a 400."""
    for relpath, text in files.items():
        target = (folder / relpath).resolve()
        if folder.resolve() not in target.parents:
            raise ApiError(400, "InvalidError", f"source path {relpath!r} escapes the app")
        try:
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_private(target, text.encode())
        except OSError as exc:
            raise ApiError(
                400, "InvalidError", f"cannot write source {relpath!r}: {exc.strerror}"
            ) from None


# The server's own paths: /<name> and /<name>/... are never an app's endpoints.
RESERVED_APP_NAMES = frozenset(
    {"api", "healthz", "docs", "redoc", "openapi.json", "metrics", "dashboard"}
)


def check_names_ignoring_case(request: wire.DeployRequest, existing_apps: list[str]) -> None:
    """Host names ignore case, so `CamelApp` and `camelapp` would share the endpoint URL
    `camelapp--<function>.<domain>`: refuse an app name that differs only in case from another
    app's (deployed or stopped), and function names of one app that do."""
    name = request.app_name
    for other in existing_apps:
        if other != name and other.casefold() == name.casefold():
            raise ApiError(
                400,
                "InvalidError",
                f"app name {name!r} differs only in case from the existing app {other!r}; "
                "endpoint host names ignore case, so both would have the same URLs. "
                f"Deploy it as {other!r}, or choose another name",
            )
    seen: dict[str, str] = {}
    for spec in request.functions:
        clash = seen.setdefault(spec.name.casefold(), spec.name)
        if clash != spec.name:
            raise ApiError(
                400,
                "InvalidError",
                f"functions {clash!r} and {spec.name!r} differ only in case; endpoint host "
                "names ignore case, so both would have the same URL. Rename one",
            )


def _validate(request: wire.DeployRequest) -> None:
    names = [spec.name for spec in request.functions]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ApiError(400, "InvalidError", f"duplicate function names: {', '.join(duplicates)}")
    name = request.app_name
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name) or "--" in name:
        raise ApiError(
            400,
            "InvalidError",
            f"invalid app name {name!r}: use letters, digits, "
            "'-', '_' and '.', at most 64, without '--' (it separates app and "
            "function in endpoint host names)",
        )
    if name in RESERVED_APP_NAMES:
        raise ApiError(
            400,
            "InvalidError",
            f"app name {name!r} is reserved for the server's own "
            f"paths ({', '.join(sorted(RESERVED_APP_NAMES))}); choose another",
        )
