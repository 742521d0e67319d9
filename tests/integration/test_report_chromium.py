"""The report opens in a real headless Chromium with no script, CSP or image errors."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from report_battle import synthetic_battle

from bobench.analysis import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("/usr/bin/chromium")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    with (results / "results.jsonl").open("w") as fh:
        for rec in synthetic_battle():
            fh.write(rec.to_json() + "\n")
    return results, write_report(results)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_report_opens_in_headless_chromium_without_errors(report, tmp_path):
    _, files = report
    page = files["report.html"].read_text()
    hook = (
        "<script nonce='bobtest'>window.__errors=[];"
        "addEventListener('error',e=>__errors.push('error: '+(e.message||(e.target&&e.target.src)||'?')),true);"
        "document.addEventListener('securitypolicyviolation',e=>__errors.push('csp: '+e.violatedDirective+' '+e.blockedURI));"
        "const ce=console.error;console.error=(...a)=>{__errors.push('console: '+a.join(' '));ce.apply(console,a)};"
        "addEventListener('load',()=>{const imgs=[...document.images];"
        "const broken=imgs.filter(i=>!(i.complete&&i.naturalWidth>0)).map(i=>i.dataset.file);"
        "const out=document.createElement('pre');out.id='bobtest';"
        "out.textContent=JSON.stringify({errors:__errors,images:imgs.length,broken});document.body.appendChild(out)});"
        "</script>"
    )
    csp = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    assert csp in page
    instrumented = page.replace(csp, csp + "; script-src 'nonce-bobtest'").replace(
        "<head>", "<head>" + hook, 1
    )
    target = tmp_path / "instrumented.html"
    target.write_text(instrumented)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
    flags += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
    flags += [f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]
    flags += ["--virtual-time-budget=5000", "--dump-dom"]
    proc = subprocess.run([CHROMIUM, *flags, target.as_uri()], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = re.search(r'<pre id="bobtest">(.*?)</pre>', proc.stdout, re.S)
    assert found, f"instrumentation did not run; stderr: {proc.stderr[-2000:]}"
    result = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    n_plots = sum(n.endswith(".png") for n in files)
    assert result == {"errors": [], "images": n_plots, "broken": []}
    console_errors = [
        line for line in proc.stderr.splitlines() if "CONSOLE" in line and "bobtest" not in line
    ]
    assert console_errors == []
