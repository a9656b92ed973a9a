# syntax=docker/dockerfile:1
# Multi-stage build: a static outboxrelay binary on a distroless base, run as
# a non-root user. The development broker (cmd/devkafka) is not included.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# The build context has no .git, so Go cannot record the commit: pass it,
# e.g. --build-arg VERSION=$(git describe --always --dirty).
ARG VERSION=
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/outboxrelay/outboxrelay/internal/cli.Version=${VERSION}" \
    -o /out/outboxrelay ./cmd/outboxrelay && \
    mkdir -p /out/state

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/outboxrelay /usr/local/bin/outboxrelay
# The checkpoint directory, owned by the nonroot user (65532): a named volume
# mounted there starts with this ownership, so the relay can write its
# checkpoint (in Kubernetes, set fsGroup: 65532 instead).
COPY --from=build --chown=65532:65532 /out/state /var/lib/outboxrelay
VOLUME ["/var/lib/outboxrelay"]
# /metrics, /healthz and /readyz when metrics.listen is ":9464".
EXPOSE 9464
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/outboxrelay"]
CMD ["run", "--config", "/etc/outboxrelay/config.yaml"]
