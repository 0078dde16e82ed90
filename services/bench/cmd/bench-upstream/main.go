// Command bench-upstream is the load benchmark's model server: every
// request gets the same small chat completion (internal/fastupstream).
//
//	bench-upstream --addr 127.0.0.1:18001
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/infergate/infergate/services/bench/internal/fastupstream"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18001", "listen address")
	flag.Parse()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-upstream:", err)
		os.Exit(1)
	}
	srv := &http.Server{Handler: fastupstream.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 5 * time.Minute}
	fmt.Fprintln(os.Stderr, "bench-upstream: listening on", ln.Addr())
	if err := srv.Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, "bench-upstream:", err)
		os.Exit(1)
	}
}
