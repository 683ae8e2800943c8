"""A Modal-style app, unchanged but for the import line."""

import ember as modal

app = modal.App("modal-compat")


@app.function()
def add(a: int, b: int) -> int:
    return a + b


@app.cls()
class Greeter:
    greeting: str = modal.parameter(default="Hello")

    @modal.enter()
    def load(self):
        self.suffix = "!"

    @modal.method()
    def greet(self, name: str) -> str:
        return f"{self.greeting}, {name}{self.suffix}"


@app.local_entrypoint()
def main():
    print("add", add.remote(2, 3))
    print("map", sum(add.map(range(10), range(10))))
    print("greet", Greeter(greeting="Bonjour").greet.remote("Ada"))
    call = add.spawn(20, 22)
    print("spawn", call.get(timeout=60))
