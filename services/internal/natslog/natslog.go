// Package natslog logs a NATS connection's changes of state — connected,
// disconnected, reconnected, closed — once per change, never per request,
// so an operator sees when a process lost NATS and when it got it back.
package natslog

import (
	"log/slog"

	"github.com/nats-io/nats.go"
)

// Options are the handlers to pass to nats.Connect. whileDown says, in the
// disconnect line, what the process does meanwhile (e.g. "writes fail as
// unavailable; reads are answered from the read model").
func Options(log *slog.Logger, whileDown string) []nats.Option {
	return []nats.Option{
		Errors(log),
		nats.ConnectHandler(func(nc *nats.Conn) {
			log.Info("NATS connected", "url", nc.ConnectedUrlRedacted())
		}),
		// nats.go calls it once when a live connection drops, not again for
		// every failed attempt to reconnect; and on Close, which the closed
		// handler reports.
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if nc.IsClosed() {
				return
			}
			log.Warn("NATS disconnected; "+whileDown, "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("NATS reconnected", "url", nc.ConnectedUrlRedacted())
		}),
		// Closed is the process letting go (MaxReconnects is unlimited
		// where this is used); the last error says what it was waiting on.
		nats.ClosedHandler(func(nc *nats.Conn) {
			if err := nc.LastError(); err != nil {
				log.Info("NATS connection closed", "last_err", err)
				return
			}
			log.Info("NATS connection closed")
		}),
	}
}

// Errors logs what the server reports asynchronously — above all a
// permissions violation (natsauth), which otherwise shows only as a
// request that times out.
func Errors(log *slog.Logger) nats.Option {
	return nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
		if sub != nil {
			log.Error("NATS error", "subject", sub.Subject, "err", err)
			return
		}
		log.Error("NATS error", "err", err)
	})
}
