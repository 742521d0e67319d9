# bobench/finetune-gpu: fine-tune and detection Jobs (detection, instance_segmentation, ood_detection) and
# publish Jobs on a GPU node. Publish builds TensorRT plans here, on the target GPU (plans are specific
# to the GPU and the TensorRT version).
# Build from the repository root (`make images` builds every image):
#   docker build -f services/evaluator/finetune-gpu.Dockerfile -t bobench/finetune-gpu:0.1.0 .
# Installs bobench with its `finetune-gpu` extra only: CUDA torch (the default PyPI wheel, CUDA
# libraries as pip packages; the node's NVIDIA runtime provides the driver), torchvision (the detectors),
# pycocotools (the detection metrics; a manylinux wheel, no compiler needed) and tensorrt-cu12 pinned in
# constraints.txt to the TensorRT of the Triton image that serves the plans.
# The base is pinned by digest with `python scripts/pin_base_images.py` (it rewrites this FROM line to
# image:tag@sha256:... and records it in services/base-images.lock). Where no registry answered, the
# lock lists the tag as `unresolved` with the reason, and the FROM line keeps the exact tag.
FROM python:3.11.9-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

COPY pyproject.toml README.md constraints.txt /tmp/bobench/
COPY src /tmp/bobench/src
# tensorrt-cu12 is an sdist that runs pip inside pip unless told to declare its wheels instead; the
# wheels of its TensorRT libraries are on NVIDIA's index only (PyPI has stubs that fail to install).
ARG NVIDIA_INDEX=https://pypi.nvidia.com
# The deepforest wheel (tree_crowns' data: bobench.data.detection_bundled reads it from
# /opt/bobench/wheels when the cache lacks it; a Job pod has an empty cache and no package index).
ARG DEEPFOREST_VERSION=2.1.0
RUN NVIDIA_TENSORRT_DISABLE_INTERNAL_PIP=1 pip install --no-cache-dir --extra-index-url "${NVIDIA_INDEX}" \
        -c /tmp/bobench/constraints.txt "/tmp/bobench[finetune-gpu]" \
    && pip download --no-cache-dir --no-deps --only-binary=:all: -d /opt/bobench/wheels \
        "deepforest==${DEEPFOREST_VERSION}" \
    && rm -rf /tmp/bobench \
    && useradd --no-log-init --create-home --uid 10001 --shell /usr/sbin/nologin bob \
    && mkdir -p /cache /results \
    && chown bob:bob /cache /results

USER 10001:10001
WORKDIR /home/bob
ENV BOBENCH_CACHE_DIR=/cache \
    BOBENCH_RESULTS_DIR=/results

# Jobs give the subcommand as `args` (e.g. `job run ...`, `publish ...`); a bare run prints the help.
STOPSIGNAL SIGTERM
ENTRYPOINT ["bob"]
CMD ["--help"]
