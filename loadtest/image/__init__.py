"""The dialer's container image, built with the project's own Dockerfile and run as Lambda runs
it, without a registry: podman on a stand-in for the Lambda Python base image.

`loadtest.image.podman` drives podman on storage of the harness's own; `loadtest.image.standin`
builds the stand-in base, cached between runs on one machine; `loadtest.image.container` runs
the image's entrypoint against the Runtime API emulator (`loadtest.runtime`).
"""
