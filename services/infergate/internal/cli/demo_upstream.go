package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/infergate/infergate/services/internal/demomodel"
	"github.com/infergate/infergate/services/internal/httpserver"
)

// runDemoUpstream serves the demo model alone, for pointing a deployment
// at it from anywhere.
func runDemoUpstream(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("infergate demo-upstream", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:8001", "listen address")
	delay := fs.Duration("chunk-delay", 20*time.Millisecond, "pause between streamed chunks")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "infergate demo model (not a real model) on http://%s — use it as a deployment's upstream URL\n", ln.Addr())
	srv := httpserver.New(ln.Addr().String(), (&demomodel.Server{ChunkDelay: *delay}).Handler(""))
	return httpserver.Serve(ctx, srv, ln, 5*time.Second)
}
