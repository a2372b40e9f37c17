"""The config schema, its validation and loading. Pure: no sockets, no clocks."""

from turnout.config.load import config_from_mapping, config_from_text, json_schema, load_config
from turnout.config.model import Config

__all__ = ["Config", "config_from_mapping", "config_from_text", "json_schema", "load_config"]
