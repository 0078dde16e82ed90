// Package bench holds infergate's benchmarks (issue 5, docs/benchmarks.md):
// Go benchmarks that compose the real services in one process — propagation
// latency, control-plane writes, streaming time-to-first-byte — and the
// commands under cmd/ that the cold-start and load benchmarks run
// (`make bench`, `make bench-coldstart`, `make bench-load`).
//
// A normal `go test` runs no benchmark: this package has benchmarks only
// (they print their figures with b.ReportMetric and assert no time); the
// internal packages have small, fast unit tests (the seeder's stream is
// checked against the gateway's auth map).
package bench
