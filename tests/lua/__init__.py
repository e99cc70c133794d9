"""Lua tests: each script of ``celery_persistent/lua`` driven directly, with explicit KEYS and ARGV."""
