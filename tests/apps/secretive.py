import os

import ember

app = ember.App("secretive")


@app.function(
    secrets=[
        ember.Secret.from_name("db-creds"),
        ember.Secret.from_dict({"MODE": "inline-mode-value"}),
    ]
)
def read_env() -> dict:
    print(f"connecting with password {os.environ['DB_PASSWORD']}", flush=True)
    return {
        "user": os.environ["DB_USER"],
        "mode": os.environ["MODE"],
        "password_length": len(os.environ["DB_PASSWORD"]),
    }


@app.function(secrets=[ember.Secret.from_name("missing-secret")])
def needs_missing() -> None:
    pass
