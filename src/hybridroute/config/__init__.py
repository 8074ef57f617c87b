"""Configuration: the YAML schema, the seed defaults, cross-reference checks and loading."""
