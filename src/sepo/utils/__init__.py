"""Small shared utilities (I/O, configs, logging, random draws)."""
