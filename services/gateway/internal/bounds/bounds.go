// Package bounds is the time bounds of the gateway's data plane, the same
// for both front ends (the HTTP/1.1 fast path and net/http): how long a
// client may take to send its request, how long the upstream may take to
// connect and to answer, how long a client may stall its response, and
// how long an idle keep-alive connection stays open. docs/gateway.md has
// the table of flags, variables, defaults and reasons.
package bounds

import (
	"errors"
	"fmt"
	"time"
)

// Bounds are the data plane's time bounds. The zero value of a field is
// its default (SetDefaults).
type Bounds struct {
	// Head bounds a new connection's first byte and every request head:
	// the whole head must have come within it of its first byte (of the
	// connection's start, for the first request).
	Head time.Duration
	// Body and BodyMinRate bound a request body: it may take Body plus a
	// second for every BodyMinRate bytes received so far. A client that
	// sends nothing is cut off after Body; one that trickles slower than
	// BodyMinRate a little later.
	Body        time.Duration
	BodyMinRate int64
	// Connect bounds the connect to an upstream.
	Connect time.Duration
	// ResponseHead bounds the wait, after the request went upstream, for
	// the upstream's response head: 504 past it.
	ResponseHead time.Duration
	// Write bounds each write to the client: a client that stops reading
	// its response loses its connection (and the upstream request ends)
	// once a write has blocked this long.
	Write time.Duration
	// Idle bounds a keep-alive connection's wait for its next request.
	Idle time.Duration
}

// The defaults.
const (
	DefaultHead        = 10 * time.Second
	DefaultBody        = 30 * time.Second
	DefaultBodyMinRate = 1024 // bytes per second
	DefaultConnect     = 10 * time.Second
	// DefaultResponseHead is generous: a non-streamed completion's head
	// comes only when the model has written its whole answer, and a
	// reasoning model may think for minutes before the first token of a
	// stream. Ten minutes is the OpenAI SDKs' own default request
	// timeout: no client of theirs waits longer.
	DefaultResponseHead = 10 * time.Minute
	DefaultWrite        = 60 * time.Second
	DefaultIdle         = 2 * time.Minute
)

// ErrInvalid wraps every problem Validate reports.
var ErrInvalid = errors.New("bounds: invalid")

// ErrBodyTimeout is how a request body that did not come within its
// bound fails (both front ends answer 408 and close the connection).
var ErrBodyTimeout = errors.New("bounds: the request body did not come in time")

// SetDefaults gives every unset bound its default.
func (b *Bounds) SetDefaults() {
	set := func(d *time.Duration, def time.Duration) {
		if *d == 0 {
			*d = def
		}
	}
	set(&b.Head, DefaultHead)
	set(&b.Body, DefaultBody)
	set(&b.Connect, DefaultConnect)
	set(&b.ResponseHead, DefaultResponseHead)
	set(&b.Write, DefaultWrite)
	set(&b.Idle, DefaultIdle)
	if b.BodyMinRate == 0 {
		b.BodyMinRate = DefaultBodyMinRate
	}
}

// Validate reports every negative bound at once.
func (b Bounds) Validate() error {
	var errs []error
	for _, f := range []struct {
		name string
		d    time.Duration
	}{{"head", b.Head}, {"body", b.Body}, {"connect", b.Connect}, {"response head", b.ResponseHead}, {"write", b.Write}, {"idle", b.Idle}} {
		if f.d < 0 {
			errs = append(errs, fmt.Errorf("%w: %s timeout %v is negative", ErrInvalid, f.name, f.d))
		}
	}
	if b.BodyMinRate < 0 {
		errs = append(errs, fmt.Errorf("%w: body minimum rate %d is negative", ErrInvalid, b.BodyMinRate))
	}
	return errors.Join(errs...)
}

// BodyDeadline is when a body that started arriving at start, and of
// which received bytes came so far, must have come whole.
func (b *Bounds) BodyDeadline(start time.Time, received int64) time.Time {
	d := b.Body
	if b.BodyMinRate > 0 {
		d += time.Duration(received * int64(time.Second) / b.BodyMinRate)
	}
	return start.Add(d)
}
