// Package pace lets long work on the cores that serve requests give way
// to them: the usage flush (tally) and a busy event loop (h1) work in
// slices of about Slice and sleep between them.
//
// A sleep, not runtime.Gosched. Gosched puts the goroutine at the back of
// the global run queue, and the scheduler takes it from there again
// before it polls the network (findRunnable polls only when no goroutine
// is runnable): with one P (the gateway pinned to one core), a request or
// an auth map update that arrives meanwhile is noticed only by sysmon's
// poll, every 10 ms. A sleeping goroutine leaves nothing runnable but the
// others: the scheduler runs those that wait, polls the network, and takes
// the sleeper back when its timer is due (it checks timers at every
// schedule, and puts the sleeper first in line). tally.BenchmarkFlushDelaysRequests
// measures it.
//
// How long the sleep is says whose turn comes next. Work that serves
// requests itself (an event loop carrying streams) sleeps Share, the
// shortest sleep there is: the poller runs, one goroutine waiting gets
// the P, then the loop again. Background work (the usage flush) sleeps
// Background: under load the requests get four fifths of the P while it
// runs, and it takes longer.
//
// With nothing else to run, a sleep under a millisecond lasts up to one
// (the poller waits in milliseconds), unless a socket wakes the poller
// first: long work on an idle process takes a little longer.
package pace

import "time"

// Slice is how long work runs before it pauses.
const Slice = 200 * time.Microsecond

// The sleeps between two slices.
const (
	Share      = time.Microsecond
	Background = 4 * Slice
)

// Pacer slices one piece of work; its zero value shares (Share) and is
// ready (its first slice starts at Begin, or ends at the first Check).
type Pacer struct {
	// Pause is the sleep between two slices; 0: Share.
	Pause time.Duration
	// Off: never pause (benchmarks of the work alone).
	Off   bool
	start time.Time // of the current slice
}

// Begin starts a slice: the work has just started, or has waited.
func (p *Pacer) Begin() { p.start = time.Now() }

// At is a point of a loop where the work may pause: every n-th (i is the
// loop's index; n work items take a few tens of µs), it calls Check.
func (p *Pacer) At(i, n int) {
	if i%n == n-1 {
		p.Check()
	}
}

// Check pauses if the slice is over. It reads the clock: call it every
// few tens of µs of work, not more often.
func (p *Pacer) Check() {
	if !p.Off && time.Since(p.start) >= Slice {
		time.Sleep(max(p.Pause, Share))
		p.Begin()
	}
}
