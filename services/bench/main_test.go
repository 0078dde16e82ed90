package bench_test

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/infergate/infergate/services/bench/internal/benchstack"
)

// The benchmarks share stacks: a benchmark function runs more than once
// (b.N = 1 first), and starting NATS, the control plane and the gateways
// for every run would measure nothing new.
var (
	stacksMu sync.Mutex // stacksMu protects stacks
	stacks   = map[int]*benchstack.Stack{}
	dirs     []string
)

// stack returns the shared stack with that many gateways, starting it on
// first use.
func stack(b *testing.B, gateways int) *benchstack.Stack {
	b.Helper()
	stacksMu.Lock()
	defer stacksMu.Unlock()
	if s, ok := stacks[gateways]; ok {
		return s
	}
	dir, err := os.MkdirTemp("", "infergate-bench-")
	if err != nil {
		b.Fatal(err)
	}
	dirs = append(dirs, dir)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// BENCH_NATS_SYNC=always: fsync every write before it is acknowledged
	// (deploy/nats/nats-server.conf), instead of NATS's 2-minute default.
	cfg := benchstack.Config{Dir: dir, Gateways: gateways, SyncAlways: os.Getenv("BENCH_NATS_SYNC") == "always"}
	if os.Getenv("BENCH_LOG") != "" {
		// The parts' warnings, to see why a benchmark failed.
		cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	s, err := benchstack.Start(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	stacks[gateways] = s
	return s
}

func TestMain(m *testing.M) {
	code := m.Run()
	for _, s := range stacks {
		s.Close()
	}
	for _, d := range dirs {
		_ = os.RemoveAll(d)
	}
	os.Exit(code)
}

// once runs setup once per name across a benchmark's runs.
var (
	onceMu sync.Mutex // onceMu protects onces
	onces  = map[string]any{}
)

func once[T any](b *testing.B, name string, setup func() T) T {
	b.Helper()
	onceMu.Lock()
	defer onceMu.Unlock()
	if v, ok := onces[name]; ok {
		return v.(T)
	}
	v := setup()
	onces[name] = v
	return v
}
