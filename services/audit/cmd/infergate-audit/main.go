// Command infergate-audit runs the audit service
// (infergate.audit.v1.AuditService) as its own process against an external
// NATS cluster. It keeps no store: every answer is a replay of the stream.
// Flags fall back to INFERGATE_* environment variables; see -help.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/infergate/infergate/gen/infergate/audit/v1/auditv1connect"
	"github.com/infergate/infergate/services/audit"
	"github.com/infergate/infergate/services/internal/controlplane"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "infergate-audit:", err)
		os.Exit(1)
	}
}

func run() error {
	var cfg controlplane.Config
	fs := flag.NewFlagSet("infergate-audit", flag.ExitOnError)
	cfg.RegisterFlags(fs, "127.0.0.1:8083", "infergate_audit")
	_ = fs.Parse(os.Args[1:])
	cfg.NoReadModel = true // every answer is a replay of the stream

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
	hist, err := audit.NewHistory(audit.HistoryConfig{Events: plane.Events, Log: log})
	if err != nil {
		return err
	}
	histDone := make(chan error, 1)
	go func() { histDone <- hist.Run(ctx) }()
	path, h, err := audit.NewHandler(audit.Config{Events: plane.Events, History: hist, Log: log}, plane.HandlerOptions()...)
	if err != nil {
		return err
	}
	mux := controlplane.Mux(map[string]http.Handler{path: h}, auditv1connect.AuditServiceName)
	serveErr := plane.Serve(ctx, ln, mux, cfg.ShutdownGrace)
	stop()
	return errors.Join(serveErr, <-histDone)
}
