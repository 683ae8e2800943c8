"""ReplicaTokens: one API token per app for its replicas, made on first need, revoked with the app.

A replica token opens only what a replica of its app needs (ember/server/api/auth.py says what):
its app's functions and calls, and the volumes its app mounts. Only the token's hash is stored, so
the token itself lives in this process; replicas do not outlive the server, and a new server
process revokes the tokens an old one at the same address left behind (after a crash, say) before
it makes new ones. Tokens are named after the server's address: servers sharing one database
revoke only their own.
"""

from __future__ import annotations

from ember.server.store.async_store import AsyncStore
from ember.server.store.base import Store

KIND = "replica"


class ReplicaTokens:
    def __init__(self, store: AsyncStore, server: str = "") -> None:
        self._store = store
        self._name = f"replicas of {server}" if server else "replicas"
        self._by_app: dict[str, tuple[str, str]] = {}  # app -> (token id, token)

    async def for_app(self, app: str) -> str:
        """The token a replica of `app` calls the server with."""
        token = self._by_app.get(app)
        if token is None:
            created = await self._store.run(Store.create_token, self._name, kind=KIND, app=app)
            token = self._by_app.setdefault(app, (created.id, created.token))
            if token[0] != created.id:  # another replica's start made one meanwhile
                await self._store.run(Store.revoke_token, created.id)
        return token[1]

    async def revoke(self, app: str) -> None:
        """The app stopped: its replicas' token stops working (a redeploy makes a new one)."""
        token = self._by_app.pop(app, None)
        if token is not None:
            await self._store.run(Store.revoke_token, token[0])

    async def revoke_all(self) -> None:
        """Every replica token of this server, this process's and any a previous one left."""
        self._by_app.clear()
        await self._store.run(Store.revoke_tokens, KIND, self._name)
