"""ReplicaTokens: one API token per app for its replicas, made on first need, revoked with the app.

A replica token opens only what a replica of its app needs (ember/server/api/auth.py says what):
its app's functions and calls, and the volumes its app mounts. Only the token's hash is stored, so
the token itself lives in this process; replicas do not outlive the server, and a new server
process revokes the tokens an old one at the same address left behind (after a crash, say) before
it makes new ones. Tokens are named after the server's address: servers sharing one database
revoke only their own.
"""

from __future__ import annotations

from ember.server.store.sql import SqlStore

KIND = "replica"


class ReplicaTokens:
    def __init__(self, store: SqlStore, server: str = "") -> None:
        self._store = store
        self._name = f"replicas of {server}" if server else "replicas"
        self._by_app: dict[str, tuple[str, str]] = {}  # app -> (token id, token)

    def for_app(self, app: str) -> str:
        """The token a replica of `app` calls the server with."""
        if app not in self._by_app:
            created = self._store.create_token(self._name, kind=KIND, app=app)
            self._by_app[app] = (created.id, created.token)
        return self._by_app[app][1]

    def revoke(self, app: str) -> None:
        """The app stopped: its replicas' token stops working (a redeploy makes a new one)."""
        token = self._by_app.pop(app, None)
        if token is not None:
            self._store.revoke_token(token[0])

    def revoke_all(self) -> None:
        """Every replica token of this server, this process's and any a previous one left."""
        self._by_app.clear()
        self._store.revoke_tokens(KIND, self._name)
