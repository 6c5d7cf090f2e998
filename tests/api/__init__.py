"""The API tier: the real aiohttp app in process, a temp SQLite store, a fake engine.

A package (unlike tests/unit and tests/integration) so its conftest imports as
`api.conftest`, not as a second `conftest` that would shadow tests/conftest.py for
the modules that import from it, and so a module moved here may keep its name
while part of it stays in tests/integration.
"""
