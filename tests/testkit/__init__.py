"""Helpers shared by tests (tests/ is on sys.path through its conftest: `from testkit.X import ...`)."""
