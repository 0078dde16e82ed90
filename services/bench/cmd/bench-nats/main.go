// Command bench-nats runs an embedded NATS server with JetStream
// (services/internal/natsembed) on a store directory until SIGINT or
// SIGTERM: the event stream for the load and cold-start benchmarks, in a
// process of its own so it is not measured with the gateway; and the NATS
// server the fault suite (services/infergate/internal/faults) kills with
// SIGKILL and starts again on the same store and port.
//
//	bench-nats --store-dir DIR --port 14222
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/infergate/infergate/services/internal/natsembed"
)

func main() {
	dir := flag.String("store-dir", "", "JetStream store directory (required)")
	port := flag.Int("port", 14222, "client port")
	flag.Parse()
	srv, err := natsembed.Start(natsembed.Config{StoreDir: *dir, Port: *port, ServerName: "bench"})
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-nats:", err)
		os.Exit(1)
	}
	fmt.Fprintln(os.Stderr, "bench-nats: serving", srv.ClientURL(), "store", *dir)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	srv.Shutdown()
}
