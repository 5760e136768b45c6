"""Modules from a hub URL: tensorflow_hub's real download-and-cache path, served from 127.0.0.1."""

import http.server
import io
import os
import tarfile
import threading

import pytest

from retrain import pipeline
from retrain.errors import UserError
from retrain.features import modules
from tests.conftest import fast_config


class _ModuleServer(http.server.ThreadingHTTPServer):
    """Serves one compressed SavedModel for any path, as tfhub.dev does for ?tf-hub-format=compressed."""

    def __init__(self, archive):
        super().__init__(("127.0.0.1", 0), _ArchiveHandler)
        self.archive = archive
        self.requests = []


class _ArchiveHandler(http.server.BaseHTTPRequestHandler):

    def do_GET(self):  # pylint: disable=invalid-name
        self.server.requests.append(self.path)
        if "tf-hub-format=compressed" not in self.path:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/x-tar")
        self.send_header("Content-Length", str(len(self.server.archive)))
        self.end_headers()
        self.wfile.write(self.server.archive)

    def log_message(self, *args):  # Keep test output clean.
        pass


@pytest.fixture()
def module_server(tiny_module):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name in os.listdir(tiny_module):
            archive.add(os.path.join(tiny_module, name), arcname=name)
    server = _ModuleServer(buffer.getvalue())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def test_hub_url_is_downloaded_once_and_cached(tmp_path, monkeypatch, module_server, colour_images):
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "hub_cache"))
    url = f"http://127.0.0.1:{module_server.server_port}/google/tiny/feature_vector/1"
    result = pipeline.run(fast_config(colour_images, url, tmp_path / "out"))
    assert result.test.top1_accuracy >= 0.9
    assert len(module_server.requests) == 1
    assert os.listdir(tmp_path / "hub_cache")  # tensorflow_hub's cache, honouring TFHUB_CACHE_DIR
    module = modules.resolve_module(url)
    assert module.identity == "hub:" + url and module.image_size == (32, 32)
    assert len(module_server.requests) == 1  # The second resolve came from the cache.


def test_unreachable_hub_url_is_a_user_error(tmp_path, monkeypatch, module_server):
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "hub_cache"))
    port = module_server.server_port
    module_server.shutdown()
    module_server.server_close()
    with pytest.raises(UserError, match=r"Cannot fetch --tfhub_module .*Offline\?"):
        modules.resolve_module(f"http://127.0.0.1:{port}/gone/1")


def test_module_that_is_not_a_feature_vector_is_refused(tmp_path):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    import tf_keras  # pylint: disable=import-outside-toplevel
    inputs = tf_keras.Input([16, 16, 3])
    tf.saved_model.save(tf_keras.Model(inputs, tf_keras.layers.Conv2D(2, 3)(inputs)),
                        str(tmp_path / "conv"))
    module = modules.resolve_module(str(tmp_path / "conv"))
    with pytest.raises(UserError, match=r"is not an image feature-vector module"):
        modules.load_feature_extractor(module)


def test_folder_that_is_not_a_saved_model_is_refused(tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "readme.txt").write_text("hello")
    with pytest.raises(UserError, match=r"is not a loadable SavedModel"):
        modules.resolve_module(str(tmp_path / "junk"))


def test_module_that_rejects_the_image_size(tmp_path):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    import tf_keras  # pylint: disable=import-outside-toplevel
    inputs = tf_keras.Input([None, None, 3])
    features = tf_keras.layers.GlobalAveragePooling2D()(tf_keras.layers.Conv2D(2, 9)(inputs))
    tf.saved_model.save(tf_keras.Model(inputs, features), str(tmp_path / "needs_9px"))
    module = modules.resolve_module(str(tmp_path / "needs_9px"), image_size=(4, 4))
    with pytest.raises(UserError, match=r"rejects 4x4 images"):
        modules.load_feature_extractor(module)
