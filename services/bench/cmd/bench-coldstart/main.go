// Command bench-coldstart measures a gateway's cold start (issue 5,
// point 3; `make bench-coldstart`).
//
//	bench-coldstart generate --dir DIR [--keys 1000000] [--links-per-deployment 10]
//	bench-coldstart snapshot --dir DIR [--at SEQUENCE]
//	bench-coldstart measure  --dir DIR [--keys 1000000] [--from-snapshot]
//
// generate writes a JetStream store with the given number of KeyCreated
// events (one message each, as CreateKey appends them) and as many
// KeyLinked events: keys/links-per-deployment deployments, each created
// with its keys linked in one message (as CreateDeployment with api_keys
// appends it: DeploymentCreated, the KeyLinked events,
// DeploymentAuthEnabled), then marked DEPLOYED (one message each, as the
// status checker appends it).
//
// snapshot has a gateway replay that store and save a snapshot of its auth
// map in the store's snapshot bucket, as running gateways do.
//
// measure serves that store from a NATS server in a child process, then
// starts a fresh gateway in this one and reports the time until it is
// ready (it has applied the whole stream as of its start), its live heap
// after GC (runtime.MemStats.HeapAlloc, plus the key table the auth map
// keeps outside the Go heap) and its resident set. With
// --from-snapshot the gateway starts from the snapshot and replays only
// the records after it.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/infergate/infergate/services/bench/internal/seed"
	"github.com/infergate/infergate/services/gateway"
	"github.com/infergate/infergate/services/internal/authmap"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/natsembed"
	"github.com/infergate/infergate/services/internal/snapshots"
)

const usage = "usage: bench-coldstart generate|snapshot|measure|nats --dir DIR [flags]"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	dir := fs.String("dir", "", "JetStream store directory (required)")
	keys := fs.Int("keys", 1_000_000, "KeyCreated events, and KeyLinked events")
	perDep := fs.Int("links-per-deployment", 10, "keys linked per deployment")
	port := fs.Int("port", 14322, "NATS port")
	cpuProfile := fs.String("cpuprofile", "", "measure: write a CPU profile of the replay to this file")
	at := fs.Uint64("at", 0, "snapshot: save the map as of this sequence (default: the whole stream, through a gateway)")
	fromSnapshot := fs.Bool("from-snapshot", false, "measure: start the gateway from the store's snapshot (made by the snapshot command) instead of replaying the whole stream")
	_ = fs.Parse(os.Args[2:])
	if *dir == "" {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "generate":
		err = generate(*dir, *keys, *perDep)
	case "measure":
		err = measure(*dir, *keys, *port, *cpuProfile, *fromSnapshot)
	case "snapshot":
		err = snapshot(*dir, *port, *at)
	case "nats":
		err = serveNATS(*dir, *port)
	default:
		err = errors.New(usage)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-coldstart:", err)
		os.Exit(1)
	}
}

func generate(dir string, n, perDep int) error {
	if perDep < 1 || n%perDep != 0 {
		return fmt.Errorf("--keys %d must be a multiple of --links-per-deployment %d", n, perDep)
	}
	srv, err := natsembed.Start(natsembed.Config{StoreDir: dir})
	if err != nil {
		return err
	}
	defer srv.Shutdown()
	nc, err := srv.Connect(nats.Name("bench-coldstart"))
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx := context.Background()
	w, err := seed.New(ctx, nc, "bench")
	if err != nil {
		return err
	}
	if last, err := w.Store().LastSequence(ctx); err != nil || last != 0 {
		return fmt.Errorf("the store in %s is not empty (last sequence %d, %v)", dir, last, err)
	}
	start := time.Now()
	keys, err := seed.NewKeys(n)
	if err != nil {
		return err
	}
	fmt.Printf("%d secrets made in %s\n", n, time.Since(start).Round(time.Millisecond))
	start = time.Now()
	if err := w.CreateKeys(keys, func(done int) { fmt.Printf("  %d KeyCreated published\n", done) }); err != nil {
		return err
	}
	if err := w.Wait(ctx); err != nil {
		return err
	}
	fmt.Printf("%d KeyCreated messages appended in %s\n", n, time.Since(start).Round(time.Millisecond))
	start = time.Now()
	deps := make([]seed.Deployment, n/perDep)
	for i := range deps {
		deps[i] = seed.Deployment{
			Name:        fmt.Sprintf("dep-%06d", i),
			UpstreamURL: "http://127.0.0.1:9/v1",
			Keys:        keys[i*perDep : (i+1)*perDep],
		}
	}
	if _, err := w.CreateDeployments(ctx, deps, func(done int) { fmt.Printf("  %d deployments published\n", done) }); err != nil {
		return err
	}
	if err := w.Wait(ctx); err != nil {
		return err
	}
	fmt.Printf("%d deployments (%d KeyLinked) and their DEPLOYED appended in %s\n", len(deps), n, time.Since(start).Round(time.Millisecond))
	last, err := w.Store().LastSequence(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("stream: %d messages\n", last)
	if n := w.Stalls(); n > 0 {
		fmt.Printf("the server fell behind %d times: the generator waited for the publishes in flight\n", n)
	}
	return nil
}

func serveNATS(dir string, port int) error {
	srv, err := natsembed.Start(natsembed.Config{StoreDir: dir, Port: port, ReadyTimeout: 5 * time.Minute})
	if err != nil {
		return err
	}
	fmt.Println("ready", srv.ClientURL())
	// Serve until the parent closes stdin.
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	srv.Shutdown()
	return nil
}

// natsChild serves dir's store from a NATS server in a child process and
// returns its URL and how to stop it.
func natsChild(dir string, port int) (string, func(), error) {
	self, err := os.Executable()
	if err != nil {
		return "", nil, err
	}
	child := exec.Command(self, "nats", "--dir", dir, "--port", fmt.Sprint(port))
	child.Stderr = os.Stderr
	stdin, err := child.StdinPipe()
	if err != nil {
		return "", nil, err
	}
	stdout, err := child.StdoutPipe()
	if err != nil {
		return "", nil, err
	}
	if err := child.Start(); err != nil {
		return "", nil, err
	}
	stop := func() {
		stdin.Close()
		_ = child.Wait()
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ready ") {
		stop()
		return "", nil, fmt.Errorf("NATS child: %q %v", line, err)
	}
	return strings.TrimSpace(strings.TrimPrefix(line, "ready ")), stop, nil
}

// served is a store served by a NATS child process, with the event store
// and the snapshot bucket open on it.
type served struct {
	nc    *nats.Conn
	store *eventstore.Store
	snaps *snapshots.Store
	last  uint64 // the stream's last sequence when opened
	stop  func()
}

// serve serves dir's store from a NATS child process and opens it.
func serve(ctx context.Context, dir string, port int) (*served, error) {
	url, stop, err := natsChild(dir, port)
	if err != nil {
		return nil, err
	}
	s := &served{stop: stop}
	if s.nc, err = nats.Connect(url, nats.Name("bench-coldstart-gateway")); err != nil {
		stop()
		return nil, err
	}
	js, err := jetstream.New(s.nc)
	if err == nil {
		if s.store, err = eventstore.Open(ctx, js, eventstore.Config{}); err == nil {
			if s.snaps, err = snapshots.Open(ctx, js, snapshots.Config{}); err == nil {
				if s.last, err = s.store.LastSequence(ctx); err == nil {
					return s, nil
				}
			}
		}
	}
	s.close()
	return nil, err
}

func (s *served) close() {
	s.nc.Close()
	s.stop()
}

// snapshot has the control plane's snapshotter replay the whole stream
// and save a snapshot of its map in the store's bucket, as it does every
// --snapshot-every records.
func snapshot(dir string, port int, at uint64) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sv, err := serve(ctx, dir, port)
	if err != nil {
		return err
	}
	defer sv.close()
	if at > 0 {
		return snapshotAt(ctx, sv.store, sv.snaps, at)
	}
	snapper, err := snapshots.NewSnapshotter(snapshots.SnapshotterConfig{Events: sv.store, Store: sv.snaps, Every: 1, Check: 50 * time.Millisecond})
	if err != nil {
		return err
	}
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- snapper.Run(ctx) }()
	for {
		info, err := sv.snaps.Latest(ctx)
		if err == nil && info.Sequence >= sv.last {
			fmt.Printf("snapshot at sequence %d: %.1f MiB, saved %s after the snapshotter started (it replays the stream, then saves)\n",
				info.Sequence, mib(info.Size), time.Since(start).Round(time.Millisecond))
			break
		}
		select {
		case err := <-done:
			return fmt.Errorf("snapshotter stopped: %w", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	cancel()
	<-done
	return nil
}

// snapshotAt saves a snapshot of the map as of sequence at, so a gateway
// starting from it has the records after it to replay, as one started
// between two snapshots does.
func snapshotAt(ctx context.Context, store *eventstore.Store, snaps *snapshots.Store, at uint64) error {
	m := authmap.New()
	errEnough := errors.New("enough")
	err := store.Follow(ctx, 1, func(rec eventstore.Record) error {
		m.Apply(rec.Sequence, rec.Events)
		if rec.Sequence >= at {
			return errEnough
		}
		return nil
	})
	if !errors.Is(err, errEnough) {
		return fmt.Errorf("replay to %d: %w", at, err)
	}
	state, err := store.State(ctx)
	if err != nil {
		return err
	}
	info, err := snaps.Save(ctx, m, state)
	if err != nil {
		return err
	}
	fmt.Printf("snapshot at sequence %d: %.1f MiB; the stream is at %d\n", info.Sequence, mib(info.Size), state.LastSeq)
	return nil
}

func measure(dir string, keys, port int, cpuProfile string, fromSnapshot bool) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sv, err := serve(ctx, dir, port)
	if err != nil {
		return err
	}
	defer sv.close()
	last := sv.last
	cfg := gateway.Config{Events: sv.store, NATS: sv.nc, ID: "coldstart"}
	if fromSnapshot {
		info, err := sv.snaps.Latest(ctx)
		if err != nil {
			return fmt.Errorf("no snapshot (run bench-coldstart snapshot first): %w", err)
		}
		fmt.Printf("starting from the snapshot at sequence %d (%.1f MiB); the stream is at %d\n", info.Sequence, mib(info.Size), last)
		cfg.Snapshots = sv.snaps
	}
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	gw, err := gateway.New(cfg)
	if err != nil {
		return err
	}
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
	}
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- gw.Run(ctx) }()
	for !gw.Ready() {
		select {
		case err := <-done:
			return fmt.Errorf("snapshotter stopped: %w", err)
		case <-time.After(time.Millisecond):
		}
		if time.Since(start) > 10*time.Minute {
			return errors.New("gateway not ready after 10 minutes")
		}
	}
	ready := time.Since(start)
	if cpuProfile != "" {
		pprof.StopCPUProfile()
	}
	rssPeak := procStatus("VmHWM")
	runtime.GC()
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	rss := procStatus("VmRSS")
	fmt.Printf("stream: %d messages, %d keys\n", last, keys)
	fmt.Printf("ready after:        %s (applied sequence %d, started from snapshot %d)\n", ready.Round(time.Millisecond), gw.Applied(), gw.Status().SnapshotSequence)
	off := uint64(gw.MapOffHeapBytes())
	total := after.HeapAlloc + off
	fmt.Printf("heap after GC:      %.1f MiB + %.1f MiB key table off the Go heap = %.1f MiB (%.0f bytes/key); the gateway's own: %.0f bytes/key\n",
		mib(after.HeapAlloc), mib(off), mib(total), float64(total)/float64(keys),
		float64(after.HeapAlloc-before.HeapAlloc+off)/float64(keys))
	fmt.Printf("RSS:                %.1f MiB now, %.1f MiB peak (Go runtime Sys %.1f MiB)\n", mib(rss), mib(rssPeak), mib(after.Sys))
	fmt.Printf("RESULT ready_ms=%d heap_bytes=%d offheap_bytes=%d bytes_per_key=%.0f rss_bytes=%d rss_peak_bytes=%d\n",
		ready.Milliseconds(), after.HeapAlloc, off, float64(total)/float64(keys), rss, rssPeak)
	return nil
}

// procStatus reads a "kB" line of /proc/self/status, in bytes.
func procStatus(field string) uint64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			var kb uint64
			_, _ = fmt.Sscanf(strings.TrimSpace(rest), "%d", &kb)
			return kb << 10
		}
	}
	return 0
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }
