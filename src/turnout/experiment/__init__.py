"""A/B experiments: a route's variants compared on declared metrics, per user."""
