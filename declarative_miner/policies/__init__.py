"""Request policies: blacklist rules that decide who is served, priority strategies that order work."""
