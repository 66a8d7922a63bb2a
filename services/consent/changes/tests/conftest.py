"""The consent service's database fixture, for the change feed's tests too."""

from services.consent.tests.conftest import database

__all__ = ["database"]
