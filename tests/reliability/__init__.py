"""The reliability suite (issue 16): damaged inputs built by the tests themselves, and a
night killed at random moments. A package, so that its conftest.py is
``reliability.conftest`` and ``from conftest import ...`` in any test still means the
top-level tests/conftest.py; its helpers are imported as ``from reliability import
damage``."""
