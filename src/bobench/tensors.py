"""The project's tensor contract: the names every embedder, export and served model agree on.

One owner at the bottom of the house, so that backbones (ONNX sources), export (ONNX files, Triton
config.pbtxt), serving (the Triton python backend) and embed (the clients) all import it from below.
Input INPUT_NAME: uint8 (or float32 holding 0..255 values) RGB [N, 3, H, W] at the spec's input size;
output OUTPUT_NAME: float32 [N, embed_dim] (see BackboneSpec). Normalisation happens inside the model.

The names carry RESERVED_PREFIX because an ONNX source composes the user's own network with our
preprocessing into one graph: a user tensor named plainly "images" or "features" must never collide
with ours. CONTRACT_VERSION is part of every cached export's key; bump it when a name or shape of the
contract changes, so a file built for the old contract is rebuilt instead of served.
"""

from __future__ import annotations

RESERVED_PREFIX = "bobench_"
INPUT_NAME = RESERVED_PREFIX + "images"
OUTPUT_NAME = RESERVED_PREFIX + "features"
CONTRACT_VERSION = 2  # 1: plain "images" / "features"
