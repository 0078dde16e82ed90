// Package faults_test is infergate's fault suite (issue 10, point 5): the
// real binaries — infergate-keys, infergate-deployments, infergate-audit
// and infergate-gateway — each as its own process, against a NATS server
// with JetStream file storage that is itself a child process (so it can be
// killed with SIGKILL and started again on the same files and port), and
// PostgreSQL read models, each in a fresh schema. Every scenario injects
// one fault while load runs, then checks the promises a user relies on:
// an acknowledged write is never lost, a confirmed change is enforced, and
// no gateway admits a request on state that no longer exists.
//
// Every wait is bounded and waits on a condition. Each scenario logs its
// figures on a line starting "FIGURES" (docs/reliability.md quotes them).
package faults_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// streamName is the event stream every service binds.
const streamName = "INFERGATE_EVENTS"

// waitLong bounds a wait for a process or the system to reach a state; the
// machine is a busy 2-core one, often running -race binaries.
const waitLong = 30 * time.Second

// Binaries, built by the first test that needs them, once per test
// binary run, into a directory TestMain removes.
var bins struct {
	dir                                   string
	nats, keys, deployments, audit, gatew string
}

var buildOnce = sync.OnceValue(build)

func TestMain(m *testing.M) {
	code := m.Run()
	if bins.dir != "" {
		_ = os.RemoveAll(bins.dir)
	}
	os.Exit(code)
}

// build compiles the service binaries and the NATS server, with the race
// detector when this test binary has it (so the packages `go test -race`
// compiled are reused, and races under faults are caught).
func build() error {
	dir, err := os.MkdirTemp("", "infergate-faults-bin-")
	if err != nil {
		return err
	}
	bins.dir = dir
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	if raceEnabled {
		args = append(args, "-race")
	}
	const mod = "github.com/infergate/infergate/services/"
	args = append(args,
		mod+"bench/cmd/bench-nats",
		mod+"keys/cmd/infergate-keys",
		mod+"deployments/cmd/infergate-deployments",
		mod+"audit/cmd/infergate-audit",
		mod+"gateway/cmd/infergate-gateway",
	)
	start := time.Now()
	if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v\n%s", err, out)
	}
	fmt.Fprintf(os.Stderr, "faults: built the binaries in %s (race=%v)\n", time.Since(start).Round(time.Millisecond), raceEnabled)
	bins.nats = filepath.Join(dir, "bench-nats")
	bins.keys = filepath.Join(dir, "infergate-keys")
	bins.deployments = filepath.Join(dir, "infergate-deployments")
	bins.audit = filepath.Join(dir, "infergate-audit")
	bins.gatew = filepath.Join(dir, "infergate-gateway")
	return nil
}

// skipShort skips a fault scenario under -short.
func skipShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("fault suite: real processes; skipped with -short")
	}
}

// waitUntil polls cond until it returns nil, failing the test with cond's
// last error after d.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() error) {
	t.Helper()
	if err := poll(d, cond); err != nil {
		t.Fatalf("waited %s for %s: %v", d, what, err)
	}
}

// poll calls cond until it returns nil or d passes; it returns cond's last
// error then.
func poll(d time.Duration, cond func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// figures collects a scenario's numbers and logs them on one line.
type figures struct {
	mu    sync.Mutex // mu protects kv
	kv    []string
	fault string
}

func newFigures(t *testing.T, fault string) *figures {
	f := &figures{fault: fault}
	t.Cleanup(func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		t.Logf("FIGURES fault=%q %s (GOMAXPROCS=%d, race=%v)", f.fault, strings.Join(f.kv, " "), runtime.GOMAXPROCS(0), raceEnabled)
	})
	return f
}

func (f *figures) set(key string, value any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.kv = append(f.kv, fmt.Sprintf("%s=%v", key, value))
}

// ms formats a duration in milliseconds.
func ms(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) + "ms" }

// percentile is the p-th percentile (0..100) of durations.
func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	ds = slices.Clone(ds)
	slices.Sort(ds)
	return ds[min(len(ds)-1, len(ds)*p/100)]
}
