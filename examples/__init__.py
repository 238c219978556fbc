"""Example flowworker applications."""
