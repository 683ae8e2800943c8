"""What runs inside a replica process."""
