"""One module per schema revision, oldest first: initial_schema, then what follows it."""
