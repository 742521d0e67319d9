"""ImageNet-C's corruption error (CE), mCE and relative mCE of one backbone against a reference backbone.

Hendrycks & Dietterich normalise a model f's error on corruption c by a reference model's (AlexNet in
the paper) so that hard corruptions do not dominate the mean:

    CE_c     = sum_s E(f, c, s) / sum_s E(ref, c, s)
    relCE_c  = sum_s (E(f, c, s) - E_clean(f)) / sum_s (E(ref, c, s) - E_clean(ref))
    mCE      = mean_c CE_c,   relative mCE = mean_c relCE_c

over the severities s and corruptions c both records share. The `ood` protocol records, per run,
`err_<c>` = mean over the configured severities of E(f, c, s) (a sum divided by the same count for
both models, so the ratios are unchanged) and `id_err` = E_clean(f). mCE needs every backbone's
record of one setting, so it belongs to the analysis: for each OOD setting (same protocol version,
config and dataset), pick the reference backbone's record (the config's `mce_reference`; when null,
the analysis' own choice of reference, e.g. the battle's first backbone), and call
`corruption_errors(record.metrics, reference.metrics)` for every backbone of that setting and seed.
The values are lower-is-better; the reference itself scores 1.0 on both.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from bobench.errors import InvalidArgument

ERROR_PREFIX = "err_"


def corruption_errors(metrics: Mapping[str, Any], reference: Mapping[str, Any]) -> dict[str, float | None]:
    """{"mCE", "relative_mCE", "CE_<c>", "relative_CE_<c>"} of `metrics` against `reference` (two OOD
    records' metrics) over the corruptions both carry.

    A relative CE whose reference degradation is zero (the reference loses nothing under c) is None,
    and relative mCE is None when any corruption's is. Raises InvalidArgument when the records share
    no corruption, lack `id_err`, or the reference has zero error on a corruption (CE undefined).
    """
    names = sorted(_errors(metrics).keys() & _errors(reference).keys())
    if not names:
        raise InvalidArgument("mCE: the record and its reference share no per-corruption error (err_<name>)")
    for where, m in (("record", metrics), ("reference", reference)):
        if not isinstance(m.get("id_err"), int | float):
            raise InvalidArgument(f"mCE: the {where} has no clean error 'id_err'")
    out: dict[str, float | None] = {}
    for name in names:
        err, ref_err = float(metrics[ERROR_PREFIX + name]), float(reference[ERROR_PREFIX + name])
        if ref_err <= 0.0:
            raise InvalidArgument(f"mCE: the reference has zero error on {name!r}; CE is undefined")
        out[f"CE_{name}"] = err / ref_err
        ref_drop = ref_err - float(reference["id_err"])
        drop = err - float(metrics["id_err"])
        out[f"relative_CE_{name}"] = (
            drop / ref_drop if not math.isclose(ref_drop, 0.0, abs_tol=1e-12) else None
        )
    out["mCE"] = sum(out[f"CE_{n}"] for n in names) / len(names)  # type: ignore[misc]
    relative = [out[f"relative_CE_{n}"] for n in names]
    out["relative_mCE"] = None if any(r is None for r in relative) else sum(relative) / len(names)  # type: ignore[arg-type]
    return out


def _errors(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {
        key[len(ERROR_PREFIX) :]: value
        for key, value in metrics.items()
        if key.startswith(ERROR_PREFIX)
        and isinstance(value, int | float)
        and not key.endswith(("_ci_low", "_ci_high"))
    }
