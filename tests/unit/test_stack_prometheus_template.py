"""The local stack's Prometheus config has one template, shipped with the package.

Issue 11: `deploy/prometheus/prometheus.local.yml.tmpl` and a fallback copy inside
`stack/prometheus.py` had drifted (the copy lacked the `stack` external label), and an installed
package (an image) silently used the copy.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

from bobench.stack.prometheus import TEMPLATE, write_config

REPO = Path(__file__).resolve().parents[2]


def test_the_config_is_rendered_from_the_packaged_template(tmp_path):
    out = write_config(tmp_path / "prometheus.yml", {"scheduler": ["127.0.0.1:9101"]}, scrape_interval_s=2)
    config = yaml.safe_load(out.read_text())
    assert config["global"]["scrape_interval"] == "2s"
    assert config["global"]["external_labels"] == {"stack": "bobench-local"}
    (job,) = config["scrape_configs"]
    assert job == {"job_name": "scheduler", "static_configs": [{"targets": ["127.0.0.1:9101"]}]}
    assert yaml.safe_load(write_config(tmp_path / "empty.yml", {}).read_text())["scrape_configs"] == []


def test_there_is_one_template_and_it_ships_as_package_data():
    src = REPO / "src" / "bobench"
    assert TEMPLATE.is_relative_to(src) and TEMPLATE.is_file()
    placeholder = "${" + "SCRAPE_CONFIGS}"  # spelled in two parts so this file is no match itself
    copies = [
        p.relative_to(REPO)
        for folder in ("src", "deploy", "services", "scripts", "tests", "bench")
        for p in (REPO / folder).rglob("*")
        if p.suffix in {".tmpl", ".py", ".yml", ".yaml"}
        and p != TEMPLATE
        and p.is_file()
        and placeholder in p.read_text(errors="ignore")
    ]
    assert copies == [], "a second copy of the local Prometheus template"
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert f"*{TEMPLATE.suffix}" in package_data["*"]
