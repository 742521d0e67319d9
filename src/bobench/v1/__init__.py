"""Generated protobuf/gRPC modules of the bobench.v1 API. Regenerate with `make protos`; do not edit.

The generated files import each other as `bobench.v1.*`; this file makes the folder a regular package
so it ships in wheels and images (setuptools' find_packages skips folders without it).
"""
