import ember

app = ember.App("broken-enter")


@app.cls()
class Broken:
    @ember.enter()
    def load(self) -> None:
        raise ValueError("weights not found at /nowhere")

    @ember.method()
    def predict(self, x: int) -> int:
        return x
