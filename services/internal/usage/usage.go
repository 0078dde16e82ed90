// Package usage is what the gateways and the usage projection share about
// the usage stream (docs/usage.md): its subjects, the message ids of
// flushes, and the status classes requests are counted by. The stream's
// configuration is declared with the event stream's
// (eventstore.UsageConfig); a flush is a usagev1.Flush.
package usage

import (
	"strconv"

	"github.com/infergate/infergate/services/internal/eventstore"
)

// Subject is the one subject gateway id of region publishes its flushes
// on (natsauth lets it publish there and nowhere else in the stream).
func Subject(region, id string) string {
	return eventstore.UsageSubjectPrefix + "." + region + "." + id
}

// MsgID is the Nats-Msg-Id of a flush: the gateway, its run (boot) and the
// flush's sequence in that run. A flush sent again after a lost
// acknowledgement carries the same id, and the stream stores it once.
func MsgID(region, id, boot string, seq uint64) string {
	return region + "." + id + "." + boot + "." + strconv.FormatUint(seq, 10)
}

// Class is the status class a request is counted in.
type Class uint8

// The classes.
const (
	// ClassOK: the upstream answered below 400.
	ClassOK Class = iota
	// ClassClientError: an answer from 400 to 499 after the request was
	// let in (the upstream's, or the gateway's 408 for a body that did not
	// come).
	ClassClientError
	// ClassServerError: the upstream answered 500 or more, or failed
	// (the gateway's 502 and 504).
	ClassServerError
	// ClassRefused: the gateway refused the request itself (401, 503
	// deployment_not_ready or gateway_stale).
	ClassRefused
	// NumClasses is the number of classes.
	NumClasses
)

// ClassOf is the class of an answer with status let in by the gateway.
func ClassOf(status int) Class {
	switch {
	case status >= 500:
		return ClassServerError
	case status >= 400:
		return ClassClientError
	}
	return ClassOK
}

// String names the class as the CLI and metrics do.
func (c Class) String() string {
	switch c {
	case ClassOK:
		return "ok"
	case ClassClientError:
		return "4xx"
	case ClassServerError:
		return "5xx"
	case ClassRefused:
		return "refused"
	}
	return "unknown"
}
