// Package stats summarises latency samples for the benchmarks.
package stats

import (
	"slices"
	"time"
)

// Percentile returns the p-th percentile (0–100) of samples by the
// nearest-rank method; 0 for no samples. It sorts samples in place.
func Percentile(samples []time.Duration, p float64) time.Duration {
	if len(samples) == 0 {
		return 0
	}
	slices.Sort(samples)
	rank := int(p/100*float64(len(samples)) + 0.5)
	rank = min(max(rank, 1), len(samples))
	return samples[rank-1]
}

// Micros is d in microseconds, for b.ReportMetric.
func Micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
