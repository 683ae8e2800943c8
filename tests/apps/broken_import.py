import ember

app = ember.App("broken")

raise RuntimeError("this module fails at import time")
