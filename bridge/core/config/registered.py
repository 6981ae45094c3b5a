"""The mapping's plugin sections: desks and automation runners, as the union of the registered kinds.

The kinds come from the registry (bridge.core.plugins, Python entry points) when a model using them is
first built, not at import.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Field, GetCoreSchemaHandler
from pydantic_core import CoreSchema

from bridge.core import plugins
from bridge.core.automation import RunnerSettings
from bridge.core.desk import DeskSettings


class RegisteredDesks:
    """Validates a desk section as the union of every registered desk kind's config model, told
    apart by `kind`; read from the registry when the mapping model is first built (it defers)."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        models = tuple(plugins.desks().values())
        union = models[0] if len(models) == 1 else Union[models]  # noqa: UP007 (a runtime tuple of types)
        return handler.generate_schema(Annotated[union, Field(discriminator="kind")])


DeskConfig = Annotated[DeskSettings, RegisteredDesks]


class RegisteredRunners:
    """Validates an automation runner as the union of every registered runner kind's settings model
    (entry-point group alert_ticket_bridge.automation), told apart by `kind`."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        models = tuple(plugins.runners().values()) or (RunnerSettings,)
        union = models[0] if len(models) == 1 else Union[models]  # noqa: UP007 (a runtime tuple of types)
        return handler.generate_schema(Annotated[union, Field(discriminator="kind")])


RunnerConfig = Annotated[RunnerSettings, RegisteredRunners]
