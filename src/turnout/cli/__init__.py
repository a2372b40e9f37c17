"""The turnout command line."""
