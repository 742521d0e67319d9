"""The battle-level latency step: a battle's efficiency runs on one host are timed together.

Before the runs execute, `measure_battle_latency` groups the efficiency runs still to execute by
(resolved config, seed, embedder variant); a group of two or more backbones is timed interleaved
(`protocols.efficiency.measure_together`, round robin in blocks over one time window) with the
embedders the runs will use: the executor opens them ahead (`LocalExecutor.prepared_embedder`)
and keeps them, so each backbone's ONNX Runtime session is opened once for the step and all its
runs, and closed when the executor moves on to another backbone or closes. Each run then takes its
backbone's step times through `protocols.efficiency.handed_latency` and measures everything else (params, FLOPs,
memory) itself; a run the step could not measure (an embedder that fails to load, any failure of
the step, which is logged and never aborts the battle) times alone.

Only in-process embedders (onnxruntime, torch) on a `LocalExecutor` are grouped: they share this
host. Remote executors (gRPC evaluators, Kubernetes Jobs) and the Triton embedder time each run
alone, as before; see the module docstring of `protocols.efficiency`.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections import defaultdict
from typing import Any

from bobench.battle.plan import RunPlan
from bobench.errors import BobenchError

log = logging.getLogger(__name__)

IN_PROCESS_RUNTIMES = ("onnxruntime", "torch")


def _groups(plans: list[RunPlan]) -> dict[str, list[RunPlan]]:
    from bobench.protocols import get_protocol

    resolve = get_protocol("efficiency").resolve_config
    groups: dict[str, list[RunPlan]] = defaultdict(list)
    for plan in plans:
        if plan.protocol != "efficiency" or plan.error:
            continue
        try:
            config = resolve(plan.config)
        except BobenchError:  # the run itself reports its bad config
            continue
        groups[json.dumps([config, plan.seed, plan.embedder_variant], sort_keys=True)].append(plan)
    return groups


def measure_battle_latency(executor: Any, plans: list[RunPlan]) -> dict[str, Any]:
    """Interleaved step times for the efficiency runs among `plans` that share a host and a setting:
    {handoff key: HandedLatency}, for `efficiency.handed_latency`. Empty when nothing qualifies."""
    from bobench.battle.executors.local import LocalExecutor

    if not isinstance(executor, LocalExecutor) or executor.settings.embedder not in IN_PROCESS_RUNTIMES:
        return {}
    handed: dict[str, Any] = {}
    for group in _groups(plans).values():
        handed.update(_measure_group(executor, group))
    return handed


def _measure_group(executor: Any, group: list[RunPlan]) -> dict[str, Any]:
    from bobench.backbones import get_spec
    from bobench.protocols.efficiency import handoff_key, measure_together

    specs = {}
    for plan in group:
        try:
            specs.setdefault(plan.backbone, get_spec(plan.backbone))
        except BobenchError as exc:
            log.info("latency step: %s is left to its run (%s)", plan.backbone, exc)
    if len(specs) < 2:
        return {}
    first = group[0]
    embedders: dict[str, Any] = {}
    try:
        for name, spec in specs.items():
            try:
                embedders[name] = executor.prepared_embedder(spec, first.embedder_variant)
            except BobenchError as exc:
                log.info("latency step: %s times alone (%s)", name, exc)
        if len(embedders) < 2:
            return {}
        log.info("latency step: timing %s interleaved", ", ".join(embedders))
        measured = measure_together(embedders, first.config, first.seed)
    except Exception:  # never abort the battle: its runs time alone and record their own errors
        log.warning("latency step failed; these runs time alone:\n%s", traceback.format_exc())
        return {}
    return {handoff_key(specs[n].digest(), first.config, first.seed): m for n, m in measured.items()}
