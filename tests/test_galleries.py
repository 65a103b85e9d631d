"""Image galleries: made in the checks, stored once in report.json, embedded in the HTML."""

import json
import re
from dataclasses import asdict, replace
from importlib import resources

import pytest
import torch

from assay.audit.cache import FORMAT, entry_from_json
from assay.audit.plan import plan_from_dict
from assay.audit.runner import run_audit
from assay.core.images import gallery
from assay.results import AuditResult, CheckOutput, cap_galleries
from assay.report.writers import render_html, render_json


@pytest.fixture(scope="module")
def audited(digits, digits_net):
    from assay.core.model import ModelWrapper

    model = ModelWrapper(digits_net, num_classes=10, input_shape=(1, 8, 8), name="digits cnn")
    plan = plan_from_dict({"checks": [
        {"name": "robustness", "params": {"eps": [0.0, 0.1, 0.3], "n": 40, "steps": 5,
                                          "diagnostics": False}},
        {"name": "corruptions", "params": {"corruptions": ["gaussian_noise", "contrast"],
                                           "severities": [1, 3], "n": 40}}]})
    return run_audit(model, digits[1], plan, progress=False)


def test_robustness_and_corruptions_make_galleries(audited):
    robustness, corruptions = audited.checks
    (adversarial,) = robustness.galleries
    assert "eps=0.3" in adversarial.title and len(adversarial.images) == 16
    assert all(re.fullmatch(r"\d -> \d", c) for c in adversarial.captions)
    (samples,) = corruptions.galleries
    assert "severity 3" in samples.title
    assert [c.split(":")[0] for c in samples.captions] == ["clean", "gaussian_noise", "contrast"]


def test_report_json_stores_each_image_once_and_round_trips(audited):
    text = render_json(audited)
    data = json.loads(text)
    assets = data["assets"]
    keys = [k for c in data["checks"] for g in c["galleries"] for k in g["images"]]
    assert set(keys) == set(assets) and all(text.count(image) == 1 for image in assets.values())
    assert AuditResult.from_dict(data) == audited
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(resources.files("assay.report").joinpath("schema.json").read_text())
    jsonschema.validate(data, schema)


def test_cache_entry_keeps_galleries():
    shown = gallery("g", torch.rand(2, 1, 8, 8), ["a", "b"])
    output = CheckOutput({"m": 1.0}, galleries=[shown])
    entry = {"format": FORMAT, "metrics": {"m": 1.0}, "findings": [], "plots": [], "details": {},
             "seconds": 0.5, "galleries": [asdict(shown)]}
    assert entry_from_json(json.loads(json.dumps(entry)))[0] == output
    with pytest.raises(ValueError, match=r"galleries\[0\]"):
        entry_from_json({**entry, "galleries": [{**asdict(shown), "captions": ["a"]}]})


def test_html_embeds_images_as_data_uris_only(audited):
    page = render_html(audited)
    sources = re.findall(r'src="([^"]*)"', page)
    assert sum(s.startswith("data:image/png;base64,") for s in sources) >= 16 + 3
    assert all(s.startswith("data:") for s in sources)
    assert not re.search(r'(href|src)="(https?:)?//', page)  # nothing fetched from outside


def test_cap_drops_images_and_says_so(audited):
    robustness = audited.checks[0]
    big = replace(robustness.galleries[0], images=robustness.galleries[0].images * 2,
                  captions=robustness.galleries[0].captions * 2)
    result = replace(audited, checks=(replace(robustness, galleries=(big,)),))
    (cut,) = cap_galleries(result).checks[0].galleries
    assert len(cut.images) == 16 and "16 of 32 images dropped" in cut.note
    assert "16 of 32 images dropped" in render_html(result)
    one = len(big.images[0]) * 3 // 4
    (tiny,) = cap_galleries(result, total_bytes=one).checks[0].galleries
    assert len(tiny.images) == 1 and "31 of 32" in tiny.note
    assert len(gallery("many", torch.rand(20, 3, 8, 8), ["x"] * 20).images) == 16
