"""Project settings: the `healthscore.yml` models and their loader."""

from healthscore.config.loader import (
    PROJECT_FILE,
    ConfigError,
    ConfigIssue,
    Project,
    load_project,
    metric_dependencies,
)
from healthscore.config.models import ProjectConfig

__all__ = [
    "PROJECT_FILE",
    "ConfigError",
    "ConfigIssue",
    "Project",
    "ProjectConfig",
    "load_project",
    "metric_dependencies",
]
