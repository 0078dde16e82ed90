// Command natsd runs a NATS server with JetStream on file storage
// (services/internal/natsembed) until SIGTERM, for the fault suite, which
// kills it with SIGKILL and starts it again on the same store and port.
//
//	natsd --store-dir DIR --port 14222
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
	port := flag.Int("port", 0, "client port (required)")
	flag.Parse()
	srv, err := natsembed.Start(natsembed.Config{StoreDir: *dir, Port: *port, ServerName: "faults"})
	if err != nil {
		fmt.Fprintln(os.Stderr, "natsd:", err)
		os.Exit(1)
	}
	fmt.Fprintln(os.Stderr, "natsd: serving", srv.ClientURL())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	srv.Shutdown()
}
