"""Templates: one per pool that asks for memory snapshots, from which its replicas are forked.

A template is built when its function is deployed (or, for a class with parameters, when the
first replica of those parameters is wanted), kept while its pool lives, and stopped with it: a
redeploy makes a new pool, so a new template. A template whose snap hook fails (or initialised
CUDA) is not retried: its pool starts replicas fresh, and `ember app show` says why.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field

from ember.backends.base import Backend, ReplicaStartFailed, Template
from ember.server.pools import Pool, PoolKey
from ember.server.replicas.launch import Launcher

log = logging.getLogger("ember.replicas")


@dataclass(eq=False)
class PoolTemplate:
    building: asyncio.Future[Template | None] = field(default_factory=asyncio.Future)
    failure: str | None = None
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def status(self) -> str:
        if self.failure is not None:
            return f"failed: {self.failure}"
        return "ready" if self.building.done() else "building"


class Templates:
    def __init__(self, backend: Backend, launcher: Launcher) -> None:
        self._backend, self._launcher = backend, launcher
        self._templates: dict[PoolKey, PoolTemplate] = {}
        capabilities = backend.capabilities()
        self.missing = capabilities.forking_missing

    def eligible(self, pool: Pool) -> bool:
        web = pool.spec.web
        return (
            pool.spec.enable_memory_snapshot
            and self.missing is None
            and not (web is not None and web.kind == "web_server")  # its port is per replica
        )

    def want(self, pool: Pool) -> None:
        """Build the pool's template if it needs one and has none."""
        if self.eligible(pool) and pool.key not in self._templates:
            record = self._templates[pool.key] = PoolTemplate()
            record.building = asyncio.ensure_future(self._build(pool, record))

    async def get(self, pool: Pool) -> Template | None:
        """The pool's ready template (waiting for one being built), or None: start fresh."""
        self.want(pool)
        template = self._templates.get(pool.key)
        return await asyncio.shield(template.building) if template else None

    def status(self, key: PoolKey) -> str | None:
        template = self._templates.get(key)
        return template.status if template else None

    async def _build(self, pool: Pool, record: PoolTemplate) -> Template | None:
        """Start the template and wait for its snap hooks; the record (which a retire may have
        dropped meanwhile) gets the outcome."""
        launch = await self._launcher.template_launch(pool, f"t-{uuid.uuid4().hex[:10]}")
        try:
            template = await self._backend.start_template(launch)
            status = await template.wait_ready()
        except Exception as exc:
            if not isinstance(exc, ReplicaStartFailed):
                log.exception("building the template of %s failed", _name(pool.key))
            record.failure = str(exc)
            log.warning("template of %s failed (%s); its replicas start fresh",
                        _name(pool.key), exc)  # fmt: skip
            return None
        record.phases = status.phases
        log.info("template of %s ready: %s", _name(pool.key), _phases(status.phases))
        return template

    async def retire(self, key: PoolKey) -> None:
        """Stop the template of a pool that is gone (once it is built, if it is being built)."""
        template = self._templates.pop(key, None)
        built = await template.building if template else None
        if built is not None:
            await self._backend.stop_template(built)

    def close(self) -> None:
        """Stop building (the backend stops every process it started when it closes)."""
        for template in self._templates.values():
            template.building.cancel()


def _name(key: PoolKey) -> str:
    return f"{key.app}.{key.function} (v{key.version})"


def _phases(phases: dict[str, float]) -> str:
    return ", ".join(f"{name} {seconds:.2f} s" for name, seconds in phases.items()) or "-"
