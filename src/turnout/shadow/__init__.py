"""Shadow variants: mirrored traffic whose answers are compared, never returned."""
