module github.com/infergate/infergate/services/gateway

go 1.26.0

require (
	github.com/infergate/infergate/gen v0.0.0
	github.com/infergate/infergate/services/internal v0.0.0
)

require (
	github.com/klauspost/compress v1.20.3 // indirect
	github.com/nats-io/nats.go v1.55.0 // indirect
	github.com/nats-io/nkeys v0.4.16 // indirect
	github.com/nats-io/nuid v1.0.1 // indirect
	github.com/prometheus/client_golang v1.25.0 // indirect
	golang.org/x/crypto v0.58.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
)

replace github.com/infergate/infergate/gen => ../../gen

replace github.com/infergate/infergate/services/internal => ../internal
