"""What user code imports: apps, decorators, function and class handles."""
