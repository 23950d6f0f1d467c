# syntax=docker/dockerfile:1
# The dialer Lambda as a container image. Build for the function's architecture, e.g.
#   docker build --platform linux/amd64 -t dialer-worker .
# Pin the base image by digest in production (BASE_IMAGE=public.ecr.aws/lambda/python:3.12@sha256:...).
ARG BASE_IMAGE=public.ecr.aws/lambda/python:3.12

# The wheel is built apart so that the build backend and the sources stay out of the image.
FROM ${BASE_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY cps_limiter ./cps_limiter
COPY dialer_lambda ./dialer_lambda
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

FROM ${BASE_IMAGE}
# Runtime dependencies only: no extras, so no fakeredis, SDKs or test tools in the image.
RUN --mount=type=bind,from=build,source=/dist,target=/tmp/dist \
    python -m pip install --no-cache-dir --target "${LAMBDA_TASK_ROOT}" /tmp/dist/*.whl
CMD ["dialer_lambda.handler.handler"]
