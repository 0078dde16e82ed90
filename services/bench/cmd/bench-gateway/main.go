// Command bench-gateway is the edge gateway as cmd/infergate-gateway runs
// it — the same gateway package, HTTP server settings and NATS event
// store — plus net/http/pprof on a separate address, to profile the
// gateway under the load benchmark (`GATEWAY_PPROF=1 make bench-load`).
// The figures in docs/benchmarks.md are measured on the real binary.
//
//	bench-gateway --addr 127.0.0.1:18004 --nats-url nats://127.0.0.1:14222 --pprof-addr 127.0.0.1:18005
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/infergate/infergate/services/gateway"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/httpserver"
	"github.com/infergate/infergate/services/internal/upstreampolicy"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench-gateway:", err)
		os.Exit(1)
	}
}

func run() error {
	addr := flag.String("addr", "127.0.0.1:18004", "gateway listen address")
	natsURL := flag.String("nats-url", nats.DefaultURL, "NATS server")
	pprofAddr := flag.String("pprof-addr", "127.0.0.1:18005", "net/http/pprof listen address")
	fastPath := flag.Bool("http1-fastpath", os.Getenv("INFERGATE_HTTP1_FASTPATH") != "false", "serve common HTTP/1.1 requests on the gateway's fast path (as cmd/infergate-gateway)")
	upstreamAllow := flag.String("upstream-allow", upstreampolicy.Loopback, "upstream policy allow list (as cmd/infergate-gateway); the benchmark's upstream is on loopback")
	flag.Parse()
	upstreams, err := upstreampolicy.Parse(*upstreamAllow)
	if err != nil {
		return fmt.Errorf("--upstream-allow: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	nc, err := nats.Connect(*natsURL, nats.Name("bench-gateway"))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	store, err := eventstore.Open(ctx, js, eventstore.Config{})
	if err != nil {
		return err
	}
	gw, err := gateway.New(gateway.Config{Events: store, NATS: nc, Log: log, Upstreams: upstreams})
	if err != nil {
		return err
	}
	pmux := http.NewServeMux()
	pmux.HandleFunc("/debug/pprof/", pprof.Index)
	pmux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	go func() { _ = http.ListenAndServe(*pprofAddr, pmux) }()

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := httpserver.New(*addr, gw.Handler())
	srv.ReadTimeout, srv.WriteTimeout = 0, 0 // as cmd/infergate-gateway
	serveErr := make(chan error, 1)
	front := gateway.NewFront(srv, *fastPath, gw.Bounds())
	front.Use(gw)
	go func() { serveErr <- front.Serve(ctx, ln, 5*time.Second) }()
	if err := gw.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return <-serveErr
}
