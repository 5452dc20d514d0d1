"""Read source files into Spark with the same columns and row checks as on DuckDB.

The checks have one definition: `reader._standard_select` writes the conversions and
the `_problem` CASE in DuckDB SQL, and sqlglot transpiles that SQL to Spark SQL. Spark
reads the files itself, on its executors, so rows never pass through the driver.

Each source becomes the temporary view `source_<name>` with the columns that the
DuckDB reader gives it. `_file` is the file's path and `_row` a running number in
scan order, made by `monotonically_increasing_id()`, which `SparkSourceSet` turns into
the row within the file for the report's examples. `valid_<name>` is the view of the
usable rows, as on DuckDB. A CSV file that DuckDB rejects for a row's field count
or a byte that is not UTF-8 is rejected with the same message (see `spark_csv`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pandas as pd
import sqlglot
from sqlglot import exp

from healthscore.config import Project
from healthscore.config.models import STANDARD_COLUMNS, SourceConfig
from healthscore.sources import SourceSet, text
from healthscore.sources.columns import missing_columns
from healthscore.sources.joins import JoinedColumns, join_table, load_joins
from healthscore.sources.lookups import join_sql, read_lookup
from healthscore.sources.reader import (
    FRACTIONAL_ID,
    LoadedSource,
    SourceError,
    _check_repeated_columns,
    _columns_present,
    _describe_files,
    _first_line,
    _glob_columns_error,
    _standard_select,
    fractional_id_error,
    is_number_account_id,
    literal,
    quote,
    resolve_files,
)
from healthscore.sources.spark_csv import (
    REPLACED_BYTES_COLUMN,
    check_header_encoding,
    csv_options,
    header_groups,
    header_key,
    is_malformed_record,
    malformed_row_error,
    replaced_bytes,
    replaced_bytes_error,
)

if TYPE_CHECKING:
    from ibis.backends.pyspark import Backend as PySparkBackend
    from pyspark.sql import DataFrame, SparkSession

#: Spark SQL types of raw file columns, as the DuckDB type names that the shared
#: checks of `reader._standard_select` expect.
_DUCKDB_TYPES = {
    "string": "VARCHAR",
    "double": "DOUBLE",
    "float": "FLOAT",
    "bigint": "BIGINT",
    "int": "INTEGER",
    "smallint": "SMALLINT",
    "tinyint": "TINYINT",
    "boolean": "BOOLEAN",
    "date": "DATE",
    "timestamp": "TIMESTAMP WITH TIME ZONE",
    "timestamp_ntz": "TIMESTAMP",
}


#: Spark SQL types of the standard column types.
_SPARK_TYPES = {
    "string": "STRING",
    "number": "DOUBLE",
    "boolean": "BOOLEAN",
    "date": "DATE",
    "timestamp": "TIMESTAMP_NTZ",
}


def to_spark_sql(duckdb_sql: str) -> str:
    """Transpile one DuckDB SQL statement or expression to Spark SQL.

    sqlglot 30 leaves DuckDB's TRY_STRPTIME as it is, so it becomes Spark's
    TRY_TO_TIMESTAMP with the strftime format translated to a Spark pattern.
    Spark SQL has no isfinite or isinf, so they become comparisons with infinity.
    """
    tree = sqlglot.parse_one(duckdb_sql, read="duckdb")
    tree = tree.transform(_try_strptime_to_spark)
    tree = tree.transform(_infinity_tests_to_spark)
    return tree.sql(dialect="spark")


def _infinity_tests_to_spark(node: exp.Expression) -> exp.Expression:
    """Rewrite isfinite(x) as abs(x) < inf and isinf(x) as abs(x) = inf.

    Spark sorts NaN above every number, infinity included, so NaN fails both.
    """
    comparison: type[exp.Binary]
    if isinstance(node, exp.IsInf):
        value, comparison = node.this, exp.EQ
    elif isinstance(node, exp.Anonymous) and node.name.upper() == "ISFINITE":
        (value,) = node.expressions
        comparison = exp.LT
    else:
        return node
    infinity = exp.cast(exp.Literal.string("Infinity"), exp.DataType.Type.DOUBLE)
    # transform() does not visit the children of a node it replaced, so a test
    # nested in `value` is rewritten here.
    value = value.copy().transform(_infinity_tests_to_spark)
    return exp.paren(comparison(this=exp.Abs(this=value), expression=infinity))


def _try_strptime_to_spark(node: exp.Expression) -> exp.Expression:
    if not (isinstance(node, exp.Anonymous) and node.name.upper() == "TRY_STRPTIME"):
        return node
    value, pattern = node.expressions
    parsing = exp.StrToTime(this=value, format=pattern).sql(dialect="spark")
    return cast(exp.Expression, sqlglot.parse_one("TRY_" + parsing, read="spark"))


def check_supported(project: Project) -> None:
    """Reject the settings that the Spark engine cannot run yet, naming each one."""
    # Imported here: the event store builds on the reader module.
    from healthscore.sources.stored import rollups_used

    problems: list[str] = []
    for name in rollups_used(project):
        problems.append(
            f"source {name!r}: daily rollups of the event store are read by DuckDB"
        )
    for name, source in project.config.sources.items():
        problems.extend(_unsupported_source(project, name, source))
    for name, metric in project.config.metrics.items():
        if getattr(metric, "type", None) == "sentiment":
            problems.append(
                f"metrics.{name}: sentiment metrics score texts with a Python "
                "function that runs in DuckDB only"
            )
    if problems:
        raise SourceError(
            "engine kind spark cannot run this project yet:\n  "
            + "\n  ".join(problems)
            + "\nSet engine: duckdb in healthscore.yml, or remove these settings."
        )


def _unsupported_source(project: Project, name: str, source: SourceConfig) -> list[str]:
    # Imported here: the importers and the event store build on the reader module.
    from healthscore.importers import is_importer
    from healthscore.sources.stored import is_store_source

    problems = []
    if getattr(source, "table", None) is not None:
        problems.append(f"sources.{name}.table: database tables are read by DuckDB")
    elif is_store_source(source):
        problems.append(
            f"sources.{name}: sources of the event store are read by DuckDB"
        )
    elif is_importer(source.format):
        problems.append(
            f"sources.{name}.format: the {source.format} importer runs in DuckDB"
        )
    settings = project.config.privacy.pseudonymize
    if settings is not None:
        listed = set(settings.columns)
        present = set(STANDARD_COLUMNS[source.kind]) | set(source.attributes)
        if listed & present:
            problems.append(
                f"privacy.pseudonymize: pseudonyms of source {name!r} are computed by "
                "a Python function that runs in DuckDB only"
            )
    return problems


def read_spark_source(
    session: SparkSession, project: Project, name: str, source: SourceConfig
) -> LoadedSource:
    """Create the temporary view `source_<name>` for one source."""
    files = resolve_files(project, name, source)
    file_format = source.resolved_format()
    empty = [file for file in files if Path(file).stat().st_size == 0]
    if empty:
        raise SourceError(
            f"source {name!r}: {_describe_files(empty)} is empty; a {file_format} "
            "file needs at least a header row"
        )

    if file_format == "csv":
        # Spark 4.0 renames a repeated column after its positions (`id0`, `id2`),
        # so the header is rejected with the DuckDB reader's message instead.
        _check_repeated_columns(name, source, files)
        check_header_encoding(name, files)
    raw = _scan(session, name, file_format, files, source)
    file_types = {
        field.name: _duckdb_type(field.dataType.simpleString())
        for field in raw.schema.fields
        if field.name not in ("_file", "_row", REPLACED_BYTES_COLUMN)
    }
    columns = _columns_present(name, source, file_types)

    raw_view = f"raw_{name}"
    raw.createOrReplaceTempView(raw_view)
    joins = _lookup_joins(session, project, name, source, file_types)
    joined = _joined_files(session, project, name, source, file_types)
    columns.update(joined.types)
    select = _standard_select(
        project, name, source, columns, file_types, joined.values, keep_values=True
    )
    replaced = ""
    if file_format == "csv":
        replaced = f", raw.{REPLACED_BYTES_COLUMN} AS {REPLACED_BYTES_COLUMN}"
    query = to_spark_sql(
        f"SELECT {select}, raw._file AS _file, raw._row AS _row{replaced} "
        f"FROM {quote(raw_view)} AS raw {joins} {joined.sql}"
    )

    try:
        frame = session.sql(query)
        if source.kind == "accounts":
            frame = _mark_duplicate_accounts(session, frame, name)
        # CSV and JSON Lines are parsed once, as the DuckDB reader copies them into
        # a table. Parquet stays a scan, so Spark can skip row groups. A new scan of
        # the same files gives the same `_row` numbers, because Spark splits them the
        # same way each time.
        if file_format != "parquet" or source.lookups or source.kind == "accounts":
            frame = frame.cache()
        if file_format == "csv":
            _check_csv_rows(name, source, files, frame)
            frame = frame.drop(REPLACED_BYTES_COLUMN)
        frame.createOrReplaceTempView(f"source_{name}")
        _check_whole_account_ids(session, name, source, file_types)
    except _spark_errors() as exc:
        raise SourceError(
            f"source {name!r}: reading {_describe_files(files)} failed: "
            f"{_first_line(exc)}"
        ) from None
    return LoadedSource(
        name,
        source,
        f"source_{name}",
        tuple(files),
        columns,
        running_rows=True,
        kept_values=select.endswith(" AS _value"),
    )


def _spark_errors() -> tuple[type[Exception], ...]:
    """Errors of Spark's Python API and of the JVM behind it."""
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    return (PySparkException, Py4JJavaError)


def _check_csv_rows(
    name: str, source: SourceConfig, files: list[str], frame: DataFrame
) -> None:
    """Raise SourceError for a row with the wrong field count or a byte that is
    not UTF-8, naming the file and line as the DuckDB reader does.

    The query reads every row of the cached `frame`, which Spark would do at the
    first query of the source anyway, so a good file is not read twice.
    """
    from pyspark.sql import functions as F

    failure: SourceError | None = None
    try:
        flagged = frame.where(F.col(REPLACED_BYTES_COLUMN)).select("_file").distinct()
        files_flagged = {str(row[0]) for row in flagged.collect()}
        if files_flagged:
            failure = replaced_bytes_error(name, files, files_flagged)
    except _spark_errors() as exc:
        if not is_malformed_record(exc):
            raise
        failure = malformed_row_error(name, source, files, exc)
    if failure is not None:
        frame.unpersist()
        raise failure


def _duckdb_type(spark_type: str) -> str:
    # A decimal keeps its precision and scale: decimal(12,3) becomes DECIMAL(12,3),
    # as DuckDB names the type.
    return _DUCKDB_TYPES.get(spark_type, spark_type.upper())


def _check_whole_account_ids(
    session: SparkSession, name: str, source: SourceConfig, file_types: dict[str, str]
) -> None:
    """Raise SourceError for a number account id that is not a whole id, as the
    DuckDB reader does (see `reader.check_whole_account_ids`)."""
    raw_type = file_types.get(source.file_column("account_id"), "VARCHAR")
    if not is_number_account_id(source, "account_id", raw_type):
        return
    relation = f"source_{name}"
    picked = (
        f"SELECT _file, _row, _value FROM {quote(relation)} "
        f"WHERE _problem = {literal(FRACTIONAL_ID)} ORDER BY _file, _row LIMIT 1"
    )
    found = session.sql(to_spark_sql(spark_file_rows_sql(picked, relation))).collect()
    if found:
        file, row, value = found[0]
        raise fractional_id_error(name, source, raw_type, str(file), int(row), value)


def _scan(
    session: SparkSession,
    name: str,
    file_format: str,
    files: list[str],
    source: SourceConfig,
) -> DataFrame:
    from pyspark.sql import functions as F

    try:
        if file_format == "csv":
            frame = _read_csv(session, name, files, source)
        else:
            if file_format == "parquet":
                frame = _read_parquet(session, name, files, source)
            else:
                frame = session.read.json(files)
            frame = frame.select("*", F.col("_metadata.file_path").alias("_file"))
        # The id is taken after the union of CSV groups, whose partitions Spark
        # numbers one after the other, so ids stay unique and in scan order.
        frame = frame.select("*", F.monotonically_increasing_id().alias("_row"))
        frame.schema  # noqa: B018 (resolves the schema, so errors surface here)
    except _spark_errors() as exc:
        hint = ""
        if file_format == "csv":
            hint = (
                f"; if its fields are separated by something else than "
                f"{source.delimiter!r}, set sources.{name}.delimiter"
            )
        raise SourceError(
            f"source {name!r}: cannot read {_describe_files(files)} as {file_format}: "
            f"{_first_line(exc)}{hint}"
        ) from None
    return frame.withColumn("_file", _file_name(F.col("_file"), files))


def _read_csv(
    session: SparkSession, name: str, files: list[str], source: SourceConfig
) -> DataFrame:
    """Read CSV files with their columns matched by the names in each header.

    One Spark read matches the fields of all its files by position to the header
    of one of them. Files with another header are therefore read separately, and
    the reads are unioned by name. Files with one header, the usual case, make one
    read. As on DuckDB, a later file that lacks a column of the first file, or
    whose header is written with another delimiter, stops the run with its name.
    """
    from pyspark.sql import functions as F

    groups = header_groups(files, source.delimiter)
    if len(groups) > 1:
        mismatch = _glob_columns_error(name, source, files)
        if mismatch is not None:
            raise mismatch
    frames = []
    names: dict[str, str] = {}
    for group in groups:
        frame = session.read.options(**csv_options(source)).csv(group)
        header = frame.columns
        # Reading every column makes Spark check every row's field count.
        frame = frame.select(
            "*",
            replaced_bytes(header).alias(REPLACED_BYTES_COLUMN),
            F.col("_metadata.file_path").alias("_file"),
        )
        if not names:
            names = {header_key(column): column for column in header}
        else:
            # The first group's spelling, so a header with other spaces or letter
            # case matches its columns in the union.
            spelled = [names.get(header_key(column), column) for column in header]
            frame = frame.toDF(*spelled, REPLACED_BYTES_COLUMN, "_file")
        frames.append(frame)
    combined = frames[0]
    for frame in frames[1:]:
        combined = combined.unionByName(frame, allowMissingColumns=True)
    if len(frames) == 1:
        return combined
    # unionByName appends the columns that only later groups have, so the scan's
    # own columns are moved back to the end.
    own = (REPLACED_BYTES_COLUMN, "_file")
    # Backticks keep a name with a dot one column name, not a field of a struct.
    columns = [
        F.col("`" + column.replace("`", "``") + "`")
        for column in combined.columns
        if column not in own
    ]
    return combined.select(*columns, *own)


#: Spark 4.0 SQL setting under which its Parquet reader reads a TIMESTAMP(NANOS)
#: column as the BIGINT of its nanoseconds since the epoch. Without it, Spark fails
#: to read such a column ("Illegal Parquet type"), even one that no query reads.
_NANOS_AS_LONG = "spark.sql.legacy.parquet.nanosAsLong"


def _read_parquet(
    session: SparkSession, name: str, files: list[str], source: SourceConfig
) -> DataFrame:
    """Read Parquet files, with each nanosecond timestamp column as a timestamp.

    pandas and pyarrow write nanoseconds by default. Such a column is read as the
    BIGINT of its nanoseconds, because Spark's timestamps hold microseconds, and
    then cut to microseconds. DuckDB cuts them too, so both engines read the same
    times. The schema is inferred under `_NANOS_AS_LONG` and then given to the
    read, so the setting stays off in the caller's session.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.types import StructType

    nanosecond = _nanosecond_columns(name, files, source)
    if not nanosecond:
        return session.read.parquet(*files)
    before = session.conf.get(_NANOS_AS_LONG, None)
    session.conf.set(_NANOS_AS_LONG, "true")
    try:
        schema = session.read.parquet(*files).schema
    finally:
        if before is None:
            session.conf.unset(_NANOS_AS_LONG)
        else:
            session.conf.set(_NANOS_AS_LONG, before)
    # A column that is not a nanosecond timestamp in every file, and that the
    # source does not read, is left out (see `_nanosecond_columns`).
    fields = [f for f in schema.fields if nanosecond.get(f.name, True) is not None]
    # NOTE: Spark 4.0.5 reads a TIMESTAMP(NANOS) column requested as BIGINT without
    # the setting, with both of its Parquet readers. Other versions are untested.
    frame = session.read.schema(StructType(fields)).parquet(*files)
    converted = {}
    for column, adjusted_to_utc in nanosecond.items():
        if adjusted_to_utc is None or column not in frame.columns:
            continue
        nanoseconds = F.col(f"`{column}`").cast("decimal(19,0)")
        # A DECIMAL divides exactly, unlike a DOUBLE. Rounding down matches DuckDB,
        # which cuts the extra digits of the time's text, also before 1970.
        micros = F.floor(nanoseconds / 1000).cast("bigint")
        if adjusted_to_utc:
            converted[column] = F.timestamp_micros(micros)
        else:
            epoch = F.lit("1970-01-01 00:00:00").cast("timestamp_ntz")
            converted[column] = F.timestamp_add("MICROSECOND", micros, epoch)
    return frame.withColumns(converted)


def _nanosecond_columns(
    name: str, files: list[str], source: SourceConfig
) -> dict[str, bool | None]:
    """Map the top-level TIMESTAMP(NANOS) columns of Parquet `files` to whether
    they are adjusted to UTC, or to None for a column to leave out.

    The footers are read on the driver, which can read the files because it
    expands their glob (see `resolve_files`).
    A column that is a nanosecond timestamp in some files but of another type in
    others maps to None, unless the source reads it, when SourceError names the
    files: read as BIGINT, a microsecond timestamp would give wrong times.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    types: dict[str, dict[str, str]] = {}
    for file in files:
        try:
            parquet = pq.ParquetFile(file)
        except (OSError, pa.ArrowException):
            continue  # the scan reports an unreadable file itself
        with parquet:
            for column, described in _top_level_types(parquet).items():
                types.setdefault(column, {})[file] = described
    read = {source.file_column(column) for column in STANDARD_COLUMNS[source.kind]}
    read |= set(source.attributes)
    found: dict[str, bool | None] = {}
    for column, by_file in types.items():
        kinds = set(by_file.values())
        if not kinds & _NANOS_TYPES.keys():
            continue
        if len(kinds) == 1:
            found[column] = _NANOS_TYPES[kinds.pop()]
            continue
        if column not in read:
            found[column] = None
            continue
        (first, first_kind), *others = by_file.items()
        other, other_kind = next((f, k) for f, k in others if k != first_kind)
        raise SourceError(
            f"source {name!r}: column {column!r} is {first_kind} in {first} but "
            f"{other_kind} in {other}, and Spark reads a column of a glob with one "
            f"type. Write the column with the same type in every file, such as "
            f'microsecond timestamps (pyarrow: coerce_timestamps="us"), or '
            f"narrow sources.{name}.path."
        )
    return found


#: Nanosecond timestamp types as `_top_level_types` gives them, the way Spark's
#: error names them, to whether they are adjusted to UTC.
_NANOS_TYPES = {
    "INT64 (TIMESTAMP(NANOS,true))": True,
    "INT64 (TIMESTAMP(NANOS,false))": False,
}


#: Parquet's names of the time units that pyarrow 26 spells out.
_TIME_UNITS = {
    "milliseconds": "MILLIS",
    "microseconds": "MICROS",
    "nanoseconds": "NANOS",
}


def _top_level_types(parquet: Any) -> dict[str, str]:
    """Describe the Parquet type of each top-level column that is not nested."""
    import json

    arrow = parquet.schema_arrow
    top_level = {field.name for field in arrow if not field.type.num_fields}
    described = {}
    for index in range(len(parquet.schema)):
        column = parquet.schema.column(index)
        if column.path not in top_level:
            continue
        logical = json.loads(column.logical_type.to_json())
        kind = column.physical_type
        if logical.get("Type") == "Timestamp":
            unit = _TIME_UNITS.get(logical["timeUnit"], logical["timeUnit"])
            utc = str(logical["isAdjustedToUTC"]).lower()
            kind += f" (TIMESTAMP({unit},{utc}))"
        elif logical.get("Type") not in (None, "None"):
            kind += f" ({str(logical['Type']).upper()})"
        described[column.path] = kind
    return described


def _file_name(uri: Any, files: list[str]) -> Any:
    """Map Spark's file URI to the file name given to Spark, as DuckDB reports it.

    Spark reports `file:/a/b%20c.csv` for `/a/./b c.csv`, so the decoded, normalized
    path is looked up among the files read. A path not found keeps its decoded form.
    """
    from pyspark.sql import functions as F

    local = F.url_decode(F.regexp_replace(uri, "^file:(//)?", ""))
    names: dict[str, str] = {}
    for file in files:
        names.setdefault(os.path.normpath(file), file)
        names.setdefault(str(Path(file).resolve()), file)
    pairs = [F.lit(item) for pair in names.items() for item in pair]
    return F.coalesce(F.create_map(*pairs)[local], local)


def _lookup_joins(
    session: SparkSession,
    project: Project,
    name: str,
    source: SourceConfig,
    file_types: dict[str, str],
) -> str:
    """DuckDB SQL of the lookup joins, over temporary views of the checked pairs.

    The lookup files are read and checked on the driver, as on DuckDB, because
    Spark's CSV reader would pass a row with the wrong field count.
    """
    joins = []
    for column, lookup in source.lookups.items():
        column_type = file_types.get(source.file_column(column), "VARCHAR")
        pairs = read_lookup(project, name, column, lookup, column_type)
        view = f"lookup_{name}_{column}"
        try:
            frame = session.createDataFrame(
                list(pairs.items()), schema="key string, value string"
            )
            frame.createOrReplaceTempView(view)
        except _spark_errors() as exc:
            raise SourceError(
                f"source {name!r}: cannot load the lookup file "
                f"{project.path(lookup.path)} into Spark: {_first_line(exc)}"
            ) from None
        joins.append(join_sql(source, column, quote(view), column_type))
    return " ".join(joins)


def _joined_files(
    session: SparkSession,
    project: Project,
    name: str,
    source: SourceConfig,
    file_types: dict[str, str],
) -> JoinedColumns:
    """Read a source's joined files and return how to join them, as on DuckDB.

    DuckDB reads and checks the files on the driver (a missing column, a repeated
    key), because joined files hold a row per account, not per event. Each checked
    table then becomes a Spark view of the same name, which the join SQL reads.
    """
    if not source.joins:
        return JoinedColumns()
    import duckdb

    with duckdb.connect() as con:
        joined = load_joins(con, project, name, source, file_types)
        for index, join in enumerate(source.joins):
            table = join_table(name, index)
            attributes = [f"a{position}" for position in range(len(join.attributes))]
            listed = ", ".join(quote(column) for column in ["_key", *attributes])
            frame = con.execute(f"SELECT {listed} FROM {quote(table)}").df()
            schema = ", ".join(f"`{column}` string" for column in frame.columns)
            rows = frame.astype(object).where(frame.notna(), None)
            try:
                view = session.createDataFrame(
                    rows.itertuples(index=False, name=None), schema=schema
                )
                view.createOrReplaceTempView(table)
            except _spark_errors() as exc:
                raise SourceError(
                    f"source {name!r}: cannot load the joined file "
                    f"{project.path(join.path)} into Spark: {_first_line(exc)}"
                ) from None
    return joined


def _mark_duplicate_accounts(
    session: SparkSession, frame: DataFrame, name: str
) -> DataFrame:
    # Every row of a duplicated id is excluded, as on DuckDB: picking one of them
    # would be a guess.
    view = f"checked_{name}"
    frame.createOrReplaceTempView(view)
    columns = ", ".join(f"`{c}`" for c in frame.columns if c != "_problem")
    usable = (
        "count(CASE WHEN _problem IS NULL THEN 1 END) OVER (PARTITION BY account_id)"
    )
    return session.sql(
        f"SELECT {columns}, CASE WHEN _problem IS NULL AND {usable} > 1 "
        "THEN 'duplicate_account_id:account_id' ELSE _problem END AS _problem "
        f"FROM `{view}`"
    )


def _create_valid_view(
    session: SparkSession, name: str, relation: str, scores: dict[str, str]
) -> None:
    """Create `valid_<name>`: the usable rows, with the `scores` columns of `text`.

    `ordered_<name>` has the same rows with `_file` and `_row` too (see
    `SourceSet.rows`).
    """
    frame = session.table(relation).filter("_problem IS NULL")
    # `drop` skips a name that the frame lacks, such as `_value` of most sources.
    frame = frame.drop("_problem", "_value")
    added = [f"{to_spark_sql(sql)} AS `{c}`" for c, sql in scores.items()]
    if added:
        frame = frame.selectExpr("*", *added)
    frame.createOrReplaceTempView(f"ordered_{name}")
    frame.drop("_file", "_row").createOrReplaceTempView(f"valid_{name}")


class SparkSourceSet(SourceSet):
    """The project's sources, read into one Spark session."""

    def __init__(
        self, project: Project, con: PySparkBackend, loaded: dict[str, LoadedSource]
    ):
        # SourceSet is typed for DuckDB; every method that runs raw SQL on the
        # connection is overridden here.
        super().__init__(project, cast(Any, con), loaded)
        self.session: SparkSession = con._session

    def _fetch(self, sql: str) -> list[tuple[Any, ...]]:
        """Run a DuckDB query of the report on Spark and return its rows."""
        return [tuple(row) for row in self.session.sql(to_spark_sql(sql)).collect()]

    def _file_rows_sql(self, picked: str, relation: str) -> str:
        """Turn the `monotonically_increasing_id()` of picked rows into file rows."""
        return spark_file_rows_sql(picked, relation)

    def add_frame(self, name: str, kind: str, frame: pd.DataFrame, origin: str) -> None:
        """Register rows held by the product itself (not a file) as a source."""
        relation = f"source_{name}"
        columns = {c: STANDARD_COLUMNS[kind][c] for c in frame.columns}
        # Naive timestamps stay wall-clock times (TIMESTAMP_NTZ), as the readers keep
        # them, and missing values become NULL.
        schema = ", ".join(
            [f"`{c}` {_SPARK_TYPES[type_]}" for c, type_ in columns.items()]
            + ["_problem STRING", "_file STRING", "_row BIGINT"]
        )
        values = frame.astype(object).where(frame.notna(), None)
        records = [
            (*map(_python_value, row), None, origin, number)
            for number, row in enumerate(values.itertuples(index=False), start=1)
        ]
        rows = self.session.createDataFrame(records, schema=schema)
        rows.createOrReplaceTempView(relation)
        scores = text.score_columns(self.project.config, name)
        _create_valid_view(self.session, name, relation, scores)
        config = SourceConfig.model_validate({"kind": kind, "path": origin})
        self.loaded[name] = LoadedSource(name, config, relation, (origin,), columns)


def spark_file_rows_sql(picked: str, relation: str) -> str:
    """Turn the `monotonically_increasing_id()` of picked rows into file rows.

    `picked` selects `_file`, `_row` and `_value` of rows of `relation`. The id is
    the partition index times 2**33 plus the row's place in the partition. A row's
    place in its file is then the rows of the file in earlier partitions plus its
    place among the file's rows in its own partition.
    NOTE: this assumes that Spark puts the splits of one file into partitions in
    file order. Spark 4.0 sorts splits by size, stably, so equal splits keep
    their order and the shorter last split comes after them. The tests check it
    on local CSV files of several splits, not on other file systems.
    """
    part = "shiftright(_row, 33)"
    picked_part = "shiftright(p._row, 33)"
    return (
        f"WITH picked AS ({picked}), "
        f"parts AS (SELECT _file, {part} AS part, min(_row) AS first_row, "
        f"count(*) AS n FROM {relation} WHERE _file IN (SELECT _file FROM picked) "
        f"GROUP BY _file, {part}), "
        "offsets AS (SELECT _file, part, first_row, "
        "sum(n) OVER (PARTITION BY _file ORDER BY part) - n AS before FROM parts) "
        "SELECT p._file, o.before + p._row - o.first_row + 1, p._value "
        "FROM picked AS p JOIN offsets AS o "
        f"ON p._file = o._file AND {picked_part} = o.part "
        "ORDER BY p._file, p._row"
    )


def _python_value(value: Any) -> Any:
    # Spark's row converter accepts datetime, not its pandas subclass.
    return value.to_pydatetime() if isinstance(value, pd.Timestamp) else value


def load_spark_sources(project: Project, con: PySparkBackend) -> SparkSourceSet:
    """Read every source of `project` into the Spark session of `con`.

    Raises SourceError when a source cannot be read. Settings that run on DuckDB
    only are rejected by `check_supported`, which `Engine.open` calls before it
    starts the session.
    """
    session: SparkSession = con._session
    loaded: dict[str, LoadedSource] = {}
    failures: list[str] = []
    for name, source in project.config.sources.items():
        try:
            loaded[name] = read_spark_source(session, project, name, source)
        except SourceError as exc:
            failures.append(str(exc))  # report every unreadable source at once
    failures.extend(missing_columns(project, loaded))
    if failures:
        raise SourceError("\n".join(failures))
    for name, item in loaded.items():
        scores = text.score_columns(project.config, name)
        _create_valid_view(session, name, item.relation, scores)
    return SparkSourceSet(project, con, loaded)
