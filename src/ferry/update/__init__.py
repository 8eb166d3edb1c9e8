"""Updates (offline, torch for the training step): retrain on feedback, gate, register, canary, live or rolled back.

:mod:`ferry.update.steps` holds the steps and :class:`~ferry.update.steps.Update` that runs them;
:mod:`ferry.update.promotion` promotes and rolls back registered versions; :mod:`ferry.update.local` is the local
stack's target and the controller that `ferry serve` runs. Nothing here is imported by the Lambda functions: the
gate, the registry, the examples and the canary's judge live in :mod:`ferry.runtime`.
"""

from ferry.update.config import UpdateConfig
from ferry.update.exceptions import InvalidUpdateConfigError, UpdateError

__all__ = ["InvalidUpdateConfigError", "UpdateConfig", "UpdateError"]
