// Package bench holds infergate's benchmarks (issue 5, docs/benchmarks.md):
// Go benchmarks that compose the real services in one process — propagation
// latency, control-plane writes, streaming time-to-first-byte — and the
// commands under cmd/ that the cold-start and load benchmarks run
// (`make bench`, `make bench-coldstart`, `make bench-load`).
//
// Nothing here runs in a normal `go test`: the package has benchmarks
// only, and they print their figures with b.ReportMetric. No benchmark
// asserts a time.
package bench
