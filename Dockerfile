# retrain as a container image. One Dockerfile for both variants:
#   docker build -t retrain .                                (CPU)
#   docker build --build-arg VARIANT=gpu -t retrain:gpu .    (GPU)
# scripts/build.sh wraps both; the README's Docker section explains the choices.
# (No "# syntax=" line: BuildKit would try to pull a frontend image for it.)

# The official CPU image: Ubuntu 22.04, Python 3.11, TensorFlow 2.21.0 (the version that
# requirements.txt pins). The GPU variant starts here too and adds CUDA 12.5 and cuDNN 9.3 as
# pip wheels, rather than starting from the -gpu image, whose cuDNN 8.9 does not match what
# TensorFlow 2.18 and later need (cuDNN 9), so that TensorFlow would leave the GPU unused.
ARG BASE_IMAGE=tensorflow/tensorflow:2.21.0
FROM ${BASE_IMAGE}

# cpu or gpu: which docker/requirements/VARIANT.txt is installed.
ARG VARIANT=cpu
# Built-in backbones built into the image at build time, so that `docker run` needs no network.
ARG BAKED_BACKBONES="efficientnet_lite0 efficientnet_lite1 efficientnet_lite2"

LABEL org.opencontainers.image.title="retrain" \
      org.opencontainers.image.description="Transfer learning for image folders with TensorFlow 2" \
      org.opencontainers.image.licenses="Apache-2.0"

# The baked backbones live outside /cache, because a volume mounted there hides the image's
# files; /cache keeps what runs add (bottlenecks, TF Hub downloads, Keras weights).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    RETRAIN_CACHE_DIR=/opt/retrain/cache \
    TFHUB_CACHE_DIR=/cache/tfhub \
    KERAS_HOME=/cache/keras

# The default user is not root. Any other uid (docker run --user) works as well: the volume
# folders are writable by everyone, and new volumes copy these modes.
RUN useradd --no-log-init --uid 10001 --user-group \
        --create-home --home-dir /home/retrain retrain \
 && mkdir -p /images /out /cache \
 && chmod 1777 /out /cache

# Dependencies come before the source, so that a code change reuses this layer.
COPY requirements.txt /opt/retrain/requirements/project.txt
COPY docker/requirements/ /opt/retrain/requirements/
# Official CPU images have shipped TensorFlow as the tensorflow-cpu distribution, but tf-keras
# requires the tensorflow one: remove tensorflow-cpu first, so that two distributions never
# own the same files. (pip only warns when it is not installed.)
RUN python3 -m pip uninstall --yes tensorflow-cpu \
 && python3 -m pip install --no-cache-dir \
        -r /opt/retrain/requirements/project.txt \
        -r /opt/retrain/requirements/common.txt \
        -r "/opt/retrain/requirements/${VARIANT}.txt"

COPY pyproject.toml requirements.txt README* /opt/retrain/src/
COPY retrain /opt/retrain/src/retrain
RUN python3 -m pip install --no-cache-dir /opt/retrain/src \
 && for backbone in ${BAKED_BACKBONES}; do \
        retrain --tfhub_module="${backbone}" --prepare_module_only || exit 1; \
    done \
 && MPLCONFIGDIR=/opt/retrain/matplotlib python3 -c "import matplotlib.font_manager" \
 && chmod -R a+rX /opt/retrain

# Above, matplotlib's font list (for the report's plots) is built once: in a fresh HOME, as
# every `docker run` with another uid or a read-only root has, it would be built again on each
# run and logged ("generated new fontManager"). The entrypoint copies it into place.
COPY docker/entrypoint.sh /usr/local/bin/retrain-entrypoint
RUN chmod 0755 /usr/local/bin/retrain-entrypoint

USER 10001:10001
WORKDIR /out
VOLUME ["/out", "/cache"]
ENTRYPOINT ["dumb-init", "--", "retrain-entrypoint"]
CMD ["retrain"]
