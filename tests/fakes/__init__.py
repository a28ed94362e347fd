"""Local stand-ins for external services (only paid/remote ones), driven by tests."""
