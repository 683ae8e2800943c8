"""The path of a request: authenticate, admit, queue, pick a replica, proxy."""
