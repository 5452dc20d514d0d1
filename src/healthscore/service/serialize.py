"""Conversion of layer results (dataclasses, DataFrames, NumPy values) to JSON types."""

from __future__ import annotations

import dataclasses
import math
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel

from healthscore.monitoring.outbox import AlertRecord


def jsonable(value: Any) -> Any:
    """Convert `value` to JSON types: NaN and NaT become null, dates ISO strings."""
    if isinstance(value, pd.DataFrame):
        return [jsonable(row) for row in value.to_dict(orient="records")]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            field.name: jsonable(getattr(value, field.name))
            for field in dataclasses.fields(value)
        }
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set):
        return [jsonable(item) for item in value]
    if isinstance(value, pd.Timestamp):
        return None if pd.isna(value) else value.isoformat()
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, date | datetime):
        return value.isoformat()
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def alert_json(record: AlertRecord) -> dict[str, Any]:
    """Return a stored alert as JSON: its fields, state and deliveries."""
    fields = {
        name: getattr(record.alert, name) for name in record.alert.__dataclass_fields__
    }
    result: dict[str, Any] = jsonable(
        {
            "id": record.id,
            **fields,
            "state": record.state,
            "held": record.held,
            "created_at": record.created_at,
            "updated_at": record.updated_at,
            "deliveries": record.deliveries,
        }
    )
    return result
