# The one binary, for compose.yaml.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -o /ace-agent ./cmd/ace-agent

FROM debian:bookworm-slim
COPY --from=build /ace-agent /usr/bin/ace-agent
USER nobody
ENTRYPOINT ["/usr/bin/ace-agent"]
