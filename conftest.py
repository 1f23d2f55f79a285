"""Makes the repository importable when pytest runs from a checkout."""
