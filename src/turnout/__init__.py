"""turnout: a traffic-splitting gateway for LLM deployments."""

__version__ = "0.1.0"
