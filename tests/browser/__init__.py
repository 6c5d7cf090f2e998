"""The browser tier: the dashboard in real headless Chromium against a real daemon.

A package (as tests/api is) so its conftest imports as `browser.conftest`, not as a
second `conftest` shadowing tests/conftest.py for the modules that import from it.
"""
