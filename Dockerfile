# syntax=docker/dockerfile:1
# Two images come out of this file (docs/images.md shows how to use each):
#   docker build --target binary -t fwatchdog-binary .   only /fwatchdog, to COPY --from
#   docker build -t fwatchdog:0.1.0 .                     Python 3.11 slim with fwatchdog installed
# Every RUN line calls docker/build-steps.sh, and tests/test_dockerfile.py runs the same lines.

ARG PYTHON_VERSION=3.11

# The full image has binutils, whose strip makes the binary smaller; the slim one has none.
FROM python:${PYTHON_VERSION}-bookworm AS builder
WORKDIR /src
COPY docker/build-steps.sh docker/
RUN sh docker/build-steps.sh install_tools
COPY . .
RUN sh docker/build-steps.sh build

# The PyInstaller executable alone. It loads the glibc of the image that copies it in, which must
# be the builder's version (2.36, Debian 12) or newer; musl images such as Alpine cannot run it.
FROM scratch AS binary
COPY --from=builder /src/dist/fwatchdog /fwatchdog

# The default target: fwatchdog installed into the image's Python, run by an unprivileged user.
FROM python:${PYTHON_VERSION}-slim-bookworm AS python
RUN --mount=type=bind,from=builder,source=/src/dist/wheels,target=/tmp/wheels \
    --mount=type=bind,source=docker/build-steps.sh,target=/tmp/build-steps.sh \
    sh /tmp/build-steps.sh install_runtime /tmp/wheels
USER 10001:10001
# An echo function; images built FROM this one set their own fprocess.
ENV fprocess="cat"
EXPOSE 8080 8081
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s CMD ["fwatchdog", "--run-healthcheck"]
CMD ["fwatchdog"]
