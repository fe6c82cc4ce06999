# Multi-stage build of the kuryr-pools image: four static binaries on a small runtime that has what
# the OVS binding needs (ovs-vsctl). Build with `make image` where a container engine exists.
# Base images are taken by name from the engine's local store or configured mirror; no test uses them.
ARG GO_IMAGE=golang:1.26-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${GO_IMAGE} AS build
ARG VERSION=dev
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/kuryr-pools/kuryr/version.Version=${VERSION}" \
      -o /out/ ./cmd/kuryr-cni ./cmd/kuryr-agent ./cmd/kuryr-controller ./cmd/kuryr-pools

FROM ${RUNTIME_IMAGE}
RUN apt-get update && apt-get install -y --no-install-recommends openvswitch-common iproute2 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ /usr/local/bin/
COPY daemonset/10-kuryr.conflist.template /etc/kuryr/10-kuryr.conflist.template
ENTRYPOINT ["/usr/local/bin/kuryr-agent"]
