"""The preference center's pages, one controller per area."""

from preference_center.controllers.consents import ConsentsController
from preference_center.controllers.data import DataController
from preference_center.controllers.link import LinkController
from preference_center.controllers.overview import OverviewController
from preference_center.controllers.preferences import PreferencesController
from preference_center.controllers.quiz import QuizController

__all__ = [
    "ConsentsController",
    "DataController",
    "LinkController",
    "OverviewController",
    "PreferencesController",
    "QuizController",
]
