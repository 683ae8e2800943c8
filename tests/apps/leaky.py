"""An app whose code prints, raises and returns its secrets, the ways real code does by accident."""

import os
import sys

import ember

app = ember.App("leaky")
creds = ember.Secret.from_name("leaky-creds")


@app.function(secrets=[creds])
def chatter() -> str:
    password = os.environ["DB_PASSWORD"]
    print(f"pem is {os.environ['PEM_KEY']}", flush=True)
    print(password[:9], flush=True)  # a value cut across two lines
    print(password[9:], flush=True)
    sys.stdout.write(f"password={password[:5]}")  # and across two writes of one line
    sys.stdout.flush()
    sys.stdout.write(password[5:] + "\n")
    print(f"pin {os.environ['PIN']} for user", flush=True)
    return "chatted"


@app.function(secrets=[creds])
def fail() -> None:
    raise RuntimeError(f"cannot connect with password {os.environ['DB_PASSWORD']}")


@app.function(secrets=[creds])
def reveal() -> dict:
    return {"password": os.environ["DB_PASSWORD"]}
