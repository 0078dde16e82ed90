// Command infergate-keys runs the key service (infergate.key.v1.KeyService)
// as its own process against an external NATS cluster and, optionally,
// PostgreSQL. Flags fall back to INFERGATE_* environment variables; see
// -help.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/infergate/infergate/gen/infergate/key/v1/keyv1connect"
	"github.com/infergate/infergate/services/internal/controlplane"
	"github.com/infergate/infergate/services/keys"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "infergate-keys:", err)
		os.Exit(1)
	}
}

func run() error {
	var cfg controlplane.Config
	fs := flag.NewFlagSet("infergate-keys", flag.ExitOnError)
	cfg.RegisterFlags(fs, "127.0.0.1:8081", "infergate_keys")
	_ = fs.Parse(os.Args[1:])

	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return err
	}
	plane, err := controlplane.Open(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer plane.Close()
	path, h, err := keys.NewHandler(keys.Config{
		Events:    plane.Events,
		Reads:     plane.Reads,
		Projector: plane.Projector,
		Log:       log,
		// Writes wait for the gateways' receipts.
		Propagation:        plane.Tracker,
		PropagationTimeout: cfg.PropagationTimeout,
	}, plane.HandlerOptions()...)
	if err != nil {
		return err
	}
	mux := controlplane.Mux(map[string]http.Handler{path: h}, keyv1connect.KeyServiceName)
	return plane.Serve(ctx, ln, mux, cfg.ShutdownGrace)
}
