"""docs/export-formats.md's TF Serving REST requests fit the exported signatures.

TF Serving is not installable here (no server on PyPI or in Debian), so the test decodes the
documented request bodies as its REST row format does (each instance's keys are the
signature's input names, {"b64": ...} is bytes, instances stack into the batch) and calls the
loaded SavedModel's signatures with them. The bodies are made by the document's own Python
snippet, and the document's JSON templates must have the same shape.
"""

import base64
import json
import os
import re

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from retrain.export import layout
from retrain.export import saved_model
from retrain.features import modules
from retrain.training import novelty
from retrain.training import train

pytestmark = pytest.mark.timeout(120)

DOC = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "export-formats.md")
OUTPUTS = {"prediction", "unknown_score", "top_classes", "top_scores"}


def _serving_section():
    with open(DOC, encoding="utf-8") as document:
        text = document.read()
    start = text.index("### TensorFlow Serving")
    end = text.index("\n## ", start)
    return text[start:end]


def _blocks(section, language):
    return re.findall(rf"```{language}\n(.*?)```", section, re.DOTALL)


def _template(block):
    """A documented JSON body, its <placeholders> as "__placeholder__" (matching any value)."""
    marked = re.sub(r'"<[^>"]*>"|<[^>]*>', '"__placeholder__"', block.strip())
    return json.loads(marked)


def _same_shape(template, value):
    if template == "__placeholder__":
        return True
    if isinstance(template, dict):
        return (isinstance(value, dict) and set(template) == set(value)
                and all(_same_shape(template[key], value[key]) for key in template))
    if isinstance(template, list):
        return (isinstance(value, list) and len(template) == len(value)
                and all(_same_shape(a, b) for a, b in zip(template, value)))
    return template == value


def _decode_row_format(body, signature):
    """The keyword arguments TF Serving's REST API makes of a row-format body."""
    names = {spec.name: spec for spec in signature.structured_input_signature[1].values()}
    columns = {}
    for instance in body["instances"]:
        assert set(instance) == set(names), (sorted(instance), sorted(names))
        for name, value in instance.items():
            if isinstance(value, dict):
                assert set(value) == {"b64"}, value
                value = base64.b64decode(value["b64"])
            columns.setdefault(name, []).append(value)
    arguments = {}
    for name, values in columns.items():
        spec = names[name]
        tensor = tf.constant(values, dtype=spec.dtype)
        assert spec.shape.is_compatible_with(tensor.shape), (name, spec.shape, tensor.shape)
        arguments[name] = tensor
    return arguments


@pytest.fixture(scope="module")
def exported(tiny_module, tmp_path_factory):
    """The tiny module with a fixed new layer and a max-logit detector, exported as retrain does."""
    module = modules.resolve_module(tiny_module)
    weights = np.zeros([6, 3], np.float32)
    weights[:3] = np.eye(3, dtype=np.float32) * 8  # red, green, blue by their mean colour
    head = train.Head(weights, np.zeros(3, np.float32))
    detector = novelty.UnknownDetector("max_logit", threshold=-3.0, known_share=0.95)
    base = tmp_path_factory.mktemp("serving") / "saved_model"
    saved_model.export_saved_model(modules.load_feature_extractor(module), head,
                                   ["red", "green", "blue"], module.image_size, str(base),
                                   temperature=0.5, detector=detector)
    return str(base), module.image_size


def test_the_documented_rest_requests_fit_the_signatures(exported, tmp_path, monkeypatch):
    base, image_size = exported
    # TF Serving's layout: the base path holds numbered version folders.
    assert os.path.isfile(os.path.join(base, "1", "saved_model.pb"))
    assert layout.find_saved_model(base) == os.path.join(base, "1")
    model = tf.saved_model.load(os.path.join(base, "1"))

    section = _serving_section()
    (snippet,) = [block for block in _blocks(section, "python") if "bytes_request" in block]
    size = f"({image_size[1]}, {image_size[0]})"
    assert "(224, 224)" in snippet
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (50, 40), (30, 200, 40)).save("photo.jpg", quality=95)  # green
    namespace = {}
    exec(snippet.replace("(224, 224)", size), namespace)  # pylint: disable=exec-used
    with open("request.json", encoding="utf-8") as request_file:
        assert json.load(request_file) == namespace["bytes_request"]

    templates = [_template(block) for block in _blocks(section, "json")]
    requests = {"serving_bytes": namespace["bytes_request"],
                "serving_default": namespace["float_request"]}
    for name, body in requests.items():
        body = json.loads(json.dumps(body))  # as it travels
        assert sum(_same_shape(template, body) for template in templates) == 1, name
        assert body.get("signature_name", "serving_default") == name
        signature = model.signatures[name]
        outputs = signature(**_decode_row_format(body, signature))
        assert set(outputs) == OUTPUTS, name
        assert outputs["prediction"].dtype == tf.float32 and outputs["prediction"].shape == (1, 3)
        assert outputs["unknown_score"].shape == (1,)
        assert outputs["top_classes"].dtype == tf.string
        assert outputs["top_classes"].numpy()[0, 0] == b"green", name
        np.testing.assert_allclose(outputs["top_scores"].numpy()[0, 0],
                                   outputs["prediction"].numpy().max(), rtol=1e-6)
    numeric = model.signatures["serving_numeric"]
    assert set(numeric.structured_outputs) == {"prediction", "unknown_score"}
    assert float(model.unknown_threshold.numpy()) == -3.0
