# Stand-in for the ROCm vLLM base image (rocm/vllm), built without any registry: a debootstrap
# of Debian imported with `docker import` (BASE), plus the fake engine as the `vllm` command.
# Built by tests/container/run.sh from a context holding only the fake-engine binary.
ARG BASE
FROM ${BASE}
COPY fake-engine /usr/local/bin/fake-engine
RUN ln -s fake-engine /usr/local/bin/vllm
# The fake engine loads no model, so there is nothing to fetch first (serve downloads by
# default; the suite's containers have no route to a Hub).
ENV AIM_DOWNLOAD=0
LABEL org.opencontainers.image.title="aim-engine test stand-in for rocm/vllm"
CMD ["/bin/bash"]
