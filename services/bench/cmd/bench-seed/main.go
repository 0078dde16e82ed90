// Command bench-seed prepares the load benchmark's keys: it makes N fresh
// infergate secrets (services/internal/apikey), writes them out for wrk and
// as an HAProxy map and an nginx map of the same keys, and appends them to
// the event stream at --nats-url together with a deployment (auth on,
// every key linked, DEPLOYED) for the infergate gateway.
//
//	bench-seed --keys 100000 --out DIR --nats-url nats://127.0.0.1:14222 \
//	    --upstream http://127.0.0.1:18001 --project bench --deployment chat
//
// Events go in as the services write them, one command per message: a
// KeyCreated per key, the deployment's creation, its DEPLOYED status, and
// its links in messages of --link-batch KeyLinked events (what an
// UpdateDeploymentAuth that adds that many keys at once appends).
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/infergate/infergate/services/bench/internal/seed"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench-seed:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		n                                     int
		batch                                 int
		out, natsURL, upstream, proj, depName string
	)
	flag.IntVar(&n, "keys", 100_000, "how many keys")
	flag.StringVar(&out, "out", ".", "directory for keys.txt, haproxy-keys.map and nginx-keys.map")
	flag.StringVar(&natsURL, "nats-url", "", "NATS server to seed the event stream on; empty writes the files only")
	flag.StringVar(&upstream, "upstream", "http://127.0.0.1:18001", "the deployment's upstream URL")
	flag.StringVar(&proj, "project", "bench", "project")
	flag.StringVar(&depName, "deployment", "chat", "deployment name")
	flag.IntVar(&batch, "link-batch", 1000, "KeyLinked events per message")
	flag.Parse()

	start := time.Now()
	keys, err := seed.NewKeys(n)
	if err != nil {
		return err
	}
	if err := writeFiles(out, keys); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "bench-seed: %d keys written to %s in %s\n", n, out, time.Since(start).Round(time.Millisecond))
	if natsURL == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	nc, err := nats.Connect(natsURL, nats.Name("bench-seed"))
	if err != nil {
		return err
	}
	defer nc.Close()
	w, err := seed.New(ctx, nc, proj)
	if err != nil {
		return err
	}
	if err := w.CreateKeys(keys, nil); err != nil {
		return err
	}
	if err := w.Wait(ctx); err != nil {
		return err
	}
	dep := seed.Deployment{Name: depName, UpstreamURL: upstream}
	versions, err := w.CreateDeployments(ctx, []seed.Deployment{dep}, nil)
	if err != nil {
		return err
	}
	if _, err := w.LinkKeys(ctx, dep, versions[0], keys, batch); err != nil {
		return err
	}
	last, err := w.Store().LastSequence(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "bench-seed: stream seeded to sequence %d in %s\n", last, time.Since(start).Round(time.Millisecond))
	return nil
}

// writeFiles writes the secrets for wrk and the same keys as an HAProxy
// map (key value) and an nginx map body (key value;).
func writeFiles(dir string, keys []seed.Key) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, f := range []struct {
		name, format string
	}{
		{"keys.txt", "%s\n"},
		{"haproxy-keys.map", "%s 1\n"},
		{"nginx-keys.map", "%s 1;\n"},
	} {
		file, err := os.OpenFile(filepath.Join(dir, f.name), os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		bw := bufio.NewWriter(file)
		for _, k := range keys {
			fmt.Fprintf(bw, f.format, k.Secret)
		}
		if err := bw.Flush(); err != nil {
			file.Close()
			return err
		}
		if err := file.Close(); err != nil {
			return err
		}
	}
	return nil
}
