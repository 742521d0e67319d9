"""The results of runs: the run record, its statuses and schema version, and results.jsonl.

One owner for a record's shape: `record` (RunRecord, RunStatus, SCHEMA_VERSION), `jsonl` (reading
and appending results.jsonl, malformed lines named by file and line) and `convert` (RunRecord <->
the bobench.v1 RunResult and RunRequest messages). It needs only the leaf modules (errors, v1), so
every layer that handles results (battle, rpc, analysis, cli) imports it without importing another.
"""

from bobench.results.jsonl import (
    RESULTS_FILE,
    MalformedResults,
    append_record,
    iter_records,
    read_records,
    replace_records,
    results_path,
)
from bobench.results.record import SCHEMA_VERSION, RunRecord, RunStatus, json_default

__all__ = [
    "RESULTS_FILE",
    "SCHEMA_VERSION",
    "MalformedResults",
    "RunRecord",
    "RunStatus",
    "append_record",
    "iter_records",
    "json_default",
    "read_records",
    "replace_records",
    "results_path",
]
